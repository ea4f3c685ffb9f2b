"""Hinted handoff: a fallback hands the writes it kept for a member that was down back to that member
once it answers again, then drops them (Dynamo 4.6).

Every :data:`HANDOFF_INTERVAL` seconds the node looks at the keys it holds hints for
(``LocalStore.hint_keys``, kept exact by every write and counted at start) and, for each hint whose
target member is up, sends the plain envelope to the target in a REPLICA_WRITE (batched per target
by :class:`~funnelkvs.replication.channels.ReplicaChannels`), at most :data:`HANDOFF_BATCH` keys per
round; while a backlog lasts, the next batch follows as soon as the last one is answered. When the
target has stored it durably, the hint is removed here, unless a newer write has
replaced it meanwhile (it is then handed off in a later round). A target that fails is suspected like
any replica and tried again later; nothing is dropped until it has been delivered.

Hints whose target has left the ring are kept: moving them to whoever holds the key now is the
replica-movement part of repair.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from funnelkvs.errors import StorageBusy
from funnelkvs.keyspace import ring_position
from funnelkvs.loop import PeriodicTimer
from funnelkvs.versions import from_hint, is_hint

if TYPE_CHECKING:
    from funnelkvs.local_store import LocalStore
    from funnelkvs.loop import EventLoop
    from funnelkvs.replication.channels import ReplicaChannels
    from funnelkvs.replication.members import Members
    from funnelkvs.replication.placement import Placement
    from funnelkvs.replication.ringview import NodeRef

log = logging.getLogger("funnelkvs.replication")

#: How often hints are looked at, in seconds.
HANDOFF_INTERVAL = 1.0
#: Hints sent per round at most (bounds the work of one loop pass and the bytes in flight).
HANDOFF_BATCH = 512


class HintedHandoff:
    """The hints this node keeps, delivered to their targets (see the module docstring)."""

    def __init__(
        self,
        loop: EventLoop,
        me: NodeRef,
        store: LocalStore,
        members: Members,
        channels: ReplicaChannels,
        placement: Placement,
    ) -> None:
        self.placement = placement
        self.loop = loop
        self.me = me
        self.store = store
        self.members = members
        self.channels = channels
        #: Hints delivered to their targets and dropped here.
        self.delivered = 0
        self._in_flight: set[bytes] = set()
        self._timer: PeriodicTimer | None = None

    def start(self) -> None:
        self._timer = self.loop.call_every(HANDOFF_INTERVAL, self.run)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def run(self) -> None:
        """One round: send the hints whose target is up (at most HANDOFF_BATCH)."""
        hint_keys = self.store.hint_keys
        if not hint_keys or len(self._in_flight) >= HANDOFF_BATCH:
            return
        now = self.loop.time()
        sent = 0
        for key in list(hint_keys):
            if sent >= HANDOFF_BATCH:
                break
            if key in self._in_flight:
                continue
            try:
                hint = self.store.read(key)
            except StorageBusy:
                continue  # the storage thread is busy with a lock: next round
            if hint is None or not is_hint(hint):
                continue  # being replaced: the change's commit updates hint_keys
            hint = bytes(hint)
            plain, target_id = from_hint(hint)
            target = self.members.get(int.from_bytes(target_id, "big"))
            if target is None:
                # Kept for a node that left (or was forgotten): if this node is now one of the key's
                # replicas, the hint becomes its own copy; otherwise anti-entropy's surplus pass
                # moves it to the replicas.
                preference = self.placement.preference_list(ring_position(key))
                if any(node.node_id == self.me.node_id for node in preference):
                    self.store.replace(key, plain)
                continue
            if target.node_id == self.me.node_id or not self.members.is_up(target.node_id, now):
                continue
            self._in_flight.add(key)
            sent += 1
            self.channels.write(target, key, plain, functools.partial(self._sent, key, hint))

    def _sent(self, key: bytes, hint: bytes, ok: bool, timed_out: bool) -> None:
        self._in_flight.discard(key)
        if ok and not self._in_flight and len(self.store.hint_keys) > 1:
            # A backlog (a node back after a long outage): the next batch at once, not in a second.
            self.loop.call_soon(self.run)
        if not ok:
            return
        try:
            current = self.store.read(key)
        except StorageBusy:
            return  # delivered; dropped in a later round (the target keeps the newer of the two)
        if current is not None and bytes(current) == hint:
            self.store.remove(key)
            self.delivered += 1
