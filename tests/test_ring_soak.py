"""A ring of 32 real node processes forms, serves and heals (`make soak` only: about a minute)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from funnelkvs.keyspace import ring_position
from funnelkvs.protocol import GET, PUT, Response, Status, encode_request
from funnelkvs.testing.cluster import NodeProcess
from funnelkvs.testing.ring import info, owner_index, start_ring, v1_pipeline, wait_until_stable


@pytest.fixture
def node_process_factory(node_process_factory: Callable[..., NodeProcess]) -> Callable[..., NodeProcess]:
    """These tests check the ring itself (where a key's one copy lives, how ranges move): one copy
    per key. Replication has tests of its own (test_replication*.py)."""

    def factory(**kwargs: Any) -> NodeProcess:
        kwargs.setdefault("config", {"replication": {"factor": 1}})
        return node_process_factory(**kwargs)

    return factory


pytestmark = pytest.mark.soak

NODES = 32


def test_a_ring_of_32_processes_forms_serves_and_heals(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_ring(tmp_path, NODES, start=node_process_factory)
    formed = wait_until_stable(nodes, timeout=120)
    print(f"{NODES} nodes: ring right {formed:.1f} s after the last start")
    keys = [b"soak-ring-%d" % i for i in range(20_000)]
    writes = v1_pipeline(nodes[0].address, [encode_request(PUT, k, k[::-1]) for k in keys], timeout=120)
    assert writes == [Response(Status.SUCCESS)] * len(keys)
    for node in nodes[::7]:
        reads = v1_pipeline(node.address, [encode_request(GET, k) for k in keys], timeout=120)
        assert [k for k, a in zip(keys, reads, strict=True) if a != Response(0, k[::-1])] == []
    ids = sorted(int(info(node.address)["node_id"], 16) for node in nodes)
    victims = nodes[5:8]
    dead = {int(info(node.address)["node_id"], 16) for node in victims}
    for node in victims:
        node.kill()
    started = time.monotonic()
    survivors = [node for node in nodes if node not in victims]
    healed = wait_until_stable(survivors, timeout=60)
    print(f"three nodes killed at once: ring right after {healed:.1f} s")
    kept = [k for k in keys if ids[owner_index(ring_position(k), ids)] not in dead]
    reads = v1_pipeline(survivors[-1].address, [encode_request(GET, k) for k in kept], timeout=120)
    assert [k for k, a in zip(kept, reads, strict=True) if a != Response(0, k[::-1])] == []
    assert time.monotonic() - started < 120
