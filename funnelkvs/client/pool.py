"""A thread-safe pool of blocking connections, spread round-robin over the node addresses.

At most ``size`` connections exist at once; a caller that finds none free waits for one. Idle
connections are reused last-in first-out (the warmest socket first) and checked for a close by the node
before reuse. A connection that saw an error is closed by the caller, never returned.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

from funnelkvs.client.address import Address
from funnelkvs.client.connection import Connection
from funnelkvs.errors import ClientClosed, NodeUnreachable


class ConnectionPool:
    def __init__(
        self,
        addresses: Sequence[Address],
        size: int,
        connect_timeout: float | None,
        timeout: float | None,
        connection_class: type[Connection] = Connection,
    ) -> None:
        if size < 1:
            raise ValueError("pool_size must be at least 1")
        if not addresses:
            raise ValueError("no server address given")
        self.addresses = tuple(addresses)
        self.size = size
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        #: :class:`Connection` (v1 frames) or :class:`~funnelkvs.client.connection.V2Connection`.
        self.connection_class = connection_class
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(size)
        self._next_address = itertools.count()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def connect(self) -> Connection:
        """A new connection, trying each address once starting from the next in turn (failover)."""
        count = len(self.addresses)
        start = next(self._next_address) % count
        failures: list[NodeUnreachable] = []
        for i in range(count):
            address = self.addresses[(start + i) % count]
            try:
                return self.connection_class.open(address, self.connect_timeout, self.timeout)
            except NodeUnreachable as exc:
                failures.append(exc)
        if count == 1:
            raise failures[0]
        raise NodeUnreachable(
            f"cannot connect to any of {count} nodes; last error: {failures[-1]}"
        ) from failures[-1]

    def checkout(self) -> tuple[Connection, bool]:
        """Lend a connection: ``(connection, reused)``. Give it back with :meth:`checkin`."""
        if self._closed:
            raise ClientClosed("the client is closed")
        self._slots.acquire()
        try:
            while True:
                with self._lock:
                    if self._closed:
                        raise ClientClosed("the client is closed")
                    conn = self._idle.pop() if self._idle else None
                if conn is None:
                    return self.connect(), False
                if not conn.is_stale():
                    return conn, True
                conn.close()
        except BaseException:
            self._slots.release()
            raise

    def checkin(self, conn: Connection, reusable: bool) -> None:
        """Take a lent connection back; it is closed unless ``reusable`` (and the connection itself
        still is) and the pool is open."""
        try:
            if reusable and conn.reusable:
                with self._lock:
                    if not self._closed:
                        self._idle.append(conn)
                        return
            conn.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close idle connections now and lent ones when they come back. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
