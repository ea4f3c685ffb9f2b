"""Successor lists, finger tables, closest preceding node and the lookup state machine, alone."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from funnelkvs.chord import (
    FingerTable,
    Found,
    Lookup,
    NextHop,
    NodeRef,
    RoutingCandidates,
    SuccessorList,
    closest_preceding_node,
    distance,
    find_successor_step,
    finger_start,
    reconciled,
)
from funnelkvs.keyspace import RING_BITS, RING_SIZE

TOP = RING_SIZE - 1


def ref(i: int) -> NodeRef:
    return NodeRef(i, f"n{i}")


def ids_of(nodes: tuple[NodeRef, ...]) -> list[int]:
    return [n.node_id for n in nodes]


# --- successor list ---------------------------------------------------------------------------------


def test_reconcile_adopts_the_successor_then_its_list_trimmed_to_r() -> None:
    assert ids_of(reconciled(10, ref(20), [ref(30), ref(40), ref(50)], r=3)) == [20, 30, 40]


def test_reconcile_stops_where_the_list_comes_round_to_the_owner() -> None:
    # A ring of 3 nodes with r = 8: the successor's list wraps through the owner.
    assert ids_of(reconciled(10, ref(20), [ref(30), ref(10), ref(20)], r=8)) == [20, 30]


def test_reconcile_wraps_past_zero_in_ring_order() -> None:
    got = reconciled(TOP - 5, ref(TOP), [ref(3), ref(9), ref(TOP - 9)], r=8)
    assert ids_of(got) == [TOP, 3, 9, TOP - 9]


def test_reconcile_drops_entries_out_of_ring_order_and_excluded_ones() -> None:
    # 15 lies between the owner and its successor: a stale entry that would break the order.
    assert ids_of(reconciled(10, ref(20), [ref(15), ref(30), ref(25), ref(40)], r=8)) == [20, 30, 40]
    assert ids_of(reconciled(10, ref(20), [ref(30), ref(40)], r=8, exclude={30})) == [20, 40]


@settings(max_examples=200, deadline=None)
@given(
    owner=st.integers(0, TOP),
    successor=st.integers(0, TOP),
    theirs=st.lists(st.integers(0, TOP), max_size=12),
    r=st.integers(1, 10),
)
def test_reconciled_lists_are_distinct_ordered_and_short(
    owner: int, successor: int, theirs: list[int], r: int
) -> None:
    if successor == owner:
        return
    got = reconciled(owner, ref(successor), [ref(i) for i in theirs], r)
    assert got[0].node_id == successor
    assert len(got) <= r
    d = [distance(owner, n.node_id) for n in got]
    assert all(0 < a < b for a, b in pairwise(d))


def test_successor_list_successor_remove_and_alone() -> None:
    sl = SuccessorList(ref(10), 3)
    assert sl.successor == ref(10) and len(sl) == 0  # alone: its own successor
    assert sl.reconcile(ref(20), [ref(30), ref(40), ref(50)])
    assert ids_of(sl.nodes) == [20, 30, 40]
    assert not sl.reconcile(ref(20), [ref(30), ref(40)])  # unchanged
    assert sl.remove(20) and sl.successor == ref(30)  # the next entry takes over
    assert not sl.remove(99)
    assert sl.reconcile(ref(10), [])  # adopting oneself: alone
    assert sl.nodes == ()


# --- finger table -----------------------------------------------------------------------------------


def test_finger_starts_are_powers_of_two_ahead_and_wrap() -> None:
    assert finger_start(0, 0) == 1
    assert finger_start(0, 159) == 1 << 159
    assert finger_start(TOP, 0) == 0
    assert finger_start(TOP - 1, 3) == 6
    table = FingerTable(ref(100))
    assert [table.start(i) for i in range(4)] == [101, 102, 104, 108]


def test_set_from_fills_every_finger_the_node_covers() -> None:
    table = FingerTable(ref(100))
    nxt, changed = table.set_from(0, ref(108))  # covers starts 101, 102, 104, 108 (fingers 0-3)
    assert changed and nxt == 4
    assert [f.node_id if f else None for f in table.nodes[:5]] == [108, 108, 108, 108, None]
    nxt, changed = table.set_from(4, ref(200))  # starts 116 .. 228: fingers 4-6
    assert (nxt, changed) == (7, True)
    assert table.set_from(4, ref(200)) == (7, False)
    assert table.distinct() == (ref(108), ref(200))
    assert table.remove(108) and table.nodes[0] is None and table.distinct() == (ref(200),)


def test_set_from_wraps_to_the_first_finger_after_the_last() -> None:
    table = FingerTable(ref(10))
    nxt, _ = table.set_from(0, ref(5))  # 5 is just behind the owner: covers every start
    assert nxt == 0 and all(f == ref(5) for f in table.nodes)
    assert len(table.nodes) == RING_BITS


# --- closest preceding node ---------------------------------------------------------------------------


def test_closest_preceding_uses_fingers_and_successor_list() -> None:
    fingers = [ref(20), ref(40), None, ref(90)]
    succs = [ref(20), ref(30), ref(45)]
    assert closest_preceding_node(10, 50, fingers, succs) == ref(45)
    assert closest_preceding_node(10, 50, fingers, succs, fingers_only=True) == ref(40)
    assert closest_preceding_node(10, 50, fingers, succs, avoid={45}) == ref(40)
    assert closest_preceding_node(10, 20, fingers, succs) is None  # nothing strictly before 20
    assert closest_preceding_node(10, 5, fingers, succs) == ref(90)  # wraps: everything precedes 5


@settings(max_examples=300, deadline=None)
@given(
    owner=st.integers(0, TOP),
    key=st.integers(0, TOP),
    nodes=st.lists(st.integers(0, TOP), max_size=20),
    avoid=st.sets(st.integers(0, 19), max_size=5),
)
def test_binary_search_agrees_with_the_papers_scan(
    owner: int, key: int, nodes: list[int], avoid: set[int]
) -> None:
    refs = [ref(i) for i in nodes]
    avoided = {nodes[i] for i in avoid if i < len(nodes)}
    fast = RoutingCandidates(owner, refs).closest_preceding(key, avoided)
    slow = closest_preceding_node(owner, key, refs, [], avoided, fingers_only=True)
    assert (fast.node_id if fast else None) == (slow.node_id if slow else None)


def test_find_successor_step_answers_found_or_next_hop() -> None:
    me = ref(10)
    succs = (ref(20), ref(30))
    cands = RoutingCandidates(10, [ref(20), ref(30), ref(70)])
    assert find_successor_step(me, succs, cands, 15) == Found(succs)
    assert find_successor_step(me, succs, cands, 20) == Found(succs)
    assert find_successor_step(me, succs, cands, 50) == NextHop(ref(30))
    assert find_successor_step(me, succs, cands, 80) == NextHop(ref(70))
    # The successor is dead: the first live entry owns keys up to it.
    assert find_successor_step(me, succs, cands, 25, frozenset({20})) == Found((ref(30),))
    assert find_successor_step(me, (), cands, 99) == Found((me,))  # alone
    assert find_successor_step(me, succs, cands, 25, frozenset({20, 30})) == NextHop(me)  # stuck


# --- lookup -------------------------------------------------------------------------------------------


def test_lookup_counts_hops_and_ends_on_found() -> None:
    lk = Lookup(1, key=500, origin=ref(0), local_origin=True)
    assert lk.on_answer(NextHop(ref(300))) == ref(300)
    assert lk.on_answer(NextHop(ref(450))) == ref(450)
    assert lk.on_answer(Found((ref(510), ref(600)))) is None
    assert lk.successors == (ref(510), ref(600))
    assert lk.hops == 2


def test_lookup_routes_around_a_hop_that_timed_out() -> None:
    lk = Lookup(1, key=500, origin=ref(0), local_origin=True)
    lk.on_answer(NextHop(ref(300)))
    lk.on_answer(NextHop(ref(450)))
    assert lk.on_timeout() == ref(300)  # ask the previous node again...
    assert lk.avoid == {450}  # ...with the dead one to avoid
    assert lk.on_answer(NextHop(ref(440))) == ref(440)
    assert lk.on_answer(Found((ref(510),))) is None and lk.hops == 2


def test_lookup_refuses_a_hop_that_does_not_get_closer_and_fails_at_the_origin() -> None:
    lk = Lookup(1, key=500, origin=ref(0), local_origin=True)
    lk.on_answer(NextHop(ref(300)))
    assert lk.on_answer(NextHop(ref(200))) == ref(0)  # 300 went backwards: back to the origin
    assert 300 in lk.avoid
    assert lk.on_timeout() is None and lk.successors is None


def test_an_empty_found_answer_is_routed_around() -> None:
    lk = Lookup(1, key=500, origin=ref(0), local_origin=True)
    lk.on_answer(NextHop(ref(300)))
    assert lk.on_answer(Found(())) == ref(0) and 300 in lk.avoid
    assert lk.successors is None
