"""The sqlite backend beyond the conformance suite: raw bytes (never pickle), the synchronous override,
the ordered index, bounded waits on sqlitedict's thread, write errors, crashes and fork."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlitedict

from funnelkvs.errors import ConfigError, StorageError, StorageFormatError
from funnelkvs.keyspace import KeyRange
from funnelkvs.storage import sqlite_backend
from funnelkvs.storage.datadir import claim
from funnelkvs.storage.sqlite_backend import DATABASE_NAME, SqliteBackend, create_sqlite_backend
from tests import backend_processes
from tests.backend_processes import assert_only_sync_syncs


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[SqliteBackend]:
    opened = create_sqlite_backend(tmp_path / "data", {})
    try:
        yield opened
    finally:
        opened.close()


# --- registration and options ----------------------------------------------------------------------------


def test_registers_itself_as_a_plugin() -> None:
    (spec,) = sqlite_backend.funnelkvs_register_storage_backends()
    assert (spec.name, spec.factory, spec.persistent) == ("sqlite", create_sqlite_backend, True)
    assert spec.description and "\n" not in spec.description


def test_path_is_required() -> None:
    with pytest.raises(ConfigError) as caught:
        create_sqlite_backend(None, {})
    assert caught.value.problems == ["storage.path: required for the sqlite backend"]


def test_every_bad_option_is_reported_at_once(tmp_path: Path) -> None:
    options = {
        "synchronous": "full",
        "durability": "always",
        "journal_mode": "memory",
        "timeout": 0,
        "scan_batch": "many",
        "read_only": 1,
    }
    with pytest.raises(ConfigError) as caught:
        create_sqlite_backend(tmp_path, options)
    assert caught.value.problems == [
        "storage.options.synchronous: unknown option for the sqlite backend "
        "(expected one of: durability, journal_mode, read_only, scan_batch, timeout)",
        "storage.options.durability: 'always' is not a durability mode (expected sync or nosync)",
        "storage.options.journal_mode: 'memory' is not a journal mode (expected wal or delete)",
        "storage.options.timeout: 0 is not a timeout (expected seconds, > 0 and <= 3600)",
        "storage.options.scan_batch: 'many' is not a batch size (expected an integer >= 1)",
        "storage.options.read_only: 1 is not a boolean (expected true or false)",
    ]


def test_refuses_an_lmdb_data_directory(tmp_path: Path) -> None:
    claim(tmp_path, "lmdb", 1).release()
    with pytest.raises(StorageFormatError, match=r"created by the 'lmdb' backend .* configured for 'sqlite'"):
        create_sqlite_backend(tmp_path, {})


def test_a_file_that_is_not_a_database_fails_cleanly(tmp_path: Path) -> None:
    create_sqlite_backend(tmp_path, {}).close()
    threads_before = sqlitedict_threads()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / (DATABASE_NAME + suffix)).unlink(missing_ok=True)
    (tmp_path / DATABASE_NAME).write_bytes(b"this is not an SQLite database, just bytes" * 200)
    with pytest.raises(StorageError, match="cannot open"):
        create_sqlite_backend(tmp_path, {})
    assert sqlitedict_threads() == threads_before, "a failed open left a thread behind"


def sqlitedict_threads() -> int:
    return sum(isinstance(thread, sqlitedict.SqliteMultithread) for thread in threading.enumerate())


def test_use_after_close_is_a_storage_error(tmp_path: Path) -> None:
    closed = create_sqlite_backend(tmp_path, {})
    worker = closed._worker
    closed.close()
    assert not worker.is_alive(), "close() leaves sqlitedict's thread running"
    for call in (lambda: closed.get(b"k"), lambda: closed.put(b"k", b"v"), closed.sync, closed.count):
        with pytest.raises(StorageError, match="closed"):
            call()


# --- raw bytes, never pickle ------------------------------------------------------------------------------


def test_stores_raw_bytes_in_ring_order(backend: SqliteBackend) -> None:
    backend.put(b"key", b"\x80\x04value")
    backend.put(b"", b"")
    backend.sync()
    with sqlite3.connect(backend.file) as db:
        rows = db.execute('SELECT key, value FROM "entries" ORDER BY key').fetchall()
    assert rows == sorted(
        [(hashlib.sha1(b"key").digest() + b"key", b"\x80\x04value"), (hashlib.sha1(b"").digest(), b"")]
    )
    assert backend._dict.encode is not sqlitedict.encode and backend._dict.decode is not sqlitedict.decode


class _Tripwire:
    """Unpickling this runs code: it creates the file it names."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_a_tampered_file_is_never_unpickled(backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    tripwire = backend.path / "unpickled"
    payload = pickle.dumps(_Tripwire(tripwire))

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("something unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(sqlitedict, "loads", refuse)
    backend.put(b"planted", b"placeholder")
    backend.sync()
    with sqlite3.connect(backend.file) as db:
        db.execute('UPDATE "entries" SET value = ?', (payload,))
    assert backend.get(b"planted") == payload
    assert list(backend.scan(KeyRange.whole_ring())) == [(b"planted", payload)]
    assert not tripwire.exists()


# --- the connection sqlitedict writes through -------------------------------------------------------------


def test_synchronous_is_overridden_on_the_writing_connection(tmp_path: Path) -> None:
    for durability, level, durable in (("sync", 2, True), ("nosync", 1, False)):
        with create_sqlite_backend(tmp_path / durability, {"durability": durability}) as backend:
            assert isinstance(backend, SqliteBackend)
            assert backend._ask("PRAGMA synchronous") == [(level,)]  # sqlitedict itself sets OFF (0)
            assert backend._ask("PRAGMA journal_mode") == [("wal",)]
            assert backend.durable is durable


def test_delete_journal_mode(tmp_path: Path) -> None:
    with create_sqlite_backend(tmp_path, {"journal_mode": "delete"}) as backend:
        assert isinstance(backend, SqliteBackend)
        backend.put(b"k", b"v")
        backend.sync()
        assert backend._ask("PRAGMA journal_mode") == [("delete",)]
    with create_sqlite_backend(tmp_path, {"read_only": True}) as reader:
        assert reader.get(b"k") == b"v"


def test_range_scans_use_the_primary_key_index(backend: SqliteBackend) -> None:
    plan = backend._ask(
        'EXPLAIN QUERY PLAN SELECT key, value FROM "entries" WHERE key > ? AND key < ? ORDER BY key LIMIT 5',
        (b"\x00", b"\xff"),
    )
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX sqlite_autoindex_entries_1" in details
    assert "TEMP B-TREE" not in details, "the scan sorts instead of walking the index"


def test_count_and_size_come_from_the_triggers(backend: SqliteBackend) -> None:
    backend.put(b"a", b"123")
    backend.put(b"a", b"12345")
    backend.put(b"b", b"")
    backend.delete(b"a")
    backend.sync()
    with sqlite3.connect(backend.file) as db:
        assert db.execute("SELECT entries, bytes FROM funnelkvs_meta").fetchall() == [(1, 0)]


# --- bounded waits and reported errors ----------------------------------------------------------------------


def test_a_stuck_writer_thread_times_out(tmp_path: Path) -> None:
    backend = create_sqlite_backend(tmp_path, {"timeout": 0.5})
    blocker = sqlite3.connect(backend.file, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the thread's write waits (busy timeout)
        backend.put(b"k", b"v")
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"no answer .* in 0\.5s"):
            backend.sync()
        assert time.monotonic() - started < 3
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    deadline = time.monotonic() + 10
    while True:  # the late statements fail or finish on the thread; then the backend works again
        try:
            backend.put(b"k2", b"v2")
            backend.sync()
            break
        except StorageError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert backend.get(b"k2") == b"v2"
    backend.close()


def test_a_dead_writer_thread_is_noticed_at_once(tmp_path: Path) -> None:
    backend = create_sqlite_backend(tmp_path, {"timeout": 60})
    worker = backend._worker
    worker.reqs.put((sqlitedict._REQUEST_CLOSE, None, lambda: None, None))  # the thread exits
    worker.join(10)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"thread .* has stopped"):
        backend.get(b"k")
    assert time.monotonic() - started < 1
    backend.close()


