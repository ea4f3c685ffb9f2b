"""One simulator run (``funnelkvs sim``): the phases in order, the results as a JSON-ready dict.

1. Build: ``nodes`` nodes join through the protocol and stabilize until quiescent
   (:mod:`funnelkvs.sim.build`); every key is looked up from a random start node, routing with the
   successor list and with fingers only (:mod:`funnelkvs.sim.lookups`); keys per node.
2. With ``fail_fraction`` > 0: that fraction of the nodes fail at once, stabilization runs until
   quiescent, every key is looked up again.
3. Zave's properties over the live nodes at the end.

Everything random comes from one ``random.Random(seed)``, so a run depends only on its settings.
Not yet: churn (phase 3 of issue 8) and virtual nodes.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

from funnelkvs.chord import invariants as inv
from funnelkvs.keyspace import RING_BITS
from funnelkvs.sim.build import build_ring, quiet_rounds_for
from funnelkvs.sim.load import keys_per_node, owners
from funnelkvs.sim.lookups import measure_lookups
from funnelkvs.sim.network import Network
from funnelkvs.sim.stats import mean, percentile


def default_successors(nodes: int) -> int:
    """2·⌈log2 N⌉ (at least 1)."""
    return max(1, 2 * math.ceil(math.log2(nodes))) if nodes > 1 else 1


@dataclass(frozen=True)
class SimSettings:
    nodes: int
    keys: int | None = None  # None: 100 x nodes
    seed: int = 0
    successors: int | None = None  # None: default_successors(nodes)
    fail_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"--nodes must be at least 1, got {self.nodes}")
        if self.keys is not None and self.keys < 1:
            raise ValueError(f"--keys must be at least 1, got {self.keys}")
        if self.successors is not None and self.successors < 1:
            raise ValueError(f"--successors must be at least 1, got {self.successors}")
        if not 0.0 <= self.fail_fraction < 1.0:
            raise ValueError(f"--fail-fraction must be at least 0 and below 1, got {self.fail_fraction}")

    @property
    def key_count(self) -> int:
        return self.keys if self.keys is not None else 100 * self.nodes

    @property
    def successor_count(self) -> int:
        return self.successors if self.successors is not None else default_successors(self.nodes)


def random_keys(rng: random.Random, count: int) -> list[int]:
    return [rng.getrandbits(RING_BITS) for _ in range(count)]


def properties(net: Network) -> dict[str, bool]:
    """Zave's properties over the live nodes."""
    live = net.live
    return {
        "at_least_one_ring": inv.at_least_one_ring(live),
        "at_most_one_ring": inv.at_most_one_ring(live),
        "ordered_ring": inv.ordered_ring(live),
        "ordered_successor_lists": inv.ordered_successor_lists(live),
    }


def fail_at_once(net: Network, fraction: float, rng: random.Random) -> list[int]:
    """``fraction`` of the live nodes (rounded down) crash at once; their ids."""
    live = sorted(net.live)
    victims = rng.sample(live, math.floor(fraction * len(live)))
    for ident in victims:
        net.fail(ident)
    return victims


def run(settings: SimSettings) -> dict[str, Any]:
    """Run every phase; the results (the JSON of ``funnelkvs sim --json``)."""
    began = time.perf_counter()
    rng = random.Random(settings.seed)
    r = settings.successor_count
    net = build_ring(settings.nodes, r, rng)
    keys = random_keys(rng, settings.key_count)

    first = measure_lookups(net, keys, rng)
    load = keys_per_node(net.live, keys)
    result: dict[str, Any] = {
        "nodes": settings.nodes,
        "keys": len(keys),
        "seed": settings.seed,
        "successors": r,
        "mean_hops": mean(first.hops),
        "mean_hops_fingers_only": mean(first.hops_fingers_only),
        "p1_hops": percentile(first.hops, 1) if first.hops else None,
        "p99_hops": percentile(first.hops, 99) if first.hops else None,
        "keys_per_node": {
            "mean": mean(load),
            "p1": percentile(load, 1),
            "p99": percentile(load, 99),
            "max": max(load),
        },
        "lookups": first.lookups,
        "lookup_failures": first.failures,
    }

    if settings.fail_fraction > 0:
        original = owners(net.live, keys)
        failed = fail_at_once(net, settings.fail_fraction, rng)
        rounds = net.stabilize_until_quiescent(quiet_rounds=quiet_rounds_for(len(net.live)))
        after = measure_lookups(net, keys, rng, fingers_only_too=False, original_owners=original)
        result["after_failure"] = {
            "failed_nodes": len(failed),
            "stabilization_rounds": rounds,
            "lookups": after.lookups,
            "lookup_failures": after.failures,
            "lookup_failures_live_keys": after.failures_live_keys,
            "mean_hops": mean(after.hops),
        }

    result["properties"] = properties(net)
    result["seconds"] = round(time.perf_counter() - began, 3)
    return result
