"""The storage backend interface: what the node needs from any store, built-in or third-party.

Keys and values are opaque bytes (the empty key included). Backends keep entries addressable by the
key's ring position (:func:`funnelkvs.keyspace.ring_digest`) so that :meth:`StorageBackend.scan` can
walk a :class:`~funnelkvs.keyspace.KeyRange` in ring order without sorting everything.

Threading: a backend is owned by the node's event-loop thread. Only the loop calls it, so a backend
need not lock, and it must never block the loop without a bound.

Durability contract: ``put``/``delete`` may buffer. A *durable* backend makes every write done since
the previous ``sync()`` survive a crash once ``sync()`` returns; the node calls ``sync()`` once per
loop pass, after a batch of writes and before any of their answers is sent (group commit), and answers
SERVER_ERROR to those writes if it raises. Reads always see earlier writes, synced or not.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import ClassVar

from funnelkvs.keyspace import KeyRange


class StorageBackend(abc.ABC):
    #: The registry name (``storage.backend`` in the config).
    name: ClassVar[str] = ""
    #: True when :meth:`sync` makes writes survive a crash. The node skips the per-pass bookkeeping
    #: of unsynced answers for backends that are not durable.
    durable: bool = False

    @abc.abstractmethod
    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None."""

    @abc.abstractmethod
    def put(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing any earlier value."""

    @abc.abstractmethod
    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True when it was present."""

    @abc.abstractmethod
    def scan(self, key_range: KeyRange) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs whose ring position lies in ``key_range``, in ring order starting
        just after ``key_range.start``. Long scans must not hold locks or transactions unboundedly."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of keys stored."""

    @abc.abstractmethod
    def size(self) -> int:
        """Total bytes of stored values."""

    def sync(self) -> None:  # noqa: B027 - a no-op default on purpose: volatile backends have nothing to do
        """Make every write so far durable (see the module docstring). Raise StorageError on failure."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release everything. Calling it twice is harmless."""

    def __enter__(self) -> StorageBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
