"""The Chord simulator (issue 8): determinism, the hops band, mass failure, churn, virtual nodes,
the CLI. Larger sizes are in test_sim_soak.py (``make soak``)."""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import sys
from typing import Any

import pytest

from funnelkvs.chord import invariants as inv
from funnelkvs.cli import EXIT_OK, EXIT_USAGE
from funnelkvs.sim import progress as progress_module
from funnelkvs.sim.build import build_ring
from funnelkvs.sim.experiment import SimSettings, default_successors, run
from funnelkvs.sim.progress import ProgressLine
from funnelkvs.sim.stats import percentile

PROPERTIES = {"at_least_one_ring", "at_most_one_ring", "ordered_ring", "ordered_successor_lists"}


def without_seconds(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "seconds"}


def sim(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "funnelkvs.cli", "sim", *args], capture_output=True, timeout=60, check=False
    )


def test_same_seed_same_results_and_another_seed_other_ids() -> None:
    settings = SimSettings(nodes=48, keys=2000, seed=7, fail_fraction=0.25, churn=12, churn_rate=3)
    first, second = run(settings), run(settings)
    assert without_seconds(first) == without_seconds(second)
    assert first["during_churn"]["events"] == 12
    other = run(SimSettings(nodes=48, keys=2000, seed=8, fail_fraction=0.25, churn=12, churn_rate=3))
    assert without_seconds(other) != without_seconds(first)
    ids_7 = sorted(build_ring(48, 8, random.Random(7)).live)
    assert ids_7 == sorted(build_ring(48, 8, random.Random(7)).live)
    assert set(ids_7).isdisjoint(build_ring(48, 8, random.Random(8)).live)


def test_the_ring_built_through_joins_is_the_true_ring() -> None:
    n, r = 200, default_successors(200)
    net = build_ring(n, r, random.Random(3))
    assert len(net.live) == n
    ideal = inv.ideal_successors(net.live, r)
    for ident, node in net.live.items():
        assert tuple(s.node_id for s in node.successors) == ideal[ident]
    assert inv.explain(net.live) is None


def test_mean_hops_at_256_nodes_is_half_log2_n() -> None:
    """Paper 6.3 (Fig. 10): about ½·log2 N hops with fingers only, averaged over seeds; the
    successor list only shortens paths."""
    results = [run(SimSettings(nodes=256, seed=seed)) for seed in (0, 1, 2)]
    expected = 0.5 * math.log2(256)
    fingers_only = sum(r["mean_hops_fingers_only"] for r in results) / len(results)
    assert abs(fingers_only - expected) <= 0.05 * expected, fingers_only
    for result in results:
        assert result["mean_hops"] <= result["mean_hops_fingers_only"]
        assert result["lookups"] == 25_600 and result["lookup_failures"] == 0
        assert 0 <= result["p1_hops"] <= result["p99_hops"] <= math.log2(256) + 1
        assert result["keys_per_node"]["mean"] == 100.0
        assert result["successors"] == 16


def test_half_the_nodes_failing_at_once_loses_no_live_key() -> None:
    result = run(SimSettings(nodes=128, seed=2, fail_fraction=0.5))
    after = result["after_failure"]
    assert after["failed_nodes"] == 64
    assert after["lookups"] == 12_800
    assert after["lookup_failures_live_keys"] == 0, after
    assert result["properties"] == dict.fromkeys(PROPERTIES, True)


def test_churn_loses_no_lookup_with_retries_and_ends_in_a_valid_ring() -> None:
    """Paper 6.5: lookups during joins and failures. Without retries some meet a dead node or a
    stale successor; with retries through the successor list (and a later retry when the owner
    disowns the key) none fails, and the ring is valid once stabilized."""
    result = run(SimSettings(nodes=128, keys=6000, seed=5, churn=60, churn_rate=3))
    churn = result["during_churn"]
    assert churn["events"] == churn["joins"] + churn["failures"] == 60
    assert churn["joins"] > 0 and churn["failures"] > 0
    assert churn["periods"] == 20
    assert churn["lookups"] == 6000
    assert churn["lookup_failures"] == 0, churn
    assert churn["lookup_failures_without_retries"] > 0, churn
    assert churn["nodes_after"] == 128 + churn["joins"] - churn["failures"]
    assert result["properties"] == dict.fromkeys(PROPERTIES, True)