def test_a_failed_queued_write_fails_sync_and_the_batch(backend: SqliteBackend) -> None:
    backend.put(b"before", b"in the same batch")
    backend.put(b"bad", 2**70)  # type: ignore[arg-type]  # cannot be bound: fails on sqlitedict's thread
    with pytest.raises(StorageError, match=r"too large|overflow|Error binding"):
        backend.sync()
    assert backend.get(b"before") is None, "the batch of a failed sync is rolled back"
    backend.put(b"after", b"fine")
    backend.sync()
    assert backend.get(b"after") == b"fine"
    assert (backend.count(), backend.size()) == (1, 4)


def test_a_write_error_surfaces_at_the_next_call_too(backend: SqliteBackend) -> None:
    backend.put(b"bad", 2**70)  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        backend.count()  # waits on the thread: the error is recorded by the time it answers
    with pytest.raises(StorageError, match="failed"):
        backend.sync()
    backend.sync()  # reported once, then the backend goes on


def test_a_get_leaves_a_recorded_write_error_to_sync(backend: SqliteBackend) -> None:
    backend.put(b"ok", b"v")
    backend.sync()
    backend.put(b"bad", 2**70)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while backend._worker.exception is None:  # get() does not wait on the thread: let it record
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # A read does not consume the error (it belongs to the sync() of the batch it broke, which in
    # the node runs on another thread): committed data stays readable.
    assert backend.get(b"ok") == b"v"
    with pytest.raises(StorageError, match=r"too large|overflow"):
        backend.sync()
    assert backend.get(b"ok") == b"v"


