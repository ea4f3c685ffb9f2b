"""Load balance: how many keys each node owns (paper 6.1), by the live ring's ids."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from funnelkvs.chord.invariants import true_successor


def owners(node_ids: Iterable[int], keys: Sequence[int]) -> list[int]:
    """Each key's owner: the first node id at or after it clockwise."""
    ordered = sorted(node_ids)
    return [true_successor(ordered, key) for key in keys]


def keys_per_node(node_ids: Iterable[int], keys: Sequence[int]) -> list[int]:
    """The number of keys each node owns, one count per node (nodes owning none count 0)."""
    ids = list(node_ids)
    counts = Counter(owners(ids, keys))
    return [counts.get(ident, 0) for ident in ids]
