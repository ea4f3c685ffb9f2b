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
from funnelkvs.client.connection import Connection
from funnelkvs.client.pipeline import Pipeline
from funnelkvs.client.pool import ConnectionPool
from funnelkvs.client.router import Router
from funnelkvs.client.routing import RingView
from funnelkvs.errors import KeyNotFound, LocalProtocolError, NodeUnreachable, RemoteProtocolError
from funnelkvs.keyspace import ring_digest
from funnelkvs.protocol import (
    DEFAULT_MAX_KEY_SIZE,
    DEFAULT_MAX_VALUE_SIZE,
    Op,
    Response,
    Status,
    encode_request,
)

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

    def _call(self, op: int, key: bytes = b"", value: bytes = b"") -> Any:
        """GET/PUT/DELETE: to the key's owner when routing, else as :meth:`_call_plain`."""
        router = self._router
        if router is not None:
            # Router.active() inlined: this runs on every call, and a one-node ring must stay as fast.
            if _monotonic() >= router.next_refresh:
                router.refresh_if_free()
            view = router.routed
            if view is not None:
                return router.call(view, op, key, value)
        response, address = self._roundtrip(op, encode_request(op, key, value))
        return result_of(op, response, address)

    def _call_plain(self, op: int) -> Any:
        """PING, STATS: v1 to the configured addresses (one node's answer, as before rings)."""
        response, address = self._roundtrip(op, encode_request(op))
        return result_of(op, response, address)

    # --- operations ---------------------------------------------------------------------------------

    @overload
    def get(self, key: KeyLike) -> bytes | None: ...
    @overload
    def get(self, key: KeyLike, default: T) -> bytes | T: ...
    def get(self, key: KeyLike, default: object = None) -> object:
        """The value of ``key``, or ``default`` (``None``) when it has none."""
        value: bytes | None = self._call(Op.GET, self.key_bytes(key))
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

    def put(self, key: KeyLike, value: KeyLike) -> None:
        self._call(Op.PUT, self.key_bytes(key), self.value_bytes(value))

    __setitem__ = put

    def delete(self, key: KeyLike) -> None:
        """Delete ``key``. Deleting a missing key is not an error (v1 cannot tell the two apart)."""
        self._call(Op.DELETE, self.key_bytes(key))

    __delitem__ = delete

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
        self, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]], *, batch_size: int = 1000
    ) -> int:
        """Store every ``(key, value)``, pipelined ``batch_size`` at a time; returns how many."""
        pairs = items.items() if isinstance(items, Mapping) else items
        count = 0
        pipe = Pipeline(self)
        for key, value in pairs:
            pipe.put(key, value)
            if len(pipe) >= batch_size:
                count += len(pipe.execute())
        count += len(pipe.execute())
        return count

    def get_many(self, keys: Iterable[KeyLike], *, batch_size: int = 1000) -> list[bytes | None]:
        """The values of ``keys`` in order (``None`` where not found), pipelined."""
        values: list[bytes | None] = []
        pipe = Pipeline(self)
        for key in keys:
            pipe.get(key)
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
