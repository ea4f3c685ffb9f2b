"""An outbound connection from a node's loop to another node: v2 frames, many calls in flight, a
future and a deadline per call.

This is how the ring (Chord RPC, forwarding, range transfer) talks between nodes without ever blocking
the loop: the reference implementation made synchronous calls inside its request handlers, so two
nodes calling each other deadlocked until a timeout. Here a call returns a
:class:`~funnelkvs.loop.Future` at once.

- Calls carry request ids (v2, docs/protocol.md) and answers are matched by id, in any order. A call
  past its deadline fails with :class:`RequestTimeout` alone: its answer, if it ever comes, is
  dropped, and the calls around it go on.
- Calls made in one loop pass leave in one write (they are queued and written once, on the next
  pass).
- The connection is opened on the first call and reused; when it breaks, every call on it fails with
  :class:`NodeUnreachable` and the next call opens a new one.
- Bounded memory: requests waiting to be sent to a peer that stops reading are capped
  (``max_unsent``); past the cap the connection is dropped and its calls fail.
- Room for cluster authentication: a connection's first frame will be the HELLO exchange (op 0x3f,
  reserved) once hardening brings it; :meth:`PeerConnection._on_connected` is where it goes.
"""

from __future__ import annotations

import collections
import copy
import logging
import socket

from funnelkvs.errors import FunnelKVSError, NodeUnreachable, RemoteProtocolError, RequestTimeout
from funnelkvs.loop import EVENT_READ, EVENT_READ_ANY, EVENT_WRITE, EventLoop, Future, TimerHandle
from funnelkvs.protocol import NEED_DATA
from funnelkvs.protocol.v2 import DEFAULT_MAX_BODY, V2Response, V2ResponseDecoder, encode_v2_request

log = logging.getLogger("funnelkvs.peer")

# Under glibc's mmap threshold (128 KiB): a larger recv(n) costs an mmap/munmap pair per call.
RECV_SIZE = 64 * 1024
#: Bytes of requests queued for one peer before it counts as not reading (the connection is dropped).
MAX_UNSENT = 64 * 1024 * 1024
#: Request ids are u32 and wrap; a connection never has anywhere near 2**32 calls in flight.
_ID_MASK = 0xFFFF_FFFF


#: How often calls past their deadline are looked for, in seconds (while any is in flight).
SWEEP_INTERVAL = 0.05


class _Call:
    __slots__ = ("deadline", "future", "timeout")

    def __init__(self, future: Future[V2Response], deadline: float, timeout: float) -> None:
        self.future = future
        self.deadline = deadline
        self.timeout = timeout


class PeerConnection:
    """The connection to one peer (``address`` = (host, port)), owned by ``loop``'s thread."""

    def __init__(
        self,
        loop: EventLoop,
        address: tuple[str, int],
        connect_timeout: float = 2.0,
        max_body: int = DEFAULT_MAX_BODY,
        max_unsent: int = MAX_UNSENT,
    ) -> None:
        self.loop = loop
        self.address = address
        self.connect_timeout = connect_timeout
        self.max_unsent = max_unsent
        self._sock: socket.socket | None = None
        self._connecting: Future[socket.socket] | None = None
        self._calls: dict[int, _Call] = {}
        #: Request ids in the order sent, for the deadline sweep (answered ones are skipped). One
        #: sweep timer per connection instead of a timer per call: at tens of thousands of forwarded
        #: calls a second, a timer each filled the loop's heap with cancelled entries.
        self._order: collections.deque[int] = collections.deque()
        self._sweep: TimerHandle | None = None
        self._next_id = 0
        self._out = bytearray()
        self._write_scheduled = False
        self._decoder = V2ResponseDecoder(max_body)
        self.closed = False

    @property
    def label(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    @property
    def in_flight(self) -> int:
        """Calls sent or queued and not yet answered."""
        return len(self._calls)

    def call(self, op: int, body: bytes | bytearray = b"", timeout: float = 2.0) -> Future[V2Response]:
        """Send one v2 request; the future gets the :class:`V2Response` (any status), or fails with
        NodeUnreachable / RequestTimeout. Raises LocalProtocolError (nothing queued) for a frame v2
        cannot carry."""
        future: Future[V2Response] = Future()
        if self.closed:
            future.set_exception(NodeUnreachable(f"{self.label}: connection closed"))
            return future
        request_id = self._next_id
        frame = encode_v2_request(op, request_id, body)
        self._next_id = (request_id + 1) & _ID_MASK
        self._calls[request_id] = _Call(future, self.loop.time() + timeout, timeout)
        self._order.append(request_id)
        if self._sweep is None:
            self._sweep = self.loop.call_later(SWEEP_INTERVAL, self._expire)
        self._out += frame
        if len(self._out) > self.max_unsent:
            self._fail(
                NodeUnreachable(f"{self.label}: more than {self.max_unsent} bytes unsent; not reading?")
            )
            return future
        if self._sock is not None:
            if not self._write_scheduled:
                self._write_scheduled = True
                self.loop.call_soon(self._write)
        elif self._connecting is None:
            self._connecting = self.loop.open_connection(self.address, self.connect_timeout)
            self._connecting.add_done_callback(self._on_connected)
        return future

    def _expire(self) -> None:
        """Fail the calls past their deadline, oldest first. A call is looked at once the calls sent
        before it are answered or expired: one with a shorter timeout than those may fail up to their
        deadline late (calls of one kind share a connection and a timeout, so in practice never)."""
        self._sweep = None
        now = self.loop.time()
        order, calls = self._order, self._calls
        while order:
            call = calls.get(order[0])
            if call is not None:
                if call.deadline > now:
                    break
                del calls[order[0]]
                if not call.future.done():
                    call.future.set_exception(
                        RequestTimeout(f"{self.label}: no answer within {call.timeout} s")
                    )
            order.popleft()
        if order:
            self._sweep = self.loop.call_later(SWEEP_INTERVAL, self._expire)

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
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.loop.register(sock, EVENT_READ, self._on_event)
        self._write()

    def _write(self) -> None:
        self._write_scheduled = False
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
                assert isinstance(response, V2Response)
                call = self._calls.pop(response.request_id, None)
                if call is None:
                    continue  # the answer to a call that has timed out already
                call.future.set_result(response)
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
        self._decoder = V2ResponseDecoder(self._decoder.max_body)
        calls, self._calls = self._calls, {}
        self._order.clear()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for call in calls.values():
            if not call.future.done():
                # One instance per future: each raise appends to an exception's traceback.
                call.future.set_exception(copy.copy(exc))

    def close(self) -> None:
        if self.closed:
            return
        self._fail(NodeUnreachable(f"{self.label}: connection closed"))
        self.closed = True
