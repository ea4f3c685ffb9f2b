"""The Chord protocol as pure code: state, rules, messages and effects, with no I/O.

Sources: Stoica, Morris, Karger, Kaashoek, Balakrishnan, "Chord: A Scalable Peer-to-peer Lookup
Service for Internet Applications" (SIGCOMM 2001); Zave, "Reasoning about identifier spaces: How to
make Chord correct" (IEEE TSE 2017). See docs/chord.md.

The real node and the simulator drive the same :class:`ChordNode`: they deliver timer ticks,
requests, replies and timeouts, and carry out the :class:`Send` effects it returns.
"""

from funnelkvs.chord.effects import (
    Effect,
    Joined,
    JoinFailed,
    Left,
    LookupDone,
    LookupFailed,
    PredecessorChanged,
    Send,
    SuccessorChanged,
    SuccessorListChanged,
)
from funnelkvs.chord.finger_table import FingerTable, finger_start
from funnelkvs.chord.ids import distance, in_half_open, in_open
from funnelkvs.chord.messages import (
    Ack,
    FindSuccessor,
    Found,
    GetNeighbours,
    Leave,
    Neighbours,
    NextHop,
    Notify,
    Ping,
    Pong,
    Reply,
    Request,
)
from funnelkvs.chord.node_ref import NodeRef, node_id, node_ref
from funnelkvs.chord.node_state import ChordNode, NotOnRing, Status
from funnelkvs.chord.routing import Lookup, RoutingCandidates, closest_preceding_node, find_successor_step
from funnelkvs.chord.successor_list import SuccessorList, reconciled

__all__ = [
    "Ack",
    "ChordNode",
    "Effect",
    "FindSuccessor",
    "FingerTable",
    "Found",
    "GetNeighbours",
    "JoinFailed",
    "Joined",
    "Leave",
    "Left",
    "Lookup",
    "LookupDone",
    "LookupFailed",
    "Neighbours",
    "NextHop",
    "NodeRef",
    "NotOnRing",
    "Notify",
    "Ping",
    "Pong",
    "PredecessorChanged",
    "Reply",
    "Request",
    "RoutingCandidates",
    "Send",
    "Status",
    "SuccessorChanged",
    "SuccessorList",
    "SuccessorListChanged",
    "closest_preceding_node",
    "distance",
    "find_successor_step",
    "finger_start",
    "in_half_open",
    "in_open",
    "node_id",
    "node_ref",
    "reconciled",
]
