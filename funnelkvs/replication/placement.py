"""Where a key's copies go: the preference list over the members, and fallbacks for members that are
down (Dynamo 4.6, sloppy quorum and hinted handoff).

The preference list is the strategy's answer over every *member* (up or down, see
:mod:`funnelkvs.replication.members`), at most ``n`` nodes. Each member of it that is up gets the
copy itself; for each one that is down, the next live member clockwise that is not already chosen
stands in as a *fallback* and keeps the copy as a hint naming the member it stands in for.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import NamedTuple

from funnelkvs.replication.members import Members
from funnelkvs.replication.ringview import NodeRef
from funnelkvs.replication.strategy import ReplicationStrategy, SuccessorListStrategy


class Target(NamedTuple):
    """One copy of a key: the node that gets it, and the member it stands in for (None: itself)."""

    node: NodeRef
    hint_for: NodeRef | None


class Placement:
    """Preference lists and targets for one node's view of the members. ``n``: replication.factor."""

    def __init__(self, strategy: ReplicationStrategy, members: Members, n: int) -> None:
        self.strategy = strategy
        self.members = members
        self.n = n
        # For the built-in strategy a preference list depends only on the member whose arc holds the
        # position: cache it per arc (cleared when the member set changes).
        self._per_arc = type(strategy) is SuccessorListStrategy
        self._cache: dict[int, list[NodeRef]] = {}
        self._direct: dict[int, list[Target]] = {}
        self._epoch = -1

    @property
    def copies(self) -> int:
        """How many copies a key gets: ``n``, or every member of a smaller ring (membership, not
        liveness, caps it: a crash does not lower it)."""
        return min(self.n, len(self.members))

    def preference_list(self, position: int) -> list[NodeRef]:
        members = self.members
        if self._epoch != members.epoch:
            self._cache.clear()
            self._direct.clear()
            self._epoch = members.epoch
        if not self._per_arc:
            return self.strategy.preference_list(position, members.view, self.copies)
        ids = members.ids
        arc = bisect_left(ids, position)
        if arc == len(ids):
            arc = 0  # past the last member: the first one's arc (wrapping)
        cached = self._cache.get(arc)
        if cached is None:
            cached = self._cache[arc] = self.strategy.preference_list(position, members.view, self.copies)
            self._direct[arc] = [Target(node, None) for node in cached]
        return cached

    def targets(
        self, position: int, now: float, skip: Callable[[NodeRef], bool] | None = None
    ) -> list[Target]:
        """Who gets the key's copies now: each preference-list member that is up, and a fallback for
        each that is down (or for which ``skip`` says so). Fewer than the list when no live node is
        left to stand in."""
        preference = self.preference_list(position)
        members = self.members
        if skip is None and members.all_up and self._per_arc:
            # Everyone is up: the preference list itself (one cached list per arc).
            return self._direct[bisect_left(members.ids, position) % len(members.ids)]
        targets: list[Target] = []
        missing: list[NodeRef] = []
        for node in preference:
            if members.is_up(node.node_id, now) and (skip is None or not skip(node)):
                targets.append(Target(node, None))
            else:
                missing.append(node)
        if missing:
            targets += self.fallbacks(position, missing, now, {t.node.node_id for t in targets}, skip)
        return targets

    def fallbacks(
        self,
        position: int,
        missing: list[NodeRef],
        now: float,
        used: set[int],
        skip: Callable[[NodeRef], bool] | None = None,
    ) -> list[Target]:
        """A fallback for each of ``missing``: the next live members clockwise after the preference
        list, not in ``used`` (updated) nor a member of the list itself."""
        preference_ids = {node.node_id for node in self.preference_list(position)}
        chosen: list[Target] = []
        pending = list(missing)
        for node in self.members.view.clockwise(position):
            if not pending:
                break
            if node.node_id in preference_ids or node.node_id in used:
                continue
            if not self.members.is_up(node.node_id, now) or (skip is not None and skip(node)):
                continue
            used.add(node.node_id)
            chosen.append(Target(node, pending.pop(0)))
        return chosen
