"""One simulator run (``funnelkvs sim``): the phases in order, the results as a JSON-ready dict.

1. Build: ``nodes`` hosts, each running ``virtual_nodes`` Chord nodes, join through the protocol and
   stabilize until quiescent (:mod:`funnelkvs.sim.build`); every key is looked up from a random
   start node, routing with the successor list and with fingers only (:mod:`funnelkvs.sim.lookups`);
   keys per host (Stoica et al. 2001, 6.2-6.3, Fig. 8-10).
2. With ``fail_fraction`` > 0: that fraction of the hosts fail at once, stabilization runs until
   quiescent, every key is looked up again (paper 6.4, Fig. 11).
3. With ``churn`` > 0: that many joins or failures, ``churn_rate`` per stabilization period, with
   every key looked up meanwhile (:mod:`funnelkvs.sim.churn`, paper 6.5), then stabilization until
   quiescent.
4. Zave's properties over the live nodes at the end (Zave 2017 §3).

Everything random comes from one ``random.Random(seed)``, so a run depends only on its settings.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from funnelkvs.chord import invariants as inv
from funnelkvs.keyspace import RING_BITS
from funnelkvs.sim.build import build_from_ids, quiet_rounds_for
from funnelkvs.sim.churn import run_churn
from funnelkvs.sim.hosts import Hosts
from funnelkvs.sim.load import owners
from funnelkvs.sim.lookups import measure_lookups
from funnelkvs.sim.network import Network
from funnelkvs.sim.stats import mean, percentile

Progress = Callable[[str], None]


def default_successors(nodes: int) -> int:
    """2·⌈log2 N⌉ (at least 1)."""
    return max(1, 2 * math.ceil(math.log2(nodes))) if nodes > 1 else 1


@dataclass(frozen=True)
class SimSettings:
    """One run's settings (the options of ``funnelkvs sim``)."""

    #: Hosts (physical nodes) on the ring at the start.
    nodes: int
    keys: int | None = None  # None: 100 x nodes
    seed: int = 0
    successors: int | None = None  # None: default_successors(nodes x virtual_nodes)
    fail_fraction: float = 0.0
    #: Join-or-fail events in phase 3 (0: no churn phase).
    churn: int = 0
    #: Churn events per stabilization period.
    churn_rate: float = 1.0
    #: Chord nodes per host (V).
    virtual_nodes: int = 1

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"--nodes must be at least 1, got {self.nodes}")
        if self.keys is not None and self.keys < 1:
            raise ValueError(f"--keys must be at least 1, got {self.keys}")
        if self.successors is not None and self.successors < 1:
            raise ValueError(f"--successors must be at least 1, got {self.successors}")
        if not 0.0 <= self.fail_fraction < 1.0:
            raise ValueError(f"--fail-fraction must be at least 0 and below 1, got {self.fail_fraction}")
        if self.churn < 0:
            raise ValueError(f"--churn must be at least 0, got {self.churn}")
        if not 0.0 < self.churn_rate <= 1000.0:
            raise ValueError(f"--churn-rate must be above 0 and at most 1000, got {self.churn_rate}")
        if self.virtual_nodes < 1:
            raise ValueError(f"--virtual-nodes must be at least 1, got {self.virtual_nodes}")

    @property
    def key_count(self) -> int:
        return self.keys if self.keys is not None else 100 * self.nodes

    @property
    def successor_count(self) -> int:
        if self.successors is not None:
            return self.successors
        return default_successors(self.nodes * self.virtual_nodes)


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


def fail_at_once(net: Network, hosts: Hosts, fraction: float, rng: random.Random) -> list[int]:
    """``fraction`` of the hosts (rounded down) crash at once, each with all its Chord nodes; the
    failed Chord ids."""
    victims = rng.sample(hosts.numbers(), math.floor(fraction * len(hosts)))
    failed: list[int] = []
    for host in victims:
        for ident in hosts.remove(host):
            net.fail(ident)
            failed.append(ident)
    return failed


def keys_per_host(net: Network, hosts: Hosts, keys: Sequence[int]) -> list[int]:
    """Keys each host owns (the sum over its Chord nodes' ranges), one count per host."""
    return hosts.per_host(Counter(owners(net.live, keys)))


def run(settings: SimSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Run every phase; the results (the JSON of ``funnelkvs sim --json``). ``progress`` is told
    what the run is doing, as short text, now and then."""
    began = time.perf_counter()
    rng = random.Random(settings.seed)
    r = settings.successor_count
    hosts = Hosts(settings.virtual_nodes)
    net = build_from_ids(hosts.add_many(settings.nodes, rng), r, rng, progress)
    keys = random_keys(rng, settings.key_count)

    first = measure_lookups(net, keys, rng, progress=progress, label="lookups")
    load = keys_per_host(net, hosts, keys)
    result: dict[str, Any] = {
        "nodes": settings.nodes,
        "virtual_nodes": settings.virtual_nodes,
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
        failed = fail_at_once(net, hosts, settings.fail_fraction, rng)
        if progress is not None:
            progress(f"stabilizing after {len(failed)} nodes failed")
        rounds = net.stabilize_until_quiescent(quiet_rounds=quiet_rounds_for(len(net.live)))
        after = measure_lookups(
            net,
            keys,
            rng,
            fingers_only_too=False,
            original_owners=original,
            progress=progress,
            label="lookups after the failure",
        )
        result["after_failure"] = {
            "failed_nodes": len(failed) // settings.virtual_nodes,
            "stabilization_rounds": rounds,
            "lookups": after.lookups,
            "lookup_failures": after.failures,
            "lookup_failures_live_keys": after.failures_live_keys,
            "mean_hops": mean(after.hops),
        }

    if settings.churn > 0:
        churn = run_churn(
            net, hosts, keys, rng, settings.churn, events_per_period=settings.churn_rate, progress=progress
        )
        if progress is not None:
            progress("stabilizing after the churn")
        rounds = net.stabilize_until_quiescent(quiet_rounds=quiet_rounds_for(len(net.live)))
        result["during_churn"] = {
            "events": churn.events,
            "joins": churn.joins,
            "failures": churn.failures,
            "events_per_period": settings.churn_rate,
            "periods": churn.periods,
            "lookups": churn.lookups,
            "lookup_failures": churn.lookup_failures,
            "lookup_failures_without_retries": churn.lookup_failures_without_retries,
            "retried_later": churn.retried_later,
            "mean_hops": mean(churn.hops),
            "nodes_after": len(hosts),
            "stabilization_rounds": rounds,
        }

    result["properties"] = properties(net)
    result["seconds"] = round(time.perf_counter() - began, 3)
    return result
