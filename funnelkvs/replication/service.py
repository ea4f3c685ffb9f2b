"""A node's replication, wired: the replica side of REPLICA_WRITE/REPLICA_READ, member gossip, and the
coordinator the node hands its owned keys' requests to.

======  ===============  ======================================  =====================================
op      request          request body                            answer body (status SUCCESS)
======  ===============  ======================================  =====================================
0x18    REPLICA_WRITE    see :mod:`funnelkvs.protocol.replica`   per-item statuses
0x19    REPLICA_READ     see :mod:`funnelkvs.protocol.replica`   per-key envelopes
0x1a    MEMBERS          (empty)                                 JSON ``{"members": [[id, address]],
                                                                 "left": [[id, address]]}``
0x1b    MEMBER_LEFT      JSON ``[id, address]``                  (empty)
======  ===============  ======================================  =====================================
"""

from __future__ import annotations

import json
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from funnelkvs.errors import RemoteProtocolError, StorageBusy
from funnelkvs.local_store import LocalStore
from funnelkvs.loop import Future
from funnelkvs.protocol import Status
from funnelkvs.protocol.replica import (
    FAILED,
    REPLICA_READ,
    REPLICA_WRITE,
    STORED,
    decode_reads,
    decode_writes,
    encode_read_results,
    encode_write_results,
)
from funnelkvs.protocol.v2 import V2Response
from funnelkvs.replication.anti_entropy import AntiEntropy
from funnelkvs.replication.channels import ReplicaChannels
from funnelkvs.replication.coordinator import Coordinator
from funnelkvs.replication.handoff import HintedHandoff
from funnelkvs.replication.members import Members
from funnelkvs.replication.placement import Placement
from funnelkvs.replication.ringview import NodeRef
from funnelkvs.versions import LOGICAL_BITS, HybridLogicalClock, check_envelope, origin_of

if TYPE_CHECKING:
    from funnelkvs.chord import NodeRef as ChordNodeRef
    from funnelkvs.node import Node
    from funnelkvs.replication.resolver import ConflictResolver
    from funnelkvs.replication.strategy import ReplicationStrategy

log = logging.getLogger("funnelkvs.replication")

MEMBERS = 0x1A
MEMBER_LEFT = 0x1B
#: How long a replica call may take before the copy counts as failed, in seconds (data, not
#: liveness: a 16 MiB value to a busy peer takes a while).
REPLICA_TIMEOUT = 3.0
_HLC_OFFSET = 1  # the HLC sits right after an envelope's kind byte
#: How far ahead of this node's wall clock a copy's version may be, in milliseconds.
MAX_CLOCK_AHEAD_MS = 60_000


