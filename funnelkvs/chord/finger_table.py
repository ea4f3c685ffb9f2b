"""The finger table: shortcuts across the ring that make lookups take O(log N) hops.

Stoica et al. 2001, section 4.3 (Table 1): finger ``i`` (here 0-based, ``i = 0 .. 159``) is
``successor(n + 2**i)``; finger 0 is the successor. Fingers only speed lookups up; a wrong or dead
finger costs hops, never correctness (Zave 2017). They are refreshed one lookup at a time by
``fix_fingers`` (section 4.4, Figure 7), which starts with the next finger still to fix.
"""

from __future__ import annotations

from funnelkvs.chord.ids import RING_BITS, RING_SIZE
from funnelkvs.chord.node_ref import NodeRef

_MASK = RING_SIZE - 1


def finger_start(owner: int, i: int) -> int:
    """``(owner + 2**i) mod 2**160``: the first identifier finger ``i`` is responsible for."""
    return (owner + (1 << i)) & _MASK


class FingerTable:
    """``RING_BITS`` fingers of ``owner``, each a :class:`NodeRef` or None (not known yet)."""

    __slots__ = ("_distinct", "next_to_fix", "nodes", "owner")

    def __init__(self, owner: NodeRef) -> None:
        self.owner = owner
        self.nodes: list[NodeRef | None] = [None] * RING_BITS
        #: The finger that the next ``fix_fingers`` round refreshes.
        self.next_to_fix = 0
        self._distinct: tuple[NodeRef, ...] | None = ()

    def start(self, i: int) -> int:
        return finger_start(self.owner.node_id, i)

    def distinct(self) -> tuple[NodeRef, ...]:
        """The distinct nodes in the table, in finger order (so in ring order from the owner)."""
        if self._distinct is None:
            seen: dict[int, NodeRef] = {}
            for node in self.nodes:
                if node is not None and node.node_id not in seen:
                    seen[node.node_id] = node
            self._distinct = tuple(seen.values())
        return self._distinct

    def set_from(self, i: int, node: NodeRef) -> tuple[int, bool]:
        """Set finger ``i`` to ``node`` = successor(start(i)), and every following finger whose start
        also lies in ``(owner, node]`` (their successor is the same node).

        :returns: the index of the first finger not set (0 after the last one: the table wraps) and
            whether any finger changed.
        """
        reach = (node.node_id - self.owner.node_id) & _MASK
        # Finger j's start is owner + 2**j: the node covers it while 2**j <= reach.
        end = min(RING_BITS, reach.bit_length()) if reach else RING_BITS
        if i >= end:
            return (i + 1) % RING_BITS, False  # a stale answer that does not cover start(i)
        changed = False
        nodes = self.nodes
        while i < end:
            current = nodes[i]
            if current is not node and current != node:
                nodes[i] = node
                changed = True
            i += 1
        if changed:
            self._distinct = None
        return (i if i < RING_BITS else 0), changed

    def remove(self, node_id: int) -> bool:
        """Forget a node (dead or gone) in every finger that points at it; True if any did."""
        changed = False
        nodes = self.nodes
        for i, node in enumerate(nodes):
            if node is not None and node.node_id == node_id:
                nodes[i] = None
                changed = True
        if changed:
            self._distinct = None
        return changed

    def clear(self) -> None:
        self.nodes = [None] * RING_BITS
        self.next_to_fix = 0
        self._distinct = ()
