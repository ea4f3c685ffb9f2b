"""The simulator's results at sizes too large for ``make test`` (issue 8), run by ``make soak``.

Each test reproduces one of the paper's measurements (Stoica et al. 2001, section 6) with the same code
the node runs; docs/chord.md has the tables. Several minutes in all, most of it the 16384-node ring.
"""

from __future__ import annotations

import math

import pytest

from funnelkvs.sim.experiment import SimSettings, run

pytestmark = pytest.mark.soak

PROPERTIES = {"at_least_one_ring", "at_most_one_ring", "ordered_ring", "ordered_successor_lists"}
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("nodes", [64, 256, 1024, 4096])
def test_fingers_only_hops_within_5_percent_of_half_log2_n(nodes: int) -> None:
    """Paper 6.3, Fig. 10: the mean path length with fingers only is about ½·log2 N; averaged over
    three seeds it lies within 5 %. Routing through the successor list too only shortens paths,
    and the 1st and 99th percentiles stay within log2 N + 1."""
    results = [run(SimSettings(nodes=nodes, seed=seed)) for seed in SEEDS]
    expected = 0.5 * math.log2(nodes)
    fingers_only = sum(r["mean_hops_fingers_only"] for r in results) / len(results)
    assert abs(fingers_only - expected) <= 0.05 * expected, (nodes, fingers_only)
    for result in results:
        assert result["lookup_failures"] == 0
        assert result["mean_hops"] <= result["mean_hops_fingers_only"]
        assert 0 <= result["p1_hops"] <= result["p99_hops"] <= math.log2(nodes) + 1


def test_16384_nodes_hops_within_5_percent() -> None:
    result = run(SimSettings(nodes=16384, seed=0))
    expected = 0.5 * math.log2(16384)
    assert abs(result["mean_hops_fingers_only"] - expected) <= 0.05 * expected, result
    assert result["mean_hops"] <= result["mean_hops_fingers_only"]
    assert result["lookup_failures"] == 0
    assert result["properties"] == dict.fromkeys(PROPERTIES, True)


def test_p99_hops_grow_with_log_n() -> None:
    """Fig. 10: the 99th percentile grows with log2 N, by about half a hop per doubling."""
    p99 = {n: run(SimSettings(nodes=n, keys=20 * n, seed=3))["p99_hops"] for n in (64, 4096)}
    assert p99[64] < p99[4096] <= p99[64] + math.log2(4096 / 64)


def test_half_of_1024_nodes_failing_at_once_loses_no_live_key() -> None:
    """Paper 6.4, Fig. 11: with successor lists of 2·⌈log2 N⌉ every key whose node is alive is still
    found after half the nodes fail at once, and the ring is valid once stabilized."""
    for seed in SEEDS:
        result = run(SimSettings(nodes=1024, seed=seed, fail_fraction=0.5))
        after = result["after_failure"]
        assert after["failed_nodes"] == 512
        assert after["lookup_failures_live_keys"] == 0, (seed, after)
        assert result["properties"] == dict.fromkeys(PROPERTIES, True), seed


@pytest.mark.parametrize("rate", [1, 3])
def test_churn_at_1024_nodes(rate: int) -> None:
    """Paper 6.5 (lookups during stabilization): without retries a few percent of lookups fail (the
    paper: about 3 % at three events per period), more at the higher rate; with retries none."""
    result = run(SimSettings(nodes=1024, seed=0, churn=200, churn_rate=rate))
    churn = result["during_churn"]
    assert churn["lookup_failures"] == 0, churn
    share = churn["lookup_failures_without_retries"] / churn["lookups"]
    assert 0 < share < 0.02 * rate, churn
    assert result["properties"] == dict.fromkeys(PROPERTIES, True)


def test_virtual_nodes_bring_the_99th_percentile_towards_the_mean() -> None:
    """Paper 6.2, Fig. 9: with 100 keys per node the 99th percentile of keys per node falls from
    several times the mean without virtual nodes to under twice it with 20 per node."""
    ratio = {}
    for v in (1, 20):
        load = run(SimSettings(nodes=256, seed=0, virtual_nodes=v))["keys_per_node"]
        ratio[v] = load["p99"] / load["mean"]
    assert ratio[1] > 3.5, ratio
    assert ratio[20] < 2.0, ratio
