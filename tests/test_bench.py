"""``funnelkvs bench``: the latency histogram, and short runs against a real node."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict

import pytest

from funnelkvs import Client
from funnelkvs.bench import (
    BenchSpec,
    LatencyHistogram,
    _Conn,
    _Requests,
    key_name,
    owner_router,
    run_bench,
    split,
)
from funnelkvs.cli import EXIT_UNREACHABLE, EXIT_USAGE
from funnelkvs.client.routing import RingView
from funnelkvs.errors import LocalProtocolError, NodeUnreachable
from funnelkvs.protocol import NEED_DATA, Op, Request, RequestDecoder
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


# --- measuring what it says (issue 6, kind 6) -------------------------------------------------------

#: Runs a command and prints the largest resident set (MB) of it and its descendants: the wrapper has
#: no other children, so RUSAGE_CHILDREN is theirs alone.
_MAX_RSS = """
import resource, subprocess, sys
result = subprocess.run(sys.argv[1:], capture_output=True)
sys.stderr.buffer.write(result.stderr)
print(result.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
print(result.stdout.decode())
"""


def _bench_with_max_rss(*args: str) -> tuple[int, int, dict[str, object]]:
    """``(exit status, max RSS in MB, JSON report or {})`` of a ``funnelkvs bench`` run."""
    result = subprocess.run(
        [sys.executable, "-c", _MAX_RSS, *funnelkvs_command(), "bench", "--json", *args],
        capture_output=True,
        timeout=120,
        check=False,
    )
    first, _, rest = result.stdout.decode().partition("\n")
    status, rss_mb = map(int, first.split())
    return status, rss_mb, json.loads(rest) if rest.strip() else {}


def test_memory_does_not_grow_with_the_key_space(node: NodeProcess) -> None:
    # Before: a PUT frame per key was built whatever the workload, about 1 GB here, inside the window.
    status, rss_mb, report = _bench_with_max_rss(
        "-s", node.address, "-w", "get", "--value-size", "100000", "-c", "2", "-p", "1",
        "--keys", "10000", "-t", "0.5", "--warmup", "0.1",
    )  # fmt: skip
    assert status == 0
    assert rss_mb < 150
    assert int(report["ops"]) > 0  # type: ignore[call-overload]


def test_megabyte_values_are_measured(node: NodeProcess) -> None:
    status, rss_mb, report = _bench_with_max_rss(
        "-s", node.address, "-w", "get", "--value-size", "1000000", "--keys", "100000",
        "-c", "2", "-p", "1", "-t", "0.5", "--warmup", "0.1",
    )  # fmt: skip
    assert status == 0 and int(report["ops"]) > 0  # type: ignore[call-overload]
    assert rss_mb < 150
    status, rss_mb, report = _bench_with_max_rss(
        "-s", node.address, "-w", "put", "--value-size", "1000000", "--keys", "8",
        "-c", "2", "-d", "2", "-p", "1", "-t", "0.5", "--warmup", "0.1",
    )  # fmt: skip
    assert status == 0 and int(report["ops"]) > 0 and report["errors"] == 0  # type: ignore[call-overload]
    assert rss_mb < 150


def test_populate_holds_a_bounded_batch(node_process: NodeProcess) -> None:
    status, rss_mb, report = _bench_with_max_rss(
        "-s", node_process.address, "--populate", "--keys", "150", "--value-size", "1000000",
        "-c", "1", "-p", "1", "-t", "0.3", "--warmup", "0",
    )  # fmt: skip
    assert status == 0 and report["not_found"] == 0
    assert rss_mb < 100


def test_requests_are_built_as_they_are_sent() -> None:
    spec = BenchSpec("127.0.0.1:1", workload="mix", keys=1000, value_size=300)
    requests = _Requests(spec)
    assert not any(isinstance(getattr(requests, name), list | dict) for name in requests.__slots__)
    out = bytearray()
    requests.append(out, 2000, random.Random(1).random)
    decoder = RequestDecoder(max_value_size=300)
    decoder.feed(bytes(out))
    seen = []
    while (request := decoder.next_event()) is not NEED_DATA:
        assert isinstance(request, Request)
        seen.append(request)
    assert len(seen) == 2000 and decoder.buffered == 0
    puts = [r for r in seen if r.op == Op.PUT]
    assert 100 < len(puts) < 300  # about 10 %
    assert all(r.value == b"v" * 300 for r in puts)
    assert all(r.value == b"" for r in seen if r.op == Op.GET)
    assert {r.key for r in seen} <= {key_name(i) for i in range(1000)}


@pytest.fixture(scope="module")
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    config = {"limits": {"max_value_size": "1KB", "max_key_size": 12}}
    with NodeProcess.start(tmp_path_factory.mktemp("small"), config=config) as process:
        yield process


@pytest.mark.parametrize("extra", [[], ["--populate"], ["-w", "put"]])
def test_values_over_the_node_limit_are_refused_up_front(small_node: NodeProcess, extra: list[str]) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*funnelkvs_command(), "bench", "-s", small_node.address, "--value-size", "2000", "-t", "5", *extra],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert time.monotonic() - started < 5
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr
    assert b"max_value_size 1000" in result.stderr


def test_run_bench_refuses_keys_and_values_over_the_limits(small_node: NodeProcess) -> None:
    with pytest.raises(LocalProtocolError, match="max_value_size 1000"):
        run_bench(BenchSpec(small_node.address, value_size=1001, duration=0.2), processes=1)
    with pytest.raises(LocalProtocolError, match="max_key_size 12"):
        run_bench(BenchSpec(small_node.address, value_size=1000, duration=0.2), processes=1)


def _children(pid: int) -> set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.add(int(entry))
    return children


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_ctrl_c_stops_every_worker_at_once(node: NodeProcess) -> None:
    process = subprocess.Popen(
        [*funnelkvs_command(), "bench", "-s", node.address, "-c", "4", "-p", "4", "-t", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while len(workers := _children(process.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 4
        time.sleep(1.0)  # under load
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130
        assert time.monotonic() - started < 2.0  # was 5 s per worker process
        assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
    finally:
        process.kill()
        process.communicate()


# --- through the smart client ------------------------------------------------------------------------


def test_routed_requests_go_to_their_owners_socket() -> None:
    ids = [2**158, 2**159, 3 * 2**158]
    route = owner_router(ids)
    view = RingView.of((node_id, f"127.0.0.1:{port}") for port, node_id in enumerate(ids, start=1))
    conns = [_Conn(None, None) for _ in ids]  # type: ignore[arg-type]  # no socket needed to fill
    requests = _Requests(BenchSpec("127.0.0.1:1", workload="mix", keys=500))
    requests.append_routed(conns, route, 3000, random.Random(2).random, at=7)
    total = 0
    for index, conn in enumerate(conns):
        decoder = RequestDecoder()
        decoder.feed(bytes(conn.out))
        keys = []
        while (request := decoder.next_event()) is not NEED_DATA:
            assert isinstance(request, Request)
            keys.append(request.key)
        assert keys and len(conn.sent_at) == len(keys) and set(conn.sent_at) == {7}
        assert {view.owner_of(key) for key in keys} == {view.members[index].address}
        total += len(keys)
    assert total == 3000


def test_smart_bench_on_a_ring(node_process_factory: Callable[..., NodeProcess]) -> None:
    first = node_process_factory()
    for i in range(2):
        node_process_factory(args=["--join", first.address], name=f"member{i}")
    deadline = time.monotonic() + 30
    with Client(first.address) as client:
        while True:
            view = client.refresh_view()
            if view is not None and len(view) == 3 and view.complete:
                break
            assert time.monotonic() < deadline, "the ring did not form"
            time.sleep(0.2)
    time.sleep(1.0)  # let predecessors settle too: a key asked too early would be forwarded, not lost
    spec = BenchSpec(
        first.address, connections=3, depth=4, workload="mix", keys=300, duration=0.8, warmup=0.1
    )
    smart = run_bench(BenchSpec(**{**asdict(spec), "smart": True}), processes=1, populate_first=True)
    assert smart.routed_members == 3
    assert smart.ops > 0 and smart.errors == 0 and smart.not_found == 0
    plain = run_bench(spec, processes=1)
    assert plain.routed_members == 0 and plain.ops > 0 and plain.errors == 0
    result = subprocess.run(
        [*funnelkvs_command(), "bench", "-s", first.address, "--smart", "-c", "2", "-k", "50", "-t", "0.5"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert b"straight to its key's owner, over 3 ring members" in result.stdout
