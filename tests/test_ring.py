"""The Chord ring on real node processes (issue 7): forming, forwarding, healing.

Every node is a real ``funnelkvs node`` process on 127.0.0.1 with an ephemeral port, stopped at
teardown whatever happens (``node_process_factory``). Keys are read with plain v1 frames, as the
reference's clients send them: a node forwards a request for a key it does not own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from funnelkvs.keyspace import ring_position
from funnelkvs.protocol import GET, PUT, Response, Status, encode_request
from funnelkvs.testing.cluster import NodeProcess
from funnelkvs.testing.ring import info, owner_index, start_ring, v1_pipeline, wait_until_stable

KEYS = [b"key-%d" % i for i in range(10_000)]


def value_of(key: bytes) -> bytes:
    return b"value-of-" + key


def test_five_nodes_every_key_through_every_node(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_ring(tmp_path, 5, start=node_process_factory)
    wait_until_stable(nodes)
    writes = v1_pipeline(nodes[0].address, [encode_request(PUT, key, value_of(key)) for key in KEYS])
    assert writes == [Response(Status.SUCCESS)] * len(KEYS)
    for node in nodes:
        reads = v1_pipeline(node.address, [encode_request(GET, key) for key in KEYS])
        wrong = [key for key, answer in zip(KEYS, reads, strict=True) if answer != Response(0, value_of(key))]
        assert wrong == [], f"{len(wrong)} keys read wrong through {node.address}"
    # Each key is stored once, on its owner: the successor of its position.
    infos = [info(node.address) for node in nodes]
    ids = sorted(int(entry["node_id"], 16) for entry in infos)
    expected = [0] * len(ids)
    for key in KEYS:
        expected[owner_index(ring_position(key), ids)] += 1
    stored = {int(entry["node_id"], 16): entry["keys"] for entry in infos}
    assert [stored[node_id] for node_id in ids] == expected


def test_two_nodes_forwarding_to_each_other_under_pipelined_load_do_not_deadlock(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    """Clients of both nodes pipeline requests whose keys the other node owns; every answer comes back,
    in order, on every connection (the reference deadlocked here until a 5 s timeout)."""
    nodes = start_ring(tmp_path, 2, start=node_process_factory)
    wait_until_stable(nodes)
    ids = sorted(int(info(node.address)["node_id"], 16) for node in nodes)
    by_id = {int(info(node.address)["node_id"], 16): node for node in nodes}
    owned_by: dict[int, list[bytes]] = {node_id: [] for node_id in ids}
    for key in KEYS[:4000]:
        owned_by[ids[owner_index(ring_position(key), ids)]].append(key)
    failures: list[BaseException] = []

    def client(node: NodeProcess, keys: list[bytes]) -> None:
        try:
            for round_ in range(3):
                frames = [encode_request(PUT, key, b"%d-%s" % (round_, key)) for key in keys]
                frames += [encode_request(GET, key) for key in keys]
                answers = v1_pipeline(node.address, frames, timeout=20)
                assert answers[: len(keys)] == [Response(Status.SUCCESS)] * len(keys)
                expected = [Response(Status.SUCCESS, b"%d-%s" % (round_, key)) for key in keys]
                assert answers[len(keys) :] == expected, "answers out of order or lost"
        except BaseException as exc:
            failures.append(exc)

    threads = []
    for node_id, node in by_id.items():
        other_keys = [key for other, keys in owned_by.items() if other != node_id for key in keys]
        for _ in range(2):  # two connections per node, each all forwarded
            threads.append(threading.Thread(target=client, args=(node, other_keys)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a client hung: deadlock"
    assert failures == []
