"""Routing: the closest preceding node for a key, one lookup step, and the iterative lookup.

Stoica et al. 2001: ``find_successor`` and ``closest_preceding_node`` (section 4.3, Figure 4), made
iterative (the caller asks each hop in turn, section 4.3: "iterative style"), with the successor list
used for routing and timed-out hops retried through the next best node (section 5.3). Zave 2017:
correctness rests on the successor list; fingers only shorten the path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Container, Iterable

from funnelkvs.chord.ids import RING_SIZE, in_half_open
from funnelkvs.chord.messages import Found, NextHop
from funnelkvs.chord.node_ref import NodeRef

_MASK = RING_SIZE - 1
_NOTHING: frozenset[int] = frozenset()


class RoutingCandidates:
    """The nodes a node can route to (fingers, successor list), sorted by clockwise distance from
    the owner, so :meth:`closest_preceding` is a binary search rather than the paper's scan of all
    160 fingers. Immutable; the node rebuilds it when its fingers or successor list change."""

    __slots__ = ("distances", "nodes", "owner")

    def __init__(self, owner: int, nodes: Iterable[NodeRef | None]) -> None:
        by_distance: dict[int, NodeRef] = {}
        for node in nodes:
            if node is not None:
                d = (node.node_id - owner) & _MASK
                if d:
                    by_distance.setdefault(d, node)
        ordered = sorted(by_distance.items())
        self.owner = owner
        self.distances = tuple(d for d, _ in ordered)
        self.nodes = tuple(n for _, n in ordered)

    def closest_preceding(self, key: int, avoid: Container[int] = _NOTHING) -> NodeRef | None:
        """The candidate closest before ``key`` (strictly inside ``(owner, key)``), skipping ids in
        ``avoid``; None when there is none (paper Figure 4 would answer the owner itself)."""
        d_key = (key - self.owner) & _MASK or RING_SIZE
        i = bisect_left(self.distances, d_key) - 1
        nodes = self.nodes
        while i >= 0:
            node = nodes[i]
            if node.node_id not in avoid:
                return node
            i -= 1
        return None


def closest_preceding_node(
    owner: int,
    key: int,
    fingers: Iterable[NodeRef | None],
    successor_list: Iterable[NodeRef],
    avoid: Container[int] = _NOTHING,
    *,
    fingers_only: bool = False,
) -> NodeRef | None:
    """The node among ``fingers`` (and ``successor_list`` unless ``fingers_only``: the paper's
    routing, Figure 4) closest before ``key`` on the circle, strictly inside ``(owner, key)``,
    not in ``avoid``. None when no candidate precedes the key."""
    best: NodeRef | None = None
    best_d = 0
    d_key = (key - owner) & _MASK or RING_SIZE
    pool = list(fingers) if fingers_only else [*fingers, *successor_list]
    for node in pool:
        if node is None or node.node_id in avoid:
            continue
        d = (node.node_id - owner) & _MASK
        if best_d < d < d_key:
            best, best_d = node, d
    return best


def find_successor_step(
    me: NodeRef,
    successors: tuple[NodeRef, ...],
    candidates: RoutingCandidates,
    key: int,
    avoid: Collection[int] = _NOTHING,
) -> Found | NextHop:
    """One node's answer to "find the successor of ``key``" (paper Figure 4, one iteration).

    :class:`Found` when ``key`` lies in ``(me, s]`` for ``s`` the first successor not in ``avoid``
    (section 5.3: the first live entry of the successor list), with the successor list from ``s``;
    a node alone answers itself. Otherwise :class:`NextHop` with the closest preceding candidate.
    ``NextHop(me)`` means "I cannot route this": every candidate is in ``avoid``.
    """
    if not successors:
        return Found((me,))
    if avoid:
        successors = tuple(s for s in successors if s.node_id not in avoid)
        if not successors:
            return NextHop(me)
    if in_half_open(key, me.node_id, successors[0].node_id):
        return Found(successors)
    node = candidates.closest_preceding(key, avoid)
    return NextHop(me if node is None else node)


class Lookup:
    """An iterative lookup of ``key``'s successor: which node to ask next, given the answers.

    Start by asking :attr:`target` (the origin). Feed each answer to :meth:`on_answer` and each
    timed-out ask to :meth:`on_timeout`; both return the next node to ask, or None when the lookup
    is over (then :attr:`successors` holds the result, or is None if it failed). A hop that times
    out goes into :attr:`avoid` and the lookup asks the previous node again, which then routes
    around it (paper 5.3). A :class:`NextHop` that does not get closer to the key is treated the
    same way, so a lookup always ends; the driver also bounds the messages it sends.
    """

    __slots__ = (
        "avoid",
        "key",
        "local_origin",
        "lookup_id",
        "messages",
        "path",
        "payload",
        "purpose",
        "successors",
        "target",
    )

    def __init__(
        self,
        lookup_id: int,
        key: int,
        origin: NodeRef,
        *,
        local_origin: bool,
        purpose: int = 0,
        payload: object = None,
    ) -> None:
        self.lookup_id = lookup_id
        self.key = key
        #: The node being asked now.
        self.target = origin
        #: True when the origin is the node running the lookup (asking it costs no message).
        self.local_origin = local_origin
        #: The nodes that answered NextHop, in order: where to step back to after a timeout.
        self.path: list[NodeRef] = []
        self.avoid: set[int] = set()
        self.messages = 0
        self.successors: tuple[NodeRef, ...] | None = None
        #: The driver's tag for why it runs this lookup, and its data.
        self.purpose = purpose
        self.payload = payload

    @property
    def hops(self) -> int:
        """Remote nodes on the path so far, the current target included."""
        return len(self.path) + 1 - (1 if self.local_origin else 0)

    def on_answer(self, answer: Found | NextHop) -> NodeRef | None:
        target = self.target
        if isinstance(answer, Found):
            if answer.successors:
                self.successors = answer.successors
                return None
            node = target  # an empty answer is no answer: route around its sender
        else:
            node = answer.node
        if (
            node is target
            or node.node_id in self.avoid
            or ((self.key - node.node_id) & _MASK) >= ((self.key - target.node_id) & _MASK)
        ):
            # No progress from here: route around this node from the previous one.
            self.avoid.add(target.node_id)
            return self._step_back()
        self.path.append(target)
        self.target = node
        return node

    def on_timeout(self) -> NodeRef | None:
        self.avoid.add(self.target.node_id)
        return self._step_back()

    def _step_back(self) -> NodeRef | None:
        if not self.path:
            return None
        self.target = self.path.pop()
        return self.target
