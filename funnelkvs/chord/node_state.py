"""One Chord node's state and rules, as a sans-I/O state machine.

The driver (the FunnelKVS node on its selector loop, or the simulator) owns timers, the network and
the clock. It calls the handlers below when a timer fires, a request arrives, a reply arrives or a
call times out; each handler updates the state and returns :mod:`effects <funnelkvs.chord.effects>`,
chiefly :class:`~funnelkvs.chord.effects.Send`. Nothing here blocks, sleeps, reads a clock or draws
a random number.

The rules, with their sources (Stoica et al., SIGCOMM 2001 = "paper"; Zave, IEEE TSE 2017 = "Zave"):

- join (paper 4.4; Zave's correction): look up the successor of the node's own id through a seed,
  ask that successor for its list, adopt ``[successor] + its list`` trimmed to r.
- stabilize (paper Figure 7, section 5.3; Zave): ask the successor for its predecessor p and list;
  when p lies in ``(n, successor)`` and answers (it is asked for its own list, which is the liveness
  check), p becomes the successor; reconcile the list from the successor's; always notify the
  successor. A successor that does not answer is dropped and the next entry is tried at once.
- notify / rectify (paper Figure 7; Zave): adopt the notifier as predecessor when the predecessor is
  unset (a predecessor that failed a call is unset at once) or the notifier lies in
  ``(predecessor, n)``.
- check_predecessor (paper 4.4): clear a predecessor that does not answer a ping.
- fix_fingers (paper Figure 7): refresh the next finger by a lookup (and every later finger the
  same node covers).
- leave (paper 5.4): tell the predecessor our successor list and the successor our predecessor.
- a call that times out drops the peer from the successor list, the fingers and the predecessor at
  once. Nothing remembers it as dead: if a neighbour's list still names it, it comes back and is
  dropped again when called, until the neighbours have dropped it too; a node that restarted is
  taken back as soon as it answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from funnelkvs.chord.calls import (
    CANDIDATE,
    EXPECTED_REPLY,
    FOR_CALLER,
    FOR_FINGER,
    FOR_JOIN,
    JOIN_NEIGHBOURS,
    LEAVE,
    LOOKUP,
    NOTIFY,
    PING_PREDECESSOR,
    STABILIZE,
)
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
from funnelkvs.chord.finger_table import FingerTable
from funnelkvs.chord.ids import in_half_open, in_open
from funnelkvs.chord.messages import (
    ACK,
    GET_NEIGHBOURS,
    PING,
    PONG,
    FindSuccessor,
    Found,
    GetNeighbours,
    Leave,
    Neighbours,
    NextHop,
    Notify,
    Ping,
    Reply,
    Request,
)
from funnelkvs.chord.node_ref import NodeRef
from funnelkvs.chord.routing import Lookup, RoutingCandidates, find_successor_step
from funnelkvs.chord.status import NotOnRing, Status
from funnelkvs.chord.successor_list import SuccessorList

__all__ = ["ChordNode", "NotOnRing", "Status"]


_NO_EFFECTS: Sequence[Effect] = ()
_MEMBER = frozenset({Status.NORMAL, Status.LEAVING})


class ChordNode:
    """The Chord state of the node ``me`` and the rules that change it.

    :param me: this node.
    :param successors: r, the successor list length (``ring.successors``).
    :param max_lookup_messages: a lookup gives up after sending this many FindSuccessor messages.
    :param fingers_only: answer FindSuccessor with fingers only (the paper's routing, for the
        simulator's comparison); the successor list still decides ownership.

    Handlers return effects in order, as a read-only sequence (it may be shared).
    """

    __slots__ = (
        "_calls",
        "_candidates",
        "_candidates_fingers_only",
        "_fixing",
        "_leave_pending",
        "_next_call",
        "_next_lookup",
        "_pinging",
        "_stabilizing",
        "changes",
        "fingers",
        "fingers_only",
        "max_lookup_messages",
        "me",
        "predecessor",
        "status",
        "successor_list",
    )

    def __init__(
        self,
        me: NodeRef,
        *,
        successors: int = 8,
        max_lookup_messages: int = 512,
        fingers_only: bool = False,
    ) -> None:
        self.me = me
        self.predecessor: NodeRef | None = None
        self.successor_list = SuccessorList(me, successors)
        self.fingers = FingerTable(me)
        self.status = Status.NEW
        self.max_lookup_messages = max_lookup_messages
        self.fingers_only = fingers_only
        #: Incremented on every change of predecessor, successor list or fingers (for drivers that
        #: wait for quiescence).
        self.changes = 0
        self._calls: dict[int, tuple[int, NodeRef, object]] = {}
        self._next_call = 1
        self._next_lookup = 1
        self._candidates: RoutingCandidates | None = None
        self._candidates_fingers_only: RoutingCandidates | None = None
        self._stabilizing = False
        self._fixing = False
        self._pinging = False
        self._leave_pending = 0

    # --- views ------------------------------------------------------------------------------------

    @property
    def successor(self) -> NodeRef:
        """The first entry of the successor list; the node itself when alone."""
        return self.successor_list.successor

    @property
    def successors(self) -> tuple[NodeRef, ...]:
        return self.successor_list.nodes

    def owns(self, key: int) -> bool:
        """``key`` in ``(predecessor, me]``; with no predecessor known, the node claims nothing but its
        own id (it cannot tell its range yet)."""
        if self.predecessor is None:
            return key == self.me.node_id or not self.successor_list.nodes
        return in_half_open(key, self.predecessor.node_id, self.me.node_id)

    def candidates(self, *, fingers_only: bool = False) -> RoutingCandidates:
        """The routing candidates (fingers and successor list, or fingers and successor only)."""
        if fingers_only:
            if self._candidates_fingers_only is None:
                nodes = [*self.fingers.distinct(), self.successor]
                self._candidates_fingers_only = RoutingCandidates(self.me.node_id, nodes)
            return self._candidates_fingers_only
        if self._candidates is None:
            nodes = [*self.fingers.distinct(), *self.successor_list.nodes]
            self._candidates = RoutingCandidates(self.me.node_id, nodes)
        return self._candidates

    def find_successor_step(
        self, key: int, avoid: tuple[int, ...] | frozenset[int] = (), *, fingers_only: bool | None = None
    ) -> Found | NextHop:
        """This node's answer to ``FindSuccessor(key, avoid)`` (see
        :func:`funnelkvs.chord.routing.find_successor_step`). The simulator calls it directly to
        walk a lookup without messages; ``fingers_only`` overrides the node's setting."""
        only = self.fingers_only if fingers_only is None else fingers_only
        return find_successor_step(
            self.me, self.successor_list.nodes, self.candidates(fingers_only=only), key, avoid
        )

    # --- starting and stopping --------------------------------------------------------------------

    def create(self) -> Sequence[Effect]:
        """Start a new ring with this node alone in it (paper Figure 6, ``create``)."""
        self._require(Status.NEW, "create")
        self.status = Status.NORMAL
        return _NO_EFFECTS

    def join(self, seed: NodeRef) -> Sequence[Effect]:
        """Join the ring that ``seed`` is on: look up our successor through ``seed``, then adopt it and
        its successor list (Zave's join). Ends with :class:`Joined` or :class:`JoinFailed`."""
        self._require(Status.NEW, "join")
        if seed.node_id == self.me.node_id:
            raise ValueError("a node cannot join through itself; use create()")
        self.status = Status.JOINING
        return self._ask(self._join_lookup(seed), [], seed)

    def _join_lookup(self, seed: NodeRef) -> Lookup:
        return Lookup(
            self._lookup_id(), self.me.node_id, seed, local_origin=False, purpose=FOR_JOIN, payload=seed
        )

    def leave(self) -> Sequence[Effect]:
        """Leave voluntarily (paper 5.4): tell the predecessor our successor list and the successor our
        predecessor. Ends with :class:`Left` once both answered or timed out. The driver hands the
        keys to the successor before calling this. The node keeps answering requests meanwhile."""
        self._require(Status.NORMAL, "leave")
        self.status = Status.LEAVING
        notice = Leave(self.me, self.predecessor, self.successor_list.nodes)
        targets: dict[int, NodeRef] = {}
        for node in (self.predecessor, self.successor):
            if node is not None and node.node_id != self.me.node_id:
                targets.setdefault(node.node_id, node)
        effects: list[Effect] = [self._call(LEAVE, node, notice) for node in targets.values()]
        self._leave_pending = len(effects)
        if not effects:
            self.status = Status.LEFT
            effects.append(Left())
        return effects

    def lookup(self, key: int) -> tuple[int, Sequence[Effect]]:
        """Find ``key``'s successor, starting here. Returns the lookup id and the effects; ends with
        :class:`LookupDone` or :class:`LookupFailed` carrying that id (maybe in these effects)."""
        lookup = Lookup(self._lookup_id(), key, self.me, local_origin=True, purpose=FOR_CALLER)
        return lookup.lookup_id, self._ask(lookup, [], self.me)

    # --- timers -----------------------------------------------------------------------------------

    def on_stabilize(self, now: float) -> Sequence[Effect]:
        """The stabilize timer fired (``ring.stabilize_interval``). Does nothing while the previous
        round is still waiting for an answer."""
        if self.status not in (Status.NORMAL, Status.LEAVING) or self._stabilizing:
            return _NO_EFFECTS
        effects: list[Effect] = []
        self._stabilize(now, effects)
        return effects

    def on_fix_fingers(self, now: float) -> Sequence[Effect]:
        """The fix-fingers timer fired (``ring.fix_fingers_interval``): refresh the next finger."""
        if self.status is not Status.NORMAL or self._fixing:
            return _NO_EFFECTS
        succ = self.successor
        if succ.node_id == self.me.node_id:
            # Alone: the node succeeds every start (and routing never picks itself).
            if self.fingers.set_from(0, self.me)[1]:
                self._fingers_changed()
            return _NO_EFFECTS
        fingers = self.fingers
        i = fingers.next_to_fix
        if i == 0 or in_half_open(fingers.start(i), self.me.node_id, succ.node_id):
            # Fingers whose start the successor covers need no lookup.
            nxt, changed = fingers.set_from(0 if i == 0 else i, succ)
            if changed:
                self._fingers_changed()
            fingers.next_to_fix = i = nxt
            if i == 0:
                return _NO_EFFECTS
        self._fixing = True
        lookup = Lookup(
            self._lookup_id(), fingers.start(i), self.me, local_origin=True, purpose=FOR_FINGER, payload=i
        )
        return self._ask(lookup, [], self.me)

    def on_check_predecessor(self, now: float) -> Sequence[Effect]:
        """The check-predecessor timer fired: ping the predecessor; it is cleared if it times out."""
        pred = self.predecessor
        if pred is None or self._pinging or pred.node_id == self.me.node_id:
            return _NO_EFFECTS
        self._pinging = True
        return [self._call(PING_PREDECESSOR, pred, PING)]

    # --- requests from other nodes ------------------------------------------------------------------

    def handle(self, request: Request, now: float) -> tuple[Reply, Sequence[Effect]]:
        """Answer a request from another node. Returns the reply (to send back under the request's
        call id) and effects (Notify and Leave may change the predecessor or the successor list).

        :raises NotOnRing: the node is not a member (new, joining, or left). It must not answer as if
            it were alone: a caller would copy its empty successor list. The driver answers with an
            error, which the caller's driver delivers as ``on_timeout``.
        """
        if self.status not in _MEMBER:
            raise NotOnRing(f"node {self.me.address} is {self.status.value}, not on the ring")
        if isinstance(request, FindSuccessor):
            return self.find_successor_step(request.key, request.avoid), _NO_EFFECTS
        if isinstance(request, GetNeighbours):
            return Neighbours(self.predecessor, self.successor_list.nodes), _NO_EFFECTS
        if isinstance(request, Ping):
            return PONG, _NO_EFFECTS
        if isinstance(request, Notify):
            return ACK, self._notified(request.node, now)
        if isinstance(request, Leave):
            return ACK, self._neighbour_left(request, now)
        raise TypeError(f"not a Chord request: {request!r}")

    # --- replies and timeouts -----------------------------------------------------------------------

    def on_reply(self, call_id: int, reply: Reply, now: float) -> Sequence[Effect]:
        """The reply to our call ``call_id`` arrived. Unknown call ids (a reply after its timeout) are
        ignored; a reply of the wrong type counts as a failed call (see :meth:`on_timeout`)."""
        call = self._calls.get(call_id)
        if call is None:
            return _NO_EFFECTS
        kind, peer, data = call
        if not isinstance(reply, EXPECTED_REPLY[kind]):
            return self.on_timeout(call_id, now)
        del self._calls[call_id]
        effects: list[Effect] = []
        if kind == STABILIZE:
            assert isinstance(reply, Neighbours)
            self._on_successor_neighbours(peer, reply, now, effects)
        elif kind == CANDIDATE:
            assert isinstance(reply, Neighbours)
            asked_successor, _ = cast(tuple[NodeRef | None, tuple[NodeRef, ...]], data)
            if (asked_successor or self.me) == self.successor:
                self._adopt_successor(peer, reply.successors, now, effects)
            self._end_stabilize(effects)
        elif kind == LOOKUP:
            assert isinstance(reply, (Found, NextHop))
            assert isinstance(data, Lookup)
            self._ask(data, effects, data.on_answer(reply))
        elif kind == JOIN_NEIGHBOURS:
            assert isinstance(reply, Neighbours)
            if self.status is Status.JOINING:
                self.status = Status.NORMAL
                self._adopt_successor(peer, reply.successors, now, effects)
                effects.append(Joined(peer))
                effects.append(self._call(NOTIFY, peer, Notify(self.me)))
        elif kind == PING_PREDECESSOR:
            self._pinging = False
        elif kind == LEAVE:
            self._leave_answered(effects)
        return effects

    def on_timeout(self, call_id: int, now: float) -> Sequence[Effect]:
        """Our call ``call_id`` got no reply in time (or the peer could not be reached)."""
        call = self._calls.pop(call_id, None)
        if call is None:
            return _NO_EFFECTS
        kind, peer, data = call
        effects: list[Effect] = []
        self._peer_failed(peer, now, effects)
        if kind == STABILIZE:
            self._stabilizing = False
            # Section 5.3: move on to the next live entry now rather than a period later.
            if self.status in (Status.NORMAL, Status.LEAVING):
                self._stabilize(now, effects)
        elif kind == CANDIDATE:
            successor, successors = cast(tuple[NodeRef | None, tuple[NodeRef, ...]], data)
            if successor is not None and successor == self.successor:
                self._adopt_successor(successor, successors, now, effects)
            self._end_stabilize(effects)
        elif kind == LOOKUP:
            assert isinstance(data, Lookup)
            self._ask(data, effects, data.on_timeout())
        elif kind == JOIN_NEIGHBOURS:
            if self.status is Status.JOINING:
                # The successor found is dead: look again through the seed, around it.
                seed, avoid = cast(tuple[NodeRef, frozenset[int]], data)
                lookup = self._join_lookup(seed)
                lookup.avoid.update(avoid)
                lookup.avoid.add(peer.node_id)
                self._ask(lookup, effects, seed)
        elif kind == PING_PREDECESSOR:
            self._pinging = False
        elif kind == LEAVE:
            self._leave_answered(effects)
        return effects

    # --- stabilize ----------------------------------------------------------------------------------

    def _stabilize(self, now: float, effects: list[Effect]) -> None:
        succ = self.successor
        if succ.node_id == self.me.node_id:
            # Alone: our "successor's predecessor" is our own (paper Figure 6 with n.successor = n).
            pred = self.predecessor
            if pred is not None and pred.node_id != self.me.node_id:
                self._stabilizing = True
                effects.append(self._call(CANDIDATE, pred, GET_NEIGHBOURS, (None, ())))
            return
        self._stabilizing = True
        effects.append(self._call(STABILIZE, succ, GET_NEIGHBOURS))

    def _on_successor_neighbours(
        self, succ: NodeRef, reply: Neighbours, now: float, effects: list[Effect]
    ) -> None:
        if succ != self.successor:
            # The successor changed while we waited (a timeout, a leave): this answer is stale.
            self._stabilizing = False
            return
        p = reply.predecessor
        if p is not None and in_open(p.node_id, self.me.node_id, succ.node_id):
            # Zave: adopt p only if it is live: asking it for its list is the check. Even a node we
            # marked dead is asked: it may have restarted, and an answer clears the mark.
            effects.append(self._call(CANDIDATE, p, GET_NEIGHBOURS, (succ, reply.successors)))
            return
        self._adopt_successor(succ, reply.successors, now, effects)
        self._end_stabilize(effects)

    def _end_stabilize(self, effects: list[Effect]) -> None:
        # Zave: always notify, even when nothing changed (the successor may have lost us).
        self._stabilizing = False
        succ = self.successor
        if succ.node_id != self.me.node_id:
            effects.append(self._call(NOTIFY, succ, Notify(self.me)))

    def _adopt_successor(
        self, succ: NodeRef, their_successors: tuple[NodeRef, ...], now: float, effects: list[Effect]
    ) -> None:
        old = self.successor_list.nodes
        if self.successor_list.reconcile(succ, their_successors):
            self._successors_changed(old, effects)

    def _successors_changed(self, old: tuple[NodeRef, ...], effects: list[Effect]) -> None:
        new = self.successor_list.nodes
        old_succ = old[0] if old else self.me
        new_succ = self.successor
        self.changes += 1
        self._candidates = None
        if old_succ != new_succ:
            self._candidates_fingers_only = None
            if new_succ.node_id != self.me.node_id:
                # Finger 0 is the successor (paper Table 1).
                self.fingers.set_from(0, new_succ)
            effects.append(SuccessorChanged(old_succ, new_succ))
        effects.append(SuccessorListChanged(old, new))

    # --- notify, leave --------------------------------------------------------------------------------

    def _notified(self, node: NodeRef, now: float) -> Sequence[Effect]:
        if node.node_id == self.me.node_id:
            return _NO_EFFECTS
        pred = self.predecessor
        # "Unset or dead": a predecessor that failed a call is already unset (see _peer_failed).
        if pred is None or in_open(node.node_id, pred.node_id, self.me.node_id):
            if node == pred:
                return _NO_EFFECTS
            self.predecessor = node
            self.changes += 1
            return [PredecessorChanged(pred, node)]
        return _NO_EFFECTS

    def _neighbour_left(self, notice: Leave, now: float) -> list[Effect]:
        gone = notice.node
        effects: list[Effect] = []
        if self.successor.node_id == gone.node_id and notice.successors:
            old = self.successor_list.nodes
            # The leaving node's list, as if it had been our successor's answer, minus the node.
            changed = self.successor_list.reconcile(notice.successors[0], notice.successors[1:])
            if changed:
                self._successors_changed(old, effects)
        self._forget(gone, now, effects)
        pred = self.predecessor
        if pred is not None and pred.node_id == gone.node_id:
            new = notice.predecessor
            if new is not None and new.node_id == self.me.node_id:
                new = None
            self.predecessor = new
            self.changes += 1
            effects.append(PredecessorChanged(pred, new))
        return effects

    def _leave_answered(self, effects: list[Effect]) -> None:
        self._leave_pending -= 1
        if self._leave_pending == 0 and self.status is Status.LEAVING:
            self.status = Status.LEFT
            effects.append(Left())

    # --- lookups ------------------------------------------------------------------------------------

    def _ask(self, lookup: Lookup, effects: list[Effect], target: NodeRef | None) -> list[Effect]:
        """Drive ``lookup`` on from asking ``target`` (None: it is over) until it needs a remote answer
        or ends. Asking this node itself is answered here, without a message."""
        while target is not None and target.node_id == self.me.node_id:
            target = lookup.on_answer(self.find_successor_step(lookup.key, frozenset(lookup.avoid)))
        if target is None:
            self._lookup_over(lookup, effects, failed=lookup.successors is None)
        elif lookup.messages >= self.max_lookup_messages:
            self._lookup_over(lookup, effects, failed=True)
        else:
            lookup.messages += 1
            request = FindSuccessor(lookup.key, tuple(sorted(lookup.avoid)))
            effects.append(self._call(LOOKUP, target, request, lookup))
        return effects

    def _lookup_over(self, lookup: Lookup, effects: list[Effect], *, failed: bool) -> None:
        successors = lookup.successors
        if lookup.purpose == FOR_CALLER:
            if failed or successors is None:
                effects.append(LookupFailed(lookup.lookup_id, lookup.key, lookup.hops, lookup.messages))
            else:
                effects.append(
                    LookupDone(lookup.lookup_id, lookup.key, successors, lookup.hops, lookup.messages)
                )
        elif lookup.purpose == FOR_JOIN:
            seed = lookup.payload
            assert isinstance(seed, NodeRef)
            others = (
                []
                if failed or successors is None
                else [s for s in successors if s.node_id != self.me.node_id]
            )
            if not others or self.status is not Status.JOINING:
                if self.status is Status.JOINING:
                    self.status = Status.NEW
                    effects.append(JoinFailed(seed))
                return
            data = (seed, frozenset(lookup.avoid))
            effects.append(self._call(JOIN_NEIGHBOURS, others[0], GET_NEIGHBOURS, data))
        else:
            self._fixing = False
            i = lookup.payload
            assert isinstance(i, int)
            if failed or successors is None or self.status is not Status.NORMAL:
                self.fingers.next_to_fix = (i + 1) % len(self.fingers.nodes)
                return
            owner = successors[0]
            # The owner may be this node itself: then it succeeds the rest of the starts.
            nxt, changed = self.fingers.set_from(i, owner)
            self.fingers.next_to_fix = nxt
            if changed:
                self._fingers_changed()

    def _fingers_changed(self) -> None:
        self.changes += 1
        self._candidates = None
        self._candidates_fingers_only = None

    # --- failures -------------------------------------------------------------------------------------

    def _peer_failed(self, peer: NodeRef, now: float, effects: list[Effect]) -> None:
        pred = self.predecessor
        if pred is not None and pred.node_id == peer.node_id:
            # Paper 4.4, check_predecessor: a predecessor that does not answer is cleared.
            self.predecessor = None
            self.changes += 1
            effects.append(PredecessorChanged(pred, None))
        self._forget(peer, now, effects)

    def _forget(self, peer: NodeRef, now: float, effects: list[Effect]) -> None:
        """Drop ``peer`` from the successor list and the fingers (not from the predecessor)."""
        if self.fingers.remove(peer.node_id):
            self._fingers_changed()
        old = self.successor_list.nodes
        if self.successor_list.remove(peer.node_id):
            if not self.successor_list.nodes:
                self._fall_back(now)
            self._successors_changed(old, effects)

    def _fall_back(self, now: float) -> None:
        # Every successor failed (Zave's precondition was broken). Rather than claim the whole ring
        # alone, take the closest live node we still know; stabilize corrects it from there.
        for node in (*self.fingers.distinct(), self.predecessor):
            if node is not None and node.node_id != self.me.node_id:
                self.successor_list.reconcile(node, ())
                return

    # --- plumbing -------------------------------------------------------------------------------------

    def _call(self, kind: int, to: NodeRef, message: Request, data: object = None) -> Send:
        call_id = self._next_call
        self._next_call = call_id + 1
        self._calls[call_id] = (kind, to, data)
        return Send(call_id, to, message)

    def _lookup_id(self) -> int:
        lookup_id = self._next_lookup
        self._next_lookup = lookup_id + 1
        return lookup_id

    def _require(self, status: Status, what: str) -> None:
        if self.status is not status:
            raise RuntimeError(
                f"{what}() needs a node in state {status.value}, this one is {self.status.value}"
            )

    def __repr__(self) -> str:
        pred = "-" if self.predecessor is None else f"{self.predecessor.node_id:x}"[:8]
        succ = [f"{s.node_id:x}"[:8] for s in self.successor_list.nodes]
        return f"<ChordNode {self.me.node_id:x}"[:20] + f" {self.status.value} pred={pred} succ={succ}>"
