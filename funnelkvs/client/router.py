"""Ring-aware routing for :class:`~funnelkvs.Client`: each key goes straight to its owner.

The router fetches the ring view (RING_VIEW, op 0x30, v2) from any node it can reach and sends every
GET/PUT/DELETE as a v2 frame to the owner the view names (one hop). v2 matters here: a node that does
not own the key answers NOT_RESPONSIBLE with the owner's address instead of forwarding it, so the
client sees a stale view and corrects it. A v1 request would be forwarded silently (correct, two hops).

When the view is refreshed (all bounded; none of it blocks other threads, which route with the view
they have meanwhile):

- lazily, on the first keyed call and whenever the view is older than ``refresh_interval`` seconds;
- soon after a node answered NOT_RESPONSIBLE (that request itself follows the owner named in the
  answer at once, up to :data:`MAX_REDIRECTS` times) or after a member could not be reached.

Failures: a member that cannot be reached is marked down for :data:`DOWN_FOR_S` seconds (doubled after
each failure in a row, up to :data:`MAX_DOWN_FOR_S`: an address that times out on connect must not
cost a caller ``connect_timeout`` every few seconds), and its
requests (and those behind a request that failed before any answer byte arrived, when the retry policy
allows a replay) are sent as v1 to another live node, starting with the failed one's successor in the
view, which forwards them to whoever owns the key by then. A :class:`RequestTimeout` is never replayed.

Quorums: a request with ``w``/``r`` carries them in its v2 body's trailer. v1 cannot, so such a
request is never sent as v1 through another node: when its owner fails it goes as v2 to another live
node, which serves it only if it owns the key by then (:meth:`Router._fallback_quorum_call`).

A ring of one node, or a node that does not answer RING_VIEW (the reference implementation, an older
FunnelKVS), leaves the client on its plain v1 path to the configured addresses: :meth:`Router.active`
returns None and nothing else here runs.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from funnelkvs.client.address import Address, parse_address
from funnelkvs.client.answers import result_of
from funnelkvs.client.connection import Connection, V2Connection
from funnelkvs.client.fanout import exchange_shares
from funnelkvs.client.pool import ConnectionPool
from funnelkvs.client.quorums import NO_QUORUM
from funnelkvs.client.routing import RingView
from funnelkvs.errors import (
    ClientClosed,
    FunnelKVSError,
    NodeUnreachable,
    NotAnswered,
    RemoteProtocolError,
    RequestTimeout,
)
from funnelkvs.protocol import Op, Response, Status, encode_request
from funnelkvs.protocol.rpc import RING_VIEW
from funnelkvs.protocol.v2 import V2Response, encode_v2_request, key_value_body

if TYPE_CHECKING:
    from funnelkvs.client.client import Client

#: NOT_RESPONSIBLE answers a request follows before it is sent as v1 through any node instead.
MAX_REDIRECTS: Final = 3
#: Seconds a member that could not be reached is routed around before it is tried again.
DOWN_FOR_S: Final = 2.0
MAX_DOWN_FOR_S: Final = 30.0
#: The least time between two refreshes of the view that a NOT_RESPONSIBLE or failure asked for.
MIN_REFRESH_GAP_S: Final = 0.25
#: Seconds before a failed fetch of the view (no node answered) is tried again.
FETCH_RETRY_S: Final = 1.0
#: Nodes asked for the view per refresh at most.
FETCH_ATTEMPTS: Final = 3
#: Other nodes a fallback request is offered to at most.
FALLBACK_ATTEMPTS: Final = 4

_NOT_RESPONSIBLE: Final = int(Status.NOT_RESPONSIBLE)
_KEYED: Final = frozenset((Op.GET, Op.PUT, Op.DELETE))
T = TypeVar("T")

#: One result of a routed pipeline, in the caller's order: the answer and who gave it, or the error
#: that takes the request's place (a NotAnswered).
Outcome = tuple[Response, Address] | FunnelKVSError


#: How long a request with w/r whose owner failed follows NOT_RESPONSIBLE answers while the ring
#: heals, in seconds.
QUORUM_REDIRECT_TIME = 3.0


class _Unreached(Exception):
    """A member could not serve a request. ``replayable``: sending it elsewhere cannot apply it twice
    out of order beyond what the retry policy accepts (nothing was sent, or no byte of an answer came
    and replays are allowed)."""

    def __init__(self, error: NodeUnreachable, replayable: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.replayable = replayable


class Router:
    """The routing state of one client: the view, a v2 pool per member, v1 pools for fallbacks."""

    def __init__(self, client: Client, refresh_interval: float) -> None:
        self.client = client
        self.refresh_interval = refresh_interval
        #: The last view fetched (None before the first fetch, or when no node served one).
        self.view: RingView | None = None
        #: The view requests are routed with: ``view`` when it has more than one member, else None.
        #: Read with ``next_refresh`` by Client._call (which inlines :meth:`active`).
        self.routed: RingView | None = None
        #: Once a node has not understood RING_VIEW, routing stays off (plain v1, as before rings).
        self.unsupported = False
        #: Rare events, for tests and tuning (updated without a lock: near enough under threads).
        self.counts: dict[str, int] = {"redirects": 0, "fallbacks": 0, "refreshes": 0}
        #: When the view is due to be fetched (monotonic seconds; 0: on first use).
        self.next_refresh = 0.0
        self._last_refresh = 0.0
        self._refreshing = threading.Lock()
        self._pools_lock = threading.Lock()
        self._pools: dict[tuple[Address, bool], ConnectionPool] = {}
        #: Members routed around: until when (monotonic seconds), and how long the last period was.
        self._down: dict[Address, tuple[float, float]] = {}
        self._closed = False

    # --- the view ------------------------------------------------------------------------------------

    def active(self) -> RingView | None:
        """The view to route with, refreshed when due; None means "plain v1 to the configured
        addresses" (one member, no view yet, or RING_VIEW not understood)."""
        if time.monotonic() >= self.next_refresh:
            self.refresh_if_free()
        return self.routed

    def refresh_if_free(self) -> None:
        # One thread fetches; the others go on with the view they have (a hint, corrected by answers).
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            if time.monotonic() >= self.next_refresh and not self._closed:
                self.refresh()
        finally:
            self._refreshing.release()

    def refresh(self) -> RingView | None:
        """Fetch the view now from the first node that answers; returns it (None when none did or the
        nodes do not serve RING_VIEW). Raises nothing for unreachable nodes: routing goes on with the
        view it had, or falls back to plain v1.

        The configured addresses are asked first, on a connection of the client's own pool (so a client
        of one node opens no connection more than before rings); then members of the last view."""
        now = time.monotonic()
        self._last_refresh = now
        self.counts["refreshes"] += 1
        frame = encode_v2_request(RING_VIEW, 1)
        for address in [None, *self._view_sources()]:
            try:
                if address is None:
                    answer, address = self.client._on_connection(True, lambda conn: conn.request_v2(frame, 1))
                else:
                    answer = self._with_pool(address, True, lambda conn: _v2_call(conn, frame))
            except _Unreached:
                if address is not None:
                    self._mark_down(address)
                continue
            except (NodeUnreachable, RequestTimeout):
                continue
            except RemoteProtocolError:
                continue
            if answer is None:
                # A v1 answer to a v2 frame: the node speaks no v2, it is no ring member (the reference).
                self._unsupported()
                return None
            if answer.status == Status.INVALID_REQUEST:
                self._unsupported()  # v2, but no RING_VIEW: an older node
                return None
            if answer.status != Status.SUCCESS:
                continue
            try:
                view = RingView.from_answer(json.loads(answer.body), address)
            except (ValueError, RemoteProtocolError):
                continue
            self.view = view
            self.routed = view if len(view) > 1 else None
            self.next_refresh = now + self.refresh_interval
            return view
        self.next_refresh = now + min(FETCH_RETRY_S, self.refresh_interval)
        return None

    def _unsupported(self) -> None:
        """Routing off for good: the nodes do not serve the ring view (plain v1, as before rings)."""
        self.unsupported = True
        self.view = self.routed = None
        self.next_refresh = float("inf")

    def _view_sources(self) -> list[Address]:
        """Members to ask for the view when the configured addresses did not answer: who answered
        last, then the members it named, those marked down last; at most :data:`FETCH_ATTEMPTS`."""
        view = self.view
        if view is None:
            return []
        seen: dict[Address, None] = {}
        if view.source is not None:
            seen[view.source] = None
        seen.update(dict.fromkeys(view.addresses))
        now = time.monotonic()
        ordered = sorted(seen, key=lambda address: self._down.get(address, (0.0, 0.0))[0] > now)
        return ordered[:FETCH_ATTEMPTS]

    def _soon(self) -> None:
        """Ask for a refresh soon (after a NOT_RESPONSIBLE or a failure), at most every
        :data:`MIN_REFRESH_GAP_S` seconds."""
        self.next_refresh = min(self.next_refresh, self._last_refresh + MIN_REFRESH_GAP_S)

    def _mark_down(self, address: Address) -> None:
        # A member that fails again right after its period ended was still down: wait longer.
        _, last = self._down.get(address, (0.0, 0.0))
        period = min(MAX_DOWN_FOR_S, last * 2) if last else DOWN_FOR_S
        self._down[address] = (time.monotonic() + period, period)
        self._soon()

    def _is_down(self, address: Address) -> bool:
        """True while ``address`` is routed around. Its record stays after that, so that another failure
        doubles the period; an answer from it (:meth:`_mark_up`) clears it."""
        down = self._down.get(address)
        return down is not None and time.monotonic() < down[0]

    def _mark_up(self, address: Address) -> None:
        if address in self._down:
            self._down.pop(address, None)

    # --- connections ---------------------------------------------------------------------------------

    def _pool(self, address: Address, v2: bool) -> ConnectionPool:
        pools = self._pools
        pool = pools.get((address, v2))
        if pool is None:
            with self._pools_lock:
                if self._closed:
                    raise ClientClosed("the client is closed")
                pool = pools.get((address, v2))
                if pool is None:
                    base = self.client._pool
                    pool = ConnectionPool(
                        [address],
                        base.size,
                        base.connect_timeout,
                        base.timeout,
                        V2Connection if v2 else Connection,
                    )
                    pools[(address, v2)] = pool
        return pool

    def _with_pool(self, address: Address, v2: bool, talk: Callable[[Connection], T]) -> T:
        """Run ``talk`` on a connection to ``address`` (the client's retry policy applies: one replay
        on a fresh connection after a pooled one dropped). A failure to reach it is :class:`_Unreached`."""
        pool = self._pool(address, v2)
        try:
            conn, reused = pool.checkout()
        except NodeUnreachable as exc:
            raise _Unreached(exc, True) from exc  # nothing was sent
        ok = False
        try:
            try:
                result = talk(conn)
            except NodeUnreachable as exc:
                replayable = self.client.retry and conn.received == 0
                if not (reused and replayable):
                    raise _Unreached(exc, replayable) from exc
                conn.close()
                try:
                    conn = pool.connect()
                except NodeUnreachable as again:
                    raise _Unreached(again, True) from again
                try:
                    result = talk(conn)
                except NodeUnreachable as again:
                    raise _Unreached(again, self.client.retry and conn.received == 0) from again
            ok = True
            if self._down:
                self._mark_up(address)
            return result
        finally:
            pool.checkin(conn, ok)

    # --- one request ---------------------------------------------------------------------------------

    def call(self, view: RingView, op: int, key: bytes, value: bytes, w: int = 0, r: int = 0) -> Any:
        """GET/PUT/DELETE ``key`` at its owner, with the quorums ``w``/``r`` (0: the node's default);
        the result as :func:`result_of` gives it."""
        frame = encode_v2_request(op, 1, key_value_body(op, key, value, w, r))
        target = view.owner_of(key)
        for _ in range(MAX_REDIRECTS + 1):
            if self._is_down(target):
                break
            try:
                answer = self._with_pool(target, True, lambda conn: _v2_call(conn, frame))
            except _Unreached as exc:
                if not exc.replayable:
                    raise exc.error from exc.error.__cause__
                self._mark_down(target)
                break
            if answer.status != _NOT_RESPONSIBLE:
                return result_of(op, Response(answer.status, answer.body), target)
            self.counts["redirects"] += 1
            self._soon()
            owner = owner_named(answer.body)
            if owner is None or owner == target:
                break
            target = owner
        if w or r:
            return self._fallback_quorum_call(view, target, op, frame)
        return self._fallback_call(view, target, op, key, value)

    def _fallback_call(self, view: RingView, avoid: Address, op: int, key: bytes, value: bytes) -> Any:
        """Send the request as v1 to another live node, which forwards it to the owner."""
        frame = encode_request(op, key, value)
        address, response = self._through_another(view, avoid, lambda conn: conn.request(frame))
        return result_of(op, response, address)

    def _fallback_quorum_call(self, view: RingView, avoid: Address, op: int, frame: bytes) -> Any:
        """A request with w/r whose owner could not serve it. v1 cannot carry w/r, so it is not
        forwarded: it goes as v2 to another live node (the failed owner's successor first), which
        serves it once it owns the key (it took the failed owner's range over); a NOT_RESPONSIBLE
        answer there names the owner as that node sees it, which is asked next: while the ring heals
        (a second or so) the answers converge on the new owner. Still not served after
        :data:`QUORUM_REDIRECT_TIME` seconds: :class:`NodeUnreachable`."""
        talk = functools.partial(_v2_call, frame=frame)
        address, answer = self._through_another(view, avoid, talk, v2=True)
        deadline = time.monotonic() + QUORUM_REDIRECT_TIME
        while answer.status == _NOT_RESPONSIBLE and time.monotonic() < deadline:
            try:
                suggested = parse_address(bytes(answer.body).decode())
            except (UnicodeDecodeError, ValueError):
                suggested = None
            time.sleep(0.1)
            try:
                if suggested is not None and suggested != avoid:
                    address, answer = suggested, self._with_pool(suggested, True, talk)
                else:
                    address, answer = self._through_another(view, avoid, talk, v2=True)
            except _Unreached as exc:
                raise exc.error from exc.error.__cause__
        if answer.status == _NOT_RESPONSIBLE:
            raise NodeUnreachable(_quorum_unserved(avoid, address))
        return result_of(op, Response(answer.status, answer.body), address)

    def _through_another(
        self, view: RingView, avoid: Address, talk: Callable[[Connection], T], v2: bool = False
    ) -> tuple[Address, T]:
        """``talk`` to the first live node other than ``avoid`` (over v1 it forwards to the owner;
        ``v2``: on a v2 connection); a node that cannot be reached is marked down and the next one
        tried."""
        self.counts["fallbacks"] += 1
        last: NodeUnreachable | None = None
        for address in self._fallbacks(view, avoid):
            try:
                return address, self._with_pool(address, v2, talk)
            except _Unreached as exc:
                if not exc.replayable:
                    raise exc.error from exc.error.__cause__
                self._mark_down(address)
                last = exc.error
        raise _no_node_left(last)

    def _fallbacks(self, view: RingView, avoid: Address) -> list[Address]:
        """Live nodes to send a v1 request to instead of ``avoid``: its successors in the view first
        (the next one takes over its keys if it failed), then the configured addresses."""
        candidates = dict.fromkeys(view.after(avoid))
        candidates.update(dict.fromkeys(self.client.addresses))
        candidates.pop(avoid, None)
        live = [address for address in candidates if not self._is_down(address)]
        return (live or list(candidates) or [avoid])[:FALLBACK_ATTEMPTS]

    # --- pipelines -----------------------------------------------------------------------------------

    def exchange(
        self,
        view: RingView,
        ops: Sequence[int],
        keys: Sequence[bytes],
        values: Sequence[bytes],
        quorums: Sequence[tuple[int, int]],
    ) -> list[Outcome]:
        """Run a pipeline: keyed requests split per owner (v2, request id = position in the caller's
        order, each with its ``(w, r)`` from ``quorums``), the rest (PING, STATS) as v1 through the
        configured addresses; results in the caller's order. A request answered NOT_RESPONSIBLE
        follows the owner named (up to :data:`MAX_REDIRECTS` rounds); one whose owner cannot be
        reached goes as v1 through another node (one with w/r as v2: :meth:`_fallback_quorum_call`).
        Raises what a call would raise when a member fails where no replay is allowed."""
        count = len(ops)
        results: list[Outcome | None] = [None] * count
        plain = [i for i in range(count) if ops[i] not in _KEYED]
        if plain:
            self._send_plain(plain, ops, keys, values, results)
        targets = {i: view.owner_of(keys[i]) for i in range(count) if ops[i] in _KEYED}
        leftovers: list[int] = []
        for _ in range(MAX_REDIRECTS + 1):
            if not targets:
                break
            redirected: dict[int, Address] = {}
            shares = self._send_shares(_group(targets), ops, keys, values, quorums, leftovers)
            for target, indexes, answers in shares:
                by_id = {answer.request_id: answer for answer in answers}
                for i in indexes:
                    answer = by_id.get(i)
                    if answer is None:
                        results[i] = NotAnswered(
                            f"{target} closed the connection without answering {Op(ops[i]).name} "
                            f"(request {i + 1} of {count}); whether it was carried out is unknown"
                        )
                    elif answer.status == _NOT_RESPONSIBLE:
                        self.counts["redirects"] += 1
                        owner = owner_named(answer.body)
                        if owner is None or owner == target:
                            leftovers.append(i)
                        else:
                            redirected[i] = owner
                    else:
                        results[i] = (Response(answer.status, answer.body), target)
            if redirected:
                self._soon()
            targets = redirected
        leftovers.extend(targets)  # still redirected after the last round
        if leftovers:
            self._fallback_many(view, sorted(leftovers), ops, keys, values, quorums, results)
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]

    def _send_shares(
        self,
        groups: dict[Address, list[int]],
        ops: Sequence[int],
        keys: Sequence[bytes],
        values: Sequence[bytes],
        quorums: Sequence[tuple[int, int]],
        leftovers: list[int],
    ) -> list[tuple[Address, list[int], list[V2Response]]]:
        """Send each owner its share at the same time (:func:`exchange_shares`); ``(owner, indexes,
        answers)`` for each share answered. The indexes of an owner that cannot be reached go to
        ``leftovers`` (for the fallback) when a replay is allowed; else its error is raised."""
        shares: list[tuple[Address, list[int], ConnectionPool, Connection, bool, list[bytes]]] = []
        for target, indexes in groups.items():
            if self._is_down(target):
                leftovers.extend(indexes)
                continue
            pool = self._pool(target, True)
            try:
                conn, reused = pool.checkout()
            except NodeUnreachable:
                self._mark_down(target)  # nothing was sent
                leftovers.extend(indexes)
                continue
            frames = [
                encode_v2_request(ops[i], i, key_value_body(ops[i], keys[i], values[i], *quorums[i]))
                for i in indexes
            ]
            shares.append((target, indexes, pool, conn, reused, frames))
        try:
            outcomes = exchange_shares([(cast(V2Connection, conn), frames) for *_, conn, _, frames in shares])
        except BaseException:
            for _, _, pool, conn, _, _ in shares:
                pool.checkin(conn, False)
            raise
        answered: list[tuple[Address, list[int], list[V2Response]]] = []
        failures: list[tuple[Address, list[int], bool, int, list[bytes], FunnelKVSError]] = []
        for (target, indexes, pool, conn, reused, frames), outcome in zip(shares, outcomes, strict=True):
            pool.checkin(conn, not isinstance(outcome, FunnelKVSError))
            if isinstance(outcome, FunnelKVSError):
                failures.append((target, indexes, reused, conn.received, frames, outcome))
            else:
                answered.append((target, indexes, outcome))
                if self._down:
                    self._mark_up(target)
        for target, indexes, reused, received, frames, error in failures:
            if not isinstance(error, NodeUnreachable):
                raise error
            replayable = self.client.retry and received == 0
            if not replayable:
                raise error
            if reused:
                # A pooled connection the node may have closed while idle: once more on a fresh one.
                try:
                    again = self._with_pool(target, True, functools.partial(_v2_call_many, frames=frames))
                except _Unreached as exc:
                    if not exc.replayable:
                        raise exc.error from exc.error.__cause__
                else:
                    answered.append((target, indexes, again))
                    continue
            self._mark_down(target)
            leftovers.extend(indexes)
        return answered

    def _send_plain(
        self,
        indexes: list[int],
        ops: Sequence[int],
        keys: Sequence[bytes],
        values: Sequence[bytes],
        results: list[Outcome | None],
    ) -> None:
        frames = [encode_request(ops[i], keys[i], values[i]) for i in indexes]
        responses, address = self.client.exchange([ops[i] for i in indexes], frames)
        _place(indexes, responses, address, ops, results)

    def _fallback_many(
        self,
        view: RingView,
        indexes: list[int],
        ops: Sequence[int],
        keys: Sequence[bytes],
        values: Sequence[bytes],
        quorums: Sequence[tuple[int, int]],
        results: list[Outcome | None],
    ) -> None:
        """Send requests whose owner could not be reached (or kept redirecting) as v1 through another
        node, which forwards them; answers come back in order. Those with w/r go as v2 instead (v1
        cannot carry them; see :meth:`_fallback_quorum_call`)."""
        plain = [i for i in indexes if quorums[i] == NO_QUORUM]
        with_quorum = [i for i in indexes if quorums[i] != NO_QUORUM]
        if plain:
            frames = [encode_request(ops[i], keys[i], values[i]) for i in plain]
            avoid = view.owner_of(keys[plain[0]])
            address, responses = self._through_another(view, avoid, lambda conn: conn.exchange(frames))
            _place(plain, responses, address, ops, results)
        if with_quorum:
            v2_frames = [
                encode_v2_request(ops[i], i, key_value_body(ops[i], keys[i], values[i], *quorums[i]))
                for i in with_quorum
            ]
            avoid = view.owner_of(keys[with_quorum[0]])
            address, answers = self._through_another(
                view, avoid, functools.partial(_v2_call_many, frames=v2_frames), v2=True
            )
            by_id = {answer.request_id: answer for answer in answers}
            for i in with_quorum:
                answer = by_id.get(i)
                if answer is None:
                    results[i] = NotAnswered(
                        f"{address} closed the connection without answering {Op(ops[i]).name} "
                        f"(request {i + 1} of {len(ops)}); whether it was carried out is unknown"
                    )
                elif answer.status == _NOT_RESPONSIBLE:
                    results[i] = NodeUnreachable(_quorum_unserved(view.owner_of(keys[i]), address))
                else:
                    results[i] = (Response(answer.status, answer.body), address)

    # --- lifetime ------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._pools_lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


