"""An outbound connection from a node's loop to another node, with a future and a deadline per call.

This is how the ring (Chord RPC, replication) will talk between nodes without ever blocking the loop:
the reference implementation made synchronous calls inside its request handlers, so two nodes calling
each other deadlocked until a timeout. Here a call returns a :class:`~funnelkvs.loop.Future` at once.

v1 answers come back in request order, so calls are matched to answers first-in first-out. A call
that passes its deadline fails with :class:`RequestTimeout` and takes the connection down with every
call still on it: no answer behind the late one can arrive before it, and a peer that has stopped
reading must not make us buffer requests without bound. The next call opens a new connection. (The
v2 framing will carry request ids and lift the in-order rule.)
"""

from __future__ import annotations

import collections
import copy
import logging
import socket

from funnelkvs.errors import FunnelKVSError, NodeUnreachable, RemoteProtocolError, RequestTimeout
from funnelkvs.loop import EVENT_READ, EVENT_READ_ANY, EVENT_WRITE, EventLoop, Future, TimerHandle
from funnelkvs.protocol import NEED_DATA, U32_MAX, Response, ResponseDecoder, encode_request

log = logging.getLogger("funnelkvs.peer")

# Under glibc's mmap threshold (128 KiB): a larger recv(n) costs an mmap/munmap pair per call.
RECV_SIZE = 64 * 1024


class _Call:
    __slots__ = ("deadline", "future")

    def __init__(self, future: Future[Response], deadline: TimerHandle | None) -> None:
        self.future = future
        self.deadline = deadline


class PeerConnection:
    def __init__(
        self,
        loop: EventLoop,
        address: tuple[str, int],
        connect_timeout: float = 2.0,
        max_value_size: int = U32_MAX,
    ) -> None:
        self.loop = loop
        self.address = address
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._connecting: Future[socket.socket] | None = None
        self._calls: collections.deque[_Call] = collections.deque()
        self._out = bytearray()
        self._decoder = ResponseDecoder(max_value_size)
        self.closed = False

    @property
    def label(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def call(self, op: int, key: bytes = b"", value: bytes = b"", timeout: float = 2.0) -> Future[Response]:
        """Send one request; the future gets the :class:`Response`, or NodeUnreachable / RequestTimeout."""
        future: Future[Response] = Future()
        if self.closed:
            future.set_exception(NodeUnreachable(f"{self.label}: connection closed"))
            return future
        frame = encode_request(op, key, value)  # may raise LocalProtocolError: nothing queued yet
        call = _Call(future, None)
        call.deadline = self.loop.call_later(timeout, self._expire, call, timeout)
        self._calls.append(call)
        self._out += frame
        if self._sock is not None:
            self._write()
        elif self._connecting is None:
            self._connecting = self.loop.open_connection(self.address, self.connect_timeout)
            self._connecting.add_done_callback(self._on_connected)
        return future

    def _expire(self, call: _Call, timeout: float) -> None:
        if not call.future.done():
            self._fail(RequestTimeout(f"{self.label}: no answer within {timeout} s"))

    def _on_connected(self, connecting: Future[socket.socket]) -> None:
        self._connecting = None
        exc = connecting.exception()
        if exc is not None:
            self._fail(exc if isinstance(exc, FunnelKVSError) else NodeUnreachable(str(exc)))
            return
        sock = connecting.result()
        if self.closed:
            sock.close()
            return
        self._sock = sock
        self.loop.register(sock, EVENT_READ, self._on_event)
        self._write()

    def _write(self) -> None:
        sock = self._sock
        if sock is None:
            return
        if self._out:
            try:
                sent = sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fail(NodeUnreachable(f"{self.label}: {exc}"))
                return
            del self._out[:sent]
        self.loop.modify(sock, EVENT_READ | EVENT_WRITE if self._out else EVENT_READ, self._on_event)

    def _on_event(self, mask: int) -> None:
        if mask & EVENT_WRITE:
            self._write()
        if not mask & EVENT_READ_ANY or self._sock is None:
            return
        try:
            data = self._sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(NodeUnreachable(f"{self.label}: {exc}"))
            return
        if not data:
            self._fail(NodeUnreachable(f"{self.label}: connection closed by peer"))
            return
        self._decoder.feed(data)
        try:
            while True:
                response = self._decoder.next_event()
                if response is NEED_DATA:
                    break
                if not self._calls:
                    raise RemoteProtocolError(f"{self.label}: answer without a request")
                call = self._calls.popleft()
                if call.deadline is not None:
                    call.deadline.cancel()
                call.future.set_result(response)  # type: ignore[arg-type]
        except RemoteProtocolError as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """The connection is unusable: fail every pending call and forget the socket. The next call
        opens a new connection."""
        if self._sock is not None:
            self.loop.unregister(self._sock)
            self._sock.close()
            self._sock = None
        self._out.clear()
        self._decoder = ResponseDecoder(self._decoder.max_value_size)
        calls, self._calls = self._calls, collections.deque()
        for call in calls:
            if call.deadline is not None:
                call.deadline.cancel()
            if not call.future.done():
                # One instance per future: each raise appends to an exception's traceback.
                call.future.set_exception(copy.copy(exc))

    def close(self) -> None:
        if self.closed:
            return
        self._fail(NodeUnreachable(f"{self.label}: connection closed"))
        self.closed = True
