"""A deterministic in-memory network and clock that drives :class:`~funnelkvs.chord.ChordNode` s.

Messages take ``latency`` simulated seconds each way; a call to a node that has failed (or fails
before answering) times out ``rpc_timeout`` seconds after it was sent, and replies to a failed node
are dropped. Events at the same time run in the order they were scheduled, so a run depends only on
what the caller does. Timers are rounds: :meth:`Network.round` fires every live node's stabilize,
check_predecessor and fix_fingers once, in id order, then runs the network until it is idle.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any

from funnelkvs.chord.effects import Effect, JoinFailed, Left, LookupDone, LookupFailed, Send
from funnelkvs.chord.node_ref import NodeRef
from funnelkvs.chord.node_state import ChordNode, NotOnRing, Status
from funnelkvs.chord.routing import Lookup

_DELIVER = 0
_REPLY = 1
_TIMEOUT = 2


class NotQuiescent(Exception):
    """Stabilization did not settle within the allowed rounds."""


class Network:
    """Chord nodes on a simulated network.

    :param latency: one-way message delay, simulated seconds.
    :param rpc_timeout: how long after sending a call to a dead node its timeout is delivered.
    :param period: simulated seconds between maintenance rounds (the stabilize interval).
    :param node_class: the class of the nodes (a variant of the rules, for comparisons).
    :param node_options: keyword arguments for every node made by :meth:`make_node`.
    """

    def __init__(
        self,
        *,
        latency: float = 0.01,
        rpc_timeout: float = 0.5,
        period: float = 1.0,
        node_class: type[ChordNode] = ChordNode,
        **node_options: Any,
    ) -> None:
        self.node_class = node_class
        self.latency = latency
        self.rpc_timeout = rpc_timeout
        self.node_options = node_options
        self.period = period
        self.now = 0.0
        self._last_round = 0.0
        #: Every node ever added, by id; :attr:`live` holds those that have not failed or left.
        self.nodes: dict[int, ChordNode] = {}
        self.live: dict[int, ChordNode] = {}
        #: Finished lookups by (start node id, lookup id).
        self.lookups: dict[tuple[int, int], LookupDone | LookupFailed] = {}
        #: Every effect other than Send, in order, with the node that produced it.
        self.events: list[tuple[int, Effect]] = []
        self.messages = 0
        #: Called after every delivered message, reply or timeout (tests check invariants there).
        self.observer: Callable[[], None] | None = None
        self._queue: list[tuple[float, int, int, Any]] = []
        #: Joins that failed, tried again at the start of the next round.
        self._join_retries: list[tuple[ChordNode, NodeRef]] = []
        self._seq = 0

    # --- membership -----------------------------------------------------------------------------

    def make_node(self, ident: int, address: str | None = None) -> ChordNode:
        node = self.node_class(NodeRef(ident, address or f"sim:{ident:x}"), **self.node_options)
        self.nodes[ident] = node
        self.live[ident] = node
        return node

    def create(self, ident: int) -> ChordNode:
        """A first node, alone on a new ring."""
        node = self.make_node(ident)
        self._apply(node, node.create())
        return node

    def join(self, ident: int, seed: int, *, run: bool = True) -> ChordNode:
        """A new node ``ident`` joins through the live node ``seed`` (retried each round while it fails);
        with ``run``, the network runs until idle afterwards."""
        node = self.make_node(ident)
        self._apply(node, node.join(self.nodes[seed].me))
        if run:
            self.run_until_idle()
        return node

    def grow(self, idents: Iterable[int], *, rounds_per_join: int = 1) -> None:
        """Nodes join one by one through the protocol, each through the first node (created when the
        network has none), with ``rounds_per_join`` maintenance rounds after each join."""
        seed: int | None = next(iter(self.live), None)
        for ident in idents:
            if seed is None:
                self.create(ident)
                seed = ident
                continue
            self.join(ident, seed)
            self.stabilize(rounds_per_join)

    def fail(self, ident: int) -> None:
        """The node stops at once, silently (a crash): calls to it time out."""
        self.live.pop(ident, None)

    def leave(self, ident: int) -> None:
        """The node leaves voluntarily; it stops once its neighbours acknowledged (run until idle)."""
        node = self.live[ident]
        self._apply(node, node.leave())
        self.run_until_idle()

    # --- time -----------------------------------------------------------------------------------

    def round(self) -> None:
        """Advance the clock to one ``period`` after the previous round, fire every live node's
        three maintenance timers once, then run until idle."""
        self.now = max(self.now, self._last_round + self.period)
        self._last_round = self.now
        retries, self._join_retries = self._join_retries, []
        for joining, seed in retries:
            self._retry_join(joining, seed)
        for ident in sorted(self.live):
            node = self.live.get(ident)
            if node is None:
                continue
            now = self.now
            self._apply(node, node.on_stabilize(now))
            self._apply(node, node.on_check_predecessor(now))
            self._apply(node, node.on_fix_fingers(now))
        self.run_until_idle()

    def successor_ids(self) -> dict[int, int]:
        """Each live node's successor id, by node id (to watch for changes)."""
        return {ident: node.successor.node_id for ident, node in self.live.items()}

    @property
    def joins_waiting(self) -> bool:
        """Whether a failed join waits to be retried at the next round."""
        return bool(self._join_retries)

    def changes(self) -> int:
        return sum(node.changes for node in self.live.values())

    def stabilize(self, rounds: int) -> None:
        for _ in range(rounds):
            self.round()

    def stabilize_until_quiescent(self, max_rounds: int = 500, quiet_rounds: int = 1) -> int:
        """Run rounds until ``quiet_rounds`` rounds in a row change no live node's predecessor,
        successor list or fingers, with no join waiting to be retried. Returns the rounds run.

        :raises NotQuiescent: not settled within ``max_rounds``.
        """
        quiet = 0
        for done in range(1, max_rounds + 1):
            before = self.changes()
            self.round()
            settled = self.changes() == before and not self._join_retries
            quiet = quiet + 1 if settled else 0
            if quiet >= quiet_rounds:
                return done
        raise NotQuiescent(f"still changing after {max_rounds} rounds")

    def run_until_idle(self, max_events: int = 10_000_000) -> None:
        """Deliver messages, replies and timeouts until none is left."""
        queue = self._queue
        for _ in range(max_events):
            if not queue:
                return
            when, _seq, kind, payload = heapq.heappop(queue)
            self.now = max(self.now, when)
            self._dispatch(kind, payload)
            if self.observer is not None:
                self.observer()
        raise RuntimeError("the network did not go idle")

    # --- lookups --------------------------------------------------------------------------------

    def lookup(self, start: int, key: int) -> LookupDone | LookupFailed:
        """Run a lookup of ``key`` from live node ``start`` through messages; its result."""
        node = self.live[start]
        lookup_id, effects = node.lookup(key)
        self._apply(node, effects)
        self.run_until_idle()
        return self.lookups.pop((start, lookup_id))

    def trace(self, start: int, key: int, *, fingers_only: bool = False, retries: bool = True) -> Lookup:
        """Walk a lookup of ``key`` from ``start`` by calling each hop's rule directly, without
        messages (what a large simulation does). Dead hops count as timed out: with ``retries`` the
        lookup routes around them as the node does (paper 5.3), without it the first one ends the
        lookup unanswered. The returned :class:`Lookup` holds ``successors`` (None: failed) and
        ``hops``."""
        live = self.live
        origin = live[start]
        lookup = Lookup(0, key, origin.me, local_origin=True)
        avoid = lookup.avoid
        target: NodeRef | None = origin.me
        steps = 0
        while target is not None and steps < origin.max_lookup_messages:
            steps += 1
            node = live.get(target.node_id)
            if node is None:
                if not retries:
                    break
                target = lookup.on_timeout()
                continue
            # Most walks meet no dead node: skip building an empty frozenset at every hop.
            target = lookup.on_answer(
                node.find_successor_step(key, frozenset(avoid) if avoid else (), fingers_only=fingers_only)
            )
        return lookup

    # --- plumbing -------------------------------------------------------------------------------

    def _schedule(self, when: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, kind, payload))

    def _apply(self, node: ChordNode, effects: Iterable[Effect]) -> None:
        ident = node.me.node_id
        for effect in effects:
            if isinstance(effect, Send):
                self.messages += 1
                self._schedule(self.now + self.latency, _DELIVER, (ident, effect, self.now))
                continue
            self.events.append((ident, effect))
            if isinstance(effect, (LookupDone, LookupFailed)):
                self.lookups[(ident, effect.lookup_id)] = effect
            elif isinstance(effect, Left):
                self.live.pop(ident, None)
            elif isinstance(effect, JoinFailed):
                self._join_retries.append((node, effect.seed))

    def _retry_join(self, node: ChordNode, seed: NodeRef) -> None:
        if self.live.get(node.me.node_id) is not node or node.status is not Status.NEW:
            return
        if seed.node_id not in self.live:
            # The seed has gone: like an operator's next seed, take any member.
            members = sorted(i for i, n in self.live.items() if n.status is Status.NORMAL)
            if not members:
                return
            seed = self.live[members[0]].me
        self._apply(node, node.join(seed))

    def _dispatch(self, kind: int, payload: Any) -> None:
        if kind == _DELIVER:
            sender, send, sent_at = payload
            callee = self.live.get(send.to.node_id)
            if callee is None:
                self._schedule(sent_at + self.rpc_timeout, _TIMEOUT, (sender, send.call_id))
                return
            try:
                reply, effects = callee.handle(send.message, self.now)
            except NotOnRing:
                # An error answer: the caller's driver reports it as a failed call.
                self._schedule(self.now + self.latency, _TIMEOUT, (sender, send.call_id))
                return
            self._apply(callee, effects)
            self._schedule(self.now + self.latency, _REPLY, (sender, send.call_id, reply))
        elif kind == _REPLY:
            sender, call_id, reply = payload
            node = self.live.get(sender)
            if node is not None:
                self._apply(node, node.on_reply(call_id, reply, self.now))
        else:
            sender, call_id = payload
            node = self.live.get(sender)
            if node is not None:
                self._apply(node, node.on_timeout(call_id, self.now))
