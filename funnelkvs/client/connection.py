"""One blocking TCP connection to a node: the I/O shell around :class:`~funnelkvs.protocol.ResponseDecoder`.

Socket errors are translated into the error tree here, once: a refused or dropped connection becomes
:class:`NodeUnreachable`, a missed deadline :class:`RequestTimeout`. A connection that raised is out of
sync with its node (an answer may still be on the way) and must be closed, never reused.
"""

from __future__ import annotations

import select
import selectors
import socket
import time
from collections.abc import Sequence
from typing import ClassVar, Self, cast

from funnelkvs.client.address import Address
from funnelkvs.errors import NodeUnreachable, RemoteProtocolError, RequestTimeout
from funnelkvs.protocol import HEADER_V1, NEED_DATA, Response, ResponseDecoder, Status
from funnelkvs.protocol.v2 import V2Response, V2ResponseDecoder

# Under glibc's mmap threshold (128 KiB): a larger recv(n) costs an mmap/munmap pair per call.
_RECV_SIZE = 64 * 1024
#: Bytes of a pipeline handed to the kernel at a time; reads are interleaved between chunks so that
#: neither side blocks writing into a full socket buffer while the other does the same.
_SEND_CHUNK = 256 * 1024
#: Statuses after which a node keeps the connection open; after any other it may close it.
_NO_CLOSE_STATUSES = frozenset({Status.SUCCESS, Status.NOT_FOUND})


