"""``funnelkvs bench``: the latency histogram, and short runs against a real node."""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Iterator

import pytest

from funnelkvs.bench import BenchSpec, LatencyHistogram, run_bench, split
from funnelkvs.cli import EXIT_UNREACHABLE, EXIT_USAGE
from funnelkvs.errors import NodeUnreachable
from funnelkvs.testing.cluster import NodeProcess, closed_port, funnelkvs_command


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with NodeProcess.start(tmp_path_factory.mktemp("node")) as process:
        yield process


def test_histogram_percentiles_match_sorted_samples() -> None:
    rng = random.Random(7)
    samples = [int(rng.lognormvariate(11, 1.2)) for _ in range(20_000)] + [0, 1, 255, 256, 10**12]
    hist = LatencyHistogram()
    for sample in samples:
        hist.record(sample)
    ordered = sorted(samples)
    for fraction in (0.0, 0.5, 0.9, 0.99, 0.999):
        exact = ordered[int(len(ordered) * fraction)]
        assert abs(hist.percentile(fraction) - exact) <= exact * 0.004 + 1
    assert hist.percentile(1.0) == hist.max_ns == 10**12
    assert hist.total == len(samples)
    assert hist.mean() == pytest.approx(sum(samples) / len(samples))


def test_histogram_merge_and_json_roundtrip() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    for v in range(1000, 2000):
        a.record(v)
    for v in range(5000, 6000):
        b.record(v)
    merged = LatencyHistogram.from_json(json.loads(json.dumps(a.to_json())))
    merged.merge(b)
    assert merged.total == 2000 and merged.max_ns == 5999
    assert 1980 <= merged.percentile(0.49) <= 2000
    assert 5000 <= merged.percentile(0.51) <= 5030
    assert LatencyHistogram().percentile(0.5) == 0


def test_split_shares_connections() -> None:
    assert list(split(5, 2)) == [(0, 3), (3, 2)]
    assert sum(count for _, count in split(50, 3)) == 50


def test_cli_get_run_with_populate(node: NodeProcess) -> None:
    result = subprocess.run(
        [
            *funnelkvs_command(),
            "bench",
            "-s",
            node.address,
            "--connections",
            "4",
            "--processes",
            "2",
            "--keys",
            "200",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--populate",
            "--json",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ops"] > 0 and report["ops_per_s"] > 0
    assert report["errors"] == 0 and report["not_found"] == 0  # populated: every GET hits
    assert 0 < report["p50_us"] <= report["p99_us"] <= report["p999_us"] <= report["max_us"]
    assert (report["connections"], report["processes"], report["workload"]) == (4, 2, "get")


def test_pipelined_mix_in_process(node: NodeProcess) -> None:
    spec = BenchSpec(node.address, connections=3, depth=8, workload="mix", keys=50, duration=0.7, warmup=0.1)
    report = run_bench(spec, processes=1)
    assert report.ops > 0 and report.errors == 0
    assert report.p50_us > 0


def test_unreachable_node_exits_3() -> None:
    result = subprocess.run(
        [*funnelkvs_command(), "bench", "-s", f"127.0.0.1:{closed_port()}", "--duration", "0.5"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_UNREACHABLE
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr


def test_run_bench_raises_when_unreachable() -> None:
    with pytest.raises(NodeUnreachable):
        run_bench(BenchSpec(f"127.0.0.1:{closed_port()}", connections=2, duration=0.2, warmup=0), processes=2)


def test_bad_options_exit_2() -> None:
    for args in (["--connections", "0"], ["--duration", "0"], ["--workload", "scan"], ["-s", "nope"]):
        result = subprocess.run(
            [*funnelkvs_command(), "bench", *args], capture_output=True, timeout=30, check=False
        )
        assert result.returncode == EXIT_USAGE, (args, result.stderr)
        assert b"Traceback" not in result.stderr
