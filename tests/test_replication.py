"""Replication on real node processes, beside the fault tests: concurrent load through every node (the
forwarding deadlock the reference suffered, in its replicated form), quorums that cannot be met,
stats, and a lone node with the default settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from funnelkvs.client import Client
from funnelkvs.errors import FunnelKVSError, RequestTimeout, ServerError
from funnelkvs.protocol import GET, PUT, Response, Status, encode_request
from funnelkvs.testing.cluster import NodeProcess
from funnelkvs.testing.ring import info, v1_pipeline, wait_until_stable
from tests.test_replication_faults import start_replicated_ring, wait_until_members_known

MEMORY_RING = {"replication": {"factor": 3, "write_quorum": 2, "read_quorum": 2}}


def start_memory_ring(tmp_path: Path, factory: Callable[..., NodeProcess], count: int) -> list[NodeProcess]:
    from funnelkvs.testing.ring import start_ring, wait_until_stable

    nodes = start_ring(tmp_path, count, start=lambda **kwargs: factory(config=MEMORY_RING, **kwargs))
    wait_until_stable(nodes)
    wait_until_members_known(nodes)
    return nodes


def test_pipelined_writers_through_every_node_at_once_all_get_answers(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    """Each node receives v1 writes for keys it does not own (forwarded to their owner, which waits for
    its replicas) while it is itself a replica of the others' keys. Answers on one connection leave in
    order, so replica traffic sharing a connection with forwarded requests would wait in a cycle."""
    nodes = start_memory_ring(tmp_path, node_process_factory, 3)
    results: dict[int, list[Response]] = {}

    def writer(index: int) -> None:
        address = nodes[index % 3].address
        frames = [encode_request(PUT, b"w%d-%d" % (index, i), b"v%d" % i) for i in range(400)]
        results[index] = v1_pipeline(address, frames, timeout=30)

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(12)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(results) == list(range(12))
    for answers in results.values():
        assert answers == [Response(Status.SUCCESS)] * 400
    # Far under the 3 s replica timeout each: no round waited for a timeout to break a cycle.
    assert time.monotonic() - started < 30
    reads = v1_pipeline(nodes[1].address, [encode_request(GET, b"w5-%d" % i) for i in range(400)])
    assert reads == [Response(Status.SUCCESS, b"v%d" % i) for i in range(400)]
    assert [info(node.address)["keys"] for node in nodes] == [12 * 400] * 3
    assert all(info(node.address)["quorum_failures"] == 0 for node in nodes)


def test_a_quorum_that_cannot_be_met_is_an_error_with_a_message(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_replicated_ring(tmp_path, node_process_factory, 3)
    wait_until_members_known(nodes)
    nodes[2].kill()
    survivors = nodes[:2]
    with Client([node.address for node in nodes]) as client:
        # At once, while the ring heals: a third of these keys belonged to the dead node, and a
        # request with w follows the NOT_RESPONSIBLE answers to the new owner.
        for i in range(30):
            client.put(b"healing-%d" % i, b"v", w=2)
    wait_until_stable(survivors)
    with Client([node.address for node in survivors]) as client:
        # Membership, not liveness, sets the copies: still 3, so W=3 cannot be met with one member
        # down and no fourth node to stand in.
        with pytest.raises((RequestTimeout, ServerError)) as raised:
            client.put(b"k", b"v", w=3)
        assert "write quorum not reached" in str(raised.value)
        client.put(b"k", b"v")  # W=2: the two survivors
        assert client.get(b"k") == b"v"
        with pytest.raises(FunnelKVSError, match=r"cannot exceed replication\.factor"):
            client.get(b"k", r=4)
    deadline = time.monotonic() + 10
    while not info(survivors[0].address)["under_replicated"]:
        assert time.monotonic() < deadline, "the node never said it is under-replicated"
        time.sleep(0.2)
    stats = info(survivors[0].address)
    assert stats["replication"]["members"] == 3
    assert stats["replication"]["members_down"] == [nodes[2].address]


def test_a_lone_node_serves_reads_and_writes_with_the_defaults(
    node_process_factory: Callable[..., NodeProcess],
) -> None:
    node = node_process_factory()  # factor 3, W = R = 2, one member
    with Client(node.address) as client:
        client.put(b"k", b"v")
        assert client.get(b"k") == b"v"
        client.delete(b"k")
        assert client.get(b"k") is None
    stats = info(node.address)
    assert stats["keys"] == 0 and stats["tombstones"] == 1  # the delete left a tombstone
    assert stats["under_replicated"] is True  # one live member, factor 3
