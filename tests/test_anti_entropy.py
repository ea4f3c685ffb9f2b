"""Anti-entropy: the pure parts (buckets, metas, digests, messages) and, on real processes, a crash
that leaves N copies again (as hints) and tombstones purged after the grace period."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from funnelkvs.client import Client
from funnelkvs.errors import RemoteProtocolError
from funnelkvs.keyspace import RING_SIZE, KeyRange, ring_position
from funnelkvs.protocol.anti_entropy import (
    decode_digest_request,
    decode_digests,
    decode_keys_request,
    decode_metas,
    encode_digest_request,
    encode_digests,
    encode_keys_request,
    encode_metas,
)
from funnelkvs.replication.anti_entropy import bucket_of, meta_of, scan_arc
from funnelkvs.storage.memory import MemoryBackend
from funnelkvs.testing.cluster import NodeProcess
from funnelkvs.testing.ring import info, start_ring, wait_until_stable
from funnelkvs.versions import Version, as_hint, pack_tombstone, pack_value

# --- pure -----------------------------------------------------------------------------------------------


def test_buckets_cover_an_arc_in_order() -> None:
    start, end = RING_SIZE - 100, 300  # wraps past zero: 400 positions
    assert bucket_of(RING_SIZE - 99, start, end, 4) == 0
    assert bucket_of(0, start, end, 4) == 0
    assert bucket_of(1, start, end, 4) == 1
    assert bucket_of(300, start, end, 4) == 3
    assert bucket_of(5, 5, 5, 64) == 63  # the whole ring: its own id is the last position


def test_a_hint_has_the_meta_of_the_write_it_carries() -> None:
    plain = bytes(pack_value(Version(7, 9), b"v"))
    assert meta_of(as_hint(plain, bytes(20))) == meta_of(plain) == plain[:17]
    tombstone = pack_tombstone(Version(8, 1))
    assert meta_of(as_hint(tombstone, bytes(20))) == tombstone


def test_digests_differ_exactly_where_a_copy_differs() -> None:
    a, b = MemoryBackend(), MemoryBackend()
    for i in range(200):
        envelope = bytes(pack_value(Version(i + 1, 0), b"v%d" % i))
        a.put(b"k%d" % i, envelope)
        b.put(b"k%d" % i, envelope)
    b.put(b"k7", bytes(pack_value(Version(1000, 0), b"newer")))
    whole = KeyRange.whole_ring()
    scan_a, rest = scan_arc(a.scan, whole.start, whole.end, 16)
    assert rest is None
    # In steps of 30 entries: the same digests.
    scan_b, after = scan_arc(b.scan, whole.start, whole.end, 16, limit=30)
    steps = 1
    while after is not None:
        scan_b, after = scan_arc(b.scan, whole.start, whole.end, 16, scan_b, after, 30)
        steps += 1
    assert steps == 7
    differ = [i for i in range(16) if scan_a.digests[i] != scan_b.digests[i]]
    assert differ == [bucket_of(ring_position(b"k7"), 0, 0, 16)]
    assert b"k7" in scan_a.entries[differ[0]]


def test_anti_entropy_messages_round_trip() -> None:
    assert decode_digest_request(encode_digest_request(5, 9, 64)) == (5, 9, 64)
    assert decode_digests(encode_digests([1, 2**64 - 1]), 2) == [1, 2**64 - 1]
    assert decode_keys_request(encode_keys_request(5, 9, 64, [0, 63])) == (5, 9, 64, [0, 63])
    items = [(b"", bytes(17)), (b"key", bytes(range(17)))]
    assert decode_metas(encode_metas(items)) == items
    with pytest.raises(RemoteProtocolError):
        decode_keys_request(encode_keys_request(5, 9, 4, [4]))
    with pytest.raises(RemoteProtocolError):
        decode_metas(encode_metas(items)[:-1])


# --- real processes -------------------------------------------------------------------------------------


def start(
    tmp_path: Path, factory: Callable[..., NodeProcess], count: int, **replication: float
) -> list[NodeProcess]:
    config = {"replication": {"factor": 3, "anti_entropy_interval": 0.5, **replication}}
    nodes = start_ring(tmp_path, count, start=lambda **kwargs: factory(config=config, **kwargs))
    wait_until_stable(nodes)
    deadline = time.monotonic() + 20
    while any(info(node.address)["replication"]["members"] != count for node in nodes):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return nodes


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.2)
    return time.monotonic() - started


def test_after_a_crash_the_dead_nodes_copies_are_made_again_on_fallbacks(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start(tmp_path, node_process_factory, 5)
    with Client(nodes[0].address) as client:
        client.put_many((b"k%d" % i, b"v") for i in range(1000))
    # Every third copy landed (a write is answered after two).
    wait_for(lambda: sum(info(n.address)["keys"] for n in nodes) == 3000, 10, "three copies of every key")
    lost = info(nodes[2].address)["keys"]
    assert lost > 0
    nodes[2].kill()
    survivors = [node for node in nodes if node is not nodes[2]]
    # Every key has 3 copies again: 2 plain ones and a hint for the dead replica.
    took = wait_for(
        lambda: sum(info(n.address)["keys"] + info(n.address)["hints_pending"] for n in survivors) == 3000,
        30,
        "three copies of every key",
    )
    print(f"back to 3 copies {took:.1f} s after the kill")
    assert sum(info(node.address)["hints_pending"] for node in survivors) == lost
    assert sum(info(node.address)["anti_entropy_keys_repaired"] for node in survivors) >= lost


def test_tombstones_are_purged_after_the_grace_period(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start(tmp_path, node_process_factory, 4, tombstone_grace=5)
    with Client(nodes[0].address) as client:
        client.put_many((b"k%d" % i, b"v") for i in range(400))
        for i in range(200):
            client.delete(b"k%d" % i)
        # Three per delete (the third copy may land just after the client's answer).
        wait_for(
            lambda: sum(info(n.address)["tombstones"] for n in nodes) == 600, 4, "three tombstones per delete"
        )
        wait_for(lambda: sum(info(n.address)["tombstones"] for n in nodes) == 0, 30, "tombstones purged")
        assert client.get_many([b"k%d" % i for i in range(400)]) == [None] * 200 + [b"v"] * 200
    assert sum(info(node.address)["keys"] for node in nodes) == 600


def test_a_forgotten_dead_member_s_keys_get_new_replicas(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    import subprocess

    from funnelkvs.testing.cluster import funnelkvs_command

    nodes = start(tmp_path, node_process_factory, 5)
    with Client(nodes[0].address) as client:
        client.put_many((b"k%d" % i, b"v%d" % i) for i in range(600))
    nodes[2].kill()
    survivors = [node for node in nodes if node is not nodes[2]]
    wait_for(
        lambda: sum(info(n.address)["hints_pending"] for n in survivors) > 0, 30, "hints for the dead node"
    )
    command = [*funnelkvs_command(), "forget", nodes[2].address, "-s", nodes[0].address]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "forgotten by 4 member(s)" in result.stdout
    # Four members now: every key on exactly three of them, as plain copies, no hints left.
    took = wait_for(
        lambda: (
            all(info(n.address)["hints_pending"] == 0 for n in survivors)
            and sum(info(n.address)["keys"] for n in survivors) == 1800
        ),
        40,
        "three plain copies of every key on the four members",
    )
    print(f"re-replicated {took:.1f} s after forget")
    assert all(info(node.address)["replication"]["members"] == 4 for node in survivors)
    with Client([node.address for node in survivors]) as client:
        assert client.get_many([b"k%d" % i for i in range(600)]) == [b"v%d" % i for i in range(600)]
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 2 and "is not a member" in again.stderr
