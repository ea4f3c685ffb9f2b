"""The FunnelKVS client: ``Client("127.0.0.1:8001").get(b"key")``.

Retry policy: a call is sent again, once, on a fresh connection only when all of these hold:

- the connection came from the pool (it had served earlier calls, so the node may have closed it while
  it sat idle; a brand-new connection that fails is a real failure, reported at once);
- the failure is :class:`NodeUnreachable` (reset or EOF), never :class:`RequestTimeout` (the node may
  still be working on the request, and waiting twice would double the caller's bound);
- not one byte of the answer had arrived;
- the op is idempotent. Every v1 op is: GET, PING and STATS read; PUT writes the same value again and
  DELETE deletes again. The one hazard of replaying a PUT or DELETE is ordering: if the node did apply
  the first copy, another client's write to the same key landing between the two copies is undone by
  the replay. Pass ``retry=False`` where that matters. A later non-idempotent op (e.g. a conditional
  write) must not be retried; :data:`IDEMPOTENT_OPS` is the list to keep honest.

Connecting is always safe to retry (nothing was sent): a refused connection moves on to the next address.

Ring routing (``routing=True``, the default; :mod:`funnelkvs.client.router`): against a ring of more
than one node, GET/PUT/DELETE go as v2 frames straight to the key's owner. The same policy decides
whether a request whose owner failed may be sent again, as v1 through another node that forwards it:
always when the owner refused the connection (nothing was sent), else only with ``retry`` on and not
one byte of the answer received (a fresh connection included: in a ring another node can take it).

Quorums (issue 9): ``get(key, r=N)``, ``put(key, value, w=N)``, ``delete(key, w=N)`` (and the same on a
pipeline) ask the node for N replicas; they travel only in v2 (docs/protocol.md, "Per-request
quorums"). Routed, the request goes to its owner as v2 anyway. On the plain path (``routing=False``, a
ring of one node) such a request goes as a v2 frame on the same pooled connection (a node tells v1 from
v2 per frame); a NOT_RESPONSIBLE answer, which a ring gives with ``routing=False`` for a key the node
does not own, is followed to the owner it names on a connection opened for it. A node that speaks no
v2 (the reference) cannot take w/r: :class:`InvalidRequest`.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar, overload

from funnelkvs.client.address import Address, parse_addresses
from funnelkvs.client.answers import result_of
from funnelkvs.client.connection import Connection, V2Connection
from funnelkvs.client.pipeline import Pipeline
from funnelkvs.client.pool import ConnectionPool
from funnelkvs.client.quorums import quorum_count
from funnelkvs.client.router import MAX_REDIRECTS, Router, owner_named
from funnelkvs.client.routing import RingView
from funnelkvs.errors import (
    InvalidRequest,
    KeyNotFound,
    LocalProtocolError,
    NodeUnreachable,
    RemoteProtocolError,
)
from funnelkvs.keyspace import ring_digest
from funnelkvs.protocol import (
    DEFAULT_MAX_KEY_SIZE,
    DEFAULT_MAX_VALUE_SIZE,
    Op,
    Response,
    Status,
    encode_request,
)
from funnelkvs.protocol.v2 import V2Response, encode_v2_request, key_value_body

DEFAULT_SERVER: Final = "127.0.0.1:8001"
#: Ops that may be replayed after a dropped connection (see the module docstring).
IDEMPOTENT_OPS: Final = frozenset({Op.GET, Op.PUT, Op.DELETE, Op.PING, Op.STATS, Op.INFO})

KeyLike = str | bytes | bytearray | memoryview
_monotonic = time.monotonic
T = TypeVar("T")


def to_bytes(data: object, what: str) -> bytes:
    """Keys and values travel as bytes; ``str`` is encoded as UTF-8."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"{what} must be bytes or str, not {type(data).__name__}")


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _show(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


class Client:
    """A thread-safe client for one FunnelKVS node, or several (round-robin, with failover).

    :param servers: ``"host:port"``, a comma-separated list of them, or a list of them (an
        :class:`Address` or ``(host, port)`` pair also does); anything else is a ``TypeError``.
    :param pool_size: the most connections open at once; more concurrent callers wait for one. When
        routing over a ring: at most this many to each member, besides those to the configured addresses.
    :param connect_timeout: seconds to establish a connection (per address tried).
    :param timeout: seconds to wait for an answer (for a pipeline: for each bit of progress).
    :param retry: replay a call once after a dropped pooled connection (see the module docstring).
    :param max_key_size, max_value_size: sizes refused locally with :class:`LocalProtocolError`.
    :param routing: against a ring of several nodes, send each key straight to its owner (the view
        comes from RING_VIEW; see :mod:`funnelkvs.client.router`). ``False``: every request goes as v1
        to the configured addresses, which forward keys they do not own (two hops).
    :param refresh_interval: seconds after which the ring view is fetched again (on the next call).
    """

    def __init__(
        self,
        servers: str | Iterable[str] = DEFAULT_SERVER,
        *,
        pool_size: int = 8,
        connect_timeout: float | None = 2.0,
        timeout: float | None = 5.0,
        retry: bool = True,
        max_key_size: int = DEFAULT_MAX_KEY_SIZE,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        routing: bool = True,
        refresh_interval: float = 5.0,
    ) -> None:
        for name, seconds in (
            ("connect_timeout", connect_timeout),
            ("timeout", timeout),
            ("refresh_interval", refresh_interval),
        ):
            if seconds is None:
                continue
            if not _is_number(seconds):
                raise TypeError(f"{name} must be a number of seconds or None, not {_show(seconds)}")
            if not 0 < seconds < math.inf:
                raise ValueError(f"{name} must be positive, finite seconds or None, not {seconds}")
        for name, count in (
            ("pool_size", pool_size),
            ("max_key_size", max_key_size),
            ("max_value_size", max_value_size),
        ):
            if not isinstance(count, int) or isinstance(count, bool):
                raise TypeError(f"{name} must be a whole number, not {_show(count)}")
        self._pool = ConnectionPool(parse_addresses(servers), pool_size, connect_timeout, timeout)
        self.retry = retry
        self.max_key_size = max_key_size
        self.max_value_size = max_value_size
        #: None when routing is off: every call takes the plain v1 path.
        self._router = Router(self, refresh_interval) if routing else None

    # --- plumbing -----------------------------------------------------------------------------------

    @property
    def addresses(self) -> tuple[Address, ...]:
        return self._pool.addresses

    @property
    def closed(self) -> bool:
        return self._pool.closed

    @property
    def routing(self) -> bool:
        """Whether keys are routed to their owners (``routing=True`` and the nodes serve RING_VIEW)."""
        return self._router is not None and not self._router.unsupported

    @property
    def ring_view(self) -> RingView | None:
        """The ring view last fetched (None before the first keyed call, with routing off, or when the
        nodes do not serve one). A view of one member means requests take the plain v1 path."""
        return None if self._router is None else self._router.view

    def refresh_view(self) -> RingView | None:
        """Fetch the ring view now (normally fetched when due, on a call); returns it, or None when no
        node served one. With routing off: None, and nothing is sent."""
        return None if self._router is None else self._router.refresh()

    @property
    def routing_counts(self) -> dict[str, int]:
        """How often routing had to correct itself: ``redirects`` (NOT_RESPONSIBLE answers followed),
        ``fallbacks`` (requests or pipeline groups sent as v1 through another node) and ``refreshes``
        (views fetched). A copy; approximate under concurrent calls."""
        if self._router is None:
            return {"redirects": 0, "fallbacks": 0, "refreshes": 0}
        return dict(self._router.counts)

    def routed_view(self) -> RingView | None:
        """The view to route keyed requests with now (refreshed when due), or None for the plain v1
        path. Used by :class:`Pipeline`."""
        router = self._router
        return None if router is None else router.active()

    def key_bytes(self, key: object) -> bytes:
        data = to_bytes(key, "key")
        if len(data) > self.max_key_size:
            raise LocalProtocolError(f"key of {len(data)} bytes exceeds the maximum of {self.max_key_size}")
        return data

    def value_bytes(self, value: object) -> bytes:
        data = to_bytes(value, "value")
        if len(data) > self.max_value_size:
            raise LocalProtocolError(
                f"value of {len(data)} bytes exceeds the maximum of {self.max_value_size}"
            )
        return data

    def _roundtrip(self, op: int, frame: bytes) -> tuple[Response, Address]:
        return self._on_connection(op in IDEMPOTENT_OPS, lambda conn: conn.request(frame))

    def exchange(self, ops: Sequence[int], frames: Sequence[bytes]) -> tuple[list[Response], Address]:
        """Send encoded requests pipelined on one connection; their answers in order (used by
        :class:`Pipeline`). Fewer answers than requests when the node closed the connection after an
        error answer: the last answer is that error, and the requests behind it were not answered."""
        safe = all(op in IDEMPOTENT_OPS for op in ops)
        return self._on_connection(safe, lambda conn: conn.exchange(frames))

    def exchange_v2(self, ops: Sequence[int], frames: Sequence[bytes]) -> tuple[list[V2Response], Address]:
        """As :meth:`exchange` for v2 frames (on a pooled v1 connection): the answers as they came,
        to be matched by request id (used by :class:`Pipeline` for requests with w/r)."""
        safe = all(op in IDEMPOTENT_OPS for op in ops)
        return self._on_connection(safe, lambda conn: conn.exchange_v2(frames))

    def _on_connection(self, idempotent: bool, talk: Callable[[Connection], T]) -> tuple[T, Address]:
        """Run ``talk`` on a pooled connection, replaying it once on a fresh one when the retry policy
        (module docstring) allows."""
        pool = self._pool
        conn, reused = pool.checkout()
        ok = False
        try:
            try:
                result = talk(conn)
            except NodeUnreachable:
                if not (reused and self.retry and conn.received == 0 and idempotent):
                    raise
                conn.close()
                conn = pool.connect()
                result = talk(conn)
            ok = True
            return result, conn.address
        finally:
            pool.checkin(conn, ok)

    def _call(self, op: int, key: bytes = b"", value: bytes = b"", w: int = 0, r: int = 0) -> Any:
        """GET/PUT/DELETE: to the key's owner when routing, else as v1 to the configured addresses (as
        v2 when ``w`` or ``r`` is asked for: :meth:`_call_v2`)."""
        router = self._router
        if router is not None:
            # Router.active() inlined: this runs on every call, and a one-node ring must stay as fast.
            if _monotonic() >= router.next_refresh:
                router.refresh_if_free()
            view = router.routed
            if view is not None:
                return router.call(view, op, key, value, w, r)
        if w or r:
            return self._call_v2(op, key, value, w, r)
        response, address = self._roundtrip(op, encode_request(op, key, value))
        return result_of(op, response, address)

    def _call_v2(self, op: int, key: bytes, value: bytes, w: int, r: int) -> Any:
        """A request with w/r off the routed path: v1 cannot carry them, so it goes as a v2 frame on a
        pooled v1 connection (same retry policy as v1)."""
        frame = encode_v2_request(op, 1, key_value_body(op, key, value, w, r))
        answer, address = self._on_connection(op in IDEMPOTENT_OPS, lambda conn: conn.request_v2(frame, 1))
        if answer is None:
            raise InvalidRequest(
                f"{address} answered a v2 request in v1: it speaks no v2, and w/r travel only in v2 "
                "(leave them out for this node)",
                Status.INVALID_REQUEST,
            )
        return self.settle_v2(op, frame, answer, address)

    def settle_v2(self, op: int, frame: bytes, answer: V2Response, address: Address) -> Any:
        """The result of the v2 answer ``address`` gave to ``frame`` off the routed path. A
        NOT_RESPONSIBLE answer (``routing=False`` against a ring) is followed to the owner it names,
        up to :data:`~funnelkvs.client.router.MAX_REDIRECTS` times, each on a connection opened for it
        (and closed: this path is rare); ``frame`` must use request id 1. Used by :class:`Pipeline`."""
        pool = self._pool
        for _ in range(MAX_REDIRECTS):
            if answer.status != Status.NOT_RESPONSIBLE:
                break
            owner = owner_named(answer.body)
            if owner is None or owner == address:
                break
            conn = V2Connection.open(owner, pool.connect_timeout, pool.timeout)
            try:
                answer = conn.call(frame, 1)
            finally:
                conn.close()
            address = owner
        return result_of(op, Response(answer.status, answer.body), address)

    def _call_plain(self, op: int) -> Any:
        """PING, STATS: v1 to the configured addresses (one node's answer, as before rings)."""
        response, address = self._roundtrip(op, encode_request(op))
        return result_of(op, response, address)

    # --- operations ---------------------------------------------------------------------------------

    @overload
    def get(self, key: KeyLike, *, r: int | None = None) -> bytes | None: ...
    @overload
    def get(self, key: KeyLike, default: T, *, r: int | None = None) -> bytes | T: ...
    def get(self, key: KeyLike, default: object = None, *, r: int | None = None) -> object:
        """The value of ``key``, or ``default`` (``None``) when it has none.

        ``r``: how many replicas' copies the read waits for (None: the node's ``read_quorum``); a
        whole number from 1, else ValueError. The node answers INVALID_REQUEST (:class:`InvalidRequest`)
        when it exceeds the replication factor, TIMEOUT (:class:`RequestTimeout`) when that many did
        not answer in time; the node's message is in the exception's text."""
        value: bytes | None = self._call(Op.GET, self.key_bytes(key), b"", 0, quorum_count("r", r))
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        """``key in client``: whether ``key`` has a value. v1 has no existence check, so this is a GET
        (the value travels, and is dropped)."""
        return self._call(Op.GET, self.key_bytes(key)) is not None

    #: Not iterable: a node cannot list its keys. Without this, ``iter()`` and ``for`` would fall back
    #: to calling ``client[0]``, ``client[1]``... and fail with a confusing key type error.
    __iter__ = None

    def __getitem__(self, key: KeyLike) -> bytes:
        """The value of ``key``; raises :class:`KeyNotFound` (a ``KeyError``) when it has none."""
        value: bytes | None = self._call(Op.GET, self.key_bytes(key))
        if value is None:
            raise KeyNotFound(key)
        return value

    def put(self, key: KeyLike, value: KeyLike, *, w: int | None = None) -> None:
        """Store ``value`` under ``key``. ``w``: how many replicas must acknowledge it before the node
        answers (None: the node's ``write_quorum``); errors as for ``r`` in :meth:`get`."""
        self._call(Op.PUT, self.key_bytes(key), self.value_bytes(value), quorum_count("w", w))

    def __setitem__(self, key: KeyLike, value: KeyLike) -> None:
        self._call(Op.PUT, self.key_bytes(key), self.value_bytes(value))

    def delete(self, key: KeyLike, *, w: int | None = None) -> None:
        """Delete ``key``. Deleting a missing key is not an error (v1 cannot tell the two apart).
        ``w`` as in :meth:`put`."""
        self._call(Op.DELETE, self.key_bytes(key), b"", quorum_count("w", w))

    def __delitem__(self, key: KeyLike) -> None:
        self._call(Op.DELETE, self.key_bytes(key))

    def ping(self) -> str:
        """``"pong"`` from a live node; raises :class:`NodeUnreachable` or :class:`RequestTimeout`."""
        text: str = self._call_plain(Op.PING)
        return text

    def stats(self) -> dict[str, int]:
        """The node's STATS answer parsed: ``{"keys": N, "size": N}`` (plus any numeric fields it adds)."""
        stats: dict[str, int] = self._call_plain(Op.STATS)
        return stats

    def info(self) -> dict[str, Any]:
        """What the node tells about itself: ``keys``, ``bytes``, ``node_id``, ``address``, ``backend``,
        ``uptime_s`` (and any other field it reports), from the INFO op.

        A node that does not know INFO (the reference implementation) answers INVALID_REQUEST; then the
        answer is built from v1 STATS, ``node_id`` is derived from the address the client reached, and
        ``backend``/``uptime_s`` are ``None``. (The reference's STATS ``size`` is its entry count, so
        there ``bytes`` equals ``keys``.)
        """
        response, address = self._roundtrip(Op.INFO, encode_request(Op.INFO))
        if response.status == Status.SUCCESS:
            try:
                reported = json.loads(response.value)
            except ValueError as exc:
                raise RemoteProtocolError(f"{address}: INFO answer is not JSON") from exc
            if not isinstance(reported, dict):
                raise RemoteProtocolError(f"{address}: INFO answer is not a JSON object")
            return reported
        if response.status != Status.INVALID_REQUEST:
            result_of(Op.INFO, response, address)  # raises the error the status means
        numbers = self.stats()
        return {
            "keys": numbers.get("keys", 0),
            "bytes": numbers.get("size", 0),
            "node_id": ring_digest(str(address).encode()).hex(),
            "address": str(address),
            "backend": None,
            "uptime_s": None,
        }

    # --- bulk ---------------------------------------------------------------------------------------

    def pipeline(self) -> Pipeline:
        """Queue requests, then send them in one go with :meth:`Pipeline.execute`."""
        return Pipeline(self)

    def put_many(
        self,
        items: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
        *,
        batch_size: int = 1000,
        w: int | None = None,
    ) -> int:
        """Store every ``(key, value)``, pipelined ``batch_size`` at a time, each with write quorum
        ``w`` (as in :meth:`put`); returns how many."""
        pairs = items.items() if isinstance(items, Mapping) else items
        quorum_count("w", w)  # a bad w fails before anything is sent
        count = 0
        pipe = Pipeline(self)
        for key, value in pairs:
            pipe.put(key, value, w=w)
            if len(pipe) >= batch_size:
                count += len(pipe.execute())
        count += len(pipe.execute())
        return count

    def get_many(
        self, keys: Iterable[KeyLike], *, batch_size: int = 1000, r: int | None = None
    ) -> list[bytes | None]:
        """The values of ``keys`` in order (``None`` where not found), pipelined, each read with
        quorum ``r`` (as in :meth:`get`)."""
        quorum_count("r", r)
        values: list[bytes | None] = []
        pipe = Pipeline(self)
        for key in keys:
            pipe.get(key, r=r)
            if len(pipe) >= batch_size:
                values.extend(pipe.execute())
        values.extend(pipe.execute())
        return values

    # --- lifetime -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection; later calls raise :class:`ClientClosed`. Idempotent."""
        self._pool.close()
        if self._router is not None:
            self._router.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Client {','.join(map(str, self.addresses))} {state}>"
