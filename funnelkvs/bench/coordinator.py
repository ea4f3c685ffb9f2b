"""The coordinator: start the worker subprocesses, start them together, collect and merge their
reports, and stop them all in parallel (at the end, on a failure or on Ctrl-C)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, Final

from funnelkvs.bench.histogram import LatencyHistogram
from funnelkvs.bench.prepare import check_node_limits, populate
from funnelkvs.bench.routing import ring_members
from funnelkvs.bench.spec import BenchReport, BenchSpec
from funnelkvs.client.address import parse_addresses
from funnelkvs.errors import NodeUnreachable


def split(total: int, parts: int) -> Iterator[tuple[int, int]]:
    """``(first, count)`` for each of ``parts`` near-equal shares of ``total``."""
    first = 0
    for p in range(parts):
        count = total // parts + (1 if p < total % parts else 0)
        yield first, count
        first += count


class _WorkerProcess:
    """A worker subprocess and the JSON lines it writes on its stdout."""

    def __init__(
        self, spec: BenchSpec, first: int, count: int, members: list[list[str]] | None = None
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "funnelkvs.bench", "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._pending = b""
        job: dict[str, Any] = {"spec": asdict(spec), "first": first, "count": count}
        if members:
            job["members"] = members
        self.send(job)

    def send(self, message: dict[str, Any] | str) -> None:
        data = message if isinstance(message, str) else json.dumps(message)
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data.encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died; reading its report says so

    def receive(self, deadline: float) -> dict[str, Any]:
        """The next JSON line, or an ``error`` entry if the worker dies or stays silent past ``deadline``."""
        stdout = self.process.stdout
        assert stdout is not None
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([stdout], [], [], max(0.0, remaining))
            if not readable:
                return {"error": "a benchmark worker did not report in time"}
            chunk = stdout.read(65536)
            if not chunk:
                return {"error": f"a benchmark worker exited ({self.process.wait()}) without a report"}
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def close_stdin(self) -> None:
        """End its job: a worker still waiting for ``go`` exits."""
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass


#: How long finished workers get to exit on their own before they are killed.
_STOP_GRACE_S: Final = 5.0


def stop_workers(workers: list[_WorkerProcess], *, at_once: bool) -> None:
    """Stop every worker, all in parallel, so stopping takes one grace period however many there
    are. ``at_once``: terminate them now (Ctrl-C, or a failure) instead of letting them finish."""
    for worker in workers:
        worker.close_stdin()
        if at_once and worker.process.poll() is None:
            worker.process.terminate()
    deadline = time.monotonic() + _STOP_GRACE_S
    for worker in workers:
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
    for worker in workers:
        worker.process.wait()
        if worker.process.stdout is not None:
            worker.process.stdout.close()


def run_bench(spec: BenchSpec, processes: int | None = None, *, populate_first: bool = False) -> BenchReport:
    """Run the benchmark: check the spec against the nodes' limits (:class:`LocalProtocolError`),
    :func:`populate` first when asked, then measure. Raises :class:`NodeUnreachable` when a node cannot
    be reached or is lost. With ``spec.smart`` the ring view is fetched first and requests are routed
    to their owners (``routed_members`` in the report says over how many nodes)."""
    spec.validate()
    members = ring_members(spec) if spec.smart else None
    check_node_limits(spec, [parse_addresses(address)[0] for _, address in members] if members else None)
    if populate_first:
        populate(spec)
    processes = max(1, min(processes or os.cpu_count() or 1, spec.connections))
    workers: list[_WorkerProcess] = []
    finished = False
    try:
        for first, count in split(spec.connections, processes):
            workers.append(_WorkerProcess(spec, first, count, members))
        ready_by = time.monotonic() + 30.0
        greetings = [worker.receive(ready_by) for worker in workers]
        failures = [g["error"] for g in greetings if "error" in g]
        if failures:
            raise NodeUnreachable(failures[0])
        for worker in workers:
            worker.send("go")
        done_by = time.monotonic() + spec.warmup + spec.duration + 30.0
        results = [worker.receive(done_by) for worker in workers]
        finished = True
    finally:
        stop_workers(workers, at_once=not finished)
    failures = [r["error"] for r in results if "error" in r]
    if failures:
        raise NodeUnreachable(failures[0])
    hist = LatencyHistogram()
    for result in results:
        hist.merge(LatencyHistogram.from_json(result["histogram"]))
    ops = sum(int(r["ops"]) for r in results)
    return BenchReport(
        server=spec.servers,
        workload=spec.workload,
        connections=spec.connections,
        depth=spec.depth,
        processes=processes,
        keys=spec.keys,
        value_size=spec.value_size,
        duration_s=spec.duration,
        warmup_s=spec.warmup,
        ops=ops,
        ops_per_s=ops / spec.duration,
        p50_us=hist.percentile(0.50) / 1000,
        p99_us=hist.percentile(0.99) / 1000,
        p999_us=hist.percentile(0.999) / 1000,
        mean_us=hist.mean() / 1000,
        max_us=hist.max_ns / 1000,
        errors=sum(int(r["errors"]) for r in results),
        not_found=sum(int(r["not_found"]) for r in results),
        routed_members=len(members) if members else 0,
    )