def _v2_call(conn: Connection, frame: bytes) -> V2Response:
    assert isinstance(conn, V2Connection)
    return conn.call(frame, 1)


def _v2_call_many(conn: Connection, frames: list[bytes]) -> list[V2Response]:
    assert isinstance(conn, V2Connection)
    return conn.call_many(frames)


def _quorum_unserved(owner: Address, other: Address) -> str:
    return (
        f"{owner}, the key's owner, could not serve the request, and {other} does not own the key: "
        "a request with w/r is not forwarded through another node (v1 cannot carry them)"
    )


def owner_named(body: bytes) -> Address | None:
    """The owner's address in a NOT_RESPONSIBLE body, or None when it is not one."""
    try:
        return parse_address(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _group(targets: dict[int, Address]) -> dict[Address, list[int]]:
    """Indexes per target, each list in the caller's order."""
    groups: dict[Address, list[int]] = {}
    for index, target in targets.items():
        groups.setdefault(target, []).append(index)
    return groups


def _place(
    indexes: list[int],
    responses: list[Response],
    address: Address,
    ops: Sequence[int],
    results: list[Outcome | None],
) -> None:
    """Put in-order v1 answers in their places; the requests left unanswered (the node closed the
    connection after an error answer) get a NotAnswered."""
    for index, response in zip(indexes, responses, strict=False):
        results[index] = (response, address)
    for index in indexes[len(responses) :]:
        results[index] = NotAnswered(
            f"{address} closed the connection without answering {Op(ops[index]).name} "
            f"(request {index + 1} of {len(ops)}) after an error answer"
        )


def _no_node_left(last: NodeUnreachable | None) -> NodeUnreachable:
    detail = f"; last error: {last}" if last is not None else ""
    return NodeUnreachable(f"no live node could take the request{detail}")
