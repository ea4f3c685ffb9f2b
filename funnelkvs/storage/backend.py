"""The storage backend interface: what the node needs from any store, built-in or third-party.

Keys and values are opaque bytes (the empty key included). Backends keep entries addressable by the
key's ring position (:func:`funnelkvs.keyspace.ring_digest`) so that :meth:`StorageBackend.scan` can
walk a :class:`~funnelkvs.keyspace.KeyRange` in ring order without sorting everything.

Threads. A backend whose ``blocking`` is False (memory) is called by the node's event-loop thread
only, and every call must return at once. A backend whose ``blocking`` is True (lmdb, sqlite) is
called from two threads, never from both for the same kind of call:

- the node's *storage thread* (:mod:`funnelkvs.group_commit`) calls ``put``, ``delete`` and ``sync``,
  always in that order: a batch of writes, then one ``sync()``;
- the loop thread calls ``get``, ``count``, ``size`` and ``scan``. These must not wait behind the
  storage thread's writes or on a lock for long: they read the last committed state (the node keeps
  writes not yet committed in an overlay of its own, so its readers still see their own writes), and
  a ``get`` that would have to wait raises :class:`~funnelkvs.errors.StorageBusy`, after which the node
  asks :meth:`StorageBackend.get_waiting` on the storage thread instead.

Durability contract: ``put``/``delete`` may buffer. After ``sync()`` returns, every write since the
previous ``sync()`` has reached the store: with a power-loss-safe setting (``durable`` True) it
survives a machine crash; otherwise at least a crash of the process. The node acknowledges a write
of a blocking backend only after the ``sync()`` that covers it returned, and answers SERVER_ERROR to
the batch if it raised. Used from one thread only (tests, tools), reads see earlier writes, synced
or not.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import ClassVar

from funnelkvs.keyspace import KeyRange


class StorageBackend(abc.ABC):
    """Base class of every storage backend: subclass it, set :attr:`name`, implement the abstract
    methods, and register a factory through the ``funnelkvs_register_storage_backends`` hook
    (docs/plugins.md). :class:`funnelkvs.testing.conformance.BackendConformance` checks an
    implementation against this contract (module docstring: threads, durability)."""

    #: The registry name: what ``storage.backend`` in the config and ``--backend`` select, what the
    #: data-directory marker records, and what ``INFO`` and the metrics report.
    name: ClassVar[str] = ""
    #: True when :meth:`sync` makes writes survive a power loss, not only a crash of the process.
    durable: bool = False
    #: True when calls can wait on the disk or a lock: the node then runs ``put``/``delete``/``sync``
    #: on its storage thread and acknowledges writes after ``sync()`` (module docstring).
    blocking: ClassVar[bool] = False

    @abc.abstractmethod
    def get(self, key: bytes) -> bytes | bytearray | None:
        """The value stored under ``key``, or None (a ``bytearray`` only if one was stored)."""

    def get_waiting(self, key: bytes) -> bytes | bytearray | None:
        """Like :meth:`get`, called on the storage thread after ``get`` raised StorageBusy: it may
        wait (up to the backend's own timeout). The default is ``get``."""
        return self.get(key)

    @abc.abstractmethod
    def put(self, key: bytes, value: bytes | bytearray) -> None:
        """Store ``value`` under ``key``, replacing any earlier value. A ``bytearray`` value (a large
        value as the node received it) is handed over: nobody changes it afterwards, so a backend may
        keep it as it is; it is not hashable."""

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
