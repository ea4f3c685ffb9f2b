"""What the Chord rules ask of their driver: messages to send, and changes the node must act on.

Every handler of :class:`funnelkvs.chord.node_state.ChordNode` returns a list of these, in order.
:class:`Send` is the only one the driver must act on for Chord itself; the others tell the node
(key transfer, replication) and the simulator (measurements) what happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from funnelkvs.chord.messages import Request
from funnelkvs.chord.node_ref import NodeRef


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to ``to`` and later deliver its reply with ``on_reply(call_id, reply, now)``,
    or ``on_timeout(call_id, now)`` when none comes within the RPC timeout (or the peer is
    unreachable). Call ids are the node's own, unique for its lifetime."""

    call_id: int
    to: NodeRef
    message: Request


@dataclass(frozen=True, slots=True)
class PredecessorChanged:
    """The predecessor went from ``old`` to ``new`` (None: unknown). The owned range is now
    ``(new, self]``: when ``new`` is closer, ``(old, new]`` moved to ``new``; the node transfers it."""

    old: NodeRef | None
    new: NodeRef | None


@dataclass(frozen=True, slots=True)
class SuccessorListChanged:
    """The successor list went from ``old`` to ``new`` (empty: alone). Replication re-reads its
    preference lists here. When the first entry changed, a :class:`SuccessorChanged` comes first."""

    old: tuple[NodeRef, ...]
    new: tuple[NodeRef, ...]


@dataclass(frozen=True, slots=True)
class SuccessorChanged:
    """The successor went from ``old`` to ``new`` (the node itself: alone)."""

    old: NodeRef
    new: NodeRef


@dataclass(frozen=True, slots=True)
class Joined:
    """The join finished: the node adopted ``successor`` and its list (Zave 2017, "join")."""

    successor: NodeRef


@dataclass(frozen=True, slots=True)
class JoinFailed:
    """The join through ``seed`` found no live successor; the node is back where it was before
    ``join``. The driver tries again, with this seed or another."""

    seed: NodeRef


@dataclass(frozen=True, slots=True)
class LookupDone:
    """Lookup ``lookup_id`` found ``key``'s owner: ``successors[0]``, followed by the nodes after it.

    ``hops``: messages to other nodes on the final path (0 when the start node's successor owns the
    key); ``messages``: every FindSuccessor sent, retries and timeouts included."""

    lookup_id: int
    key: int
    successors: tuple[NodeRef, ...]
    hops: int
    messages: int

    @property
    def owner(self) -> NodeRef:
        return self.successors[0]


@dataclass(frozen=True, slots=True)
class LookupFailed:
    """Lookup ``lookup_id`` gave up: no node on the way could route it further, or it took more
    than the node's ``max_lookup_messages``."""

    lookup_id: int
    key: int
    hops: int
    messages: int


@dataclass(frozen=True, slots=True)
class Left:
    """Both neighbours acknowledged the leave (or timed out); the driver may stop the node."""


Effect = (
    Send
    | PredecessorChanged
    | SuccessorListChanged
    | SuccessorChanged
    | Joined
    | JoinFailed
    | LookupDone
    | LookupFailed
    | Left
)
