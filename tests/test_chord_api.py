"""The public surface of the pure Chord package, pinned: the node and the simulator wire against it."""

from __future__ import annotations

import dataclasses
import typing

import funnelkvs.chord as chord
from funnelkvs.chord import effects, messages


def test_the_public_names_are_pinned() -> None:
    assert set(chord.__all__) == {
        "Ack", "ChordNode", "Effect", "FindSuccessor", "FingerTable", "Found", "GetNeighbours",
        "JoinFailed", "Joined", "Leave", "Left", "Lookup", "LookupDone", "LookupFailed", "Neighbours",
        "NextHop", "NodeRef", "NotOnRing", "Notify", "Ping", "Pong", "PredecessorChanged", "Reply", "Request",
        "RoutingCandidates", "Send", "Status", "SuccessorChanged", "SuccessorList",
        "SuccessorListChanged", "closest_preceding_node", "distance", "find_successor_step",
        "finger_start", "in_half_open", "in_open", "node_id", "node_ref", "reconciled",
    }  # fmt: skip
    for name in chord.__all__:
        assert hasattr(chord, name), name


def _classes(union: object) -> tuple[type, ...]:
    return typing.get_args(union)


def test_messages_and_effects_are_small_frozen_slotted_records() -> None:
    for cls in (*_classes(messages.Request), *_classes(messages.Reply), *_classes(effects.Effect)):
        assert dataclasses.is_dataclass(cls), cls
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert "__slots__" in cls.__dict__, cls


def test_messages_carry_only_plain_data() -> None:
    """Ints, strs, None, NodeRefs and tuples of those: what the v2 codec maps one to one."""
    ref = chord.NodeRef(5, "h:1")
    samples = [
        messages.FindSuccessor(7, (1, 2)),
        messages.GetNeighbours(),
        messages.Notify(ref),
        messages.Ping(),
        messages.Leave(ref, None, (ref,)),
        messages.Found((ref,)),
        messages.NextHop(ref),
        messages.Neighbours(ref, (ref, ref)),
        messages.Ack(),
        messages.Pong(),
    ]
    assert {type(m) for m in samples} == {*_classes(messages.Request), *_classes(messages.Reply)}

    def plain(value: object) -> bool:
        if isinstance(value, tuple):
            return all(plain(v) for v in value)
        if isinstance(value, chord.NodeRef):
            return type(value.node_id) is int and type(value.address) is str
        return value is None or type(value) in (int, str, bool)

    for message in samples:
        fields = dataclasses.fields(message)  # type: ignore[arg-type]
        assert all(plain(getattr(message, f.name)) for f in fields), message
