"""Pipelines to several nodes at once: one ``selectors`` loop over one connection per owner.

A routed pipeline sends each owner its share of the requests. Sent one owner after the other, the
nodes would work in turn while the others wait; here every share is written and read at the same
time, so the nodes work in parallel and a batch costs about as long as its slowest share. Each share
behaves as :meth:`~funnelkvs.client.connection.Connection.exchange` on its own connection (chunked
writes with reads interleaved; answers kept up to a close by the node after an error answer), and one
share's failure does not touch the others: it gets its error in its place.
"""

from __future__ import annotations

import selectors
from collections.abc import Sequence
from typing import Final, cast

from funnelkvs.client.connection import V2Connection, _reason
from funnelkvs.errors import FunnelKVSError, NodeUnreachable, RemoteProtocolError, RequestTimeout
from funnelkvs.protocol import NEED_DATA, Status
from funnelkvs.protocol.v2 import V2Response

_RECV_SIZE: Final = 64 * 1024
_SEND_CHUNK: Final = 256 * 1024
_NO_CLOSE_STATUSES: Final = frozenset({Status.SUCCESS, Status.NOT_FOUND, Status.NOT_RESPONSIBLE})


class _Share:
    """One connection's part of the fan-out, and how far it got."""

    __slots__ = ("chunk", "conn", "error", "failure", "frames", "next_frame", "responses", "writing")

    def __init__(self, conn: V2Connection, frames: Sequence[bytes]) -> None:
        self.conn = conn
        self.frames = frames
        self.next_frame = 0
        self.chunk = memoryview(b"")
        self.responses: list[V2Response] = []
        #: A send that failed: the node closed the connection; its answers up to the close still count.
        self.failure: OSError | None = None
        self.error: FunnelKVSError | None = None
        self.writing = True

    @property
    def done(self) -> bool:
        return self.error is not None or len(self.responses) >= len(self.frames)

    def read(self) -> bool:
        """Read what has arrived; True when this share is finished (answered, cut short or failed)."""
        conn = self.conn
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return False
        except OSError as exc:  # a reset: what was received before it has been read
            return self._cut_short(self.failure or exc)
        if not data:
            return self._cut_short(self.failure)
        conn.received += len(data)
        decoder = conn._decoder  # same package: the connection's own decoder
        decoder.feed(data)
        try:
            while (event := decoder.next_event()) is not NEED_DATA:
                self.responses.append(cast(V2Response, event))
        except RemoteProtocolError as exc:
            self.error = exc
            return True
        if len(self.responses) > len(self.frames):
            self.error = RemoteProtocolError(f"{conn.address} sent more answers than requests")
        elif self.done and decoder.buffered:
            self.error = RemoteProtocolError(f"{conn.address} sent bytes after its last answer")
        return self.done

    def write(self) -> bool:
        """Send the next piece; True once everything is sent (or the node closed the connection)."""
        frames = self.frames
        if not self.chunk:
            parts: list[bytes] = []
            size = 0
            while self.next_frame < len(frames) and size < _SEND_CHUNK:
                parts.append(frames[self.next_frame])
                size += len(frames[self.next_frame])
                self.next_frame += 1
            self.chunk = memoryview(b"".join(parts))
        try:
            sent = self.conn.sock.send(self.chunk)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            # The node closed the connection: keep reading its answers up to the close.
            self.failure = exc
            self.chunk = memoryview(b"")
            self.next_frame = len(frames)
            sent = 0
        self.chunk = self.chunk[sent:]
        self.writing = bool(self.chunk) or self.next_frame < len(frames)
        return not self.writing

    def _cut_short(self, failure: OSError | None) -> bool:
        """The connection ended early: keep the answers when the last is an error (the node closed on
        purpose after it), else the share failed with :class:`NodeUnreachable`."""
        conn = self.conn
        conn.reusable = False
        responses = self.responses
        if responses and responses[-1].status not in _NO_CLOSE_STATUSES:
            self.frames = self.frames[: len(responses)]  # nothing more will be answered
            return True
        progress = f"after {len(responses)} of {len(self.frames)} answers"
        reason = f": {_reason(failure)}" if failure is not None else ""
        self.error = NodeUnreachable(f"{conn.address} closed the connection {progress}{reason}")
        return True


def exchange_shares(
    shares: Sequence[tuple[V2Connection, Sequence[bytes]]],
) -> list[list[V2Response] | FunnelKVSError]:
    """Send each connection its frames, all at once; per share (in the order given) its answers as
    they came (match them by request id; fewer than its frames when the node closed the connection
    after an error answer), or the error that ended it: :class:`NodeUnreachable` (check the
    connection's ``received`` before replaying), :class:`RequestTimeout` when no share made progress
    within a connection's ``timeout``, :class:`RemoteProtocolError`. A share that ended in an error
    leaves its connection unusable: close it."""
    pending = [_Share(conn, frames) for conn, frames in shares]
    timeout = min((c.timeout for c, _ in shares if c.timeout is not None), default=None)
    selector = selectors.DefaultSelector()
    try:
        for share in pending:
            share.conn.received = 0
            if not share.frames:
                continue
            share.conn.sock.settimeout(0)
            selector.register(share.conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, share)
        active = len(selector.get_map())
        while active:
            events = selector.select(timeout)
            if not events:
                for share in pending:
                    if not share.done:
                        share.error = RequestTimeout(
                            f"{share.conn.address} made no progress for {timeout} s "
                            f"({len(share.responses)} of {len(share.frames)} answers received)"
                        )
                break
            for key, mask in events:
                share = key.data
                finished = False
                if mask & selectors.EVENT_READ:
                    finished = share.read()
                if not finished and share.writing and mask & selectors.EVENT_WRITE and share.write():
                    selector.modify(key.fileobj, selectors.EVENT_READ, share)
                if finished:
                    selector.unregister(key.fileobj)
                    active -= 1
    finally:
        selector.close()
        for share in pending:
            try:
                share.conn.sock.settimeout(share.conn.timeout)
            except OSError:
                pass
    return [share.error if share.error is not None else share.responses for share in pending]