# --- get() on its own read connection, and the overlay of writes it cannot see yet ----------------------


def committed(backend: SqliteBackend, key: bytes) -> bytes | None:
    """What another connection to the file sees: only committed state."""
    with sqlite3.connect(backend.file) as db:
        rows = db.execute('SELECT value FROM "entries" WHERE key = ?', (hashlib.sha1(key).digest() + key,))
        found = rows.fetchall()
    return found[0][0] if found else None


def test_a_read_sees_an_unsynced_write(backend: SqliteBackend) -> None:
    backend.put(b"k", b"v1")
    backend.put(b"empty", b"")
    backend.put(b"k", b"v2")
    backend.count()  # every write has run on the writer's connection, still uncommitted
    assert committed(backend, b"k") is None, "the write is committed already: the test proves nothing"
    assert (backend.get(b"k"), backend.get(b"empty")) == (b"v2", b"")
    backend.sync()
    assert not backend._overlay, "a committed batch stays in the overlay"
    assert committed(backend, b"k") == b"v2"
    assert (backend.get(b"k"), backend.get(b"empty")) == (b"v2", b"")


def test_a_read_after_an_unsynced_delete_sees_none(backend: SqliteBackend) -> None:
    backend.put(b"k", b"v")
    backend.sync()
    assert backend.delete(b"k") is True
    assert committed(backend, b"k") == b"v"
    assert backend.get(b"k") is None
    backend.put(b"k", b"again")
    assert backend.get(b"k") == b"again"
    assert backend.delete(b"k") is True
    backend.sync()
    assert backend.get(b"k") is None and committed(backend, b"k") is None


def test_a_failed_sync_leaves_no_lost_write_readable(backend: SqliteBackend) -> None:
    backend.put(b"kept", b"old")
    backend.put(b"gone", b"still here")
    backend.sync()
    backend.put(b"kept", b"new")
    backend.put(b"fresh", b"lost")
    backend.delete(b"gone")
    assert (backend.get(b"kept"), backend.get(b"fresh"), backend.get(b"gone")) == (b"new", b"lost", None)
    backend.put(b"bad", 2**70)  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        backend.sync()
    assert not backend._overlay
    assert (backend.get(b"kept"), backend.get(b"fresh"), backend.get(b"gone")) == (
        b"old",
        None,
        b"still here",
    )


def test_nosync_reads_see_their_own_writes_and_sync_commits_them(tmp_path: Path) -> None:
    with create_sqlite_backend(tmp_path, {"durability": "nosync"}) as backend:
        assert isinstance(backend, SqliteBackend)
        for index in range(200):
            backend.put(b"k%d" % index, b"v%d" % index)
            assert backend.get(b"k%d" % index) == b"v%d" % index
        assert backend.delete(b"k7") is True
        assert backend.get(b"k7") is None
        assert committed(backend, b"k199") is None, "nosync group-commits: nothing before sync()"
        backend.sync()
        assert not backend._overlay  # reads go to the file now
        assert committed(backend, b"k199") == b"v199" and committed(backend, b"k7") is None
        assert [backend.get(b"k%d" % index) for index in (0, 7, 199)] == [b"v0", None, b"v199"]
        assert backend.count() == 199


