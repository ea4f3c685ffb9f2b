"""What a replication strategy sees of the ring: the live nodes this node knows, in ring order."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise

from funnelkvs.keyspace import RING_SIZE


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node as other nodes address it."""

    #: The node's ring position, in ``[0, 2**160)``.
    node_id: int
    #: ``host:port``.
    address: str


@dataclass(frozen=True, slots=True)
class RingView:
    """Live nodes sorted by ring position, ids distinct.

    It is a *view*: in Chord a node knows its successor list and fingers, not the whole ring, so a
    preference list computed from it is only right for positions the view covers (a node's own range
    ``(predecessor, self]`` when the view is the node itself plus its successor list).
    """

    nodes: tuple[NodeRef, ...]

    def __post_init__(self) -> None:
        ids = [node.node_id for node in self.nodes]
        if any(not 0 <= i < RING_SIZE for i in ids):
            raise ValueError("node ids must lie in [0, 2**160)")
        if any(a >= b for a, b in pairwise(ids)):
            raise ValueError("ring view nodes must be sorted by node_id with distinct ids (use RingView.of)")

    @classmethod
    def of(cls, nodes: Iterable[NodeRef]) -> RingView:
        """A view of ``nodes`` in any order; a repeated id (a successor list that wrapped round a small
        ring) keeps its first entry."""
        by_id: dict[int, NodeRef] = {}
        for node in nodes:
            by_id.setdefault(node.node_id, node)
        return cls(tuple(sorted(by_id.values(), key=lambda node: node.node_id)))

    def __len__(self) -> int:
        return len(self.nodes)

    def successor(self, position: int) -> NodeRef | None:
        """The first node at or after ``position`` clockwise (Chord's ``successor(k)``); None when empty."""
        return next(self.clockwise(position), None)

    def clockwise(self, position: int) -> Iterator[NodeRef]:
        """Every node once, starting at the successor of ``position`` and going round the ring."""
        if not self.nodes:
            return
        start = bisect_left(self.nodes, position % RING_SIZE, key=lambda node: node.node_id)
        count = len(self.nodes)
        for offset in range(count):
            yield self.nodes[(start + offset) % count]
