"""This node's copies of keys: versioned envelopes in the backend, writes not yet committed, counts.

Every value a node stores is an *envelope* (:mod:`funnelkvs.versions`): a kind (value, tombstone,
hint), a version and the value. A copy is replaced only by a newer version, so replicas that receive
the same writes in different orders (a coordinator's write, a read repair, a hint delivered late)
end up with the same copy: the highest version (Dynamo 4.4, with a total order in place of vector
clocks).

With a volatile backend (memory) a write is applied at once and is as durable as it will get. With a
blocking or durable one (lmdb, sqlite) it goes to the storage thread (:mod:`funnelkvs.group_commit`)
and ``on_durable`` runs once the batch holding it has committed; until then the write sits in the
pending overlay, which reads consult first.

Counts by kind (``live``, ``tombstones``, ``hints``) follow every change: ``funnelkvs stats`` shows
``keys`` as the live keys stored here (primaries and replicas), not tombstones or hints held for
other nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from funnelkvs.errors import StorageBusy
from funnelkvs.group_commit import GroupCommit
from funnelkvs.keyspace import KeyRange
from funnelkvs.loop import EventLoop
from funnelkvs.storage.backend import StorageBackend
from funnelkvs.versions import (
    HEADER_SIZE,
    HINT_TARGET_SIZE,
    KIND_HINT_TOMBSTONE,
    KIND_HINT_VALUE,
    KIND_TOMBSTONE,
    KIND_VALUE,
    newer,
)

log = logging.getLogger("funnelkvs.node")

#: ``on_durable(error)``: the write is durable (error None), or its batch failed.
OnDurable = Callable[[BaseException | None], None]
Envelope = bytes | bytearray


class LocalStore:
    """The envelopes this node keeps (see the module docstring). Loop thread only."""

    def __init__(self, backend: StorageBackend, commit: GroupCommit | None, loop: EventLoop) -> None:
        self.backend = backend
        self.commit = commit
        self.loop = loop
        self.pending: dict[bytes, tuple[Envelope | None, int]] = {} if commit is None else commit.pending
        #: Envelopes stored here by kind (index: the kind byte; 0 unused).
        self.kinds = [0, 0, 0, 0, 0]
        #: The start-up count is in (see count_existing).
        self.counted = False
        #: Keys whose copy here is a hint (kept for another node): what hinted handoff delivers.
        self.hint_keys: set[bytes] = set()

    # --- counts ----------------------------------------------------------------------------------------

    @property
    def live(self) -> int:
        """Live keys stored here as a replica (values; not tombstones, not hints)."""
        return self.kinds[KIND_VALUE]

    @property
    def tombstones(self) -> int:
        return self.kinds[KIND_TOMBSTONE]

    @property
    def hints(self) -> int:
        """Writes kept here for another node that was down (values and deletes)."""
        return self.kinds[KIND_HINT_VALUE] + self.kinds[KIND_HINT_TOMBSTONE]

    def value_bytes(self) -> int:
        """Bytes of the values stored here (what v1 STATS reports as size): the backend's total less
        every envelope's header (and a hint's target id)."""
        kinds = self.kinds
        headers = HEADER_SIZE * sum(kinds) + HINT_TARGET_SIZE * (
            kinds[KIND_HINT_VALUE] + kinds[KIND_HINT_TOMBSTONE]
        )
        return max(0, self.backend.size() - headers)

    def count_existing(self) -> None:
        """Count what a persistent store holds already, by kind. Once, at start, before the node
        serves anything (so that the counts plus every later change stay exact): a full scan, about a
        second per million keys with lmdb."""
        kinds = self.kinds
        for key, envelope in self.backend.scan(KeyRange.whole_ring()):
            if envelope and envelope[0] < len(kinds):
                kinds[envelope[0]] += 1
                if envelope[0] >= KIND_HINT_VALUE:
                    self.hint_keys.add(key)
        kinds[0] = 0
        self.counted = True

    def on_batch(self, transitions: list[tuple[bytes, int, int]]) -> None:
        """A committed batch changed these keys' kinds (``(key, before, after)``, 0 for absent)."""
        kinds = self.kinds
        for key, before, after in transitions:
            kinds[before] -= 1
            kinds[after] += 1
            self._note_hint(key, before, after)
        kinds[0] = 0

    def _note_hint(self, key: bytes, before: int, after: int) -> None:
        if after >= KIND_HINT_VALUE:
            self.hint_keys.add(key)
        elif before >= KIND_HINT_VALUE:
            self.hint_keys.discard(key)

    # --- reads -----------------------------------------------------------------------------------------

    def read(self, key: bytes) -> Envelope | None:
        """This node's envelope for ``key`` (None: nothing stored). Raises StorageBusy when the backend
        cannot answer without waiting: ask :meth:`read_waiting` then."""
        pending = self.pending
        if pending:
            entry = pending.get(key)
            if entry is not None:
                return entry[0]
        return self.backend.get(key)

    def read_waiting(
        self, key: bytes, on_done: Callable[[Envelope | None, BaseException | None], None]
    ) -> None:
        """``read`` on the storage thread (after StorageBusy); ``on_done(envelope, error)`` on the loop."""
        assert self.commit is not None  # only a blocking backend raises StorageBusy
        self.commit.read(key, on_done)

    # --- writes ----------------------------------------------------------------------------------------

    def write(self, key: bytes, envelope: Envelope, on_durable: OnDurable | None = None) -> bool:
        """Store ``envelope`` unless the copy here is as new or newer. ``on_durable(error)`` once it
        is durable (at once with a volatile backend, or when superseded by a copy already durable).
        Returns whether the envelope was taken (False: superseded)."""
        commit = self.commit
        if commit is None:
            backend = self.backend
            current = backend.get(key)
            if current is not None and not newer(envelope, current):
                if on_durable is not None:
                    on_durable(None)
                return False
            backend.put(key, envelope)
            kinds = self.kinds
            before = 0 if current is None else current[0]
            kinds[before] -= 1
            kinds[envelope[0]] += 1
            kinds[0] = 0
            if before >= KIND_HINT_VALUE or envelope[0] >= KIND_HINT_VALUE:
                self._note_hint(key, before, envelope[0])
            if on_durable is not None:
                on_durable(None)
            return True
        try:
            current = self.read(key)
        except StorageBusy:
            current = None  # the storage thread checks again before it stores anything
        if current is not None and not newer(envelope, current):
            if on_durable is not None:
                if key in self.pending:
                    commit.when_committed(on_durable)  # superseded by a write not yet durable
                else:
                    on_durable(None)
            return False
        commit.write(key, envelope)
        if on_durable is not None:
            commit.when_committed(on_durable)
        return True

    def replace(self, key: bytes, envelope: Envelope) -> None:
        """Store ``envelope`` whatever the copy here (a hint becoming this node's own copy of the same
        write, which a newer-wins write would refuse as no newer)."""
        self.remove(key)
        self.write(key, envelope)

    def remove(self, key: bytes) -> None:
        """Delete ``key``'s copy outright (a range this node no longer holds); no tombstone."""
        commit = self.commit
        if commit is None:
            current = self.backend.get(key)
            if current is not None:
                self.backend.delete(key)
                self.kinds[current[0]] -= 1
                self._note_hint(key, current[0], 0)
            return
        commit.write(key, None)
