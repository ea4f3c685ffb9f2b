"""Hinted handoff (the repair issue's first step): writes kept as hints by fallbacks while a replica was
down reach that replica once it is back, and the fallbacks drop them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from funnelkvs.client import Client
from funnelkvs.protocol.replica import REPLICA_READ, decode_read_results, encode_reads
from funnelkvs.protocol.v2 import V2Response
from funnelkvs.testing.cluster import NodeProcess
from funnelkvs.testing.ring import info, split, v2_call, wait_until_stable
from funnelkvs.versions import is_hint, is_live, value_of
from tests.test_replication_faults import (
    REPLICATION,
    node_ids,
    replicas_of,
    start_replicated_ring,
    wait_until_members_known,
)

KEYS = [b"handoff-%d" % i for i in range(400)]


def copies_at(address: str, keys: list[bytes]) -> list[bytes | None]:
    answer: V2Response = v2_call(address, REPLICA_READ, encode_reads(keys))
    assert answer.status == 0, answer
    return decode_read_results(answer.body)


def test_hints_reach_a_restarted_replica_and_leave_the_fallbacks(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_replicated_ring(tmp_path, node_process_factory, 4)
    by_id = node_ids(nodes)
    away = nodes[2]
    away_id = next(node_id for node_id, node in by_id.items() if node is away)
    _, port = split(away.address)
    away.kill()
    survivors = [node for node in nodes if node is not away]
    with Client([node.address for node in survivors]) as client:
        for key in KEYS:
            client.put(key, b"v-" + key)
    # The keys whose preference list holds the node that was away went to a fallback as hints.
    mine = [key for key in KEYS if away_id in replicas_of(key, list(by_id))]
    assert mine
    assert sum(info(node.address)["hints_pending"] for node in survivors) >= len(mine)

    back = node_process_factory(
        config=REPLICATION,
        backend="lmdb",
        data_dir=tmp_path / "ring2-data",  # start_ring names the nodes ring0, ring1, ...
        port=port,
        args=["--join", nodes[0].address],
        name="back",
    )
    everyone = [*survivors, back]
    wait_until_stable(everyone)
    wait_until_members_known(everyone)
    deadline = time.monotonic() + 30
    while sum(info(node.address)["hints_pending"] for node in survivors) > 0:
        assert time.monotonic() < deadline, "hints were not handed off within 30 s"
        time.sleep(0.2)
    assert sum(info(node.address)["hints_delivered"] for node in survivors) >= len(mine)
    # The replica has its copies (plain, not hints), and every key still reads back.
    held = copies_at(back.address, mine)
    assert all(copy is not None and is_live(copy) and not is_hint(copy) for copy in held)
    assert [value_of(copy) for copy in held if copy is not None] == [b"v-" + key for key in mine]
    with Client([node.address for node in everyone]) as client:
        assert client.get_many(KEYS) == [b"v-" + key for key in KEYS]
