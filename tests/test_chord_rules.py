"""The rules of one ChordNode, driven by hand: each test plays the other nodes' answers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from funnelkvs.chord import (
    Ack,
    ChordNode,
    FindSuccessor,
    Found,
    GetNeighbours,
    Joined,
    JoinFailed,
    Leave,
    Left,
    LookupDone,
    Neighbours,
    NextHop,
    NodeRef,
    Notify,
    NotOnRing,
    Ping,
    Pong,
    PredecessorChanged,
    Send,
    Status,
    SuccessorChanged,
    SuccessorListChanged,
)
from funnelkvs.chord.effects import Effect


def ref(i: int) -> NodeRef:
    return NodeRef(i, f"n{i}")


def sends(effects: Sequence[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def only_send(effects: Sequence[Effect]) -> Send:
    out = sends(effects)
    assert len(out) == 1, effects
    return out[0]


def joined_node(me: int, succs: list[int], pred: int | None = None, r: int = 4) -> ChordNode:
    """A node in the ring with the given successor list, reached through the join protocol."""
    node = ChordNode(ref(me), successors=r)
    lookup = only_send(node.join(ref(succs[0])))
    assert lookup.message == FindSuccessor(me)
    ask = only_send(node.on_reply(lookup.call_id, Found((ref(succs[0]),)), 0.0))
    assert ask.to == ref(succs[0]) and ask.message == GetNeighbours()
    effects = node.on_reply(ask.call_id, Neighbours(None, tuple(ref(s) for s in succs[1:])), 0.0)
    notify = only_send(effects)
    assert notify.message == Notify(ref(me))
    node.on_reply(notify.call_id, Ack(), 0.0)
    if pred is not None:
        node.handle(Notify(ref(pred)), 0.0)
    return node


# --- join ---------------------------------------------------------------------------------------------


def test_join_adopts_the_successor_and_its_list_then_notifies_it() -> None:
    node = ChordNode(ref(50), successors=3)
    lookup = only_send(node.join(ref(10)))
    assert lookup.to == ref(10) and node.status is Status.JOINING
    nxt = only_send(node.on_reply(lookup.call_id, NextHop(ref(40)), 0.0))
    assert nxt.to == ref(40) and nxt.message == FindSuccessor(50)
    ask = only_send(node.on_reply(nxt.call_id, Found((ref(60), ref(70))), 0.0))
    assert ask.to == ref(60) and ask.message == GetNeighbours()
    effects = node.on_reply(ask.call_id, Neighbours(ref(40), (ref(70), ref(80), ref(90))), 0.0)
    assert node.status in (Status.NORMAL,)
    assert [s.node_id for s in node.successors] == [60, 70, 80]
    assert Joined(ref(60)) in effects
    assert SuccessorChanged(ref(50), ref(60)) in effects
    assert only_send(effects).message == Notify(ref(50))
    assert node.predecessor is None  # learnt from the predecessor's notify, not guessed


def test_join_fails_cleanly_when_the_seed_does_not_answer() -> None:
    node = ChordNode(ref(50))
    lookup = only_send(node.join(ref(10)))
    assert node.on_timeout(lookup.call_id, 1.0) == [JoinFailed(ref(10))]
    assert node.status is Status.NEW
    assert sends(node.join(ref(10)))  # it may try again


def test_create_and_join_refuse_a_node_already_on_a_ring() -> None:
    node = ChordNode(ref(1))
    node.create()
    with pytest.raises(RuntimeError):
        node.join(ref(2))
    with pytest.raises(ValueError):
        ChordNode(ref(3)).join(ref(3))


# --- stabilize ----------------------------------------------------------------------------------------


def test_stabilize_adopts_a_closer_predecessor_of_the_successor_only_once_it_answers() -> None:
    node = joined_node(10, [30, 40, 50])
    ask = only_send(node.on_stabilize(1.0))
    assert ask.to == ref(30) and ask.message == GetNeighbours()
    check = only_send(node.on_reply(ask.call_id, Neighbours(ref(20), (ref(40), ref(50))), 1.0))
    assert check.to == ref(20) and check.message == GetNeighbours()  # live?
    effects = node.on_reply(check.call_id, Neighbours(ref(10), (ref(30), ref(40))), 1.0)
    assert [s.node_id for s in node.successors] == [20, 30, 40]  # 20's list, trimmed at 40
    assert SuccessorChanged(ref(30), ref(20)) in effects
    assert only_send(effects).to == ref(20) and only_send(effects).message == Notify(ref(10))


def test_stabilize_keeps_its_successor_when_the_closer_node_is_dead_and_still_notifies() -> None:
    node = joined_node(10, [30, 40, 50])
    ask = only_send(node.on_stabilize(1.0))
    check = only_send(node.on_reply(ask.call_id, Neighbours(ref(20), (ref(40), ref(50), ref(60))), 1.0))
    effects = node.on_timeout(check.call_id, 2.0)
    assert node.successor == ref(30)
    assert [s.node_id for s in node.successors] == [30, 40, 50, 60]
    notify = only_send(effects)
    assert notify.to == ref(30) and notify.message == Notify(ref(10))


def test_stabilize_ignores_a_predecessor_outside_the_gap_and_always_notifies() -> None:
    node = joined_node(10, [30, 40])
    ask = only_send(node.on_stabilize(1.0))
    effects = node.on_reply(ask.call_id, Neighbours(ref(5), (ref(40),)), 1.0)
    assert node.successor == ref(30)
    assert only_send(effects).message == Notify(ref(10))  # Zave: notify even when nothing changed
    # Nothing changed, so no change effects.
    assert not [e for e in effects if not isinstance(e, Send)]


def test_a_second_stabilize_waits_for_the_first() -> None:
    node = joined_node(10, [30, 40])
    assert sends(node.on_stabilize(1.0))
    assert not node.on_stabilize(2.0)


def test_a_dead_successor_is_replaced_by_the_next_entry_at_once() -> None:
    node = joined_node(10, [30, 40, 50])
    ask = only_send(node.on_stabilize(1.0))
    effects = node.on_timeout(ask.call_id, 2.0)
    assert node.successor == ref(40)
    assert SuccessorChanged(ref(30), ref(40)) in effects
    assert SuccessorListChanged((ref(30), ref(40), ref(50)), (ref(40), ref(50))) in effects
    retry = only_send(effects)
    assert retry.to == ref(40) and retry.message == GetNeighbours()
    # 40 has not noticed yet: its predecessor is still 30, which is asked again (maybe it restarted)...
    check = only_send(node.on_reply(retry.call_id, Neighbours(ref(30), (ref(50), ref(60), ref(30))), 2.0))
    assert check.to == ref(30)
    effects = node.on_timeout(check.call_id, 3.0)
    # ... and, dead, it is not copied back from a list that still holds it.
    assert [s.node_id for s in node.successors] == [40, 50, 60]
    assert only_send(effects).message == Notify(ref(10))


def test_a_node_alone_adopts_the_node_that_notified_it() -> None:
    node = ChordNode(ref(10))
    node.create()
    assert not node.on_stabilize(0.0)
    reply, effects = node.handle(Notify(ref(20)), 0.0)
    assert reply == Ack() and list(effects) == [PredecessorChanged(None, ref(20))]
    check = only_send(node.on_stabilize(1.0))
    assert check.to == ref(20)
    effects = node.on_reply(check.call_id, Neighbours(ref(10), (ref(10),)), 1.0)
    assert node.successors == (ref(20),)
    assert only_send(effects).message == Notify(ref(10))


# --- notify and check_predecessor --------------------------------------------------------------------


def test_notify_adopts_when_unset_or_closer_and_not_when_farther() -> None:
    node = joined_node(50, [60, 70])
    assert node.handle(Notify(ref(20)), 0.0)[1] == [PredecessorChanged(None, ref(20))]
    assert node.handle(Notify(ref(40)), 0.0)[1] == [PredecessorChanged(ref(20), ref(40))]
    assert not node.handle(Notify(ref(30)), 0.0)[1]  # farther than 40
    assert not node.handle(Notify(ref(40)), 0.0)[1]  # the same
    assert node.predecessor == ref(40)


def test_check_predecessor_clears_a_predecessor_that_does_not_answer() -> None:
    node = joined_node(50, [60], pred=40)
    ping = only_send(node.on_check_predecessor(1.0))
    assert ping.to == ref(40) and ping.message == Ping()
    assert not node.on_reply(ping.call_id, Pong(), 1.0)
    assert node.predecessor == ref(40)
    ping = only_send(node.on_check_predecessor(2.0))
    assert node.on_timeout(ping.call_id, 3.0) == [PredecessorChanged(ref(40), None)]
    assert node.predecessor is None


# --- requests ------------------------------------------------------------------------------------------


def test_requests_are_answered_from_the_state() -> None:
    node = joined_node(50, [60, 70], pred=40)
    reply, effects = node.handle(GetNeighbours(), 0.0)
    assert reply == Neighbours(ref(40), (ref(60), ref(70))) and not effects
    assert node.handle(Ping(), 0.0)[0] == Pong()
    assert node.handle(FindSuccessor(55), 0.0)[0] == Found((ref(60), ref(70)))
    assert node.handle(FindSuccessor(65), 0.0)[0] == NextHop(ref(60))
    assert node.handle(FindSuccessor(65, (60,)), 0.0)[0] == Found((ref(70),))


def test_a_lookup_the_node_can_answer_itself_sends_nothing() -> None:
    node = joined_node(50, [60, 70])
    lookup_id, effects = node.lookup(55)
    assert effects == [LookupDone(lookup_id, 55, (ref(60), ref(70)), 0, 0)]


# --- leave ----------------------------------------------------------------------------------------------


def test_leave_tells_both_neighbours_and_ends_when_both_answered() -> None:
    node = joined_node(50, [60, 70], pred=40)
    effects = node.leave()
    notice = Leave(ref(50), ref(40), (ref(60), ref(70)))
    assert {(s.to, s.message) for s in sends(effects)} == {(ref(40), notice), (ref(60), notice)}
    first, second = sends(effects)
    assert not node.on_reply(first.call_id, Ack(), 1.0)
    assert node.on_timeout(second.call_id, 1.0)[-1] == Left()
    assert node.status is Status.LEFT


def test_a_node_not_on_a_ring_refuses_requests() -> None:
    """Answering as if alone would make a caller copy an empty successor list."""
    node = ChordNode(ref(50))
    with pytest.raises(NotOnRing):
        node.handle(GetNeighbours(), 0.0)
    node.join(ref(10))
    with pytest.raises(NotOnRing):
        node.handle(FindSuccessor(3), 0.0)


def test_the_neighbours_of_a_leaving_node_close_the_gap() -> None:
    pred = joined_node(40, [50, 60, 70], pred=30)
    succ = joined_node(60, [70, 80], pred=50)
    notice = Leave(ref(50), ref(40), (ref(60), ref(70), ref(80)))
    _, effects = pred.handle(notice, 1.0)
    assert [s.node_id for s in pred.successors] == [60, 70, 80]
    assert SuccessorChanged(ref(50), ref(60)) in effects
    _, effects = succ.handle(notice, 1.0)
    assert succ.predecessor == ref(40)
    assert effects == [PredecessorChanged(ref(50), ref(40))]


def test_a_reply_of_the_wrong_type_counts_as_a_failed_call() -> None:
    """A confused or malicious peer cannot crash the loop: its answer is treated as no answer."""
    node = joined_node(10, [30, 40])
    ask = only_send(node.on_stabilize(1.0))
    effects = node.on_reply(ask.call_id, Pong(), 1.0)
    assert node.successor == ref(40)  # 30 dropped as if it had timed out
    assert SuccessorChanged(ref(30), ref(40)) in effects
    assert not node.on_reply(ask.call_id, Neighbours(None, ()), 1.0)  # the call is over


def test_owns_is_the_range_from_the_predecessor() -> None:
    node = joined_node(50, [60])
    assert node.owns(50) and not node.owns(45)  # no predecessor yet: only its own id
    node.handle(Notify(ref(40)), 0.0)
    assert node.owns(45) and node.owns(50) and not node.owns(40) and not node.owns(55)
    alone = ChordNode(ref(7))
    alone.create()
    assert alone.owns(0) and alone.owns(2**160 - 1)