class Connection:
    """A connected socket plus its response decoder. Not thread-safe: the pool lends it to one caller."""

    __slots__ = ("_decoder", "_poll", "address", "received", "reusable", "sock", "timeout")

    #: The answers this connection reads: v1 here, v2 in :class:`V2Connection`.
    decoder_class: ClassVar[type[ResponseDecoder] | type[V2ResponseDecoder]] = ResponseDecoder

    def __init__(self, sock: socket.socket, address: Address, timeout: float | None) -> None:
        self.sock = sock
        self.address = address
        self.timeout = timeout
        #: Bytes received during the current call: a retry is only considered when this is 0.
        self.received = 0
        #: False once the node closed the connection after an answer: the pool must not lend it again.
        self.reusable = True
        # Typed as the v1 decoder; a V2Connection's yields V2Response, which its methods cast back.
        self._decoder = cast(ResponseDecoder, self.decoder_class())
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            self._poll.register(sock.fileno(), select.POLLIN)

    @classmethod
    def open(cls, address: Address, connect_timeout: float | None, timeout: float | None) -> Self:
        try:
            sock = socket.create_connection(address, timeout=connect_timeout)
        except TimeoutError as exc:
            reason = f"timed out after {connect_timeout} s"
            raise NodeUnreachable(f"cannot connect to {address}: {reason}") from exc
        except OSError as exc:
            raise NodeUnreachable(f"cannot connect to {address}: {_reason(exc)}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout)
        except OSError as exc:
            sock.close()
            raise NodeUnreachable(f"cannot connect to {address}: {_reason(exc)}") from exc
        return cls(sock, address, timeout)

    def close(self) -> None:
        self.sock.close()

    def is_stale(self) -> bool:
        """True when an idle connection is readable: the node closed it (EOF), reset it, or sent bytes
        nobody asked for. Catching this before sending keeps most node restarts from costing a retry."""
        try:
            if self._poll is not None:
                return bool(self._poll.poll(0))
            readable, _, _ = select.select([self.sock], [], [], 0)
            return bool(readable)
        except (OSError, ValueError):
            return True

    def request(self, frame: bytes) -> Response:
        """Send one request and wait for its answer, within ``timeout`` seconds in all.

        A node refuses an oversize request from its header: it answers INVALID_REQUEST and closes the
        connection while the rest of the frame is still on its way, so the send fails. That answer is
        what the caller gets; a failed send is reported only when no answer can be read after it.
        """
        self.received = 0
        sock = self.sock
        timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        decoder = self._decoder
        send_failure: OSError | None = None
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            try:
                sock.sendall(frame)
            except TimeoutError:
                raise
            except OSError as exc:
                send_failure = exc
                self.reusable = False
            while True:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    sock.settimeout(remaining)
                data = sock.recv(_RECV_SIZE)
                if not data:
                    if send_failure is not None:
                        raise send_failure
                    raise NodeUnreachable(f"{self.address} closed the connection before answering")
                self.received += len(data)
                decoder.feed(data)
                event = decoder.next_event()
                if event is not NEED_DATA:
                    if decoder.buffered:
                        raise RemoteProtocolError(f"{self.address} sent bytes after its answer")
                    return cast(Response, event)
        except TimeoutError as exc:
            raise RequestTimeout(f"{self.address} did not answer within {timeout} s") from exc
        except OSError as exc:
            reason = _reason(send_failure or exc)
            raise NodeUnreachable(f"connection to {self.address} lost: {reason}") from exc

    def request_v2(self, frame: bytes, request_id: int) -> V2Response | None:
        """Send one v2 request on this v1 connection and return its v2 answer: for a rare admin query
        (the ring view) without a connection of its own. None when the node answered in v1 (it speaks
        no v2, like the reference implementation): that answer is read, so the connection stays in
        step and can be reused. Errors as :meth:`request`."""
        sock = self.sock
        self.received = 0
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            # A full timeout for the peek: the last call left the socket with what remained of its own.
            sock.settimeout(self.timeout)
            sock.sendall(frame)
            # Which decoder reads the answer depends on its version byte: peek at it first.
            while True:
                head = sock.recv(4, socket.MSG_PEEK)
                if not head:
                    raise NodeUnreachable(f"{self.address} closed the connection before answering")
                if len(head) == 4 or head != HEADER_V1[: len(head)]:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError
        except TimeoutError as exc:
            raise RequestTimeout(f"{self.address} did not answer within {self.timeout} s") from exc
        except OSError as exc:
            raise NodeUnreachable(f"connection to {self.address} lost: {_reason(exc)}") from exc
        if head == HEADER_V1:
            self.request(b"")  # nothing more to send: reads the v1 answer
            return None
        v1_decoder = self._decoder
        self._decoder = cast(ResponseDecoder, V2ResponseDecoder())
        try:
            answer = cast(V2Response, self.request(b""))
        finally:
            self._decoder = v1_decoder
        if answer.request_id != request_id:
            self.reusable = False
            raise RemoteProtocolError(
                f"{self.address} answered request {answer.request_id}, not {request_id}"
            )
        return answer

    def exchange_v2(self, frames: Sequence[bytes]) -> list[V2Response]:
        """Pipeline v2 frames on this v1 connection (every frame v2, so every answer is v2; the node
        tells the versions apart per frame): their answers as they came, to be matched by request id.
        As :meth:`exchange` otherwise. A node that speaks no v2 answers in v1: RemoteProtocolError,
        and the connection, out of step, must be closed (the pool does so after any error)."""
        v1_decoder = self._decoder
        self._decoder = cast(ResponseDecoder, V2ResponseDecoder())
        try:
            return cast(list[V2Response], self.exchange(frames))
        finally:
            self._decoder = v1_decoder

    def exchange(self, frames: Sequence[bytes]) -> list[Response]:
        """Pipeline: send every frame, reading answers while sending, and return them in request order.

        ``timeout`` bounds each wait for progress (a large batch may take longer in all).

        A node closes a connection on purpose only right after an error answer (a frame it refused
        from its header, a failed storage sync) and does not carry out what was pipelined behind it.
        Then the answers received so far are returned, fewer than the frames, the last one that error;
        the connection is not reusable. Any other early end is :class:`NodeUnreachable`.
        """
        self.received = 0
        expected = len(frames)
        responses: list[Response] = []
        if not expected:
            return responses
        sock = self.sock
        decoder = self._decoder
        selector = selectors.DefaultSelector()
        next_frame = 0
        chunk = memoryview(b"")
        failure: OSError | None = None
        try:
            sock.settimeout(0)
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            writing = True
            while len(responses) < expected:
                events = selector.select(self.timeout)
                if not events:
                    raise TimeoutError
                mask = events[0][1]
                if mask & selectors.EVENT_READ:
                    try:
                        data = sock.recv(_RECV_SIZE)
                    except BlockingIOError:
                        data = None
                    except OSError as exc:  # a reset: what was received before it has been read
                        return self._cut_short(responses, expected, failure or exc)
                    if data is not None:
                        if not data:
                            return self._cut_short(responses, expected, failure)
                        self.received += len(data)
                        decoder.feed(data)
                        while (event := decoder.next_event()) is not NEED_DATA:
                            responses.append(cast(Response, event))
                        if len(responses) > expected:
                            raise RemoteProtocolError(f"{self.address} sent more answers than requests")
                if writing and mask & selectors.EVENT_WRITE:
                    if not chunk:
                        parts: list[bytes] = []
                        size = 0
                        while next_frame < expected and size < _SEND_CHUNK:
                            parts.append(frames[next_frame])
                            size += len(frames[next_frame])
                            next_frame += 1
                        chunk = memoryview(b"".join(parts))
                    try:
                        sent = sock.send(chunk)
                    except BlockingIOError:
                        sent = 0
                    except OSError as exc:
                        # The node closed the connection: keep reading, its answers up to the close
                        # (and the reason it closed) are still to be read.
                        failure = exc
                        chunk = memoryview(b"")
                        next_frame = expected
                        sent = 0
                    chunk = chunk[sent:]
                    if not chunk and next_frame == expected:
                        writing = False
                        selector.modify(sock, selectors.EVENT_READ)
            if decoder.buffered:
                raise RemoteProtocolError(f"{self.address} sent bytes after its last answer")
            return responses
        except TimeoutError as exc:
            raise RequestTimeout(
                f"{self.address} made no progress for {self.timeout} s "
                f"({len(responses)} of {expected} answers received)"
            ) from exc
        except OSError as exc:
            raise NodeUnreachable(f"connection to {self.address} lost: {_reason(exc)}") from exc
        finally:
            selector.close()
            try:
                sock.settimeout(self.timeout)
            except OSError:
                pass

    def _cut_short(self, responses: list[Response], expected: int, failure: OSError | None) -> list[Response]:
        """The connection ended after ``len(responses)`` answers: the partial answers when the last one
        is an error (the node closed on purpose), else :class:`NodeUnreachable`."""
        self.reusable = False
        if responses and responses[-1].status not in _NO_CLOSE_STATUSES:
            return responses
        progress = f"after {len(responses)} of {expected} answers"
        if failure is not None:
            raise NodeUnreachable(f"connection to {self.address} lost {progress}: {_reason(failure)}")
        raise NodeUnreachable(f"{self.address} closed the connection {progress}")


class V2Connection(Connection):
    """A connection that carries v2 frames (docs/protocol.md): each answer names its request id, and
    answers to a pipeline may come back in any order. Used by the ring-aware client, whose v2 key
    requests a node refuses with NOT_RESPONSIBLE when it does not own the key (a v1 request it would
    forward instead, a hop the client cannot see)."""

    __slots__ = ()

    decoder_class = V2ResponseDecoder

    def call(self, frame: bytes, request_id: int) -> V2Response:
        """Send one v2 request and return its answer (errors as :meth:`Connection.request`)."""
        answer = cast(V2Response, self.request(frame))
        if answer.request_id != request_id:
            self.reusable = False
            raise RemoteProtocolError(
                f"{self.address} answered request {answer.request_id}, not {request_id}"
            )
        return answer

    def call_many(self, frames: Sequence[bytes]) -> list[V2Response]:
        """Pipeline v2 requests; their answers as they came (match them by request id). Fewer answers
        than frames when the node closed the connection after an error answer (as
        :meth:`Connection.exchange`)."""
        return cast(list[V2Response], self.exchange(frames))


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
