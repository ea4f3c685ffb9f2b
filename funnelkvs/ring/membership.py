"""Full membership: every member of the ring, learnt by a bounded walk of successor lists.

Chord itself needs only the successor list and the fingers; a store wants more: to send a request
straight to a key's owner (one hop), and to show the ring (``funnelkvs ring``, the ring-aware client).
So every ``ring.membership_interval`` seconds the node walks the ring by successor lists: its own list
gives the next r nodes; the last of them is asked for its list (GetNeighbours), which gives the r
after it, and so on until the walk comes back around to this node. N/r calls per refresh, bounded by
:data:`MAX_WALK_STEPS`; a node that does not answer ends the walk early (the view is then marked
incomplete and the part learnt is merged with what the previous walk knew).

The view is a hint, not the truth: a node that receives a request for a key it does not own says so
(NOT_RESPONSIBLE) and the sender looks again.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from funnelkvs.chord import GetNeighbours, Neighbours, NodeRef
from funnelkvs.errors import RemoteProtocolError
from funnelkvs.keyspace import RING_SIZE
from funnelkvs.loop import Future, PeriodicTimer
from funnelkvs.protocol import Status
from funnelkvs.protocol.rpc import decode_reply, encode_request
from funnelkvs.protocol.v2 import V2Response

if TYPE_CHECKING:
    from funnelkvs.ring.driver import RingDriver

log = logging.getLogger("funnelkvs.ring.membership")

#: Successor-list calls per walk at most: with r = 8, rings of up to about 2,000 nodes are seen whole.
MAX_WALK_STEPS = 256


class Membership:
    """The members of the ring as this node last saw them, in ring order (by id)."""

    def __init__(self, driver: RingDriver) -> None:
        self.driver = driver
        self.members: list[NodeRef] = [driver.me]
        self._ids: list[int] = [driver.me.node_id]
        #: The last walk came back around to this node.
        self.complete = True
        self._walking = False
        self._timer: PeriodicTimer | None = None
        #: ``listener(reached, complete)`` after each walk: the nodes it actually reached (alive), and
        #: whether it went all the way round (replication's member table listens).
        self.on_walk: list[Callable[[list[NodeRef], bool], None]] = []

    def start(self) -> None:
        self._timer = self.driver.loop.call_every(self.driver.settings.membership_interval, self.refresh)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- queries -------------------------------------------------------------------------------------

    def owner_of(self, position: int) -> NodeRef:
        """The member whose range holds ``position``: the first id at or after it, wrapping."""
        index = bisect.bisect_left(self._ids, position)
        return self.members[index if index < len(self.members) else 0]

    def view(self) -> dict[str, Any]:
        """The RING_VIEW answer (docs/protocol.md): members in ring order from this node, with the
        share of the ring each owns (its distance from its predecessor)."""
        members = self.members
        me = self.driver.me.node_id
        start = self._ids.index(me) if me in self._ids else 0
        ordered = members[start:] + members[:start]
        rows = []
        for index, node in enumerate(ordered):
            predecessor = ordered[index - 1]
            share = (node.node_id - predecessor.node_id) % RING_SIZE or RING_SIZE
            rows.append(
                {
                    "id": f"{node.node_id:040x}",
                    "address": node.address,
                    "successor": ordered[(index + 1) % len(ordered)].address,
                    "owns": share / RING_SIZE,
                }
            )
        return {"members": rows, "complete": self.complete}

    # --- the walk ------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Start a walk (unless one is running). The result replaces the view when it completes."""
        if self._walking:
            return
        chord = self.driver.chord
        seen = {self.driver.me.node_id: self.driver.me}
        for node in chord.successors:
            seen.setdefault(node.node_id, node)
        successors = chord.successors
        if len(successors) < chord.successor_list.r or not successors:
            # The list is not full: it already holds every other member.
            self._install(seen, complete=True)
            return
        self._walking = True
        self._step(successors[-1], seen, MAX_WALK_STEPS)

    def _step(self, node: NodeRef, seen: dict[int, NodeRef], budget: int) -> None:
        from funnelkvs.ring.driver import split_address

        op, body = encode_request(GetNeighbours())
        host, port = split_address(node.address)
        peer = self.driver.node.peer(host, port, "control")
        future = peer.call(op, body, timeout=self.driver.settings.rpc_timeout)
        future.add_done_callback(lambda done: self._on_step(node, seen, budget, done))

    def _on_step(
        self, node: NodeRef, seen: dict[int, NodeRef], budget: int, done: Future[V2Response]
    ) -> None:
        reply = None
        if done.exception() is None and done.result().status == Status.SUCCESS:
            try:
                reply = decode_reply(GetNeighbours(), done.result().body)
            except RemoteProtocolError:
                reply = None
        if not isinstance(reply, Neighbours):
            # Merge what this walk learnt with the last view rather than forget the rest of the ring.
            reached = list(seen.values())
            for member in self.members:
                seen.setdefault(member.node_id, member)
            self._install(seen, complete=False, reached=reached)
            return
        last = node
        for member in reply.successors:
            if member.node_id == self.driver.me.node_id:
                self._install(seen, complete=True)  # around the ring
                return
            seen.setdefault(member.node_id, member)
            last = member
        if budget <= 1 or last.node_id == node.node_id:
            self._install(seen, complete=False)
            return
        self._step(last, seen, budget - 1)

    def _install(
        self, seen: dict[int, NodeRef], *, complete: bool, reached: list[NodeRef] | None = None
    ) -> None:
        self._walking = False
        self.members = sorted(seen.values(), key=lambda member: member.node_id)
        self._ids = [member.node_id for member in self.members]
        self.complete = complete
        alive = list(seen.values()) if reached is None else reached
        for listener in self.on_walk:
            listener(alive, complete)
