"""Measure how long a node makes an unrelated client wait while others load it (loop stalls).

A :class:`LatencyProbe` runs in a thread of the test process with a connection of its own and sends
one PING, then one STATS, every ``interval`` seconds, keeping the worst round trip of each: a node
whose event loop blocks (a sync, a lock, a large copy) shows it there, whatever the load is. The
loads are the ones of issue 6 kind 2 (``LOADS``), run against a node process by :func:`run_case`.

As a benchmark (the figures in docs/performance.md)::

    python -m funnelkvs.testing.stalls            # every case, one table
    python -m funnelkvs.testing.stalls --quick    # smaller loads

Tests assert only generous bounds on these figures; the targets are measured, not asserted.
"""

from __future__ import annotations

import argparse
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from funnelkvs.protocol import GET, PING, PUT, RESPONSE_OK, RESPONSE_PONG, STATS, encode_request
from funnelkvs.testing.cluster import NodeProcess

_RESPONSE_HEAD = 9
#: Bound on one load, in seconds.
LOAD_TIMEOUT = 300


def _split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise ConnectionError(f"the node closed the connection after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def _recv_response(sock: socket.socket) -> bytes:
    head = _recv_exactly(sock, _RESPONSE_HEAD)
    length = int.from_bytes(head[5:9], "big")
    return head + _recv_exactly(sock, length)


class LatencyProbe:
    """PING and STATS every ``interval`` s on a connection of its own; the worst round trips, in s.

    A context manager: the thread starts on enter and stops on exit. A probe that gets a wrong answer
    or loses its connection records the error in ``error`` (a failure for the caller to report)."""

    def __init__(self, address: str, interval: float = 0.05, timeout: float = 30.0) -> None:
        self.address = address
        self.interval = interval
        self.timeout = timeout
        self.worst_ping = 0.0
        self.worst_stats = 0.0
        self.samples = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-probe", daemon=True)

    def __enter__(self) -> LatencyProbe:
        self._sock = socket.create_connection(_split(self.address), timeout=self.timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        self._sock.close()

    def _run(self) -> None:
        ping, stats = encode_request(PING), encode_request(STATS)
        try:
            while not self._stop.wait(self.interval):
                started = time.perf_counter()
                self._sock.sendall(ping)
                if _recv_response(self._sock) != RESPONSE_PONG:
                    raise AssertionError("PING was not answered PONG")
                middle = time.perf_counter()
                self._sock.sendall(stats)
                if _recv_response(self._sock)[4] != 0:
                    raise AssertionError("STATS was not answered SUCCESS")
                ended = time.perf_counter()
                self.worst_ping = max(self.worst_ping, middle - started)
                self.worst_stats = max(self.worst_stats, ended - middle)
                self.samples += 1
        except BaseException as exc:  # reported by the caller
            self.error = exc


# --- loads -------------------------------------------------------------------------------------------


def pipelined_puts(address: str, count: int = 50_000, value_size: int = 100) -> None:
    """``count`` PUTs sent in one write on one connection, then every answer read (and checked)."""
    frames = b"".join(encode_request(PUT, b"load-%d" % i, b"v" * value_size) for i in range(count))
    _ready()
    with socket.create_connection(_split(address), timeout=120) as sock:
        sock.sendall(frames)
        answers = _recv_exactly(sock, count * len(RESPONSE_OK))
    if answers != RESPONSE_OK * count:
        raise AssertionError("a pipelined PUT was not answered SUCCESS")


def large_puts(address: str, clients: int = 4, value_size: int = 64 * 1024 * 1024) -> None:
    """``clients`` connections each PUT one value of ``value_size`` bytes at the same time."""
    failures: list[BaseException] = []
    value = b"x" * value_size
    _ready()

    def one(index: int) -> None:
        try:
            with socket.create_connection(_split(address), timeout=120) as sock:
                sock.sendall(encode_request(PUT, b"large-%d" % index, value))
                if _recv_response(sock) != RESPONSE_OK:
                    raise AssertionError("a large PUT was not answered SUCCESS")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    if failures:
        raise failures[0]


def hold_exclusive_lock(database: Path, seconds: float) -> threading.Thread:
    """Another connection (as another process would) takes SQLite's exclusive lock for ``seconds``."""
    locked = threading.Event()

    def hold() -> None:
        blocker = sqlite3.connect(database, isolation_level=None, timeout=10)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            locked.set()
            time.sleep(seconds)
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()

    thread = threading.Thread(target=hold, name="exclusive-lock", daemon=True)
    thread.start()
    if not locked.wait(10):
        raise RuntimeError(f"could not lock {database}")
    return thread


def writes_and_reads_while_locked(address: str, database: Path, seconds: float) -> None:
    """Another connection holds the database's exclusive lock for ``seconds`` while this one PUTs
    and GETs (their answers wait, then fail with SERVER_ERROR and a closed connection after the
    backend's timeout: only the probe's latency matters here)."""
    holder = hold_exclusive_lock(database, seconds)
    _ready()
    deadline = time.monotonic() + seconds
    requests = encode_request(PUT, b"locked-write", b"v") + encode_request(GET, b"locked-write")
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(_split(address), timeout=seconds + 60) as sock:
                while time.monotonic() < deadline:
                    sock.sendall(requests)
                    _recv_response(sock)
                    _recv_response(sock)
        except ConnectionError:
            continue  # a failed write closes its connection: open another
    holder.join(seconds + 10)


def _ready() -> None:
    """The load's data is built: tell the parent (which starts the probe now), as one line."""
    print("ready", flush=True)


def _load_main(load: str, address: str, *params: Any) -> None:
    """The load's own process (``python -m funnelkvs.testing.stalls --load ...``): building 50,000
    frames or a 64 MiB value in the probe's process would hold its GIL and show as node latency."""
    if load == "pipelined":
        pipelined_puts(address, int(params[0]))
    elif load == "large":
        large_puts(address, 4, int(params[0]))
    else:
        writes_and_reads_while_locked(address, Path(params[0]), float(params[1]))


@dataclass
class Case:
    name: str
    backend: str
    options: dict[str, Any]
    load: str  # "pipelined", "large" or "locked"


def cases() -> list[Case]:
    settings = [
        ("memory", {}),
        ("lmdb", {"durability": "sync"}),
        ("lmdb", {"durability": "nosync"}),
        ("sqlite", {"durability": "sync", "journal_mode": "wal"}),
        ("sqlite", {"durability": "nosync", "journal_mode": "wal"}),
        ("sqlite", {"durability": "sync", "journal_mode": "delete"}),
        ("sqlite", {"durability": "nosync", "journal_mode": "delete"}),
    ]
    found = [
        Case(f"50k PUTs, {name} {' '.join(map(str, o.values()))}".strip(), name, o, "pipelined")
        for name, o in settings
    ]
    found += [Case(f"4 x 64 MiB PUTs, {name}", name, {}, "large") for name in ("memory", "lmdb", "sqlite")]
    found += [
        Case(f"sqlite locked, {mode}", "sqlite", {"journal_mode": mode, "timeout": 2}, "locked")
        for mode in ("delete", "wal")
    ]
    return found


@dataclass
class Result:
    case: Case
    worst_ping: float
    worst_stats: float
    samples: int
    load_seconds: float


def run_case(case: Case, workdir: Path, *, quick: bool = False) -> Result:
    """Start a node for ``case`` in ``workdir``, run its load with a probe beside it, stop the node.
    ``quick``: 10,000 PUTs (not 50,000), 16 MiB values (not 64), a 2.5 s lock (not 5)."""
    storage: dict[str, Any] = {"backend": case.backend, "options": case.options}
    if case.backend != "memory":
        storage["path"] = str(workdir / "data")
    config: dict[str, Any] = {"storage": storage}
    if case.load == "large":
        config["limits"] = {"max_value_size": "64MiB"}
    if case.load == "pipelined":
        params = [str(10_000 if quick else 50_000)]
    elif case.load == "large":
        params = [str((16 if quick else 64) * 1024 * 1024)]
    else:
        params = [str(workdir / "data" / "funnelkvs.sqlite3"), str(2.5 if quick else 5.0)]
    with NodeProcess.start(workdir, config=config) as node:
        command = [
            sys.executable,
            "-m",
            "funnelkvs.testing.stalls",
            "--load",
            case.load,
            node.address,
            *params,
        ]
        with subprocess.Popen(command, stdout=subprocess.PIPE) as loader:
            try:
                assert loader.stdout is not None
                if loader.stdout.readline() != b"ready\n":
                    raise RuntimeError(f"the load process failed (exit {loader.wait(10)})")
                with LatencyProbe(node.address) as probe:
                    started = time.perf_counter()
                    if loader.wait(LOAD_TIMEOUT) != 0:
                        raise RuntimeError(f"the load process failed (exit {loader.returncode})")
                    elapsed = time.perf_counter() - started
                    time.sleep(0.2)
            finally:
                if loader.poll() is None:
                    loader.kill()
        if probe.error is not None:
            raise probe.error
    return Result(case, probe.worst_ping, probe.worst_stats, probe.samples, elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller loads")
    parser.add_argument("--only", default="", help="run the cases whose name contains this text")
    parser.add_argument("--load", nargs="+", help=argparse.SUPPRESS)  # the load's own process
    options = parser.parse_args(argv)
    if options.load:
        _load_main(*options.load)
        return 0
    print(f"{'case':44} {'worst PING ms':>14} {'worst STATS ms':>15} {'samples':>8} {'load s':>7}")
    for case in cases():
        if options.only not in case.name:
            continue
        with tempfile.TemporaryDirectory(prefix="funnelkvs-stalls-") as workdir:
            try:
                result = run_case(case, Path(workdir), quick=options.quick)
            except Exception as exc:  # one case's failure (e.g. the probe timed out) is a figure too
                print(f"{case.name:44} failed: {type(exc).__name__}: {exc}", flush=True)
                continue
        print(
            f"{case.name:44} {result.worst_ping * 1000:14.1f} {result.worst_stats * 1000:15.1f}"
            f" {result.samples:8d} {result.load_seconds:7.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
