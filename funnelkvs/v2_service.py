"""How a node answers v2 requests (docs/protocol.md, "v2 frames"): ring-aware clients, other nodes
and admin tools.

GET/PUT/DELETE/PING/STATS/INFO keep their v1 meaning. A GET/PUT/DELETE for a key this node does not
own is answered NOT_RESPONSIBLE with the owner's address (as this node's membership view has it) in
the body, not forwarded: a ring-aware client or a forwarding node then asks that owner itself.
Node-to-node and admin ops (0x10-0x3f) go to the handler registered for them (:meth:`register`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from funnelkvs.connection import ClientConnection
from funnelkvs.errors import FunnelKVSError, RemoteProtocolError, StorageBusy
from funnelkvs.keyspace import ring_position
from funnelkvs.loop import Future
from funnelkvs.protocol import DELETE, GET, INFO, PING, PUT, STATS, Status, stats_text
from funnelkvs.protocol.v2 import V2Request, encode_v2_response, parse_key_request
from funnelkvs.versions import Version, is_live, origin_of, pack_tombstone, pack_value, value_of

if TYPE_CHECKING:
    from funnelkvs.node import Node

log = logging.getLogger("funnelkvs.node")

#: ``handler(body) -> (status, answer body)``, or a Future of that for an answer that comes later;
#: run on the loop.
Handler = Callable[[bytes], "tuple[int, bytes] | Future[tuple[int, bytes]]"]
#: ``answer`` put the answer's place in the connection's output itself (it is filled later).
SLOTTED: Final = object()
_SUCCESS = int(Status.SUCCESS)


class V2Service:
    """The v2 side of one node's request dispatch."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._handlers: dict[int, Handler] = {}

    def register(self, op: int, handler: Handler) -> None:
        """Answer v2 requests with op code ``op`` (0x10-0x3f, docs/protocol.md) by ``handler(body) ->
        (status, answer body)``. The handler runs on the loop and must not block; a
        RemoteProtocolError it raises answers INVALID_REQUEST, anything else SERVER_ERROR."""
        if op in self._handlers:
            raise FunnelKVSError(f"v2 op {op:#04x} already has a handler")
        self._handlers[op] = handler

    def answer(self, conn: ClientConnection, request: V2Request) -> bytes | object | None:
        """The answer to one v2 request; None when the storage thread will answer it (the connection
        is then held: see ``ClientConnection.waiting``); :data:`SLOTTED` when its place is in the
        output already and another node (or a later step) fills it."""
        node = self.node
        op, request_id, body = request
        node.metrics.requests_by_op[op] += 1
        try:
            if op == GET or op == PUT or op == DELETE:
                key, value, w, r = parse_key_request(op, body)
                limits = node.settings.limits
                if len(key) > limits.max_key_size or len(value) > limits.max_value_size:
                    # The same limits as v1 (whose decoder refuses before reading the body).
                    node.metrics.protocol_errors += 1
                    reason = f"key of {len(key)} or value of {len(value)} bytes over the node's limits"
                    return encode_v2_response(Status.INVALID_REQUEST, request_id, reason.encode())
                ring = node.ring
                replication = node.replication
                coordinating = replication is not None and replication.active
                if w or r:
                    factor = node.settings.replication.factor
                    if w > factor or r > factor:
                        reason = f"w={w} r={r}: a quorum cannot exceed replication.factor ({factor})"
                        return encode_v2_response(Status.INVALID_REQUEST, request_id, reason.encode())
                if ring is not None and (coordinating or not ring.alone):
                    position = ring_position(key)
                    if not ring.alone and not ring.owns(position):
                        owner = ring.owner_hint(position)
                        return encode_v2_response(Status.NOT_RESPONSIBLE, request_id, owner.address.encode())
                    if coordinating:
                        coordinator = replication.coordinator  # type: ignore[union-attr]
                        fill = self._filler(conn, request_id)
                        if op == GET:
                            coordinator.read(key, position, r, fill)
                        else:
                            coordinator.write(key, position, value if op == PUT else None, w, fill)
                        return SLOTTED
                    transfers = ring.transfers
                    if transfers.incoming and transfers.covering(position) is not None:
                        if op != GET:
                            transfers.note_write(key, position)
                        elif self.absent_here(key):
                            # Not here yet: the range is still on its way from its old owner.
                            transfers.read_through(key, self._filler(conn, request_id))
                            return SLOTTED
                return self._key_op(conn, op, request_id, key, value)
            if op == PING:
                return encode_v2_response(_SUCCESS, request_id, b"pong")
            if op == STATS:
                text = stats_text(node.store.live, node.store.value_bytes())
                return encode_v2_response(_SUCCESS, request_id, text)
            if op == INFO:
                return encode_v2_response(_SUCCESS, request_id, json.dumps(node.info()).encode())
            handler = self._handlers.get(op)
            if handler is None:
                node.metrics.protocol_errors += 1
                return encode_v2_response(
                    Status.INVALID_REQUEST, request_id, f"unknown op {op:#04x}".encode()
                )
            result = handler(bytes(body))  # no copy for bytes
            if isinstance(result, Future) and result.done():
                result = result.result()  # answered already: no slot (never fill one mid-_answer)
            if isinstance(result, Future):
                fill = self._filler(conn, request_id)
                result.add_done_callback(lambda done: fill(*done.result()))
                return SLOTTED
            status, answer = result
            return encode_v2_response(status, request_id, answer)
        except RemoteProtocolError as exc:
            node.metrics.protocol_errors += 1
            return encode_v2_response(Status.INVALID_REQUEST, request_id, str(exc).encode())
        except Exception:
            log.exception("v2 request op=%#04x from %s failed", op, conn.address)
            node.metrics.handler_errors += 1
            return encode_v2_response(Status.SERVER_ERROR, request_id)

    def _filler(self, conn: ClientConnection, request_id: int) -> Callable[[int, bytes], None]:
        """A place in ``conn``'s output for an answer to ``request_id`` that comes later."""
        slot = conn.add_slot()

        def fill(status: int, body: bytes) -> None:
            self.node.fill_slot(conn, slot, encode_v2_response(status, request_id, body))

        return fill

    def absent_here(self, key: bytes) -> bool:
        """No value (nor a pending write or delete) for ``key`` here. A read that would wait or fails
        counts as present: the usual GET path then deals with it."""
        node = self.node
        if key in node.pending_writes:
            return False
        try:
            # A tombstone is present: the key was deleted here since the range became ours.
            return node.backend.get(key) is None
        except Exception:
            return False

    def _key_op(
        self, conn: ClientConnection, op: int, request_id: int, key: bytes, value: bytes | bytearray
    ) -> bytes | None:
        node = self.node
        commit = node.group_commit
        if op == GET:
            pending = node.pending_writes
            entry = pending.get(key) if pending else None
            try:
                found = node.backend.get(key) if entry is None else entry[0]
            except StorageBusy:
                assert commit is not None  # only a blocking backend raises it
                conn.waiting += 1
                commit.read(key, functools.partial(node.on_read, conn, request_id))
                return None
            if found is None or not is_live(found):
                return encode_v2_response(Status.NOT_FOUND, request_id)
            return encode_v2_response(_SUCCESS, request_id, value_of(found))
        version = Version(node.hlc.now(), origin_of(node.node_id))
        node.store.write(key, pack_value(version, value) if op == PUT else pack_tombstone(version))
        return encode_v2_response(_SUCCESS, request_id)
