"""Replica traffic to other nodes, batched: what a coordinator has for one peer in one loop pass goes
out as one REPLICA_WRITE and one REPLICA_READ (:mod:`funnelkvs.protocol.replica`), and the peer
answers each in one.

Items are queued during the pass; a pass-end hook sends one call per peer and kind. When the call
answers, each item's callback gets its own result; when it fails (the peer is unreachable, the call
timed out, a malformed answer) every item of it fails, with ``timed_out`` telling a slow peer from a
dead one (the client then gets TIMEOUT rather than SERVER_ERROR).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from funnelkvs.errors import RemoteProtocolError, RequestTimeout
from funnelkvs.loop import Future
from funnelkvs.protocol import Status
from funnelkvs.protocol.replica import (
    REPLICA_READ,
    REPLICA_WRITE,
    STORED,
    decode_read_results,
    decode_write_results,
    encode_reads,
    encode_writes,
)
from funnelkvs.protocol.v2 import V2Response
from funnelkvs.replication.ringview import NodeRef

if TYPE_CHECKING:
    from funnelkvs.node import Node

log = logging.getLogger("funnelkvs.replication")

#: ``on_written(ok, timed_out)``.
OnWritten = Callable[[bool, bool], None]
#: ``on_read(envelope or None, failed, timed_out)``.
OnRead = Callable[[bytes | None, bool, bool], None]


class ReplicaChannels:
    """The per-pass queues of replica writes and reads, by peer."""

    def __init__(self, node: Node, timeout: float, on_failure: Callable[[NodeRef], None]) -> None:
        self.node = node
        self.timeout = timeout
        #: Called with a peer whose call failed (the coordinator suspects it).
        self.on_failure = on_failure
        self._writes: dict[NodeRef, list[tuple[bytes, bytes | bytearray, OnWritten]]] = {}
        self._reads: dict[NodeRef, list[tuple[bytes, OnRead]]] = {}
        self.calls = 0
        self._addresses: dict[str, tuple[str, int]] = {}

    def write(self, target: NodeRef, key: bytes, envelope: bytes | bytearray, on_written: OnWritten) -> None:
        queue = self._writes.get(target)
        if queue is None:
            queue = self._writes[target] = []
        queue.append((key, envelope, on_written))

    def read(self, target: NodeRef, key: bytes, on_read: OnRead) -> None:
        queue = self._reads.get(target)
        if queue is None:
            queue = self._reads[target] = []
        queue.append((key, on_read))

    def flush(self) -> None:
        """Pass-end hook: one call per peer and kind for everything queued in this pass."""
        if self._writes:
            writes, self._writes = self._writes, {}
            for target, items in writes.items():
                self._send_writes(target, items)
        if self._reads:
            reads, self._reads = self._reads, {}
            for target, read_items in reads.items():
                self._send_reads(target, read_items)

    def _peer_call(self, target: NodeRef, op: int, body: bytes) -> Future[V2Response]:
        from funnelkvs.ring.driver import split_address

        address = self._addresses.get(target.address)
        if address is None:
            address = self._addresses[target.address] = split_address(target.address)
        host, port = address
        self.calls += 1
        # A connection of its own: a peer answers the requests of one connection in order, so a
        # replica write queued behind a forwarded request (whose answer waits for this node's own
        # quorum) would wait for us while we wait for it: the reference's forwarding deadlock.
        return self.node.peer(host, port, "replica").call(op, body, timeout=self.timeout)

    def _send_writes(self, target: NodeRef, items: list[tuple[bytes, bytes | bytearray, OnWritten]]) -> None:
        future = self._peer_call(target, REPLICA_WRITE, encode_writes([(key, env) for key, env, _ in items]))

        def answered(done: Future[V2Response]) -> None:
            error = done.exception()
            statuses: list[int] | None = None
            if error is None:
                response = done.result()
                if response.status == Status.SUCCESS:
                    try:
                        statuses = decode_write_results(response.body)
                    except RemoteProtocolError as exc:
                        error = exc
                    if statuses is not None and len(statuses) != len(items):
                        statuses = None
                        error = RemoteProtocolError("REPLICA_WRITE answer has the wrong item count")
                else:
                    error = RemoteProtocolError(f"REPLICA_WRITE answered status {response.status}")
            if statuses is None:
                timed_out = isinstance(error, RequestTimeout)
                log.debug("replica write to %s failed: %s", target.address, error)
                self.on_failure(target)
                for _, _, on_written in items:
                    on_written(False, timed_out)
                return
            for (_, _, on_written), status in zip(items, statuses, strict=True):
                on_written(status == STORED, False)

        future.add_done_callback(answered)

    def _send_reads(self, target: NodeRef, items: list[tuple[bytes, OnRead]]) -> None:
        future = self._peer_call(target, REPLICA_READ, encode_reads([key for key, _ in items]))

        def answered(done: Future[V2Response]) -> None:
            error = done.exception()
            results: list[bytes | None] | None = None
            if error is None:
                response = done.result()
                if response.status == Status.SUCCESS:
                    try:
                        results = decode_read_results(response.body)
                    except RemoteProtocolError as exc:
                        error = exc
                    if results is not None and len(results) != len(items):
                        results = None
                        error = RemoteProtocolError("REPLICA_READ answer has the wrong item count")
                else:
                    error = RemoteProtocolError(f"REPLICA_READ answered status {response.status}")
            if results is None:
                timed_out = isinstance(error, RequestTimeout)
                log.debug("replica read from %s failed: %s", target.address, error)
                self.on_failure(target)
                for _, on_read in items:
                    on_read(None, True, timed_out)
                return
            for (_, on_read), envelope in zip(items, results, strict=True):
                on_read(envelope, False, False)

        future.add_done_callback(answered)
