"""The Chord rules (:mod:`funnelkvs.chord`) driven on a real node's event loop.

The pure :class:`~funnelkvs.chord.ChordNode` decides; this driver does what it asks: it runs the
maintenance timers (``ring.stabilize_interval``, ``ring.fix_fingers_interval``,
``ring.check_predecessor_interval``), turns each :class:`~funnelkvs.chord.Send` into a v2 call through
the node's peer connections (:mod:`funnelkvs.peer`) and delivers the reply, or a timeout after
``ring.rpc_timeout``, back by call id; it answers other nodes' Chord requests through the v2 handlers
it registers on the node; and it hands the effects that concern the node (predecessor and successor
changes, join, leave) to the listeners of :class:`RingEvents`. The simulator drives the same
ChordNode with a simulated network instead.

Joining: the seeds (``node.join``, resolved to IP addresses before the loop starts) are asked for
their identity (v2 INFO: their id and advertised address), then the ChordNode joins through the first
that answers; a failed join is retried through the next seed after a stabilize interval.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from funnelkvs.chord import (
    ChordNode,
    Effect,
    Joined,
    JoinFailed,
    Leave,
    Left,
    LookupDone,
    LookupFailed,
    NodeRef,
    NotOnRing,
    PredecessorChanged,
    Send,
    SuccessorChanged,
    SuccessorListChanged,
)
from funnelkvs.chord.node_state import Status as ChordStatus
from funnelkvs.errors import FunnelKVSError, NodeUnreachable, RemoteProtocolError
from funnelkvs.keyspace import KeyRange
from funnelkvs.loop import Future, PeriodicTimer, TimerHandle
from funnelkvs.protocol import INFO, Status
from funnelkvs.protocol.rpc import (
    CHORD_OPS,
    CLUSTER_STATS,
    LEAVE,
    PING_OP,
    RING_VIEW,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from funnelkvs.protocol.v2 import V2Response
from funnelkvs.ring.forwarding import Forwarder
from funnelkvs.ring.membership import Membership
from funnelkvs.ring.transfer import LEAVE_DEADLINE, Transfers, grown_by
from funnelkvs.settings import RingSettings

if TYPE_CHECKING:
    from funnelkvs.node import Node

log = logging.getLogger("funnelkvs.ring")


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as a (host, port) pair."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def resolve_seed(address: str) -> tuple[str, int]:
    """A seed's ``host:port`` with the host resolved to an IP address (blocking: call it before the
    loop runs). Raises FunnelKVSError when the name does not resolve."""
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FunnelKVSError(f"seed {address}: cannot resolve {host!r}: {exc.strerror or exc}") from exc
    return str(infos[0][4][0]), port


class RingEvents:
    """Listeners for what the ring tells the node: each a list of callables, called on the loop."""

    def __init__(self) -> None:
        self.predecessor_changed: list[Callable[[NodeRef | None, NodeRef | None], None]] = []
        self.successors_changed: list[Callable[[tuple[NodeRef, ...]], None]] = []
        self.joined: list[Callable[[NodeRef], None]] = []
        self.left: list[Callable[[], None]] = []
        #: This node starts a graceful leave.
        self.leaving: list[Callable[[], None]] = []


class RingDriver:
    """One node's place on the ring: its :class:`ChordNode`, timers and messages.

    :param node: the node whose loop, peers and v2 handlers are used.
    :param me: this node's reference (id and advertised address).
    :param settings: ``ring.*``.
    :param seeds: resolved ``(host, port)`` of nodes to join through; empty creates a new ring.
    """

    def __init__(
        self,
        node: Node,
        me: NodeRef,
        settings: RingSettings,
        seeds: list[tuple[str, int]],
        configured: bool = True,
    ) -> None:
        self.node = node
        #: Whether ``node.join`` named seeds (else the seeds are the peers remembered from a last run).
        self.configured = configured
        #: Ids (hex) of seeds that answered this pass without being on a ring (see _end_of_pass).
        self._not_on_ring: set[str] = set()
        self._create_votes = 0
        self.loop = node.loop
        self.me = me
        self.settings = settings
        self.seeds = seeds
        self.chord = ChordNode(me, successors=settings.successors)
        self.events = RingEvents()
        self.membership = Membership(self)
        self.forwarder = Forwarder(self)
        self.transfers = Transfers(self)
        #: The node has had a predecessor (so its range is known, and a later change of
        #: predecessor is a join or a failure next to it, not its own join).
        self._had_predecessor = False
        #: Nodes that told us they are leaving (their range comes to us from them).
        self._leaving_nodes: set[int] = set()
        self._stop_after_leave: TimerHandle | None = None
        #: Chord messages this node sent and answered (the background traffic, for INFO).
        self.messages_sent = 0
        self.messages_answered = 0
        #: No other node is known (the successor list is empty): this node answers for every key.
        #: A plain attribute, kept by the effects: the node reads it once per read event.
        self.alone = True
        self._timers: list[PeriodicTimer] = []
        self._lookups: dict[int, Future[LookupDone]] = {}
        self._next_seed = 0
        self._stopped = False

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Register the Chord handlers, create or join the ring, start the maintenance timers."""
        for op in CHORD_OPS - {PING_OP}:  # the node answers PING itself
            self.node.register_rpc(op, self._handler(op))
        self.node.register_rpc(RING_VIEW, self._ring_view)
        self.node.register_rpc(CLUSTER_STATS, self._cluster_stats)
        self.node.register_rpc(LEAVE, self._leave_request)
        self.transfers.register()
        self.membership.start()
        if self.seeds:
            self._try_next_seed()
        else:
            self._run(self.chord.create())
        settings = self.settings
        self._timers = [
            self.loop.call_every(settings.stabilize_interval, self._tick, self.chord.on_stabilize),
            self.loop.call_every(settings.fix_fingers_interval, self._tick, self.chord.on_fix_fingers),
            self.loop.call_every(
                settings.check_predecessor_interval, self._tick, self.chord.on_check_predecessor
            ),
        ]

    def stop(self) -> None:
        self._stopped = True
        self.membership.stop()
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    @property
    def state(self) -> str:
        """``joining``, ``normal``, ``leaving`` (or ``new``/``left``), as ``funnelkvs ring`` shows it."""
        return self.chord.status.value

    def owns(self, position: int) -> bool:
        """Whether ``position`` lies in ``(predecessor, self]`` (all of it while alone). With no
        predecessor known (just joined, or the predecessor just failed), Chord claims nothing but the
        node's own id; the membership view then stands in, so that requests are not bounced between
        nodes that each think the other owns the key until the next stabilize round."""
        chord = self.chord
        if chord.status is not ChordStatus.NORMAL:
            return chord.status is ChordStatus.NEW  # a lone node before create() owns it all
        if chord.predecessor is None and self._had_predecessor and not self.alone:
            return self.membership.owner_of(position).node_id == self.me.node_id
        return chord.owns(position)

    def owner_hint(self, position: int) -> NodeRef:
        """Where a request for ``position`` should go, as far as this node knows: the membership
        view's owner; while this node leaves, its successor for what the view still gives to it."""
        owner = self.membership.owner_of(position)
        if owner.node_id == self.me.node_id and self.chord.status is ChordStatus.LEAVING:
            return self.chord.successor
        return owner

    # --- joining ------------------------------------------------------------------------------------

    def _try_next_seed(self) -> None:
        if self._stopped or self.chord.status is not ChordStatus.NEW:
            return
        if self._next_seed and self._next_seed % len(self.seeds) == 0 and self._end_of_pass():
            return
        host, port = self.seeds[self._next_seed % len(self.seeds)]
        self._next_seed += 1
        future = self.node.peer(host, port, "control").call(INFO, b"", timeout=self.settings.rpc_timeout)
        future.add_done_callback(lambda done: self._on_seed_info(host, port, done))

    def _on_seed_info(self, host: str, port: int, done: Future[V2Response]) -> None:
        if self._stopped or self.chord.status is not ChordStatus.NEW:
            return
        try:
            response = done.result()
            if response.status != Status.SUCCESS:
                raise RemoteProtocolError(f"INFO answered status {response.status}")
            info: dict[str, Any] = json.loads(response.body)
            seed = NodeRef(int(info["node_id"], 16), str(info["address"]))
            ring_info = info.get("ring") or {}
            seed_state = ring_info.get("state", "normal")
            seed_configured = bool(ring_info.get("configured_seeds", True))
        except (NodeUnreachable, RemoteProtocolError, ValueError, KeyError, TypeError) as exc:
            log.warning("seed %s:%d did not answer (%s); trying again", host, port, exc)
            self.loop.call_later(self.settings.stabilize_interval, self._try_next_seed)
            return
        except Exception as exc:  # a timeout among them
            log.warning("seed %s:%d did not answer (%s); trying again", host, port, exc)
            self.loop.call_later(self.settings.stabilize_interval, self._try_next_seed)
            return
        if seed.node_id == self.me.node_id:
            log.warning("seed %s is this node itself; trying the next", seed.address)
            if len(self.seeds) == 1:
                log.warning("no other seed: starting a new ring")
                self._run(self.chord.create())
                return
            self.loop.call_soon(self._try_next_seed)
            return
        if seed_state not in ("normal", "leaving"):
            # Not on a ring itself (it restarted too): it cannot take a join; remember it for the
            # whole-ring restart rule and try the next seed.
            if not seed_configured:
                self._not_on_ring.add(f"{seed.node_id:040x}")
            self.loop.call_later(self.settings.stabilize_interval / 2, self._try_next_seed)
            return
        log.info("joining the ring through %s", seed.address)
        self._run(self.chord.join(seed))

    def _end_of_pass(self) -> bool:
        """A whole pass over the seeds found no ring to join. A node that has only remembered peers
        (no ``node.join``) creates the ring when its id is below every peer that is waiting the same
        way, two passes in a row (funnelkvs.replication.rejoin.may_create_ring): so a ring restarted
        all at once comes back, and two nodes never both create one. Returns True once created."""
        from funnelkvs.replication.rejoin import may_create_ring

        if not self.configured and may_create_ring(f"{self.me.node_id:040x}", False, self._not_on_ring):
            self._create_votes += 1
        else:
            self._create_votes = 0
        self._not_on_ring = set()
        if self._create_votes >= 2:
            log.warning("no remembered peer is on a ring: starting the ring again here")
            self._run(self.chord.create())
            return True
        return False

    # --- ranges and leaving -------------------------------------------------------------------------

    def _range_changed(self, old: NodeRef | None, new: NodeRef | None) -> None:
        """Start pulling what our range gained (see :mod:`funnelkvs.ring.transfer`)."""
        me = self.me.node_id
        if new is not None and not self._had_predecessor:
            self._had_predecessor = True
            successor = self.chord.successor
            if successor.node_id != me:
                # Just joined (or restarted): (new, me] was kept by our successor until now.
                self.transfers.begin(KeyRange(new.node_id, me), successor)
            return
        if old is None or old.node_id not in self._leaving_nodes:
            return  # a crash (nothing to pull: one copy per key) or a node joining before us
        gained = grown_by(old, new, me)
        if gained is None and new is None:
            # The leaving node's predecessor was unknown or this node itself (a ring of two): its
            # range lies between us and it.
            gained = KeyRange(me, old.node_id)
        if gained is not None:
            self.transfers.begin(gained, old)

    def _leave_request(self, body: bytes) -> tuple[int, bytes]:
        """LEAVE (admin): hand the keys to the successor, tell the neighbours, then stop."""
        if body:
            raise RemoteProtocolError("LEAVE takes no body")
        if self.chord.status is ChordStatus.LEAVING:
            return Status.SUCCESS, b"leaving"
        if self.chord.status is not ChordStatus.NORMAL:
            return Status.INVALID_REQUEST, f"cannot leave while {self.state}".encode()
        self.loop.call_soon(self.leave)
        return Status.SUCCESS, b"leaving"

    def leave(self) -> None:
        """Leave the ring gracefully (paper 5.4): the successor takes our range (it pulls it from us,
        and meanwhile requests for it are forwarded there); we stop once it has all of it."""
        if self.alone:
            log.info("leaving: this node is alone on the ring; stopping")
            self.node.stop()
            return
        successor = self.chord.successor
        log.info("leaving the ring: handing the keys to %s", successor.address)
        for listener in self.events.leaving:
            listener()
        self.transfers.on_done.append(self._handed_over)
        self._stop_after_leave = self.loop.call_later(LEAVE_DEADLINE, self._leave_timed_out)
        self._run(self.chord.leave())

    def _handed_over(self, key_range: KeyRange) -> None:
        if self.chord.status in (ChordStatus.LEAVING, ChordStatus.LEFT) and key_range.end == self.me.node_id:
            log.info("the successor has every key of this node; stopping")
            if self._stop_after_leave is not None:
                self._stop_after_leave.cancel()
            self.node.stop()

    def _leave_timed_out(self) -> None:
        log.error("the successor did not take the keys within %.0f s; stopping anyway", LEAVE_DEADLINE)
        self.node.stop()

    # --- lookups ------------------------------------------------------------------------------------

    def lookup(self, position: int) -> Future[LookupDone]:
        """Find ``position``'s successor by an iterative lookup from this node."""
        future: Future[LookupDone] = Future()
        lookup_id, effects = self.chord.lookup(position)
        self._lookups[lookup_id] = future
        self._run(effects)
        return future

    # --- the effects --------------------------------------------------------------------------------

    def _tick(self, handler: Callable[[float], list[Effect]]) -> None:
        if not self._stopped:
            self._run(handler(self.loop.time()))

    def _run(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if type(effect) is Send:
                self._send(effect)
            elif type(effect) is PredecessorChanged:
                log.info("predecessor: %s -> %s", _show(effect.old), _show(effect.new))
                self._range_changed(effect.old, effect.new)
                for listener in self.events.predecessor_changed:
                    listener(effect.old, effect.new)
            elif type(effect) is SuccessorChanged:
                log.info("successor: %s -> %s", _show(effect.old), _show(effect.new))
            elif type(effect) is SuccessorListChanged:
                self.alone = not effect.new
                self.membership.refresh()  # a member came or went: route by the new ring soon
                for successors_listener in self.events.successors_changed:
                    successors_listener(effect.new)
            elif type(effect) is Joined:
                log.info("joined the ring: successor %s", _show(effect.successor))
                self.membership.refresh()
                for joined_listener in self.events.joined:
                    joined_listener(effect.successor)
            elif type(effect) is JoinFailed:
                log.warning("join through %s found no live successor; trying again", _show(effect.seed))
                self.loop.call_later(self.settings.stabilize_interval, self._try_next_seed)
            elif type(effect) is LookupDone or type(effect) is LookupFailed:
                future = self._lookups.pop(effect.lookup_id, None)
                if future is not None:
                    if type(effect) is LookupDone:
                        future.set_result(effect)
                    else:
                        future.set_exception(NodeUnreachable(f"lookup of {effect.key:040x} failed"))
            elif type(effect) is Left:
                for left_listener in self.events.left:
                    left_listener()

    def _send(self, send: Send) -> None:
        if send.to.node_id == self.me.node_id:
            # A call to ourselves (a lookup that starts here): answered locally, on the next pass.
            self.loop.call_soon(self._answer_locally, send)
            return
        op, body = encode_request(send.message)
        self.messages_sent += 1
        try:
            host, port = split_address(send.to.address)
        except ValueError:
            self._run(self.chord.on_timeout(send.call_id, self.loop.time()))
            return
        future = self.node.peer(host, port, "control").call(op, body, timeout=self.settings.rpc_timeout)
        future.add_done_callback(lambda done: self._on_answer(send, done))

    def _answer_locally(self, send: Send) -> None:
        now = self.loop.time()
        reply, effects = self.chord.handle(send.message, now)
        self._run(effects)
        self._run(self.chord.on_reply(send.call_id, reply, now))

    def _on_answer(self, send: Send, done: Future[V2Response]) -> None:
        now = self.loop.time()
        if done.exception() is None:
            response = done.result()
            if response.status == Status.SUCCESS:
                try:
                    reply = decode_reply(send.message, response.body)
                except RemoteProtocolError as exc:
                    log.warning("%s answered %s with %s", send.to.address, type(send.message).__name__, exc)
                else:
                    self._run(self.chord.on_reply(send.call_id, reply, now))
                    return
        # No answer, a broken answer or an error status: the peer counts as failed for this call.
        self._run(self.chord.on_timeout(send.call_id, now))

    def _handler(self, op: int) -> Callable[[bytes], tuple[int, bytes]]:
        def handle(body: bytes) -> tuple[int, bytes]:
            request = decode_request(op, body)
            self.messages_answered += 1
            if isinstance(request, Leave):
                self._leaving_nodes.add(request.node.node_id)
            try:
                reply, effects = self.chord.handle(request, self.loop.time())
            except NotOnRing as exc:  # joining, or left: no answer may pass for a member's
                return Status.SERVER_ERROR, str(exc).encode()
            self._run(effects)
            return Status.SUCCESS, encode_reply(reply)

        return handle

    # --- views ----------------------------------------------------------------------------------------

    def _cluster_stats(self, body: bytes) -> Future[tuple[int, bytes]]:
        """CLUSTER_STATS (admin): every member's INFO, asked in parallel on the control connections
        (a member that does not answer within ``ring.rpc_timeout`` is reported down), and totals."""
        if body:
            raise RemoteProtocolError("CLUSTER_STATS takes no body")
        answer: Future[tuple[int, bytes]] = Future()
        members = list(self.membership.members)
        rows: dict[str, dict[str, Any]] = {}

        def collected() -> None:
            up = [row for row in rows.values() if "error" not in row]
            totals = {
                "members": len(members),
                "up": len(up),
                "down": len(members) - len(up),
                "keys": sum(int(row.get("keys", 0)) for row in up),
                "bytes": sum(int(row.get("bytes", 0)) for row in up),
            }
            ordered = [rows[member.address] for member in members]
            view = {"node": self.me.address, "complete": self.membership.complete}
            result = {**view, "members": ordered, "totals": totals}
            answer.set_result((Status.SUCCESS, json.dumps(result).encode()))

        def one(member: NodeRef, done: Future[V2Response]) -> None:
            try:
                response = done.result()
                if response.status != Status.SUCCESS:
                    raise RemoteProtocolError(f"INFO answered status {response.status}")
                rows[member.address] = json.loads(response.body)
            except Exception as exc:
                rows[member.address] = {"address": member.address, "error": str(exc) or type(exc).__name__}
            if len(rows) == len(members):
                collected()

        for member in members:
            if member.node_id == self.me.node_id:
                rows[member.address] = self.node.info()
                if len(rows) == len(members):
                    collected()
                continue
            host, port = split_address(member.address)
            future = self.node.peer(host, port, "control").call(INFO, b"", timeout=self.settings.rpc_timeout)
            future.add_done_callback(functools.partial(one, member))
        return answer

    def _ring_view(self, body: bytes) -> tuple[int, bytes]:
        """RING_VIEW (admin, docs/protocol.md): the members as this node sees them, as JSON."""
        if body:
            raise RemoteProtocolError("RING_VIEW takes no body")
        view = self.membership.view()
        view["node"] = self.me.address
        return Status.SUCCESS, json.dumps(view).encode()

    def describe(self) -> dict[str, Any]:
        """This node's Chord state for INFO and ``funnelkvs ring``."""
        chord = self.chord
        return {
            "state": self.state,
            "configured_seeds": self.configured,
            "messages_sent": self.messages_sent,
            "messages_answered": self.messages_answered,
            "forwarded": self.forwarder.forwarded,
            "transfers_in_progress": len(self.transfers.incoming),
            "members": len(self.membership.members),
            "predecessor": None if chord.predecessor is None else _as_dict(chord.predecessor),
            "successors": [_as_dict(node) for node in chord.successors],
        }


def _as_dict(node: NodeRef) -> dict[str, str]:
    return {"id": f"{node.node_id:040x}", "address": node.address}


def _show(node: NodeRef | None) -> str:
    return "none" if node is None else f"{node.address} ({node.node_id:040x}"[: len(node.address) + 14] + "…)"
