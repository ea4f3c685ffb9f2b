"""The load generator behind ``funnelkvs bench``: closed-loop workers in several processes.

Each worker process drives its share of the connections from one ``selectors`` loop over raw
non-blocking sockets and the protocol codec (no :class:`~funnelkvs.Client`: its pool and locks would
make the client the bottleneck). Every connection keeps ``depth`` requests in flight, sending a new
one as each answer arrives. Keys are ``key:%010d`` drawn uniformly from the key space and values are
``v`` repeated, as the neutral C generator in ``../shared/bench`` does, so figures are comparable.

With ``smart`` (``funnelkvs bench --smart``) the load goes through the ring-aware client's routing:
the coordinator fetches the ring view as :class:`~funnelkvs.Client` does (RING_VIEW), and every
logical connection becomes one socket per member; each request goes to its key's owner as
:class:`~funnelkvs.client.routing.RingView` computes it (one hop, never forwarded while the view
holds), with ``depth`` requests in flight per logical connection across its sockets. Requests stay
v1 frames, whose answers keep request order per socket; a ring of one node is the plain mode.

A latency is the time from the write that carried a request to the read that completed its answer.
Only answers completed inside the measured window (after the warm-up) count. Latencies go into a
log-bucketed histogram (HDR-like, under 0.4% error), merged across processes.

Workers are ``python -m funnelkvs.bench --worker`` subprocesses (no fork of the caller, no pickle):
the coordinator sends each its job as a JSON line on stdin, waits until every worker has connected
and prepared (``ready``), starts them together (``go``), and reads one JSON report line from each
stdout. Before that it checks the key and value sizes against each node's limits (INFO), so a run the
node would refuse fails at once as a usage error. Stopping (at the end, on a failure or on Ctrl-C)
stops every worker in parallel.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import random
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import IO, Any, Final

from funnelkvs.client.address import Address, parse_addresses
from funnelkvs.errors import FunnelKVSError, LocalProtocolError, NodeUnreachable
from funnelkvs.protocol import (
    DEFAULT_MAX_KEY_SIZE,
    DEFAULT_MAX_VALUE_SIZE,
    GET,
    HEADER_V1,
    NEED_DATA,
    PUT,
    U32_MAX,
    ResponseDecoder,
    Status,
)

WORKLOADS: Final = ("get", "put", "mix")
#: Share of GETs in the ``mix`` workload.
MIX_GET_RATIO: Final = 0.9
#: Sent bytes kept at the front of a connection's output buffer before they are dropped.
_COMPACT_AT: Final = 1 << 20
# Under glibc's mmap threshold (128 KiB): a larger recv(n) costs an mmap/munmap pair per call.
_RECV_SIZE: Final = 64 * 1024
_CONNECT_TIMEOUT: Final = 5.0
_SUCCESS: Final = int(Status.SUCCESS)
_NOT_FOUND: Final = int(Status.NOT_FOUND)
_STATUSES: Final = frozenset(int(status) for status in Status)
_U32 = struct.Struct(">I")


def key_name(index: int) -> bytes:
    return b"key:%010d" % index


def value_of(size: int) -> bytes:
    return b"v" * size


# --- latency histogram ------------------------------------------------------------------------------


class LatencyHistogram:
    """Counts of latencies (ns) in log buckets: 2**SUB_BITS linear sub-buckets per power of two."""

    SUB_BITS: Final = 8
    _SIZE: Final = 64 << 8

    __slots__ = ("counts", "max_ns", "total", "total_ns")

    def __init__(self) -> None:
        self.counts = [0] * self._SIZE
        self.total = 0
        self.total_ns = 0
        self.max_ns = 0

    def record(self, ns: int) -> None:
        shift = ns.bit_length() - self.SUB_BITS
        if shift <= 0:
            self.counts[ns] += 1
        else:
            self.counts[(shift << self.SUB_BITS) | (ns >> shift)] += 1
        self.total += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns

    @classmethod
    def bucket_value(cls, index: int) -> int:
        """The middle of a bucket, in ns."""
        shift, mantissa = index >> cls.SUB_BITS, index & ((1 << cls.SUB_BITS) - 1)
        if shift == 0:
            return mantissa
        return (mantissa << shift) + (1 << (shift - 1))

    def merge(self, other: LatencyHistogram) -> None:
        counts = self.counts
        for index, count in enumerate(other.counts):
            if count:
                counts[index] += count
        self.total += other.total
        self.total_ns += other.total_ns
        self.max_ns = max(self.max_ns, other.max_ns)

    def percentile(self, fraction: float) -> int:
        """The latency (ns) at ``fraction`` (0.99 for p99) of the sorted samples; 0 when empty."""
        if not self.total:
            return 0
        rank = min(int(self.total * fraction), self.total - 1)  # 0-based, as kvsload indexes
        if rank == self.total - 1:
            return self.max_ns
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen > rank:
                return min(self.bucket_value(index), self.max_ns)
        return self.max_ns

    def mean(self) -> float:
        return self.total_ns / self.total if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": [[i, c] for i, c in enumerate(self.counts) if c],
            "total_ns": self.total_ns,
            "max_ns": self.max_ns,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyHistogram:
        hist = cls()
        for index, count in data["buckets"]:
            hist.counts[int(index)] += int(count)
            hist.total += int(count)
        hist.total_ns = int(data["total_ns"])
        hist.max_ns = int(data["max_ns"])
        return hist


# --- what to run and what came out -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchSpec:
    servers: str
    connections: int = 50
    depth: int = 1
    workload: str = "get"
    keys: int = 10_000
    value_size: int = 16
    duration: float = 5.0
    warmup: float = 0.5
    #: Route each request to its key's owner, as the ring-aware client does (see the module docstring).
    smart: bool = False

    def validate(self) -> None:
        parse_addresses(self.servers)
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}")
        for name in ("connections", "depth", "keys"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.value_size < 0 or self.warmup < 0 or self.duration <= 0:
            raise ValueError("value size and warm-up must be >= 0 and the duration > 0")


@dataclass(frozen=True, slots=True)
class BenchReport:
    server: str
    workload: str
    connections: int
    depth: int
    processes: int
    keys: int
    value_size: int
    duration_s: float
    warmup_s: float
    ops: int
    ops_per_s: float
    p50_us: float
    p99_us: float
    p999_us: float
    mean_us: float
    max_us: float
    errors: int
    not_found: int
    #: Ring members the requests were routed over (``--smart`` against a ring); 0: sent as given.
    routed_members: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the worker --------------------------------------------------------------------------------------


class _Requests:
    """Request frames for key indexes, built as they are sent into a connection's output buffer.

    Nothing is built per key up front, so memory does not grow with the key space (nor with the value
    size times the key count): the one value, and each connection's unsent requests, are all there is.
    A frame is one ``bytes % index`` (its key is ``key:%010d`` inside a fixed header): about as cheap
    as looking it up in a table of prebuilt frames."""

    __slots__ = ("_get", "_put", "get_ratio", "keys", "put_tail")

    def __init__(self, spec: BenchSpec) -> None:
        self.keys = spec.keys
        self.get_ratio = 1.0 if spec.workload == "get" else 0.0 if spec.workload == "put" else MIX_GET_RATIO
        value = value_of(spec.value_size)
        self.put_tail = _U32.pack(len(value)) + value
        # Every key has the same length while the indexes fit in ten digits; past that, key_name's.
        fixed = spec.keys <= 10**10
        self._get = _frame_format(GET) if fixed else None
        self._put = _frame_format(PUT) if fixed else None

    def get(self, index: int) -> bytes:
        return self._get % index if self._get is not None else _frame_head(GET, key_name(index))

    def put_head(self, index: int) -> bytes:
        """A PUT frame without its value part (``put_tail``)."""
        return self._put % index if self._put is not None else _frame_head(PUT, key_name(index))

    def append_routed(
        self,
        conns: list[_Conn],
        route: Callable[[bytes], int],
        count: int,
        rand: Callable[[], float],
        at: int,
    ) -> None:
        """Append ``count`` requests with random keys, each to ``conns[route(key)]`` (its owner's
        socket), with its send time."""
        keys, get_ratio, put_tail = self.keys, self.get_ratio, self.put_tail
        get, put_head = self.get, self.put_head
        for _ in range(count):
            index = int(rand() * keys)
            conn = conns[route(key_name(index))]
            if get_ratio == 1.0 or (get_ratio and rand() < get_ratio):
                conn.out += get(index)
            else:
                conn.out += put_head(index)
                conn.out += put_tail
            conn.sent_at.append(at)

    def append(self, out: bytearray, count: int, rand: Callable[[], float]) -> None:
        """Append ``count`` requests with random keys (a GET with probability ``get_ratio``)."""
        keys, get_ratio, put_tail = self.keys, self.get_ratio, self.put_tail
        get, put_head = self.get, self.put_head
        for _ in range(count):
            index = int(rand() * keys)
            if get_ratio == 1.0 or (get_ratio and rand() < get_ratio):
                out += get(index)
            else:
                out += put_head(index)
                out += put_tail


def _frame_head(op: int, key: bytes) -> bytes:
    return HEADER_V1 + bytes((op,)) + _U32.pack(len(key)) + key


def _frame_format(op: int) -> bytes:
    """``_frame_head(op, key_name(i))`` as a format: ``format % i`` is the frame of key ``i``."""
    head = _frame_head(op, key_name(0))
    prefix = head[: -len(key_name(0))].replace(b"%", b"%%")
    return prefix + b"key:%010d"


class _Conn:
    __slots__ = ("decoder", "group", "last_status", "out", "out_pos", "sent_at", "sock", "writing")

    def __init__(self, sock: socket.socket, group: list[_Conn] | None = None) -> None:
        self.sock = sock
        #: Routed mode: the sockets of this logical connection, one per member in ring order.
        self.group = group
        self.decoder = ResponseDecoder()
        #: Requests to send; ``out[:out_pos]`` is already sent.
        self.out = bytearray()
        self.out_pos = 0
        self.sent_at: deque[int] = deque()
        self.writing = False
        self.last_status = _SUCCESS


def _connect(address: Address) -> socket.socket:
    try:
        sock = socket.create_connection(address, timeout=_CONNECT_TIMEOUT)
    except OSError as exc:
        raise NodeUnreachable(f"cannot connect to {address}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def owner_router(member_ids: list[int]) -> Callable[[bytes], int]:
    """``route(key)``: the index (in ``member_ids``, sorted) of the member owning ``key``, as
    :meth:`funnelkvs.client.routing.RingView.owner_of` decides (first id at or after the key's SHA-1)."""
    ids = sorted(member_ids)
    count = len(ids)
    sha1 = hashlib.sha1
    from_bytes = int.from_bytes
    find = bisect.bisect_left

    def route(key: bytes) -> int:
        index = find(ids, from_bytes(sha1(key).digest(), "big"))
        return index if index < count else 0

    return route


def _drive(
    spec: BenchSpec,
    conns: list[_Conn],
    requests: _Requests,
    start_ns: int,
    route: Callable[[bytes], int] | None = None,
) -> dict[str, Any]:
    """The closed loop: returns ops, errors, not_found and the histogram of the measured window.

    With ``route`` (routed mode) each conn belongs to a group (``conn.group``) and new requests go to
    the group's socket of their key's owner. Everything it needs is built before ``start_ns`` (the
    worker's ``go``): the window measures load."""
    rand = random.Random(os.getpid() ^ start_ns).random
    append_requests = requests.append
    hist = LatencyHistogram()
    record = hist.record
    now = time.perf_counter_ns
    warm_end = start_ns + int(spec.warmup * 1e9)
    end = warm_end + int(spec.duration * 1e9)
    ops = errors = not_found = 0

    selector = selectors.DefaultSelector()

    def fill(conn: _Conn, count: int, at: int) -> None:
        if route is None:
            append_requests(conn.out, count, rand)
            conn.sent_at.extend([at] * count)
            return
        group = conn.group
        assert group is not None
        requests.append_routed(group, route, count, rand, at)
        for member in group:
            if member is not conn and member.out_pos < len(member.out):
                flush(member)

    def flush(conn: _Conn) -> None:
        out = conn.out
        pos = conn.out_pos
        if pos < len(out):
            with memoryview(out) as view:
                try:
                    pos += conn.sock.send(view[pos:])
                except BlockingIOError:
                    pass
            if pos == len(out):
                out.clear()
                pos = 0
            elif pos >= _COMPACT_AT:
                del out[:pos]
                pos = 0
            conn.out_pos = pos
        want_write = pos < len(out)
        if want_write != conn.writing:
            conn.writing = want_write
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            selector.modify(conn.sock, events, conn)

    try:
        for conn in conns:
            selector.register(conn.sock, selectors.EVENT_READ, conn)
        # One initial fill per logical connection (in routed mode its group's first socket).
        for conn in conns:
            if conn.group is None or conn.group[0] is conn:
                fill(conn, spec.depth, now())
                flush(conn)
        while True:
            t = now()
            if t >= end:
                break
            for key, mask in selector.select(min(0.1, (end - t) / 1e9)):
                conn = key.data
                if mask & selectors.EVENT_READ:
                    try:
                        data = conn.sock.recv(_RECV_SIZE)
                    except BlockingIOError:
                        data = None
                    if data is not None:
                        if not data:
                            raise NodeUnreachable(_closed_reason(conn))
                        done_at = now()
                        decoder = conn.decoder
                        decoder.feed(data)
                        sent_at = conn.sent_at
                        answered = 0
                        counted = warm_end <= done_at < end
                        status = _SUCCESS
                        while (response := decoder.next_event()) is not NEED_DATA:
                            started = sent_at.popleft()
                            answered += 1
                            status = response.status  # type: ignore[union-attr]
                            if counted:
                                record(done_at - started)
                                if status != _SUCCESS:
                                    if status == _NOT_FOUND:
                                        not_found += 1
                                    else:
                                        errors += 1
                        if answered:
                            conn.last_status = status
                            if counted:
                                ops += answered
                            fill(conn, answered, done_at)
                flush(conn)
    except OSError as exc:
        raise NodeUnreachable(f"connection to the node lost: {exc.strerror or exc}") from exc
    finally:
        selector.close()
    return {"ops": ops, "errors": errors, "not_found": not_found, "histogram": hist.to_json()}


def _closed_reason(conn: _Conn) -> str:
    status = conn.last_status
    if status in (_SUCCESS, _NOT_FOUND):
        return "the node closed a connection during the run"
    name = Status(status).name if status in _STATUSES else f"status {status:#04x}"
    return f"the node answered {name} and closed a connection during the run"


def _worker(job: dict[str, Any], commands: IO[bytes], reports: IO[bytes]) -> None:
    """One worker: connect its share, say ``ready``, wait for ``go``, run, report (JSON lines)."""

    def report(message: dict[str, Any]) -> None:
        reports.write(json.dumps(message).encode() + b"\n")
        reports.flush()

    spec = BenchSpec(**job["spec"])
    socks: list[socket.socket] = []
    try:
        members: list[list[str]] | None = job.get("members")
        conns: list[_Conn] = []
        route = None
        if members:
            # Routed: one socket per member (in ring order) for each logical connection.
            route = owner_router([int(node_id, 16) for node_id, _ in members])
            member_addresses = [parse_addresses(address)[0] for _, address in members]
            for _ in range(job["count"]):
                group: list[_Conn] = []
                for address in member_addresses:
                    socks.append(_connect(address))
                    group.append(_Conn(socks[-1], group))
                conns.extend(group)
        else:
            addresses = parse_addresses(spec.servers)
            for i in range(job["first"], job["first"] + job["count"]):
                socks.append(_connect(addresses[i % len(addresses)]))
            conns = [_Conn(sock) for sock in socks]
        # All set-up happens before "ready": nothing of it falls inside the measured window.
        requests = _Requests(spec)
        report({"ready": True})
        if commands.readline().strip() != b"go":
            return  # the coordinator gave up (another worker failed)
        report(_drive(spec, conns, requests, time.perf_counter_ns(), route))
    except FunnelKVSError as exc:
        report({"error": str(exc)})
    finally:
        for sock in socks:
            sock.close()


def worker_process_main() -> None:
    """``python -m funnelkvs.bench --worker``: the job arrives as the first line on stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the coordinator, which stops us
    commands, reports = sys.stdin.buffer, sys.stdout.buffer
    line = commands.readline()
    if line:
        _worker(json.loads(line), commands, reports)


# --- the coordinator ---------------------------------------------------------------------------------


def split(total: int, parts: int) -> Iterator[tuple[int, int]]:
    """``(first, count)`` for each of ``parts`` near-equal shares of ``total``."""
    first = 0
    for p in range(parts):
        count = total // parts + (1 if p < total % parts else 0)
        yield first, count
        first += count


#: About this many bytes of PUT frames are pipelined at a time by :func:`populate`.
_POPULATE_BATCH_BYTES: Final = 4 << 20


def populate(spec: BenchSpec) -> int:
    """Store every key of the key space once, pipelined, so GETs hit. Memory stays bounded whatever
    the key space: the keys are generated as they go, in batches of a few MiB of frames."""
    from funnelkvs.client import Client

    value = value_of(spec.value_size)
    batch_size = max(1, min(2000, _POPULATE_BATCH_BYTES // (len(value) + 32)))
    # A batch of large values takes a while to travel; the timeout bounds each wait for progress.
    with Client(
        spec.servers, pool_size=1, timeout=30.0, max_key_size=U32_MAX, max_value_size=U32_MAX
    ) as client:
        return client.put_many(((key_name(i), value) for i in range(spec.keys)), batch_size=batch_size)


def ring_members(spec: BenchSpec) -> list[list[str]] | None:
    """``[[id hex, address], ...]`` of the ring the smart client sees from ``spec.servers`` (sorted by
    id), or None when there is no ring to route over (one node, or nodes without RING_VIEW)."""
    from funnelkvs.client import Client

    with Client(spec.servers, pool_size=1, connect_timeout=_CONNECT_TIMEOUT, timeout=10.0) as client:
        view = client.refresh_view()
    if view is None or len(view) < 2:
        return None
    return [[f"{member.node_id:040x}", str(member.address)] for member in view.members]


def check_node_limits(spec: BenchSpec, addresses: list[Address] | None = None) -> None:
    """Refuse, before any load, keys or values over a node's limits (from INFO; the v1 defaults for a
    node that does not say). Raises :class:`LocalProtocolError`, or :class:`NodeUnreachable`.
    ``addresses``: the nodes to ask (default: ``spec.servers``)."""
    from funnelkvs.client import Client

    key_size = len(key_name(spec.keys - 1))
    for address in addresses or parse_addresses(spec.servers):
        with Client(str(address), pool_size=1, connect_timeout=_CONNECT_TIMEOUT, timeout=10.0) as client:
            info = client.info()
        max_key = _limit(info, "max_key_size", DEFAULT_MAX_KEY_SIZE)
        max_value = _limit(info, "max_value_size", DEFAULT_MAX_VALUE_SIZE)
        if spec.value_size > max_value:
            raise LocalProtocolError(
                f"values of {spec.value_size} bytes are over the limit of {address} "
                f"(max_value_size {max_value} bytes)"
            )
        if key_size > max_key:
            raise LocalProtocolError(
                f"keys of {key_size} bytes are over the limit of {address} (max_key_size {max_key} bytes)"
            )


def _limit(info: dict[str, Any], name: str, default: int) -> int:
    value = info.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


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


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker_process_main()
