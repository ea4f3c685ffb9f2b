"""Answers that come after their request was decoded: a write's once the storage thread has
committed it, a read's the storage thread made, a forwarded request's once its owner replied.

A connection waiting for the storage thread is *held* (taken off the loop: neither read nor written)
until every job it waits for is done; a connection waiting for another node keeps its place in the
output (an :class:`~funnelkvs.connection.AnswerSlot`) and goes on being served. Mixed into
:class:`funnelkvs.node.Node`, which owns the connections and the loop.
"""

from __future__ import annotations

import logging

from funnelkvs.connection import AnswerSlot, ClientConnection
from funnelkvs.group_commit import WriteBatch
from funnelkvs.local_store import LocalStore
from funnelkvs.loop import EVENT_READ, EventLoop
from funnelkvs.metrics import NodeMetrics
from funnelkvs.protocol import RESPONSE_SERVER_ERROR, Status, encode_response
from funnelkvs.protocol.v2 import encode_v2_response
from funnelkvs.versions import is_live, value_of

log = logging.getLogger("funnelkvs.node")
_SUCCESS = int(Status.SUCCESS)


class LateAnswers:
    """The node's handling of answers that come later (see the module docstring)."""

    loop: EventLoop
    metrics: NodeMetrics
    store: LocalStore

    def _flush(self, conn: ClientConnection) -> None:
        raise NotImplementedError  # the node's

    def _hold(self, conn: ClientConnection) -> None:
        """Stop watching a connection while it waits for the storage thread (see ``waiting``)."""
        if conn.events:
            self.loop.unregister(conn.sock)
            conn.events = 0

    def _release(self, conn: ClientConnection) -> None:
        """The storage jobs a held connection waited for are done: write its answers, read again."""
        if conn.sock.fileno() < 0:
            return
        conn.events = EVENT_READ
        self.loop.register(conn.sock, EVENT_READ, conn.handler)
        self._flush(conn)

    def _on_forwarded(self, conn: ClientConnection, slot: AnswerSlot, status: int, body: bytes) -> None:
        """The owner of a forwarded v1 request answered (or the forward failed: SERVER_ERROR), or the
        coordinator has its quorum's answer. v1 error answers carry no body (the reference's clients
        expect none), whatever message the v2 side had."""
        self.fill_slot(conn, slot, encode_response(status, body if status == _SUCCESS else b""))

    def fill_slot(self, conn: ClientConnection, slot: AnswerSlot, answer: bytes) -> None:
        """An answer that came later takes its place in ``conn``'s output; write what is ready.

        Always from a callback of its own (a peer's answer, the storage thread's), never while the
        node is decoding this connection's requests: ``_answer`` keeps the output size in a local."""
        if conn.sock.fileno() < 0:
            return
        conn.fill(slot, answer)
        if conn.waiting:
            return  # released (and flushed) when the storage thread is done
        if conn.events == 0:
            self._release(conn)
        else:
            self._flush(conn)

    def _on_committed(self, batch: WriteBatch, error: BaseException | None) -> None:
        """The storage thread is done with ``batch``: release its connections' answers, or cut them
        at the first write of the batch with one SERVER_ERROR and close (the client cannot take later
        answers as belonging to the failed writes)."""
        if error is not None:
            log.error("storage sync failed (%s); SERVER_ERROR to %d writes", error, len(batch.writes))
            self.metrics.sync_errors += 1
        else:
            self.store.on_batch(batch.transitions)
        for conn in batch.waiters:
            conn.waiting -= 1
            conn.wants_sync = False
            if error is not None and not conn.failed:
                conn.failed = True
                del conn.out[conn.sync_mark :]
                conn.out.append(RESPONSE_SERVER_ERROR)
                conn.out_size = sum(map(len, conn.out))
                conn.paused = False
                conn.closing = True
            if not conn.waiting:
                self._release(conn)

    def on_read(
        self,
        conn: ClientConnection,
        request_id: int,
        found: bytes | bytearray | None,
        error: BaseException | None,
    ) -> None:
        """A GET the storage thread answered (see StorageBusy in _answer); ``request_id`` -1 for v1."""
        conn.waiting -= 1
        if not conn.failed:
            if error is not None:
                log.error("read for %s failed: %s", conn.address, error)
                self.metrics.handler_errors += 1
                status, body = Status.SERVER_ERROR, b""
            elif found is None or not is_live(found):
                status, body = Status.NOT_FOUND, b""  # nothing stored, or a tombstone
            else:
                status, body = Status.SUCCESS, value_of(found)
            if request_id < 0:
                answer = encode_response(status, body)
            else:
                answer = encode_v2_response(status, request_id, body)
            conn.out.append(answer)
            conn.out_size += len(answer)
        if not conn.waiting:
            self._release(conn)
