"""The successor list: the next ``r`` nodes clockwise, the structure Chord's correctness rests on.

Stoica et al. 2001, section 5.3 (successor lists); Zave 2017, section 4 (the corrected rules: a node
reconciles its list from its successor's, and correctness depends on successor lists only).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator

from funnelkvs.chord.ids import RING_SIZE
from funnelkvs.chord.node_ref import NodeRef

_MASK = RING_SIZE - 1
_NOTHING: frozenset[int] = frozenset()


def reconciled(
    owner: int,
    successor: NodeRef,
    successors_of_successor: Iterable[NodeRef],
    r: int,
    exclude: Container[int] = _NOTHING,
) -> tuple[NodeRef, ...]:
    """``[successor] + successors_of_successor``, as ``owner`` should hold it (Zave 2017, "reconcile").

    The copied entries stop at ``owner`` itself (a list that came round the whole ring) and keep only
    nodes strictly farther clockwise from ``owner`` than the entry before, so the result is distinct
    and in ring order from ``owner`` even when the successor's list is stale. Ids in ``exclude``
    (nodes known dead) are left out. At most ``r`` entries. ``successor`` must not be ``owner``.
    """
    result = [successor]
    last = (successor.node_id - owner) & _MASK
    for node in successors_of_successor:
        if len(result) >= r:
            break
        d = (node.node_id - owner) & _MASK
        if d == 0:
            break  # came round to the owner: everything after repeats the owner's own view
        if d <= last or node.node_id in exclude:
            continue
        result.append(node)
        last = d
    return tuple(result)


class SuccessorList:
    """The owner's successor list: distinct nodes in ring order from the owner, at most ``r`` long.

    It never holds the owner. Empty means the owner is alone: its successor is itself (the paper's
    ``create()``, section 4.4). The entries are an immutable tuple (``nodes``) so a reply can carry
    them without copying.
    """

    __slots__ = ("nodes", "owner", "r")

    def __init__(self, owner: NodeRef, r: int, nodes: tuple[NodeRef, ...] = ()) -> None:
        if r < 1:
            raise ValueError("a successor list holds at least one node (r >= 1)")
        self.owner = owner
        self.r = r
        self.nodes: tuple[NodeRef, ...] = ()
        if nodes:
            self.reconcile(nodes[0], nodes[1:])

    @property
    def successor(self) -> NodeRef:
        """The first entry, or the owner when the list is empty (alone on the ring)."""
        return self.nodes[0] if self.nodes else self.owner

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[NodeRef]:
        return iter(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return any(n.node_id == node_id for n in self.nodes)

    def reconcile(
        self,
        successor: NodeRef,
        successors_of_successor: Iterable[NodeRef],
        exclude: Container[int] = _NOTHING,
    ) -> bool:
        """Become ``[successor] + successors_of_successor`` (see :func:`reconciled`); True if it changed.

        A ``successor`` that is the owner empties the list (alone).
        """
        if successor.node_id == self.owner.node_id:
            new: tuple[NodeRef, ...] = ()
        else:
            new = reconciled(self.owner.node_id, successor, successors_of_successor, self.r, exclude)
        if new == self.nodes:
            return False
        self.nodes = new
        return True

    def remove(self, node_id: int) -> bool:
        """Drop the node with this id (found dead or gone); True if it was there. When it was the
        successor, the next entry becomes the successor (section 5.3: "the first live entry")."""
        if not any(n.node_id == node_id for n in self.nodes):
            return False
        self.nodes = tuple(n for n in self.nodes if n.node_id != node_id)
        return True
