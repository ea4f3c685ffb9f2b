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

from funnelkvs.client.address import Address
from funnelkvs.errors import NodeUnreachable, RemoteProtocolError, RequestTimeout
from funnelkvs.protocol import NEED_DATA, Response, ResponseDecoder

# Under glibc's mmap threshold (128 KiB): a larger recv(n) costs an mmap/munmap pair per call.
_RECV_SIZE = 64 * 1024
#: Bytes of a pipeline handed to the kernel at a time; reads are interleaved between chunks so that
#: neither side blocks writing into a full socket buffer while the other does the same.
_SEND_CHUNK = 256 * 1024


class Connection:
    """A connected socket plus its response decoder. Not thread-safe: the pool lends it to one caller."""

    __slots__ = ("_decoder", "_poll", "address", "received", "sock", "timeout")

    def __init__(self, sock: socket.socket, address: Address, timeout: float | None) -> None:
        self.sock = sock
        self.address = address
        self.timeout = timeout
        #: Bytes received during the current call: a retry is only considered when this is 0.
        self.received = 0
        self._decoder = ResponseDecoder()
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            self._poll.register(sock.fileno(), select.POLLIN)

    @classmethod
    def open(cls, address: Address, connect_timeout: float | None, timeout: float | None) -> Connection:
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
        """Send one request and wait for its answer, within ``timeout`` seconds in all."""
        self.received = 0
        sock = self.sock
        timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        decoder = self._decoder
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            sock.sendall(frame)
            while True:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    sock.settimeout(remaining)
                data = sock.recv(_RECV_SIZE)
                if not data:
                    raise NodeUnreachable(f"{self.address} closed the connection before answering")
                self.received += len(data)
                decoder.feed(data)
                event = decoder.next_event()
                if event is not NEED_DATA:
                    assert isinstance(event, Response)
                    if decoder.buffered:
                        raise RemoteProtocolError(f"{self.address} sent bytes after its answer")
                    return event
        except TimeoutError as exc:
            raise RequestTimeout(f"{self.address} did not answer within {timeout} s") from exc
        except OSError as exc:
            raise NodeUnreachable(f"connection to {self.address} lost: {_reason(exc)}") from exc

    def exchange(self, frames: Sequence[bytes]) -> list[Response]:
        """Pipeline: send every frame, reading answers while sending, and return them in request order.

        ``timeout`` bounds each wait for progress (a large batch may take longer in all).
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
                    if data is not None:
                        if not data:
                            raise NodeUnreachable(
                                f"{self.address} closed the connection after {len(responses)} of "
                                f"{expected} answers"
                            )
                        self.received += len(data)
                        decoder.feed(data)
                        while (event := decoder.next_event()) is not NEED_DATA:
                            assert isinstance(event, Response)
                            responses.append(event)
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


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