def test_a_read_blocked_by_a_lock_is_bounded_and_a_storage_error(tmp_path: Path) -> None:
    with create_sqlite_backend(tmp_path, {"journal_mode": "delete", "timeout": 0.5}) as backend:
        assert isinstance(backend, SqliteBackend)
        backend.put(b"k", b"v")
        backend.sync()
        blocker = sqlite3.connect(backend.file, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")  # in rollback-journal mode this shuts readers out
            started = time.monotonic()
            with pytest.raises(StorageError, match="locked"):
                backend.get(b"k")
            assert time.monotonic() - started < 3
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert backend.get(b"k") == b"v"


def test_a_large_unsynced_batch_does_not_lock_readers_out(tmp_path: Path) -> None:
    # Past the page cache (2 MiB by default) a rollback-journal writer would spill into the file and
    # hold the exclusive lock until sync(): the read would wait for the whole timeout, then fail.
    with create_sqlite_backend(tmp_path, {"journal_mode": "delete", "timeout": 2}) as backend:
        assert isinstance(backend, SqliteBackend)
        backend.put(b"old", b"committed")
        backend.sync()
        for index in range(400):
            backend.put(b"big-%d" % index, os.urandom(16 * 1024))
        backend.count()  # the batch has run on the writer's connection
        started = time.monotonic()
        assert backend.get(b"old") == b"committed"
        assert backend.get(b"big-3") is not None
        assert time.monotonic() - started < 1
        backend.sync()
        assert backend.count() == 401


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_close_closes_the_read_connection_before_the_writer(tmp_path: Path, journal_mode: str) -> None:
    backend = create_sqlite_backend(tmp_path, {"journal_mode": journal_mode})
    backend.put(b"k", b"v")
    backend.sync()
    assert backend.get(b"k") == b"v"  # read through the read connection: it has the file open
    reader = backend._reader
    backend.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        reader.execute("SELECT 1")
    # The writer closed last, so it could checkpoint: nothing is left beside the database file.
    assert not (tmp_path / (DATABASE_NAME + "-wal")).exists()
    with create_sqlite_backend(tmp_path, {"read_only": True}) as again:
        assert again.get(b"k") == b"v"


def test_a_relative_path_opens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with create_sqlite_backend(Path("data"), {}) as backend:
        backend.put(b"k", b"v")
    with create_sqlite_backend(Path("data"), {"read_only": True}) as reader:
        assert reader.get(b"k") == b"v"


# --- durability ---------------------------------------------------------------------------------------


def kill_after(path: Path, durability: str, line: bytes) -> None:
    backend_processes.kill_after(
        "funnelkvs.storage.sqlite_backend", "create_sqlite_backend", path, durability, line
    )


@pytest.mark.parametrize("durability", ["sync", "nosync"])
def test_sigkill_keeps_every_synced_write_and_no_unsynced_one(tmp_path: Path, durability: str) -> None:
    kill_after(tmp_path, durability, b"pending\n")
    with create_sqlite_backend(tmp_path, {"durability": durability}) as backend:
        assert backend.count() == 499
        assert backend.size() == sum(range(500)) - 7
        assert backend.get(b"synced-499") == b"v" * 499
        assert backend.get(b"synced-7") is None
        assert backend.get(b"pending-0") is None, "a write committed before sync(): not one transaction"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_sync_calls_fdatasync_before_returning(tmp_path: Path) -> None:
    assert_only_sync_syncs("funnelkvs.storage.sqlite_backend", "create_sqlite_backend", tmp_path)


# --- fork -------------------------------------------------------------------------------------------------


def test_forked_child_cannot_use_the_parents_backend(backend: SqliteBackend) -> None:
    backend.put(b"k", b"v")
    backend.sync()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        status = 3
        try:
            try:
                backend.get(b"k")
                status = 1
            except StorageError as exc:
                status = 0 if "forked child must open its own backend" in str(exc) else 2
            backend.close()
        finally:
            os._exit(status)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert backend.get(b"k") == b"v"
    backend.put(b"k2", b"v2")
    backend.sync()
    assert backend.count() == 2