def test_virtual_nodes_count_keys_per_physical_node_and_spread_them() -> None:
    """Paper 6.2 (Fig. 9): V virtual nodes per node bring the 99th percentile of keys per node
    closer to the mean; the counts are per physical node."""
    plain = run(SimSettings(nodes=64, seed=6))
    virtual = run(SimSettings(nodes=64, seed=6, virtual_nodes=10, fail_fraction=0.5))
    assert virtual["virtual_nodes"] == 10
    assert virtual["successors"] == default_successors(640) == 20
    assert plain["keys_per_node"]["mean"] == virtual["keys_per_node"]["mean"] == 100.0
    assert virtual["keys_per_node"]["p99"] < plain["keys_per_node"]["p99"]
    assert virtual["keys_per_node"]["p1"] > plain["keys_per_node"]["p1"]
    assert virtual["after_failure"]["failed_nodes"] == 32
    assert virtual["after_failure"]["lookup_failures_live_keys"] == 0
    assert virtual["properties"] == dict.fromkeys(PROPERTIES, True)


def test_progress_line_only_on_a_terminal_and_erased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "SHOW_AFTER_S", 0.0)
    monkeypatch.setattr(progress_module, "EVERY_S", 0.0)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        line = ProgressLine(stream)
        line("lookups: 10/20")
        line.close()
    assert pipe.getvalue() == ""
    assert "lookups: 10/20" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\033[K")


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 1), percentile(values, 99), percentile(values, 100)) == (1, 99, 100)
    assert percentile([5], 1) == 5


def test_cli_prints_the_json_and_exits_0() -> None:
    result = sim(
        "--nodes", "32", "--keys", "500", "--seed", "4", "--fail-fraction", "0.5", "--churn", "8", "--json"
    )  # fmt: skip
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stderr == b""  # no progress line when standard error is not a terminal
    data = json.loads(result.stdout)
    for key in (
        "nodes",
        "successors",
        "mean_hops",
        "mean_hops_fingers_only",
        "p1_hops",
        "p99_hops",
        "keys_per_node",
        "lookups",
        "lookup_failures",
        "after_failure",
        "during_churn",
        "properties",
        "seconds",
    ):
        assert key in data, key
    assert set(data["keys_per_node"]) == {"mean", "p1", "p99", "max"}
    assert {"lookups", "lookup_failures", "lookup_failures_live_keys"} <= set(data["after_failure"])
    assert {"lookups", "lookup_failures", "lookup_failures_without_retries"} <= set(data["during_churn"])
    assert set(data["properties"]) == PROPERTIES
    assert (data["nodes"], data["successors"], data["lookups"]) == (32, 10, 500)


def test_cli_summary_without_json() -> None:
    result = sim("--nodes", "16", "--keys", "100")
    assert result.returncode == EXIT_OK, result.stderr
    text = result.stdout.decode()
    assert text.startswith("16 nodes, 100 keys") and "properties:" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


@pytest.mark.parametrize(
    "args",
    [
        ("--nodes", "0"),
        ("--nodes", "ten"),
        ("--nodes", "8", "--fail-fraction", "1.5"),
        ("--nodes", "8", "--fail-fraction", "-0.1"),
        ("--nodes", "8", "--keys", "0"),
        ("--nodes", "8", "--successors", "0"),
        ("--nodes", "8", "--churn", "-1"),
        ("--nodes", "8", "--churn", "many"),
        ("--nodes", "8", "--churn", "5", "--churn-rate", "0"),
        ("--nodes", "8", "--churn-rate", "nan"),
        ("--nodes", "8", "--virtual-nodes", "0"),
        ("--nodes", "8", "--virtual-nodes", "2.5"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    result = sim(*args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stdout == b""
    assert b"Traceback" not in result.stderr
    assert result.stderr.startswith(b"funnelkvs sim: ")
    assert result.stderr.count(b"\n") == 1 and result.stderr.endswith(b"\n"), result.stderr
