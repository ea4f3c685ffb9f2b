"""The pure parts of replication: the replica messages, the member table, placement with fallbacks."""

from __future__ import annotations

import pytest

from funnelkvs.errors import RemoteProtocolError
from funnelkvs.protocol.replica import (
    decode_read_results,
    decode_reads,
    decode_write_results,
    decode_writes,
    encode_read_results,
    encode_reads,
    encode_write_results,
    encode_writes,
)
from funnelkvs.replication.members import SUSPECT_SECONDS, Members
from funnelkvs.replication.placement import Placement, Target
from funnelkvs.replication.ringview import NodeRef
from funnelkvs.replication.strategy import SuccessorListStrategy


def node(node_id: int) -> NodeRef:
    return NodeRef(node_id, f"127.0.0.1:{7000 + node_id}")


# --- messages ------------------------------------------------------------------------------------------


def test_replica_messages_round_trip() -> None:
    items = [(b"", b"\x01" + bytes(16)), (b"k" * 300, bytes(range(256)))]
    assert decode_writes(encode_writes(items)) == items
    assert decode_write_results(encode_write_results([0, 3, 0])) == [0, 3, 0]
    assert decode_reads(encode_reads([b"a", b"", b"c"])) == [b"a", b"", b"c"]
    results: list[bytes | None] = [None, b"\x02" + bytes(16), None]
    assert decode_read_results(encode_read_results(results)) == results


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\x00\x00\x01", b"\x00\x00\x00\x01\x00\x00\x00\x05ab", encode_writes([(b"k", b"v")]) + b"x"],
)
def test_malformed_replica_writes_are_refused(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_writes(body)


def test_a_read_answer_with_a_bad_presence_flag_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_read_results(b"\x00\x00\x00\x01\x02\x00\x00\x00\x00")
    with pytest.raises(RemoteProtocolError):
        decode_write_results(b"\x00\x00\x00\x02\x00")


# --- members -------------------------------------------------------------------------------------------


def test_a_member_the_walk_no_longer_reaches_stays_a_member_but_is_down() -> None:
    members = Members(node(10))
    members.saw([node(10), node(20), node(30)], complete=True)
    assert [n.node_id for n in members.view.nodes] == [10, 20, 30]
    members.saw([node(10), node(30)], complete=True)
    assert len(members) == 3  # a crash does not shrink membership
    assert not members.is_up(20, now=0.0)
    assert members.up_count(0.0) == 2
    members.saw([node(10), node(20), node(30)], complete=True)
    assert members.is_up(20, now=0.0)


def test_an_incomplete_walk_marks_nobody_down() -> None:
    members = Members(node(10))
    members.saw([node(10), node(20), node(30)], complete=True)
    members.saw([node(10)], complete=False)
    assert members.up_count(0.0) == 3


def test_a_suspected_member_is_down_for_a_while() -> None:
    members = Members(node(10))
    members.saw([node(10), node(20)], complete=True)
    members.suspect(20, now=100.0)
    assert not members.is_up(20, 100.0 + SUSPECT_SECONDS / 2)
    assert members.is_up(20, 100.0 + SUSPECT_SECONDS)
    members.suspect(10, now=100.0)  # never itself
    assert members.is_up(10, 100.0)


def test_a_left_node_is_no_member_and_gossip_does_not_bring_it_back() -> None:
    members = Members(node(10))
    members.saw([node(10), node(20), node(30)], complete=True)
    epoch = members.epoch
    members.has_left(20, node(20).address)
    assert [n.node_id for n in members.view.nodes] == [10, 30]
    assert members.epoch > epoch
    other = Members(node(30))
    other.saw([node(10), node(20), node(30)], complete=True)
    other.merge(members.table())  # learns the leave
    assert [n.node_id for n in other.view.nodes] == [10, 30]
    members.merge({"members": [[f"{20:040x}", node(20).address]], "left": []})
    assert [n.node_id for n in members.view.nodes] == [10, 30]


def test_gossip_teaches_a_new_node_the_members_that_are_down() -> None:
    old = Members(node(10))
    old.saw([node(10), node(20), node(30)], complete=True)
    old.saw([node(10), node(30)], complete=True)  # 20 crashed
    new = Members(node(40))
    new.saw([node(10), node(30), node(40)], complete=True)
    new.merge(old.table())
    assert [n.node_id for n in new.view.nodes] == [10, 20, 30, 40]
    assert not new.is_up(20, 0.0)
    with pytest.raises((ValueError, KeyError, TypeError)):
        new.merge({"members": [["not hex", "x"]], "left": []})


# --- placement -----------------------------------------------------------------------------------------


def placement(ids: list[int], n: int = 3) -> tuple[Placement, Members]:
    members = Members(node(ids[0]))
    members.saw([node(i) for i in ids], complete=True)
    return Placement(SuccessorListStrategy(), members, n), members


def test_the_preference_list_is_the_owner_and_the_next_members() -> None:
    place, _ = placement([10, 20, 30, 40, 50])
    assert [n.node_id for n in place.preference_list(15)] == [20, 30, 40]
    assert [n.node_id for n in place.preference_list(45)] == [50, 10, 20]
    assert place.targets(15, 0.0) == [Target(node(20), None), Target(node(30), None), Target(node(40), None)]


def test_a_down_member_gets_a_fallback_that_keeps_a_hint() -> None:
    place, members = placement([10, 20, 30, 40, 50])
    members.saw([node(i) for i in (10, 20, 40, 50)], complete=True)  # 30 is down
    assert place.targets(15, 0.0) == [
        Target(node(20), None),
        Target(node(40), None),
        Target(node(50), node(30)),
    ]
    # Two adjacent members down: two fallbacks, in ring order.
    members.saw([node(i) for i in (10, 40, 50)], complete=True)
    assert place.targets(15, 0.0) == [
        Target(node(40), None),
        Target(node(50), node(20)),
        Target(node(10), node(30)),
    ]


def test_a_ring_smaller_than_the_factor_keeps_every_key_on_every_member() -> None:
    place, members = placement([10, 20])
    assert place.copies == 2
    assert [n.node_id for n in place.preference_list(5)] == [10, 20]
    members.saw([node(10)], complete=True)
    assert place.copies == 2  # a crash does not lower it
    assert place.targets(5, 0.0) == [Target(node(10), None)]  # no live node left to stand in


def test_a_member_counts_as_down_only_once_walks_have_missed_it_for_a_while() -> None:
    members = Members(node(10))
    members.saw([node(10), node(20), node(30)], complete=True, now=0.0)
    members.saw([node(10), node(30)], complete=True, now=5.0)  # successor lists in flux: missed once
    assert members.is_up(20, 5.0)
    members.saw([node(10), node(20), node(30)], complete=True, now=5.5)  # there it is again
    members.saw([node(10), node(30)], complete=True, now=6.0)
    members.saw([node(10), node(30)], complete=True, now=6.5)
    assert members.is_up(20, 6.5)  # missed for 0.5 s only
    members.saw([node(10), node(30)], complete=True, now=7.1)
    assert not members.is_up(20, 7.1)
    assert members.departed == 1
