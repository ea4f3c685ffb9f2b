"""The sqlite backend: one SQLite file per node data directory, written through ``sqlitedict``.

On-disk layout (format 2: the values the node stores are versioned envelopes, see
:mod:`funnelkvs.versions`; format 1, before replication, held raw values and is converted by
``funnelkvs data upgrade``), in the data directory: ``FUNNELKVS_FORMAT`` (see :mod:`.datadir`) and
``funnelkvs.sqlite3`` (plus ``-wal``/``-shm`` in WAL mode) holding

- ``entries (key TEXT PRIMARY KEY, value BLOB)``: sqlitedict's own table shape. The stored key is
  ``ring_digest(key) + key`` as a BLOB and the value the raw bytes: sqlitedict gets identity codecs,
  never its default pickle (which would run code from a tampered file), and no code path here
  unpickles. SQLite compares BLOBs with memcmp, so the PRIMARY KEY's index is in ring order (keys
  sharing a digest follow by key bytes, as in the memory backend): a range scan is an index range
  query, whereas sqlitedict's own iteration goes in insertion order. Prefixing the digest to the key
  rather than keeping a separate position column keeps sqlitedict's table as it is and costs no
  second index.
- ``funnelkvs_meta``: one row with the entry count and value bytes, kept by triggers on ``entries``
  inside the writing transaction, so count and size are right after a crash or reopen.

Threads: sqlitedict does every statement on its own background thread, fed through a queue; its
blocking calls (``commit(blocking=True)``, ``select``, ``close``) wait on reply queues with no bound,
and a failing ``conn.commit()`` on that thread kills it and leaves the waiter hanging. So this module
talks to the thread through its ``execute(sql, args, reply_queue)`` alone, sends ``COMMIT`` and
``ROLLBACK`` as SQL (so their errors are caught and recorded like any statement's), and waits for
every reply with a deadline (``storage.options.timeout``), noticing a dead thread at once. A timeout,
a dead thread or a recorded statement error raises :class:`~funnelkvs.errors.StorageError`; an error
from a queued write is never dropped: it fails the next call that finds it recorded (every call that
waits on the thread does) and the next ``sync()``.

Reads do not use that thread (a queue round trip and two GIL hand-offs per key cost most of a
read, and the queue holds the node's whole write batch). ``get()``, ``count()`` and ``size()`` run on
a second connection of our own, read-only (``mode=ro``) and autocommit, so each SELECT sees the latest
commit, with a busy timeout of 0: the node's loop thread calls them, and a lock held by someone else
(another process, or our own writer committing in ``delete`` journal mode) must not stall it. A
``get()`` that finds the file locked raises :class:`~funnelkvs.errors.StorageBusy` and the node asks
:meth:`SqliteBackend.get_waiting` on its storage thread, which reads through a third connection with
the full ``timeout``; ``count()`` and ``size()`` then answer the counters last read. Writes not yet
committed are invisible to the read connection, so a single-threaded user (tests, tools) still sees
them through an overlay (stored key to value, or None for a delete) that ``get()`` consults first; it
is the open batch, emptied when ``sync()`` commits it or gives it up. (The node keeps an overlay of its
own across threads; this one is read with single dict lookups, which are atomic, for the same
reason.) ``scan`` stays on sqlitedict's connection, which sees the open batch itself. In ``delete``
journal mode the writing connection never spills dirty pages to the file before ``COMMIT`` (``PRAGMA
cache_spill``): a spill would take the exclusive lock for the rest of the batch and every read would
have to wait for the commit.

Durability (``storage.options.durability``): sqlitedict sets ``PRAGMA synchronous=OFF`` on its
connection; we override it on that same connection (the one that writes) and read it back. Both
settings group-commit: writes since the last ``sync()`` form one transaction and ``sync()`` commits
it; the node acknowledges a write only after that.

- ``sync`` (default, ``durable``): ``synchronous=FULL``; the commit syncs the WAL (``fdatasync``)
  before returning. An acknowledged write survives a power loss.
- ``nosync``: ``synchronous=NORMAL``; the commit has written the transaction to the file (WAL or
  database) when it returns, without waiting for the disk: an acknowledged write survives the process
  dying, not the machine.

Scans read pages of at most ``scan_batch`` entries (and about 32 MiB of values): one statement lists
keys and value lengths, a second fetches the values of the prefix that fits, and the next page starts
after the last key. No statement stays open across a yield.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import sqlitedict

from funnelkvs.contributions import StorageBackendSpec
from funnelkvs.errors import StorageBusy, StorageError
from funnelkvs.hookspecs import hookimpl
from funnelkvs.keyspace import POSITION_BYTES, KeyRange, ring_digest
from funnelkvs.storage import process
from funnelkvs.storage.backend import StorageBackend
from funnelkvs.storage.datadir import DataDir, claim
from funnelkvs.storage.options import DURABILITY_MODES, OptionsReader
from funnelkvs.storage.sqlite_schema import (
    COUNTERS,
    SCHEMA,
    SYNCHRONOUS,
    TABLE,
    is_busy,
    value_of,
)
from funnelkvs.storage.sqlite_schema import DELETE as DELETE_SQL
from funnelkvs.storage.sqlite_schema import GET as GET_SQL
from funnelkvs.storage.sqlite_schema import PUT as PUT_SQL

#: 2: values are versioned envelopes (funnelkvs.versions). 1: raw values, before replication.
FORMAT_VERSION: Final = 2
#: Formats ``funnelkvs data upgrade`` converts to FORMAT_VERSION (funnelkvs.cli.data).
UPGRADABLE_FROM: Final = (1,)
DATABASE_NAME: Final = "funnelkvs.sqlite3"
JOURNAL_MODES: Final = ("wal", "delete")
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_SCAN_BATCH: Final = 256
_SCAN_BATCH_BYTES: Final = 32 * 1024 * 1024
# How often a long wait checks that sqlitedict's thread is still alive.
_POLL_SECONDS: Final = 0.1
# sqlitedict's end-of-reply marker; its thread puts this very object, so identity is the test.
_NO_MORE: Final = sqlitedict._RESPONSE_NO_MORE
_CLOSE: Final = sqlitedict._REQUEST_CLOSE
#: Read connections of backends a forked child let go of, kept from being closed by garbage collection.
_left_behind: list[sqlite3.Connection] = []


def _identity(value: Any) -> Any:
    return value


class _NoAnswer(StorageError):
    """sqlitedict's thread did not answer in time or has died: its connection's state is unknown."""


class SqliteBackend(StorageBackend):
    name = "sqlite"
    blocking = True

    def __init__(
        self,
        path: Path,
        *,
        durability: str = "sync",
        journal_mode: str = "wal",
        timeout: float = DEFAULT_TIMEOUT,
        scan_batch: int = DEFAULT_SCAN_BATCH,
        read_only: bool = False,
        data_format: int = FORMAT_VERSION,
    ) -> None:
        self.path = Path(path)
        self.file = self.path / DATABASE_NAME
        self.read_only = read_only
        self.durable = durability == "sync" and not read_only
        self._timeout = timeout
        self._scan_batch = scan_batch
        self._closed = False
        self._pid = process.current()
        #: A write transaction is open on sqlitedict's connection.
        self._dirty = False
        #: An error from a queued write of the open batch: the next sync() must fail.
        self._failure: BaseException | None = None
        #: Writes the read connection may not see yet: stored key -> value, None for a delete.
        self._overlay: dict[bytes, bytes | bytearray | None] = {}
        #: The counters last read by count()/size(), answered while the file is locked.
        self._last_counters = (0, 0)
        #: The thread that wrote the open batch: its count()/size() include that batch.
        self._writer_thread = 0
        #: get_waiting()'s connection, opened on first use (on the thread that uses it).
        self._waiting_reader: sqlite3.Connection | None = None
        if data_format != FORMAT_VERSION and not read_only:
            # Only the upgrade reads an older format, and nothing may write one.
            raise ValueError(f"{self.name}: format {data_format} can only be opened read-only")
        self._datadir: DataDir = claim(
            self.path, self.name, data_format, read_only=read_only, upgradable_from=UPGRADABLE_FROM
        )
        try:
            journal_mode = self._prepare(journal_mode)
            #: The file's journal mode (a reader's is the writer's): what a copy of it should use.
            self.journal_mode = journal_mode
            self._dict = self._open_dict(journal_mode)
        except BaseException:
            self._datadir.release()
            raise
        self._worker: Any = self._dict.conn
        try:
            if not read_only:
                self._set_synchronous(durability)
                if journal_mode == "delete":
                    self._ask("PRAGMA cache_spill = OFF")  # see the module docstring
            self._reader = self._open_reader(busy_timeout=0.0)
        except BaseException:
            self._stop_worker()
            self._datadir.release()
            raise
        self._read = self._reader.cursor().execute
        try:
            self._counters()
        except StorageError:
            self.close()
            raise

    # --- opening --------------------------------------------------------------------------------------

    def _prepare(self, journal_mode: str) -> str:
        """Create or check the schema on a connection of our own, before sqlitedict's thread starts:
        a damaged or foreign file fails here, as one StorageError, not inside that thread. Returns the
        journal mode sqlitedict must ask for: a reader keeps the writer's (asking for another would
        try to convert the file)."""
        try:
            if self.read_only:
                if not self.file.exists():
                    raise StorageError(f"sqlite: {self.file} does not exist")
                db = sqlite3.connect(self._read_only_uri(), uri=True, timeout=self._timeout)
            else:
                db = sqlite3.connect(self.file, timeout=self._timeout, isolation_level=None)
            try:
                if not self.read_only:
                    mode = db.execute(f"PRAGMA journal_mode = {journal_mode}").fetchone()[0]
                    if str(mode).lower() != journal_mode:
                        raise StorageError(
                            f"sqlite: {self.file} refused journal_mode={journal_mode} ({mode})"
                        )
                    db.executescript(SCHEMA)
                else:
                    journal_mode = str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: cannot open {self.file}: {exc}") from exc
        if not {TABLE, "funnelkvs_meta"} <= tables:
            raise StorageError(f"sqlite: {self.file} lacks the FunnelKVS tables")
        return journal_mode

    def _read_only_uri(self) -> str:
        return f"{self.file.absolute().as_uri()}?mode=ro"

    def _open_reader(self, busy_timeout: float) -> sqlite3.Connection:
        """A connection to read through. Autocommit: each SELECT is its own read transaction, so it
        sees the latest commit and holds no snapshot (nor, in rollback mode, a lock) after it.
        check_same_thread is off because the backend may be built on one thread and handed to the
        loop thread; only its owner ever uses it."""
        try:
            return sqlite3.connect(
                self._read_only_uri(),
                uri=True,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: cannot open {self.file} for reading: {exc}") from exc

    def _open_dict(self, journal_mode: str) -> sqlitedict.SqliteDict:
        """sqlitedict's constructor waits for its thread without a bound; run it on a helper thread
        and give up after the timeout."""
        opened: list[sqlitedict.SqliteDict] = []
        failed: list[BaseException] = []

        def open_dict() -> None:
            try:
                opened.append(
                    sqlitedict.SqliteDict(
                        str(self.file),
                        tablename=TABLE,
                        flag="r" if self.read_only else "c",
                        autocommit=False,
                        journal_mode=journal_mode.upper(),
                        encode=_identity,
                        decode=_identity,
                        encode_key=_identity,
                        decode_key=_identity,
                        timeout=self._timeout,
                        # True would walk the Python stack on every statement.
                        outer_stack=False,
                    )
                )
            except BaseException as exc:
                failed.append(exc)

        helper = threading.Thread(target=open_dict, name="funnelkvs-sqlite-open", daemon=True)
        helper.start()
        helper.join(self._timeout)
        if helper.is_alive():
            raise StorageError(f"sqlite: opening {self.file} took more than {self._timeout:g}s")
        if failed:
            raise StorageError(f"sqlite: cannot open {self.file}: {failed[0]}") from failed[0]
        return opened[0]

    def _set_synchronous(self, durability: str) -> None:
        level, number = SYNCHRONOUS[durability]
        self._ask(f"PRAGMA synchronous = {level}")
        # Read back through the same connection: the one that writes is the one that must sync.
        rows = self._ask("PRAGMA synchronous")
        if not rows or rows[0][0] != number:
            raise StorageError(f"sqlite: PRAGMA synchronous = {level} did not take effect ({rows})")

    # --- talking to sqlitedict's thread ----------------------------------------------------------------

    def _ask(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on sqlitedict's connection and return its rows, waiting at most the timeout."""
        replies: queue.Queue[Any] = queue.Queue()
        self._send(sql, args, replies)
        return self._await(replies)

    def _await(self, replies: queue.Queue[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                reply = replies.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self._worker.is_alive():
                    self._raise_recorded()
                    raise _NoAnswer(f"sqlite: sqlitedict's thread for {self.file} has stopped") from None
                if time.monotonic() >= deadline:
                    raise _NoAnswer(
                        f"sqlite: no answer from sqlitedict's thread for {self.file} in {self._timeout:g}s"
                    ) from None
                continue
            if reply is _NO_MORE:
                break
            rows.append(reply)
        self._raise_recorded()
        return rows

    def _send(self, sql: str, args: tuple[Any, ...], replies: queue.Queue[Any] | None = None) -> None:
        """Queue one statement; nothing waits for it (unless ``replies`` is then read)."""
        self._raise_recorded()
        if not self._worker.is_alive():
            raise _NoAnswer(f"sqlite: sqlitedict's thread for {self.file} has stopped")
        self._worker.execute(sql, args, replies)

    def _raise_recorded(self) -> None:
        """Raise the error sqlitedict's thread recorded for an earlier statement, if any."""
        try:
            self._worker.check_raise_error()
        except Exception as exc:
            if self._dirty:
                self._failure = exc
            raise StorageError(f"sqlite: {self.file}: {exc}") from exc

    # --- reads ----------------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if self._closed or self._pid != process.current():
            self._check_usable()
        # An error recorded by sqlitedict's thread is not looked at here: reading it consumes it, and
        # it belongs to the sync() of the batch it broke (which may be running on the storage thread).
        if not self._worker.is_alive():
            # Reads could go on, but nothing written from now on would ever be stored.
            raise _NoAnswer(f"sqlite: sqlitedict's thread for {self.file} has stopped")
        stored_key = ring_digest(key) + key
        if self._overlay:
            # One lookup, not `in` then `[]`: the storage thread may empty the overlay in between.
            pending = self._overlay.get(stored_key, _NO_MORE)
            if pending is not _NO_MORE:
                return pending  # type: ignore[no-any-return]
        try:
            rows = self._read(GET_SQL, (stored_key,)).fetchall()  # fetchall: ends the read transaction
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise StorageBusy(f"sqlite: {self.file} is locked") from exc
            raise StorageError(f"sqlite: reading {self.file}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: reading {self.file}: {exc}") from exc
        return value_of(rows)

    def get_waiting(self, key: bytes) -> bytes | None:
        """``get`` through a connection that waits up to ``timeout`` for a lock (storage thread)."""
        self._check_usable()
        stored_key = ring_digest(key) + key
        pending = self._overlay.get(stored_key, _NO_MORE)
        if pending is not _NO_MORE:
            return pending  # type: ignore[no-any-return]
        if self._waiting_reader is None:
            self._waiting_reader = self._open_reader(busy_timeout=self._timeout)
        try:
            return value_of(self._waiting_reader.execute(GET_SQL, (stored_key,)).fetchall())
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: reading {self.file}: {exc}") from exc

    def scan(self, key_range: KeyRange) -> Iterator[tuple[bytes, bytes]]:
        self._check_usable()
        for low, high in key_range.segments():
            after: bytes | None = None
            while True:
                batch, after = self._scan_page(low, high, after)
                for stored_key, value in batch:
                    yield stored_key[POSITION_BYTES:], value
                if after is None:
                    break
                self._check_usable()

    def _scan_page(
        self, low: bytes, high: bytes | None, after: bytes | None
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        """One page of ``[low, high)`` after stored key ``after``; the key to resume after, or None."""
        where, args = ("key >= ?", [low]) if after is None else ("key > ?", [after])
        if high is not None:
            where += " AND key < ?"
            args.append(high)
        sizes = self._ask(
            f'SELECT key, ifnull(length(value), 0) FROM "{TABLE}" WHERE {where} ORDER BY key LIMIT ?',
            (*args, self._scan_batch),
        )
        if not sizes:
            return [], None
        held = 0
        last = len(sizes) - 1
        for index, (_, length) in enumerate(sizes):
            held += length
            if held >= _SCAN_BATCH_BYTES:
                last = index
                break
        first_key, last_key = bytes(sizes[0][0]), bytes(sizes[last][0])
        # Nothing else writes this file (the data directory lock) and nothing runs on the loop between
        # the two statements, so the second sees exactly the keys the first listed.
        rows = self._ask(
            f'SELECT key, value FROM "{TABLE}" WHERE key >= ? AND key <= ? ORDER BY key',
            (first_key, last_key),
        )
        page = [(bytes(key), bytes(value) if value is not None else b"") for key, value in rows]
        more = last < len(sizes) - 1 or len(sizes) == self._scan_batch
        return page, (last_key if more else None)

    def count(self) -> int:
        return self._counters()[0]

    def size(self) -> int:
        return self._counters()[1]

    def _counters(self) -> tuple[int, int]:
        """For the thread that wrote the open batch, the counters with that batch (through sqlitedict's
        connection); for any other thread (the node's loop), the committed counters, read without
        waiting: the last ones read while the file is locked."""
        self._check_usable()
        if self._dirty and self._writer_thread == threading.get_ident():
            rows = self._ask(COUNTERS)
            if not rows:
                raise StorageError(f"sqlite: {self.file} has lost its funnelkvs_meta row")
            return int(rows[0][0]), int(rows[0][1])
        try:
            rows = self._read(COUNTERS).fetchall()
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return self._last_counters
            raise StorageError(f"sqlite: reading {self.file}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: reading {self.file}: {exc}") from exc
        if not rows:
            raise StorageError(f"sqlite: {self.file} has lost its funnelkvs_meta row")
        self._last_counters = (int(rows[0][0]), int(rows[0][1]))
        return self._last_counters

    # --- writes ---------------------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes | bytearray) -> None:
        self._check_writable()
        stored_key = ring_digest(key) + key
        self._send(PUT_SQL, (stored_key, value))
        self._overlay[stored_key] = value
        self._after_write()

    def delete(self, key: bytes) -> bool:
        self._check_writable()
        stored_key = ring_digest(key) + key
        rows = self._ask(DELETE_SQL, (stored_key,))
        self._overlay[stored_key] = None
        self._after_write()
        return bool(rows)

    def _after_write(self) -> None:
        self._dirty = True
        self._writer_thread = threading.get_ident()

    def sync(self) -> None:
        self._check_usable()
        self._sync()

    def _sync(self) -> None:
        if not self._dirty and self._failure is None:
            return
        try:
            if self._failure is not None:
                raise StorageError(
                    f"sqlite: a write to {self.file} failed: {self._failure}"
                ) from self._failure
            # sqlitedict's thread runs the statements after a failed one as usual, so a COMMIT queued
            # right behind the writes would commit a batch with a hole in it. A round trip first lets
            # every queued write run and report; only a clean batch is committed. The round trip
            # reads the counters: once committed, they are what count()/size() answer while the file
            # is locked.
            rows = self._ask(COUNTERS)
            self._ask("COMMIT")
        except StorageError as exc:
            self._abandon_batch(rollback=not isinstance(exc, _NoAnswer))
            raise
        self._dirty = False
        self._overlay.clear()
        if rows:
            self._last_counters = (int(rows[0][0]), int(rows[0][1]))

    def _abandon_batch(self, *, rollback: bool) -> None:
        """After a failed batch, return the connection to the last commit (best effort). Not after a
        timeout: the late COMMIT may still run, and a ROLLBACK queued behind it would only fail.
        Either way the batch's writes are no longer pending: reads go to the file for them."""
        self._failure = None
        self._dirty = False
        self._overlay.clear()
        if not rollback:
            return
        try:
            self._ask("ROLLBACK")
        except StorageError:
            pass  # most often "no transaction is active": SQLite already rolled back

    # --- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pid != process.current():
            # A forked child has no sqlitedict thread (threads do not survive fork): just let go. The
            # read connection is not closed either: SQLite's state for it belongs to the parent.
            _left_behind.append(self._reader)
            self._dict.conn = None
            self._datadir.release()
            return
        try:
            if not self.read_only:
                self._sync()
        finally:
            try:
                try:
                    # Before the writer: the last connection to close checkpoints the WAL, and only
                    # the writer can.
                    self._close_readers()
                finally:
                    self._stop_worker()
            finally:
                self._datadir.release()

    def _close_readers(self) -> None:
        try:
            self._reader.close()
            if self._waiting_reader is not None:
                self._waiting_reader.close()
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: closing {self.file}: {exc}") from exc

    def _stop_worker(self) -> None:
        worker = self._worker
        # sqlitedict's own close() waits without a bound; and its __del__ must not send another close.
        self._dict.conn = None
        if not worker.is_alive():
            return
        replies: queue.Queue[Any] = queue.Queue()
        worker.reqs.put((_CLOSE, None, weakref.ref(replies), None))
        deadline = time.monotonic() + self._timeout
        while worker.is_alive() and time.monotonic() < deadline:
            try:
                if replies.get(timeout=_POLL_SECONDS) is _NO_MORE:
                    break
            except queue.Empty:
                continue
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            raise StorageError(
                f"sqlite: sqlitedict's thread for {self.file} did not stop in {self._timeout:g}s"
            )

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"sqlite: the backend at {self.path} is closed")
        if self._pid != process.current():
            raise StorageError(
                f"sqlite: the backend at {self.path} was opened by process {self._pid}; "
                "a forked child must open its own backend"
            )

    def _check_writable(self) -> None:
        self._check_usable()
        if self.read_only:
            raise StorageError(f"sqlite: {self.path} is open read-only")


# --- configuration -------------------------------------------------------------------------------------


def create_sqlite_backend(path: Path | None, options: dict[str, Any]) -> SqliteBackend:
    """The plugin factory: validate ``storage.options`` and open the backend at ``storage.path``."""
    reader = OptionsReader(
        "sqlite", options, known=("durability", "journal_mode", "read_only", "scan_batch", "timeout")
    )
    data_dir = reader.path(path)
    durability = reader.choice("durability", DURABILITY_MODES, "sync", "a durability mode")
    journal_mode = reader.choice("journal_mode", JOURNAL_MODES, "wal", "a journal mode")
    timeout = reader.seconds("timeout", DEFAULT_TIMEOUT, 3600)
    scan_batch = reader.integer("scan_batch", DEFAULT_SCAN_BATCH, 1, "a batch size")
    read_only = reader.boolean("read_only", False)
    reader.check()
    return SqliteBackend(
        data_dir,
        durability=durability,
        journal_mode=journal_mode,
        timeout=timeout,
        scan_batch=scan_batch,
        read_only=read_only,
    )


@hookimpl
def funnelkvs_register_storage_backends() -> list[StorageBackendSpec]:
    return [
        StorageBackendSpec(
            name="sqlite",
            factory=create_sqlite_backend,
            description="SQLite file (WAL) in a data directory via sqlitedict, ring-ordered index; durable",
            persistent=True,
        )
    ]
