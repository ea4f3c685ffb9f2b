"""A worker process: its share of the connections driven in a closed loop from one ``selectors`` loop
over raw non-blocking sockets, and the JSON-lines conversation with the coordinator."""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any, Final

from funnelkvs.bench.histogram import LatencyHistogram
from funnelkvs.bench.requests import _Requests
from funnelkvs.bench.routing import owner_router
from funnelkvs.bench.spec import _CONNECT_TIMEOUT, BenchSpec
from funnelkvs.client.address import Address, parse_addresses
from funnelkvs.errors import FunnelKVSError, NodeUnreachable
from funnelkvs.protocol import NEED_DATA, ResponseDecoder, Status

#: Sent bytes kept at the front of a connection's output buffer before they are dropped.
_COMPACT_AT: Final = 1 << 20
# Under glibc's mmap threshold (128 KiB): a larger recv(n) costs an mmap/munmap pair per call.
_RECV_SIZE: Final = 64 * 1024
_SUCCESS: Final = int(Status.SUCCESS)
_NOT_FOUND: Final = int(Status.NOT_FOUND)
_STATUSES: Final = frozenset(int(status) for status in Status)


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
