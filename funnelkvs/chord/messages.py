"""The Chord RPCs as plain data: requests, and the replies each one gets.

Every field is an int, a str, a bool, a :class:`NodeRef`, None, or a tuple of those, so the wire codec
(v2 frames, docs/protocol.md) maps them one to one. A reply always answers the request of the same
call id; the driver matches them (see :mod:`funnelkvs.chord.node_state`).

==================  =============================  ==================================================
request             reply                          meaning (source)
==================  =============================  ==================================================
FindSuccessor       Found or NextHop               one step of an iterative lookup (paper 4.3, 5.3)
GetNeighbours       Neighbours                     predecessor and successor list, for stabilize and
                                                   join (paper 4.4, Figure 7; Zave 2017)
Notify              Ack                            "I might be your predecessor" (paper Figure 7;
                                                   Zave's "rectify")
Ping                Pong                           liveness, for check_predecessor (paper 4.4)
Leave               Ack                            a node leaves voluntarily (paper 5.4)
==================  =============================  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from funnelkvs.chord.node_ref import NodeRef

# --- requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FindSuccessor:
    """Who owns ``key``? Answered with :class:`Found` when ``key`` is in ``(callee, callee's
    successor]``, else with :class:`NextHop` (the callee's closest preceding node).

    ``avoid``: ids the caller found dead; the callee routes around them (paper 5.3: a timed-out hop
    is retried through the next best node), and leaves them out of a :class:`Found` answer.
    """

    key: int
    avoid: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class GetNeighbours:
    """Send your predecessor and your successor list (answered with :class:`Neighbours`)."""


@dataclass(frozen=True, slots=True)
class Notify:
    """``node`` thinks it might be the callee's predecessor (paper Figure 7, ``notify``)."""

    node: NodeRef


@dataclass(frozen=True, slots=True)
class Ping:
    """Are you alive? (answered with :class:`Pong`)."""


@dataclass(frozen=True, slots=True)
class Leave:
    """``node`` leaves the ring (paper 5.4). Sent to both neighbours: the predecessor replaces
    ``node`` by ``node``'s successor list, the successor takes ``predecessor`` as its predecessor."""

    node: NodeRef
    predecessor: NodeRef | None
    successors: tuple[NodeRef, ...]


Request = FindSuccessor | GetNeighbours | Notify | Ping | Leave

# --- replies -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """The key's owner is ``successors[0]``; the rest is the answering node's successor list after it
    (the owner's next nodes, where the key's replicas live). Never empty."""

    successors: tuple[NodeRef, ...]

    @property
    def owner(self) -> NodeRef:
        return self.successors[0]


@dataclass(frozen=True, slots=True)
class NextHop:
    """Ask ``node`` next: the answering node's closest preceding node for the key (paper Figure 4)."""

    node: NodeRef


@dataclass(frozen=True, slots=True)
class Neighbours:
    """The callee's predecessor (None: unknown) and successor list (empty: the callee is alone)."""

    predecessor: NodeRef | None
    successors: tuple[NodeRef, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """Received (Notify, Leave)."""


@dataclass(frozen=True, slots=True)
class Pong:
    """Alive (Ping)."""


Reply = Found | NextHop | Neighbours | Ack | Pong

#: The replies that carry no data are shared instances.
ACK = Ack()
PONG = Pong()
GET_NEIGHBOURS = GetNeighbours()
PING = Ping()