class Replication:
    """Everything replication adds to one node (see the module docstring)."""

    def __init__(
        self,
        node: Node,
        store: LocalStore,
        strategy: ReplicationStrategy,
        resolver: ConflictResolver,
        hlc: HybridLogicalClock,
    ) -> None:
        settings = node.settings.replication
        self.node = node
        self.store = store
        self.me = NodeRef(int(node.node_id, 16), node.address)
        self.members = Members(self.me)
        self.placement = Placement(strategy, self.members, settings.factor)
        self.hlc = hlc
        self.channels = ReplicaChannels(node, REPLICA_TIMEOUT, self._peer_failed)
        self.coordinator = Coordinator(
            node.loop,
            self.me,
            store,
            self.members,
            self.placement,
            self.channels,
            resolver,
            self.hlc,
            origin_of(node.node_id),
            settings.w,
            settings.r,
        )
        self._under_replicated_logged = False
        self.handoff = HintedHandoff(node.loop, self.me, store, self.members, self.channels, self.placement)
        self.anti_entropy = AntiEntropy(self)
        self._epoch_seen = (0, 0, 0)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        node = self.node
        node.register_rpc(REPLICA_WRITE, self._serve_write)
        node.register_rpc(REPLICA_READ, self._serve_read)
        node.register_rpc(MEMBERS, self._serve_members)
        node.register_rpc(MEMBER_LEFT, self._serve_member_left)
        node.loop.add_pass_end_hook(self.channels.flush)
        self.handoff.start()
        self.anti_entropy.start()
        ring = node.ring
        if ring is not None:
            ring.membership.on_walk.append(self._walked)
            ring.events.joined.append(
                lambda successor: self._gossip_with(NodeRef(successor.node_id, successor.address))
            )
            ring.events.leaving.append(self._announce_left)
            # Chord learns of new nodes before the next membership walk does (a notify, a longer
            # successor list): take them as members at once, so that a young ring places its
            # first writes on the right nodes.
            ring.events.successors_changed.append(lambda successors: self._met(list(successors)))
            ring.events.predecessor_changed.append(lambda old, new: self._met([] if new is None else [new]))

    @property
    def active(self) -> bool:
        """Whether requests go through the coordinator: a key has more than one copy."""
        return self.placement.copies > 1

    def describe(self) -> dict[str, Any]:
        """Replication's part of INFO."""
        now = self.node.loop.time()
        settings = self.node.settings.replication
        return {
            "factor": settings.factor,
            "write_quorum": self.coordinator.quorums(0, 0)[0],
            "read_quorum": self.coordinator.quorums(0, 0)[1],
            "copies": self.placement.copies,
            "members": len(self.members),
            "members_down": [node.address for node in self.members.down(now)],
            "replica_calls": self.channels.calls,
            "hints_delivered": self.handoff.delivered,
        }

    def counters(self) -> dict[str, Any]:
        """Replication's part of INFO (``funnelkvs stats --json``, docs/replication.md "Stats")."""
        coordinator, anti_entropy = self.coordinator, self.anti_entropy
        ring = self.node.ring
        return {
            "hints_delivered": self.handoff.delivered,
            "anti_entropy_rounds": anti_entropy.rounds,
            "anti_entropy_keys_repaired": anti_entropy.keys_repaired,
            "anti_entropy_bytes_sent": anti_entropy.bytes_sent,
            "tombstones_purged": anti_entropy.tombstones_purged,
            "transfers_in_progress": (0 if ring is None else len(ring.transfers.incoming))
            + anti_entropy.in_progress,
            "read_repairs": coordinator.read_repairs,
            "degraded_reads": coordinator.degraded_reads,
            "quorum_failures": coordinator.quorum_failures,
            "under_replicated": self.under_replicated(),
            "replication": self.describe(),
        }

    @staticmethod
    def idle_counters() -> dict[str, Any]:
        """:meth:`counters` of a node not started yet."""
        return {
            "hints_delivered": 0,
            "anti_entropy_rounds": 0,
            "anti_entropy_keys_repaired": 0,
            "anti_entropy_bytes_sent": 0,
            "tombstones_purged": 0,
            "read_repairs": 0,
            "degraded_reads": 0,
            "quorum_failures": 0,
            "under_replicated": False,
            "replication": None,
        }

    def under_replicated(self) -> bool:
        """Fewer live members than the replication factor."""
        return self.members.up_count(self.node.loop.time()) < self.placement.n

    # --- members -----------------------------------------------------------------------------------

    def _walked(self, reached: list[ChordNodeRef], complete: bool) -> None:
        self.members.saw(
            [NodeRef(node.node_id, node.address) for node in reached],
            complete=complete,
            now=self.node.loop.time(),
        )
        members = self.members
        seen = (members.epoch, members.returned, members.departed)
        if seen != self._epoch_seen:
            # The member set changed (a join, a leave), a member is back or went down: compare the
            # ranges now (a crash leaves keys short of copies until a round gives fallbacks hints).
            self._epoch_seen = seen
            self.node.loop.call_soon(self.anti_entropy.run_round, True)
        # Gossip: a random other member's table, so that every node knows the members that are down.
        now = self.node.loop.time()
        others = [node for node in self.members.view.nodes if node.node_id != self.me.node_id]
        live = [node for node in others if self.members.is_up(node.node_id, now)]
        if live:
            self._gossip_with(random.choice(live))
        under = self.under_replicated()
        if under and not self._under_replicated_logged and len(self.members) > 1:
            log.warning(
                "under-replicated: %d live members of %d, replication factor %d",
                self.members.up_count(now),
                len(self.members),
                self.placement.n,
            )
        self._under_replicated_logged = under

    def _met(self, nodes: list[ChordNodeRef]) -> None:
        if nodes:
            self.members.saw([NodeRef(node.node_id, node.address) for node in nodes], complete=False)

    def _gossip_with(self, peer_ref: NodeRef) -> None:
        from funnelkvs.ring.driver import split_address

        host, port = split_address(peer_ref.address)
        future = self.node.peer(host, port, "control").call(MEMBERS, b"", timeout=2.0)

        def answered(done: Future[V2Response]) -> None:
            if done.exception() is not None or done.result().status != Status.SUCCESS:
                return
            try:
                self.members.merge(json.loads(done.result().body))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s sent a malformed member table: %s", peer_ref.address, exc)

        future.add_done_callback(answered)

    def _serve_members(self, body: bytes) -> tuple[int, bytes]:
        if body:
            raise RemoteProtocolError("MEMBERS takes no body")
        return Status.SUCCESS, json.dumps(self.members.table()).encode()

    def _serve_member_left(self, body: bytes) -> tuple[int, bytes]:
        try:
            node_id, address = json.loads(body)
            self.members.has_left(int(node_id, 16), str(address))
        except (ValueError, TypeError) as exc:
            raise RemoteProtocolError(f"MEMBER_LEFT: {exc}") from None
        return Status.SUCCESS, b""

    def _announce_left(self) -> None:
        """This node left the ring gracefully: tell every member, so that none waits for it."""
        from funnelkvs.ring.driver import split_address

        body = json.dumps([f"{self.me.node_id:040x}", self.me.address]).encode()
        for member in self.members.view.nodes:
            if member.node_id != self.me.node_id:
                host, port = split_address(member.address)
                self.node.peer(host, port, "control").call(MEMBER_LEFT, body, timeout=1.0)

    def _peer_failed(self, peer_ref: NodeRef) -> None:
        self.members.suspect(peer_ref.node_id, self.node.loop.time())

    # --- the replica side --------------------------------------------------------------------------

    def _serve_write(self, body: bytes) -> tuple[int, bytes] | Future[tuple[int, bytes]]:
        items = decode_writes(body)
        for _, envelope in items:
            problem = check_envelope(envelope)
            if problem is not None:
                raise RemoteProtocolError(f"REPLICA_WRITE: {problem}")
        statuses = [STORED] * len(items)
        remaining = len(items)
        answer: Future[tuple[int, bytes]] = Future()
        hlc = self.hlc
        latest = 0
        # A version from a clock far ahead would win every later write and drag every node's HLC
        # forward: refused, as Kulkarni et al. (2014) refuse messages beyond their bound epsilon.
        limit = ((time.time_ns() // 1_000_000 + MAX_CLOCK_AHEAD_MS) << LOGICAL_BITS) | 0xFFFF
        for index, (key, envelope) in enumerate(items):
            stamp = int.from_bytes(envelope[_HLC_OFFSET : _HLC_OFFSET + 8], "big")
            if stamp > limit:
                log.warning(
                    "refusing a copy of a write stamped %.0f s ahead of this node's clock",
                    ((stamp >> LOGICAL_BITS) - time.time_ns() // 1_000_000) / 1000,
                )
                statuses[index] = FAILED
                remaining -= 1
                continue
            latest = stamp if stamp > latest else latest

            def durable(error: BaseException | None, index: int = index) -> None:
                nonlocal remaining
                if error is not None:
                    statuses[index] = FAILED
                remaining -= 1
                if remaining == 0:
                    answer.set_result((Status.SUCCESS, encode_write_results(statuses)))

            self.store.write(key, envelope, durable)
        if remaining == 0 and not answer.done():
            answer.set_result((Status.SUCCESS, encode_write_results(statuses)))
        if latest:
            # HLC receive rule: a write this node coordinates later orders after what it has seen.
            hlc.observe(latest)
        return answer

    def _serve_read(self, body: bytes) -> tuple[int, bytes] | Future[tuple[int, bytes]]:
        keys = decode_reads(body)
        results: list[bytes | bytearray | None] = [None] * len(keys)
        waiting = 0
        failed = False
        answer: Future[tuple[int, bytes]] = Future()
        for index, key in enumerate(keys):
            try:
                results[index] = self.store.read(key)
            except StorageBusy:
                waiting += 1

                def read(found: Any, error: BaseException | None, index: int = index) -> None:
                    nonlocal waiting, failed
                    results[index] = found
                    failed |= error is not None
                    waiting -= 1
                    if waiting == 0:
                        # A copy that could not be read is not "absent": the whole answer fails.
                        if failed:
                            answer.set_result((Status.SERVER_ERROR, b"replica read failed"))
                        else:
                            answer.set_result((Status.SUCCESS, encode_read_results(results)))

                self.store.read_waiting(key, read)
        if waiting == 0:
            return Status.SUCCESS, encode_read_results(results)
        return answer
