"""The lmdb backend: a memory-mapped B+tree per node data directory (package ``lmdb``).

On-disk layout (format 2: the values the node stores are versioned envelopes, see
:mod:`funnelkvs.versions`; format 1, before replication, held raw values and is converted by
``funnelkvs data upgrade``), in the data directory: ``FUNNELKVS_FORMAT`` (see :mod:`.datadir`),
``data.mdb`` and ``lock.mdb``, with two named databases:

- ``entries``: LMDB key = the 20-byte ring digest of the FunnelKVS key, so LMDB's byte order is ring
  order and every key fits LMDB's 511-byte key limit whatever its own size (the empty key and 64 KiB
  keys included). The stored value is a *bucket*: one or more entries ``>IQ`` (key length, value
  length) + key + value, sorted by key. A bucket has one entry unless two keys share a SHA-1 digest;
  then both live in it (``dupsort`` cannot hold them: LMDB caps duplicate values at 511 bytes too).
- ``meta``: ``count`` and ``size`` as 8-byte big-endian integers, written in the same transaction as
  the entries they describe, so they are right after any crash and reopen.

Durability (``storage.options.durability``). Both settings group-commit: writes since the last
:meth:`LmdbBackend.sync` go into one write transaction, opened on the first write, and ``sync()``
commits it; the node acknowledges a write only after that (on its storage thread, see
:mod:`funnelkvs.storage.backend`).

- ``sync`` (default, ``durable``): the commit runs with LMDB's sync on: LMDB ``pwrite``s the pages
  and calls ``fdatasync`` before the commit returns (the meta page goes through an ``O_DSYNC``
  descriptor). An acknowledged write survives a power loss.
- ``nosync``: the commit runs with ``MDB_NOSYNC``: the pages are in the file (the kernel's cache) when
  it returns, so an acknowledged write survives the process dying, not the machine.

Threads: the write transaction belongs to the thread that opened it (LMDB ties a write transaction
to its thread). A ``get`` or ``scan`` from that thread reads through it and so sees the batch; from
any other thread (the node's loop) it reads the last commit in a read transaction of its own
(py-lmdb opens environments with ``MDB_NOTLS``, so read transactions may live on any thread). Growing
the map (``set_mapsize``) is only allowed while no transaction of this process is open, so readers
and the growth share one lock.

The map grows by itself: a write that fills it aborts the open transaction, the map is enlarged
(``set_mapsize``, at least doubled) and the writes since the last commit are replayed from a list kept
for that. Without ``writemap`` the file only grows as pages are written, so only a full disk can fail
a write. A transaction too big for LMDB's dirty-page list is committed early (a stronger promise than
asked for) and the write retried in a fresh one.

Scans read at most ``scan_batch`` buckets (or about 32 MiB of values) per transaction, then close it
before yielding and resume just after the last digest seen: no transaction outlives a batch, so a slow
consumer never pins old pages, and the caller may write between items.

Fork: LMDB forbids using an environment in a child process. The module notes its pid after each fork;
an instance used in another process than the one that opened it raises StorageError, and its
``close()`` there only drops references (closing would release the parent's reader slots). A child
must open its own backend.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import lmdb

from funnelkvs.contributions import StorageBackendSpec
from funnelkvs.errors import StorageError
from funnelkvs.hookspecs import hookimpl
from funnelkvs.keyspace import KeyRange, ring_digest
from funnelkvs.storage import process
from funnelkvs.storage.backend import StorageBackend
from funnelkvs.storage.datadir import DataDir, claim
from funnelkvs.storage.options import DURABILITY_MODES, OptionsReader

#: 2: values are versioned envelopes (funnelkvs.versions). 1: raw values, before replication.
FORMAT_VERSION: Final = 2
#: Formats ``funnelkvs data upgrade`` converts to FORMAT_VERSION (funnelkvs.cli.data).
UPGRADABLE_FROM: Final = (1,)
_MIB: Final = 1024 * 1024
DEFAULT_MAP_SIZE: Final = 64 * _MIB
MIN_MAP_SIZE: Final = _MIB
DEFAULT_SCAN_BATCH: Final = 256
# Values held per scan batch before it stops early: big values make big batches otherwise.
_SCAN_BATCH_BYTES: Final = 32 * _MIB
_ENTRY_HEAD: Final = struct.Struct(">IQ")
_COUNT: Final = b"count"
_SIZE: Final = b"size"
_COUNTER: Final = struct.Struct(">Q")


class LmdbBackend(StorageBackend):
    name = "lmdb"
    blocking = True

    def __init__(
        self,
        path: Path,
        *,
        durability: str = "sync",
        map_size: int = DEFAULT_MAP_SIZE,
        scan_batch: int = DEFAULT_SCAN_BATCH,
        read_only: bool = False,
        data_format: int = FORMAT_VERSION,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.durable = durability == "sync" and not read_only
        self._scan_batch = scan_batch
        self._closed = False
        self._pid = process.current()
        self._wtxn: lmdb.Transaction[memoryview] | None = None
        #: The thread that opened ``_wtxn``: only it may use the transaction.
        self._wtxn_thread = 0
        #: Held by every transaction of a thread that does not own ``_wtxn`` and by set_mapsize.
        self._map_lock = threading.Lock()
        #: Writes since the last commit, replayed when a full map aborts their transaction.
        self._pending: list[tuple[bytes, bytes | bytearray | None]] = []
        self._pending_bytes = 0
        self._failure: BaseException | None = None
        if data_format != FORMAT_VERSION and not read_only:
            # Only the upgrade reads an older format, and nothing may write one.
            raise ValueError(f"{self.name}: format {data_format} can only be opened read-only")
        self._datadir: DataDir = claim(
            self.path, self.name, data_format, read_only=read_only, upgradable_from=UPGRADABLE_FROM
        )
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                subdir=True,
                readonly=read_only,
                create=not read_only,
                sync=self.durable,
                metasync=self.durable,
                max_dbs=2,
            )
        except lmdb.Error as exc:
            self._datadir.release()
            raise StorageError(f"lmdb: cannot open {self.path}: {exc}") from exc
        try:
            # Without a txn argument py-lmdb opens the handles in a transaction of its own choosing; a
            # handle opened in our own read transaction would stay private to it (EINVAL afterwards).
            self._entries = self._env.open_db(b"entries", create=not read_only)
            self._meta = self._env.open_db(b"meta", create=not read_only)
            self._count, self._size = self._read_committed_counters()
        except lmdb.Error as exc:
            self._env.close()
            self._datadir.release()
            raise StorageError(f"lmdb: cannot open the databases in {self.path}: {exc}") from exc
        self._committed = (self._count, self._size)

    # --- reads ----------------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        self._check_usable()
        digest = ring_digest(key)
        try:
            txn = self._wtxn
            if txn is not None and self._wtxn_thread == threading.get_ident():
                bucket = txn.get(digest, db=self._entries)
                return None if bucket is None else _find(bucket, key)
            with self._map_lock:
                txn = self._begin_read()
                try:
                    bucket = txn.get(digest, db=self._entries)
                    return None if bucket is None else _find(bucket, key)
                finally:
                    txn.abort()
        except lmdb.Error as exc:
            raise StorageError(f"lmdb: read failed in {self.path}: {exc}") from exc

    def scan(self, key_range: KeyRange) -> Iterator[tuple[bytes, bytes]]:
        self._check_usable()
        for low, high in key_range.segments():
            after: bytes | None = None
            while True:
                batch, after = self._scan_batch_from(low, high, after)
                yield from batch
                if after is None:
                    break
                self._check_usable()

    def _scan_batch_from(
        self, low: bytes, high: bytes | None, after: bytes | None
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        """One bounded batch of ``[low, high)`` starting after digest ``after``; the digest to resume
        after, or None when the segment is done."""
        own_txn = self._wtxn is None or self._wtxn_thread != threading.get_ident()
        if own_txn:
            with self._map_lock:
                return self._scan_batch_in(None, low, high, after)
        return self._scan_batch_in(self._wtxn, low, high, after)

    def _scan_batch_in(
        self, txn: lmdb.Transaction[memoryview] | None, low: bytes, high: bytes | None, after: bytes | None
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        batch: list[tuple[bytes, bytes]] = []
        try:
            own_txn = txn is None
            if txn is None:
                txn = self._begin_read()
            try:
                with txn.cursor(db=self._entries) as cursor:
                    found = cursor.set_range(low if after is None else after)
                    if found and after is not None and cursor.key() == after:
                        found = cursor.next()
                    buckets = held = 0
                    while found:
                        digest = bytes(cursor.key())
                        if high is not None and digest >= high:
                            return batch, None
                        for key, value in _bucket_entries(cursor.value()):
                            batch.append((bytes(key), bytes(value)))
                            held += len(value)
                        buckets += 1
                        if buckets >= self._scan_batch or held >= _SCAN_BATCH_BYTES:
                            return batch, digest
                        found = cursor.next()
                    return batch, None
            finally:
                if own_txn:
                    txn.abort()
        except lmdb.Error as exc:
            raise StorageError(f"lmdb: scan failed in {self.path}: {exc}") from exc

    def count(self) -> int:
        self._check_usable()
        if self.read_only:
            return self._read_committed_counters()[0]
        return self._count

    def size(self) -> int:
        self._check_usable()
        if self.read_only:
            return self._read_committed_counters()[1]
        return self._size

    # --- writes ---------------------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes | bytearray) -> None:
        self._write(key, value)

    def delete(self, key: bytes) -> bool:
        return self._write(key, None)

    def _write(self, key: bytes, value: bytes | bytearray | None) -> bool:
        self._check_usable()
        if self.read_only:
            raise StorageError(f"lmdb: {self.path} is open read-only")
        if self._failure is not None:
            raise StorageError(
                f"lmdb: an earlier write failed and no sync() has reported it yet: {self._failure}"
            )
        while True:
            txn = self._wtxn if self._wtxn is not None else self._begin_write()
            try:
                existed = self._apply(txn, key, value)
                break
            except lmdb.MapFullError:
                self._grow_and_replay(len(key) + (0 if value is None else len(value)))
            except lmdb.TxnFullError as exc:
                if not self._pending:
                    self._fail(exc)
                    raise StorageError(
                        f"lmdb: a single write is too large for one transaction: {exc}"
                    ) from exc
                # The batch so far fitted: commit it early (more durable than asked), then retry.
                self._replay(grow_for=None)
                self._commit()
            except lmdb.Error as exc:
                self._fail(exc)
                raise StorageError(f"lmdb: write failed in {self.path}: {exc}") from exc
        if value is not None or existed:
            self._pending.append((key, value))
            self._pending_bytes += len(key) + (0 if value is None else len(value))
        return existed

    def _apply(self, txn: lmdb.Transaction[memoryview], key: bytes, value: bytes | bytearray | None) -> bool:
        """Put (or, with None, delete) one key in ``txn``, keeping the counters; whether it existed."""
        digest = ring_digest(key)
        bucket = txn.get(digest, db=self._entries)
        others: list[tuple[bytes, bytes]] = []
        old_length: int | None = None
        if bucket is not None:
            for stored_key, stored_value in _bucket_entries(bucket):
                if stored_key == key:
                    old_length = len(stored_value)
                else:
                    others.append((bytes(stored_key), bytes(stored_value)))
        if value is None:
            if old_length is None:
                return False
            if others:
                txn.put(digest, _encode_bucket(others), db=self._entries)
            else:
                txn.delete(digest, db=self._entries)
            self._count -= 1
            self._size -= old_length
            return True
        if others:
            others.append((key, bytes(value)))
            others.sort()
            txn.put(digest, _encode_bucket(others), db=self._entries)
        else:
            txn.put(digest, b"".join((_ENTRY_HEAD.pack(len(key), len(value)), key, value)), db=self._entries)
        if old_length is None:
            self._count += 1
        else:
            self._size -= old_length
        self._size += len(value)
        return old_length is not None

    def sync(self) -> None:
        self._check_usable()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise StorageError(f"lmdb: writes since the last sync were lost: {failure}") from failure
        if self._wtxn is not None:
            self._commit()

    def _commit(self) -> None:
        while self._wtxn is not None:
            txn = self._wtxn
            try:
                if (self._count, self._size) != self._committed:
                    txn.put(_COUNT, _COUNTER.pack(self._count), db=self._meta)
                    txn.put(_SIZE, _COUNTER.pack(self._size), db=self._meta)
                txn.commit()
            except lmdb.MapFullError:
                self._grow_and_replay(0)
                continue
            except lmdb.Error as exc:
                self._abort_write()
                self._forget_pending()
                raise StorageError(f"lmdb: commit failed in {self.path}: {exc}") from exc
            self._wtxn = None
            self._committed = (self._count, self._size)
            self._forget_pending()

    def _grow_and_replay(self, extra: int) -> None:
        """Enlarge the map after MapFullError and redo the uncommitted writes in a new transaction."""
        self._replay(grow_for=extra)

    def _replay(self, grow_for: int | None) -> None:
        """Abort the write transaction (LMDB's errors leave it unusable) and redo the writes since the
        last commit in a new one, first enlarging the map when ``grow_for`` is given (bytes wanted
        beyond the pending writes), and again whenever the replay itself fills it."""
        while True:
            self._abort_write()
            try:
                if grow_for is not None:
                    current = self._env.info()["map_size"]
                    target = max(current * 2, current + 2 * (self._pending_bytes + grow_for) + _MIB)
                    with self._map_lock:
                        self._env.set_mapsize(-(-target // _MIB) * _MIB)
                txn = self._begin_write()
                for key, value in self._pending:
                    self._apply(txn, key, value)
                return
            except lmdb.MapFullError:
                grow_for = grow_for or 0
            except lmdb.Error as exc:
                self._fail(exc)
                raise StorageError(f"lmdb: cannot redo the pending writes in {self.path}: {exc}") from exc

    def _fail(self, exc: BaseException) -> None:
        """A write failed: drop the uncommitted batch and, if that lost earlier writes whose answers
        wait for sync(), make the next sync() say so."""
        lost = bool(self._pending)
        self._abort_write()
        self._forget_pending()
        if lost:
            self._failure = exc

    def _abort_write(self) -> None:
        txn, self._wtxn = self._wtxn, None
        if txn is not None:
            try:
                txn.abort()
            except lmdb.Error:
                pass  # already ended by the failure that brought us here
        self._count, self._size = self._committed

    def _forget_pending(self) -> None:
        self._pending = []
        self._pending_bytes = 0

    # --- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pid != process.current():
            # A forked child: the environment is the parent's. Touch nothing but our own references.
            self._wtxn = None
            self._datadir.release()
            return
        try:
            if self._failure is not None:
                raise StorageError(f"lmdb: writes since the last sync were lost: {self._failure}")
            if self._wtxn is not None:
                self._commit()
            if not self.read_only and not self.durable:
                self._env.sync(True)
        except lmdb.Error as exc:
            raise StorageError(f"lmdb: flush on close failed in {self.path}: {exc}") from exc
        finally:
            self._abort_write()
            self._env.close()
            self._datadir.release()

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"lmdb: the backend at {self.path} is closed")
        if self._pid != process.current():
            raise StorageError(
                f"lmdb: the environment at {self.path} was opened by process {self._pid}; "
                "a forked child must open its own backend"
            )

    def _begin_read(self) -> lmdb.Transaction[memoryview]:
        try:
            return self._env.begin(db=self._entries, buffers=True)
        except lmdb.MapResizedError:
            # Another process (the writer, when we are a reader) grew the map: adopt its size.
            self._env.set_mapsize(0)
            return self._env.begin(db=self._entries, buffers=True)

    def _begin_write(self) -> lmdb.Transaction[memoryview]:
        self._wtxn = self._env.begin(db=self._entries, write=True, buffers=True)
        self._wtxn_thread = threading.get_ident()
        return self._wtxn

    def _read_counters(self, txn: lmdb.Transaction[memoryview]) -> tuple[int, int]:
        count = txn.get(_COUNT, db=self._meta)
        size = txn.get(_SIZE, db=self._meta)
        return (
            0 if count is None else _COUNTER.unpack(count)[0],
            0 if size is None else _COUNTER.unpack(size)[0],
        )

    def _read_committed_counters(self) -> tuple[int, int]:
        try:
            txn = self._begin_read()
            try:
                return self._read_counters(txn)
            finally:
                txn.abort()
        except lmdb.Error as exc:
            raise StorageError(f"lmdb: read failed in {self.path}: {exc}") from exc


def _bucket_entries(bucket: memoryview) -> Iterator[tuple[memoryview, memoryview]]:
    offset, end = 0, len(bucket)
    try:
        while offset < end:
            key_length, value_length = _ENTRY_HEAD.unpack_from(bucket, offset)
            offset += _ENTRY_HEAD.size
            key_end = offset + key_length
            value_end = key_end + value_length
            if value_end > end:
                break
            yield bucket[offset:key_end], bucket[key_end:value_end]
            offset = value_end
    except struct.error:
        pass
    if offset != end:
        raise StorageError("lmdb: corrupt entry bucket (lengths do not add up)")


def _find(bucket: memoryview, key: bytes) -> bytes | None:
    for stored_key, stored_value in _bucket_entries(bucket):
        if stored_key == key:
            return bytes(stored_value)
    return None


def _encode_bucket(entries: list[tuple[bytes, bytes]]) -> bytes:
    parts: list[bytes] = []
    for key, value in entries:
        parts += (_ENTRY_HEAD.pack(len(key), len(value)), key, value)
    return b"".join(parts)


# --- configuration -------------------------------------------------------------------------------------


def create_lmdb_backend(path: Path | None, options: dict[str, Any]) -> LmdbBackend:
    """The plugin factory: validate ``storage.options`` and open the backend at ``storage.path``."""
    reader = OptionsReader("lmdb", options, known=("durability", "map_size", "read_only", "scan_batch"))
    data_dir = reader.path(path)
    durability = reader.choice("durability", DURABILITY_MODES, "sync", "a durability mode")
    map_size = reader.integer(
        "map_size", DEFAULT_MAP_SIZE, MIN_MAP_SIZE, "a map size",
        f"expected an integer number of bytes >= {MIN_MAP_SIZE}; the map grows by itself",
    )  # fmt: skip
    scan_batch = reader.integer("scan_batch", DEFAULT_SCAN_BATCH, 1, "a batch size")
    read_only = reader.boolean("read_only", False)
    reader.check()
    return LmdbBackend(
        data_dir, durability=durability, map_size=map_size, scan_batch=scan_batch, read_only=read_only
    )


@hookimpl
def funnelkvs_register_storage_backends() -> list[StorageBackendSpec]:
    return [
        StorageBackendSpec(
            name="lmdb",
            factory=create_lmdb_backend,
            description="LMDB memory-mapped B+tree in a data directory, ordered by ring position; durable",
            persistent=True,
        )
    ]
