"""Lookups of every key from random live start nodes, walked with :meth:`Network.trace`.

A hop is one message to another node on the lookup's path, counted from the start node until the
lookup reaches the key's predecessor (the node whose successor owns the key): 0 when the start node's
successor owns it. A lookup fails when it ends without an answer or with an owner other than the
key's true successor among the live nodes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field

from funnelkvs.chord.invariants import true_successor
from funnelkvs.chord.routing import Lookup
from funnelkvs.sim.network import Network


@dataclass
class LookupResults:
    """What one pass of lookups measured."""

    lookups: int = 0
    failures: int = 0
    #: Failures of keys whose owner by the original ring is alive (only with ``alive_owners``).
    failures_live_keys: int = 0
    #: Hops of each successful lookup, routing with fingers and the successor list (the node's).
    hops: list[int] = field(default_factory=list)
    #: Hops of each successful lookup, routing with fingers only (the paper's).
    hops_fingers_only: list[int] = field(default_factory=list)


def _answer_is_right(walk: Lookup, owner: int) -> bool:
    return walk.successors is not None and bool(walk.successors) and walk.successors[0].node_id == owner


def measure_lookups(
    net: Network,
    keys: Sequence[int],
    rng: random.Random,
    *,
    fingers_only_too: bool = True,
    original_owners: Sequence[int] | None = None,
    progress: Callable[[str], None] | None = None,
    label: str = "lookups",
) -> LookupResults:
    """Look every key up once from a start node drawn from ``rng`` among the live nodes.

    With ``original_owners`` (each key's owner on the ring before a failure), a failure of a key
    whose original owner is still live also counts in ``failures_live_keys``. With
    ``fingers_only_too``, each key is also walked with fingers only (for hop counts). ``progress``
    is told how many keys are done, as text starting with ``label``.
    """
    live_ids = sorted(net.live)
    results = LookupResults()
    alive: Container[int] = net.live
    for index, key in enumerate(keys):
        if progress is not None and index % 4096 == 0:
            progress(f"{label}: {index}/{len(keys)}")
        start = rng.choice(live_ids)
        owner = true_successor(live_ids, key)
        results.lookups += 1
        walk = net.trace(start, key)
        if _answer_is_right(walk, owner):
            results.hops.append(walk.hops)
        else:
            results.failures += 1
            if original_owners is not None and original_owners[index] in alive:
                results.failures_live_keys += 1
        if fingers_only_too:
            paper = net.trace(start, key, fingers_only=True)
            if _answer_is_right(paper, owner):
                results.hops_fingers_only.append(paper.hops)
    return results
