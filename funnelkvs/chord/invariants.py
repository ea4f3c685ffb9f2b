"""Zave's correctness properties of a Chord ring, checked over the live nodes' states.

Zave, "Reasoning about identifier spaces: How to make Chord correct" (IEEE TSE 2017), section 3.
A node's *best successor* is the first entry of its successor list that is live (the node itself
when its list is empty: a ring of one). Following best successors from any node ends in a cycle;
the cycles are the *rings*, the other nodes are *appendages*.

- AtLeastOneRing: some cycle exists (a node whose list has no live entry has no best successor).
- AtMostOneRing: from every ring member, every other ring member is reachable.
- OrderedRing: the ring goes round the identifier circle exactly once (ids in order).
- ConnectedAppendages: every live node reaches the ring.
- OrderedSuccessorLists: in every live node's list, entries are in ring order from the node.

Each check returns a bool; :func:`explain` returns the first violation as text (for test messages).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from funnelkvs.chord.ids import RING_SIZE, distance
from funnelkvs.chord.node_ref import NodeRef


class RingMember(Protocol):
    """What the checks read of a node (a :class:`~funnelkvs.chord.node_state.ChordNode` fits)."""

    @property
    def me(self) -> NodeRef: ...

    @property
    def successors(self) -> tuple[NodeRef, ...]: ...


Live = Mapping[int, RingMember]


def best_successor(node: RingMember, live: Live) -> int | None:
    """The id of ``node``'s first live successor-list entry; its own id when the list is empty;
    None when every entry is dead."""
    if not node.successors:
        return node.me.node_id
    for s in node.successors:
        if s.node_id in live:
            return s.node_id
    return None


def _successor_map(live: Live) -> dict[int, int | None]:
    return {i: best_successor(n, live) for i, n in live.items()}


def rings(live: Live) -> list[list[int]]:
    """Every cycle of best successors, each as the ids in cycle order from its smallest id."""
    succ = _successor_map(live)
    state: dict[int, int] = {}  # 1: on the current walk, 2: done
    cycles: list[list[int]] = []
    for start in live:
        walk: list[int] = []
        x: int | None = start
        while x is not None and x not in state:
            state[x] = 1
            walk.append(x)
            x = succ[x]
        if x is not None and state.get(x) == 1:
            cycle = walk[walk.index(x) :]
            low = cycle.index(min(cycle))
            cycles.append(cycle[low:] + cycle[:low])
        for w in walk:
            state[w] = 2
    return cycles


def at_least_one_ring(live: Live) -> bool:
    return bool(rings(live))


def at_most_one_ring(live: Live) -> bool:
    return len(rings(live)) <= 1


def ordered_ring(live: Live) -> bool:
    """Every ring goes round the circle exactly once: the clockwise gaps between consecutive members
    add up to one circumference (a ring of one node is ordered)."""
    for cycle in rings(live):
        if len(cycle) == 1:
            continue
        total = sum(distance(a, b) for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True))
        if total != RING_SIZE:
            return False
    return True


def connected_appendages(live: Live) -> bool:
    """Every live node's chain of best successors reaches a ring (with at most one ring, *the* ring)."""
    cycles = rings(live)
    if len(cycles) != 1:
        return not live
    on_ring = set(cycles[0])
    succ = _successor_map(live)
    for start in live:
        seen: set[int] = set()
        x: int | None = start
        while x is not None and x not in on_ring and x not in seen:
            seen.add(x)
            x = succ[x]
        if x is None or x not in on_ring:
            return False
    return True


def ordered_successor_lists(live: Live) -> bool:
    """In every live node's list (dead entries included), each entry is strictly farther clockwise
    from the node than the one before, and the node is not in its own list."""
    return _unordered_list(live) is None


def _unordered_list(live: Live) -> int | None:
    for i, node in live.items():
        last = 0
        for s in node.successors:
            d = distance(i, s.node_id)
            if d <= last:
                return i
            last = d
    return None


def valid(live: Live) -> bool:
    """All of Zave's properties at once (her "valid" state, plus ordered successor lists)."""
    return explain(live) is None


def explain(live: Live) -> str | None:
    """The first property ``live`` violates, described for a test failure; None when all hold."""
    cycles = rings(live)
    if live and not cycles:
        return "AtLeastOneRing violated: no cycle of best successors"
    if len(cycles) > 1:
        return f"AtMostOneRing violated: {len(cycles)} rings, sizes {[len(c) for c in cycles]}"
    if not ordered_ring(live):
        return (
            f"OrderedRing violated: the ring of {len(cycles[0])} nodes goes round the circle more than once"
        )
    if live and not connected_appendages(live):
        return "ConnectedAppendages violated: some live node does not reach the ring"
    bad = _unordered_list(live)
    if bad is not None:
        lst = [f"{s.node_id:x}"[:8] for s in live[bad].successors]
        return f"OrderedSuccessorLists violated at {bad:x}"[:48] + f": {lst}"
    return None


def true_successor(sorted_ids: Sequence[int], key: int) -> int:
    """The first id at or after ``key`` clockwise among ``sorted_ids`` (ascending, not empty)."""
    i = bisect_left(sorted_ids, key)
    return sorted_ids[i] if i < len(sorted_ids) else sorted_ids[0]


def ideal_successors(live_ids: Iterable[int], r: int) -> dict[int, tuple[int, ...]]:
    """For each id, the next ``min(r, n - 1)`` live ids clockwise: the successor list of a correct,
    stable ring (for tests and the simulator)."""
    ids = sorted(live_ids)
    n = len(ids)
    k = min(r, n - 1)
    return {ids[j]: tuple(ids[(j + 1 + t) % n] for t in range(k)) for j in range(n)}
