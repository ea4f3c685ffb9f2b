"""The Chord ring on real node processes (issue 7): forming, forwarding, healing.

Every node is a real ``funnelkvs node`` process on 127.0.0.1 with an ephemeral port, stopped at
teardown whatever happens (``node_process_factory``). Keys are read with plain v1 frames, as the
reference's clients send them: a node forwards a request for a key it does not own.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from funnelkvs.keyspace import ring_position
from funnelkvs.protocol import GET, PUT, Response, Status, encode_request
from funnelkvs.protocol.rpc import CLUSTER_STATS, LEAVE
from funnelkvs.testing.cluster import NodeProcess
from funnelkvs.testing.ring import info, owner_index, start_ring, v1_pipeline, v2_call, wait_until_stable


@pytest.fixture
def node_process_factory(node_process_factory: Callable[..., NodeProcess]) -> Callable[..., NodeProcess]:
    """These tests check the ring itself (where a key's one copy lives, how ranges move): one copy
    per key. Replication has tests of its own (test_replication*.py)."""

    def factory(**kwargs: Any) -> NodeProcess:
        kwargs.setdefault("config", {"replication": {"factor": 1}})
        return node_process_factory(**kwargs)

    return factory


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


def stored_counts(nodes: list[NodeProcess]) -> tuple[list[int], list[int]]:
    """(ids sorted, keys stored by each, in that order)."""
    infos = {int(entry["node_id"], 16): entry for entry in (info(node.address) for node in nodes)}
    ids = sorted(infos)
    return ids, [infos[node_id]["keys"] for node_id in ids]


def expected_counts(keys: list[bytes], ids: list[int]) -> list[int]:
    counts = [0] * len(ids)
    for key in keys:
        counts[owner_index(ring_position(key), ids)] += 1
    return counts


class Load:
    """A writer and a reader running against one node while the ring changes; every answer checked."""

    def __init__(self, address: str, keys: list[bytes]) -> None:
        self.address = address
        self.keys = keys
        self.errors: list[str] = []
        self.rounds = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write), threading.Thread(target=self._read)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _write(self) -> None:
        round_ = 0
        while not self._stop.is_set():
            batch = self.keys[(round_ * 200) % len(self.keys) :][:200]
            answers = v1_pipeline(self.address, [encode_request(PUT, key, value_of(key)) for key in batch])
            self.errors += [
                f"PUT {key!r}: {a}" for key, a in zip(batch, answers, strict=True) if a.status != 0
            ]
            round_ += 1
            self.rounds += 1

    def _read(self) -> None:
        round_ = 0
        while not self._stop.is_set():
            batch = self.keys[(round_ * 300) % len(self.keys) :][:300]
            answers = v1_pipeline(self.address, [encode_request(GET, key) for key in batch])
            self.errors += [
                f"GET {key!r}: {a}"
                for key, a in zip(batch, answers, strict=True)
                if a != Response(0, value_of(key))
            ]
            round_ += 1


def test_a_sixth_node_joins_under_load_and_takes_exactly_its_range(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_ring(tmp_path, 5, start=node_process_factory)
    wait_until_stable(nodes)
    keys = KEYS[:4000]
    assert v1_pipeline(nodes[1].address, [encode_request(PUT, k, value_of(k)) for k in keys]) == [
        Response(Status.SUCCESS)
    ] * len(keys)
    with Load(nodes[2].address, keys) as load:
        sixth = node_process_factory(args=["--join", nodes[0].address], name="sixth")
        nodes.append(sixth)
        wait_until_stable(nodes)
        deadline = time.monotonic() + 20
        while stored_counts(nodes)[1] != expected_counts(keys, stored_counts(nodes)[0]):
            assert time.monotonic() < deadline, f"ranges not settled: {stored_counts(nodes)}"
            time.sleep(0.2)
    assert load.rounds > 0
    assert load.errors == []
    for node in nodes:
        reads = v1_pipeline(node.address, [encode_request(GET, key) for key in keys])
        assert [k for k, a in zip(keys, reads, strict=True) if a != Response(0, value_of(k))] == []
    ids, counts = stored_counts(nodes)
    assert counts == expected_counts(keys, ids), "a node stores keys outside its range"
    assert counts[ids.index(int(info(sixth.address)["node_id"], 16))] > 0


def test_a_node_leaves_gracefully_under_load_and_nothing_is_lost(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_ring(tmp_path, 4, start=node_process_factory)
    wait_until_stable(nodes)
    keys = KEYS[:4000]
    v1_pipeline(nodes[0].address, [encode_request(PUT, k, value_of(k)) for k in keys])
    leaving = nodes[3]
    assert info(leaving.address)["keys"] > 0
    with Load(nodes[1].address, keys) as load:
        answer = v2_call(leaving.address, LEAVE)
        assert (answer.status, answer.body) == (Status.SUCCESS, b"leaving")
        assert leaving.process.wait(30) == 0, "the leaving node did not exit cleanly"
        rest = nodes[:3]
        wait_until_stable(rest)
        time.sleep(1)  # the writer and reader go on against the healed ring
    assert load.errors == []
    for node in rest:
        reads = v1_pipeline(node.address, [encode_request(GET, key) for key in keys])
        assert [k for k, a in zip(keys, reads, strict=True) if a != Response(0, value_of(k))] == []
    ids, counts = stored_counts(rest)
    assert counts == expected_counts(keys, ids)


def test_a_killed_node_is_routed_around_and_the_ring_heals(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_ring(tmp_path, 5, start=node_process_factory)
    wait_until_stable(nodes)
    keys = KEYS[:3000]
    v1_pipeline(nodes[0].address, [encode_request(PUT, k, value_of(k)) for k in keys])
    victim = nodes[2]
    victim_id = int(info(victim.address)["node_id"], 16)
    ids = sorted(int(info(node.address)["node_id"], 16) for node in nodes)
    survivors_keys = [k for k in keys if ids[owner_index(ring_position(k), ids)] != victim_id]
    survivors = [node for node in nodes if node is not victim]
    # Readers on every survivor, before, during and after the crash: keys kept by the survivors must
    # read back every time (the nodes route around the dead one; a client sees at most a delay).
    with (
        Load(survivors[0].address, survivors_keys) as load_a,
        Load(survivors[2].address, survivors_keys) as load_b,
    ):
        time.sleep(0.5)
        victim.kill()
        killed_at = time.monotonic()
        healed_after = wait_until_stable(survivors, timeout=10)
        time.sleep(1)
    assert healed_after < 10
    print(
        f"healed {time.monotonic() - killed_at:.2f} s after SIGKILL (ring right after {healed_after:.2f} s)"
    )
    assert load_a.errors == [] and load_b.errors == []
    assert load_a.rounds > 0 and load_b.rounds > 0


def test_nodes_on_separate_hosts_on_one_port(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    """Three nodes on 127.0.0.11, .12 and .13, all on one port, each advertising its own address (the
    reference hard-codes 127.0.0.1 into ids and cannot)."""
    hosts = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    port = free_port_on(hosts)
    nodes = []
    for index, host in enumerate(hosts):
        args = ["--host", host, "--port", str(port)]
        if nodes:
            args += ["--join", nodes[0].address]
        nodes.append(node_process_factory(args=args, name=f"host{index}"))
    assert [node.address for node in nodes] == [f"{host}:{port}" for host in hosts]
    wait_until_stable(nodes)
    keys = KEYS[:2000]
    v1_pipeline(nodes[0].address, [encode_request(PUT, k, value_of(k)) for k in keys])
    for node in nodes:
        answers = v1_pipeline(node.address, [encode_request(GET, k) for k in keys])
        assert [k for k, a in zip(keys, answers, strict=True) if a != Response(0, value_of(k))] == []
    ids, counts = stored_counts(nodes)
    assert sorted(ids) == sorted(int.from_bytes(hashlib.sha1(f"{h}:{port}".encode()).digest()) for h in hosts)
    assert counts == expected_counts(keys, ids)


def free_port_on(hosts: list[str]) -> int:
    """A port free on every one of ``hosts`` (tried a few times: another process may take it)."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return int(port)
    raise RuntimeError("no port free on every host")


def test_a_node_stopped_with_sigterm_takes_its_range_back_on_restart(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    """SIGTERM is not a leave: the node keeps its data and its place. Restarted on its data directory
    with its seed, it takes its range back from its successor, and the successor's copy wins for keys
    written while it was away."""

    def lmdb(index: int) -> list[str]:
        return ["--backend", "lmdb", "--data-dir", str(tmp_path / f"data{index}")]

    first = node_process_factory(args=lmdb(0), name="n0")
    nodes = [first] + [
        node_process_factory(args=[*lmdb(i), "--join", first.address], name=f"n{i}") for i in (1, 2)
    ]
    wait_until_stable(nodes)
    keys = KEYS[:3000]
    v1_pipeline(first.address, [encode_request(PUT, k, b"old-" + k) for k in keys])
    away = nodes[1]
    port = int(away.address.rsplit(":", 1)[1])
    assert away.stop() == 0
    present = [nodes[0], nodes[2]]
    wait_until_stable(present)
    v1_pipeline(first.address, [encode_request(PUT, k, b"new-" + k) for k in keys[::2]])  # while away
    back = node_process_factory(
        args=[*lmdb(1), "--port", str(port), "--join", first.address], name="n1-again"
    )
    nodes = [nodes[0], back, nodes[2]]
    wait_until_stable(nodes)
    expected = {k: (b"new-" if i % 2 == 0 else b"old-") + k for i, k in enumerate(keys)}
    deadline = time.monotonic() + 20
    while True:
        ids, counts = stored_counts(nodes)
        if counts == expected_counts(keys, ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counts == expected_counts(keys, ids), "the range did not move back exactly"
    for node in nodes:
        answers = v1_pipeline(node.address, [encode_request(GET, k) for k in keys])
        assert [k for k, a in zip(keys, answers, strict=True) if a != Response(0, expected[k])] == []


def test_in_a_ring_of_two_the_one_left_takes_every_key_of_the_one_leaving(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_ring(tmp_path, 2, start=node_process_factory)
    wait_until_stable(nodes)
    keys = KEYS[:2000]
    v1_pipeline(nodes[0].address, [encode_request(PUT, k, value_of(k)) for k in keys])
    assert info(nodes[1].address)["keys"] > 0
    assert v2_call(nodes[1].address, LEAVE).status == Status.SUCCESS
    assert nodes[1].process.wait(30) == 0
    assert info(nodes[0].address)["keys"] == len(keys)
    reads = v1_pipeline(nodes[0].address, [encode_request(GET, k) for k in keys])
    assert [k for k, a in zip(keys, reads, strict=True) if a != Response(0, value_of(k))] == []


def test_cluster_stats_gathers_every_members_info(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_ring(tmp_path, 3, start=node_process_factory)
    wait_until_stable(nodes)
    keys = KEYS[:900]
    v1_pipeline(nodes[0].address, [encode_request(PUT, k, value_of(k)) for k in keys])
    deadline = time.monotonic() + 10
    while True:  # the membership view is refreshed every 2 s
        answer = v2_call(nodes[1].address, CLUSTER_STATS)
        stats = json.loads(answer.body)
        if stats["totals"]["members"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer.status == Status.SUCCESS
    assert stats["totals"] == {
        "members": 3,
        "up": 3,
        "down": 0,
        "keys": len(keys),
        "bytes": sum(len(value_of(k)) for k in keys),
    }
    assert sorted(member["address"] for member in stats["members"]) == sorted(n.address for n in nodes)
    assert [member["keys"] for member in stats["members"]] == [
        info(member["address"])["keys"] for member in stats["members"]
    ]
