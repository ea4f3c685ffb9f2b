"""Rings of real node processes for tests: start N nodes that join one another, wait until the ring
is right, and talk to them with plain v1 frames (what the reference's clients send).

Usage::

    nodes = start_ring(tmp_path, 5)
    try:
        wait_until_stable(nodes)
        answers = v1_pipeline(nodes[0].address, [encode_request(PUT, b"k", b"v")])
    finally:
        for node in nodes:
            node.stop()
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from funnelkvs.keyspace import RING_SIZE
from funnelkvs.protocol import INFO, NEED_DATA, Response, ResponseDecoder, encode_request
from funnelkvs.protocol.v2 import V2Response, V2ResponseDecoder, encode_v2_request
from funnelkvs.testing.cluster import NodeProcess

#: How long a small ring may take to form or heal in tests, in seconds.
STABLE_TIMEOUT = 20.0


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def start_ring(
    workdir: Path,
    count: int,
    *,
    start: Callable[..., NodeProcess] | None = None,
    args: Sequence[str] = (),
    hosts: Sequence[str] | None = None,
) -> list[NodeProcess]:
    """Start ``count`` nodes: the first alone, the others joining it. ``start`` is how a node process
    is started (a test's factory, which stops them at teardown; default :meth:`NodeProcess.start`,
    and the caller stops them). ``hosts``: the host of each node (default 127.0.0.1)."""
    starter = start or (lambda **kwargs: NodeProcess.start(workdir, **kwargs))
    nodes: list[NodeProcess] = []
    for index in range(count):
        node_args = list(args)
        if hosts is not None:
            node_args += ["--host", hosts[index]]
        if nodes:
            node_args += ["--join", nodes[0].address]
        nodes.append(starter(args=node_args, name=f"ring{index}"))
    return nodes


def info(address: str, timeout: float = 5.0) -> dict[str, Any]:
    """A node's INFO (v1 op 0x06) as a dict."""
    [answer] = v1_pipeline(address, [encode_request(INFO)], timeout=timeout)
    result: dict[str, Any] = json.loads(answer.value)
    return result


def ring_is_right(addresses: Sequence[str]) -> bool:
    """Every node's successor and predecessor are the true ones for this set of nodes."""
    infos = [info(address) for address in addresses]
    ids = sorted(int(node["node_id"], 16) for node in infos)
    for node in infos:
        me = int(node["node_id"], 16)
        ring = node.get("ring") or {}
        index = ids.index(me)
        successors = ring.get("successors") or []
        predecessor = ring.get("predecessor")
        if len(ids) == 1:
            if successors:
                return False
            continue
        if not successors or int(successors[0]["id"], 16) != ids[(index + 1) % len(ids)]:
            return False
        if predecessor is None or int(predecessor["id"], 16) != ids[index - 1]:
            return False
    return True


def wait_until_stable(nodes: Sequence[NodeProcess], timeout: float = STABLE_TIMEOUT) -> float:
    """Wait until :func:`ring_is_right` for these nodes; returns the seconds it took. Raises
    TimeoutError (with the last view) past ``timeout``."""
    started = time.monotonic()
    addresses = [node.address for node in nodes]
    while True:
        try:
            if ring_is_right(addresses):
                return time.monotonic() - started
        except (OSError, ValueError):
            pass
        if time.monotonic() - started > timeout:
            views = {address: _ring_of(address) for address in addresses}
            raise TimeoutError(f"the ring did not become right within {timeout} s: {views}")
        time.sleep(0.1)


def _ring_of(address: str) -> object:
    try:
        return info(address).get("ring")
    except OSError as exc:
        return repr(exc)


def owner_index(key_position: int, ids: Sequence[int]) -> int:
    """Index in sorted ``ids`` of the node that owns ``key_position`` (its successor, wrapping)."""
    for index, node_id in enumerate(ids):
        if node_id >= key_position % RING_SIZE:
            return index
    return 0


def v1_pipeline(address: str, frames: Sequence[bytes], timeout: float = 30.0) -> list[Response]:
    """Send every frame in one write on a new connection and read one answer per frame, in order."""
    decoder = ResponseDecoder()
    answers: list[Response] = []
    with socket.create_connection(split(address), timeout=timeout) as sock:
        sock.sendall(b"".join(frames))
        while len(answers) < len(frames):
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"{address} closed the connection after {len(answers)} answers")
            decoder.feed(chunk)
            while (event := decoder.next_event()) is not NEED_DATA:
                assert isinstance(event, Response)
                answers.append(event)
    return answers


def v2_call(address: str, op: int, body: bytes = b"", timeout: float = 10.0) -> V2Response:
    """One v2 request on a new connection; its answer (the connection may close right after)."""
    decoder = V2ResponseDecoder()
    with socket.create_connection(split(address), timeout=timeout) as sock:
        sock.sendall(encode_v2_request(op, 1, body))
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"{address} closed the connection before answering")
            decoder.feed(chunk)
            event = decoder.next_event()
            if event is not NEED_DATA:
                assert isinstance(event, V2Response)
                return event
