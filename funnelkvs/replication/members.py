"""Who holds data: the ring's members (joined and not left), and which of them are up right now.

Replication places a key on members, not on whichever nodes happen to answer (Dynamo 4.8: a node's
absence is temporary until an operator or the node itself says it left). A crashed member stays in
the preference lists; while it is down, writes meant for it go to a fallback as hints (sloppy quorum,
Dynamo 4.6) and quorums are never lowered. If liveness shaped the preference lists instead, a crash
would move the key's replica set under a write quorum that was counted on the old one, and a read
quorum could miss every copy of an acknowledged write.

Sources, all on the loop:

- the ring's membership walk (:mod:`funnelkvs.ring.membership`, every ``ring.membership_interval``):
  every node it reaches is a member and up; a member it no longer reaches is down;
- failed replica calls: the peer is *suspected* (down) for :data:`SUSPECT_SECONDS`, so that the next
  requests go to fallbacks at once instead of each waiting for the failure;
- gossip (MEMBERS, op 0x1a): a joining node learns the members that are down from its seed, and every
  node merges a random member's table every walk, so that all agree on who is a member;
- a graceful leave: the leaving node announces it; a left node is never a member again unless it
  joins anew (it is then seen by a walk after the announcement).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from funnelkvs.replication.ringview import NodeRef, RingView

#: How long a node whose replica call failed counts as down before it is tried again, in seconds.
SUSPECT_SECONDS = 1.0
#: How long membership walks must miss a member before it counts as down, in seconds.
ABSENT_SECONDS = 1.0


class Members:
    """The member table of one node (see the module docstring)."""

    def __init__(self, me: NodeRef) -> None:
        self.me = me
        self._members: dict[int, NodeRef] = {me.node_id: me}
        #: Members the last walk did not reach.
        self._unreached: set[int] = set()
        #: Member id -> loop time since which complete walks have missed it.
        self._absent_since: dict[int, float] = {}
        #: Node id -> loop time until which it counts as down after a failed call.
        self._suspected: dict[int, float] = {}
        #: Nodes that announced they left, with the address they had.
        self.left: dict[int, str] = {}
        #: Bumped whenever the member set changes (preference lists depend on it; liveness does not).
        self.epoch = 0
        self._view = RingView((me,))
        #: How many times a member that was down has been reached again, and how many times a member
        #: was found down (repair compares at once after either).
        self.returned = 0
        self.departed = 0
        #: The members' ids in ring order (for bisect on the request path).
        self.ids: list[int] = [me.node_id]

    # --- queries -------------------------------------------------------------------------------------

    @property
    def view(self) -> RingView:
        """Every member, up or down, in ring order."""
        return self._view

    def get(self, node_id: int) -> NodeRef | None:
        """The member with ``node_id`` (None: not a member)."""
        return self._members.get(node_id)

    def __len__(self) -> int:
        return len(self._members)

    def is_up(self, node_id: int, now: float) -> bool:
        if node_id == self.me.node_id:
            return True
        if node_id in self._unreached:
            return False
        until = self._suspected.get(node_id)
        if until is None:
            return True
        if now >= until:
            del self._suspected[node_id]
            return True
        return False

    def up_count(self, now: float) -> int:
        return sum(1 for node_id in self._members if self.is_up(node_id, now))

    def down(self, now: float) -> list[NodeRef]:
        return [node for node_id, node in self._members.items() if not self.is_up(node_id, now)]

    # --- changes -------------------------------------------------------------------------------------

    def saw(self, reached: Iterable[NodeRef], *, complete: bool, now: float | None = None) -> None:
        """A membership walk reached ``reached`` (``complete``: it went all the way round) at loop
        time ``now``. A member a complete walk missed counts as down only once walks have missed it
        for :data:`ABSENT_SECONDS` (None: at once): right after a failure successor lists are in flux,
        and a walk can skip a live node for a moment; taking it for down would send its copies to a
        fallback as well, a surplus copy that stays until the node is really away and back."""
        reached = list(reached)
        reached_ids = {node.node_id for node in reached}
        changed = False
        self.returned += len(self._unreached & reached_ids)
        for node in reached:
            changed |= self._add(node)
            self._suspected.pop(node.node_id, None)
            self._absent_since.pop(node.node_id, None)
        if complete:
            missed = [node_id for node_id in self._members if node_id not in reached_ids]
            unreached = set()
            for node_id in missed:
                since = self._absent_since.setdefault(node_id, -1.0 if now is None else now)
                if now is None or now - since >= ABSENT_SECONDS:
                    unreached.add(node_id)
            self.departed += len(unreached - self._unreached)
            self._unreached = unreached
        else:
            self._unreached -= reached_ids
        if changed:
            self._changed()

    def suspect(self, node_id: int, now: float) -> None:
        """A call to ``node_id`` failed: count it as down for a while."""
        if node_id != self.me.node_id and node_id in self._members:
            self._suspected[node_id] = now + SUSPECT_SECONDS

    def has_left(self, node_id: int, address: str) -> None:
        """``node_id`` left the ring gracefully: no longer a member."""
        if node_id == self.me.node_id:
            return
        self.left[node_id] = address
        if self._members.pop(node_id, None) is not None:
            self._unreached.discard(node_id)
            self._absent_since.pop(node_id, None)
            self._suspected.pop(node_id, None)
            self._changed()

    def _add(self, node: NodeRef) -> bool:
        known = self._members.get(node.node_id)
        if known is not None and known.address == node.address:
            return False
        if node.node_id in self.left and known is None:
            # Seen alive after it left: it joined again.
            del self.left[node.node_id]
        self._members[node.node_id] = node
        return True

    def _changed(self) -> None:
        self.epoch += 1
        self._view = RingView.of(self._members.values())
        self.ids = [node.node_id for node in self._view.nodes]

    @property
    def all_up(self) -> bool:
        """No member is known to be down (the common case: targets are the preference list)."""
        return not self._unreached and not self._suspected

    # --- gossip --------------------------------------------------------------------------------------

    def table(self) -> dict[str, Any]:
        """The MEMBERS answer: members and left nodes, as JSON-ready lists."""
        return {
            "members": [[f"{n.node_id:040x}", n.address] for n in self._view.nodes],
            "left": [[f"{node_id:040x}", address] for node_id, address in self.left.items()],
        }

    def merge(self, table: dict[str, Any]) -> None:
        """Take in another node's :meth:`table`: its left nodes leave, its members join (as down until
        a walk of ours reaches them). Raises ValueError/KeyError/TypeError on a malformed table."""
        left = [(int(node_id, 16), str(address)) for node_id, address in table["left"]]
        members = [NodeRef(int(node_id, 16), str(address)) for node_id, address in table["members"]]
        for node_id, address in left:
            if node_id not in self.left:
                self.has_left(node_id, address)
        changed = False
        for node in members:
            if node.node_id in self.left or node.node_id in self._members:
                continue
            self._members[node.node_id] = node
            self._unreached.add(node.node_id)
            changed = True
        if changed:
            self._changed()
