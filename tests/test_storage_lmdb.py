"""The lmdb backend beyond the conformance suite: options, collisions, map growth, group commit and
crashes, readers in other processes, fork, and the sync system call it makes."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from funnelkvs.errors import ConfigError, StorageError, StorageFormatError
from funnelkvs.keyspace import KeyRange
from funnelkvs.storage import lmdb_backend
from funnelkvs.storage.datadir import claim
from funnelkvs.storage.lmdb_backend import LmdbBackend, create_lmdb_backend
from tests import backend_processes
from tests.backend_processes import assert_only_sync_syncs

MIB = 1024 * 1024


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LmdbBackend]:
    opened = create_lmdb_backend(tmp_path / "data", {})
    try:
        yield opened
    finally:
        opened.close()


def run_child(script: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


# --- registration and options ----------------------------------------------------------------------------


def test_registers_itself_as_a_plugin() -> None:
    (spec,) = lmdb_backend.funnelkvs_register_storage_backends()
    assert (spec.name, spec.factory, spec.persistent) == ("lmdb", create_lmdb_backend, True)
    assert spec.description and "\n" not in spec.description


def test_durable_by_default(backend: LmdbBackend) -> None:
    assert backend.name == "lmdb"
    assert backend.durable is True
    assert backend._env.flags()["sync"] is True


def test_path_is_required() -> None:
    with pytest.raises(ConfigError) as caught:
        create_lmdb_backend(None, {})
    assert caught.value.problems == ["storage.path: required for the lmdb backend"]


def test_every_bad_option_is_reported_at_once(tmp_path: Path) -> None:
    options = {"mapsize": 1, "durability": "fast", "map_size": "1G", "scan_batch": 0, "read_only": "yes"}
    with pytest.raises(ConfigError) as caught:
        create_lmdb_backend(tmp_path, options)
    assert caught.value.problems == [
        "storage.options.mapsize: unknown option for the lmdb backend "
        "(expected one of: durability, map_size, read_only, scan_batch)",
        "storage.options.durability: 'fast' is not a durability mode (expected sync or nosync)",
        "storage.options.map_size: '1G' is not a map size "
        "(expected an integer number of bytes >= 1048576; the map grows by itself)",
        "storage.options.scan_batch: 0 is not a batch size (expected an integer >= 1)",
        "storage.options.read_only: 'yes' is not a boolean (expected true or false)",
    ]
    assert not tmp_path.joinpath("FUNNELKVS_FORMAT").exists(), "nothing is opened when options are bad"


def test_refuses_a_sqlite_data_directory(tmp_path: Path) -> None:
    claim(tmp_path, "sqlite", 1).release()
    with pytest.raises(StorageFormatError, match=r"created by the 'sqlite' backend .* configured for 'lmdb'"):
        create_lmdb_backend(tmp_path, {})


def test_use_after_close_is_a_storage_error(tmp_path: Path) -> None:
    closed = create_lmdb_backend(tmp_path, {})
    closed.close()
    for call in (lambda: closed.get(b"k"), lambda: closed.put(b"k", b"v"), closed.sync, closed.count):
        with pytest.raises(StorageError, match="closed"):
            call()


def test_second_writer_on_one_directory_is_refused(backend: LmdbBackend) -> None:
    with pytest.raises(StorageError, match="in use by another process"):
        create_lmdb_backend(backend.path, {})


# --- layout: ring-digest keys and collision buckets ---------------------------------------------------------


def test_lmdb_keys_are_ring_digests(backend: LmdbBackend) -> None:
    backend.put(b"k" * 70000, b"v")
    backend.put(b"", b"empty")
    backend.sync()
    with backend._env.begin(db=backend._entries) as txn:
        stored_keys = [key for key, _ in txn.cursor()]
    expected = sorted([hashlib.sha1(b"k" * 70000).digest(), hashlib.sha1(b"").digest()])
    assert stored_keys == expected


def fake_digest(key: bytes) -> bytes:
    """Every key starting with the same byte 'collides'."""
    return hashlib.sha1(key[:1]).digest()


def test_keys_sharing_a_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lmdb_backend, "ring_digest", fake_digest)
    model = {b"a1": b"one", b"a2": b"two", b"a": b"", b"a3": b"x" * 1000, b"b1": b"bee", b"": b"empty"}
    path = tmp_path / "data"
    backend = create_lmdb_backend(path, {})
    try:
        for key, value in model.items():
            backend.put(key, value)
        backend.put(b"a2", b"TWO")
        model[b"a2"] = b"TWO"
        assert backend.delete(b"a1") is True
        assert backend.delete(b"a1") is False
        assert backend.delete(b"a9") is False, "a missing key in an existing bucket"
        del model[b"a1"]

        def check(store: LmdbBackend) -> None:
            for key, value in model.items():
                assert store.get(key) == value
            assert store.get(b"a1") is None
            assert store.count() == len(model)
            assert store.size() == sum(map(len, model.values()))
            expected = sorted(model.items(), key=lambda item: (fake_digest(item[0]), item[0]))
            assert list(store.scan(KeyRange.whole_ring())) == expected
            position = int.from_bytes(fake_digest(b"a"), "big")
            bucket = list(store.scan(KeyRange(position - 1, position)))
            assert bucket == [(b"a", b""), (b"a2", b"TWO"), (b"a3", b"x" * 1000)]

        check(backend)
        backend.close()
        backend = create_lmdb_backend(path, {})
        check(backend)
        with backend._env.begin(db=backend._entries) as txn:
            raw = txn.get(fake_digest(b"a"))
        # One bucket, entries sorted by key: b"a" (length 1) first.
        assert raw is not None and raw.count(b"a2") == 1 and raw.startswith(b"\x00\x00\x00\x01")
    finally:
        backend.close()


def test_corrupt_bucket_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "data"
    create_lmdb_backend(path, {}).close()
    with lmdb.open(str(path), max_dbs=2) as env:
        entries = env.open_db(b"entries")
        with env.begin(write=True, db=entries) as txn:
            txn.put(hashlib.sha1(b"k").digest(), b"\x00\x00\x00\x09garbage")
    backend = create_lmdb_backend(path, {})
    try:
        with pytest.raises(StorageError, match="corrupt"):
            backend.get(b"k")
        with pytest.raises(StorageError, match="corrupt"):
            list(backend.scan(KeyRange.whole_ring()))
    finally:
        backend.close()


# --- map growth and bounded scans -------------------------------------------------------------------------


def test_map_grows_inside_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "data"
    backend = create_lmdb_backend(path, {"map_size": MIB})
    model = {b"small-%d" % index: b"s" * 100 for index in range(50)}
    model.update({b"big-%d" % index: bytes([index]) * (8 * MIB) for index in range(3)})
    try:
        for key, value in model.items():
            backend.put(key, value)  # one transaction: each growth replays the writes before it
        for key, value in model.items():
            assert backend.get(key) == value
        backend.sync()
        assert backend._env.info()["map_size"] >= 24 * MIB
    finally:
        backend.close()
    with create_lmdb_backend(path, {"map_size": MIB}) as again:
        assert again.count() == len(model)
        assert again.size() == sum(map(len, model.values()))
        assert again.get(b"big-2") == model[b"big-2"]


def failing_apply(monkeypatch: pytest.MonkeyPatch, call: int, error: lmdb.Error) -> None:
    """Make the ``call``-th write application raise ``error``, once."""
    real_apply = LmdbBackend._apply
    calls = 0

    def apply(self: LmdbBackend, txn: lmdb.Transaction[memoryview], key: bytes, value: bytes | None) -> bool:
        nonlocal calls
        calls += 1
        if calls == call:
            raise error
        return real_apply(self, txn, key, value)

    monkeypatch.setattr(LmdbBackend, "_apply", apply)


def test_a_transaction_too_big_is_committed_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failing_apply(monkeypatch, 6, lmdb.TxnFullError("mdb_put"))
    backend = create_lmdb_backend(tmp_path, {})
    try:
        for index in range(10):
            backend.put(b"%d" % index, b"v")
        assert backend._committed == (5, 5), "the five writes before the full transaction were committed"
        assert [backend.get(b"%d" % index) for index in range(10)] == [b"v"] * 10
        backend.sync()
    finally:
        backend.close()
    with create_lmdb_backend(tmp_path, {}) as again:
        assert again.count() == 10


def test_a_failed_write_fails_its_batch_and_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_apply(monkeypatch, 3, lmdb.DiskError("mdb_put"))
    backend = create_lmdb_backend(tmp_path, {})
    try:
        backend.put(b"1", b"v")
        backend.put(b"2", b"v")
        with pytest.raises(StorageError, match="write failed"):
            backend.put(b"3", b"v")
        with pytest.raises(StorageError, match="earlier write failed"):
            backend.put(b"4", b"v")
        with pytest.raises(StorageError, match="lost"):
            backend.sync()
        assert backend.get(b"1") is None, "the failed batch is dropped as a whole"
        assert (backend.count(), backend.size()) == (0, 0)
        backend.put(b"5", b"v")
        backend.sync()
        assert backend.get(b"5") == b"v"
    finally:
        backend.close()


def test_scans_hold_no_transaction_between_batches(tmp_path: Path) -> None:
    backend = create_lmdb_backend(tmp_path, {"scan_batch": 10})
    try:
        for index in range(100):
            backend.put(b"%d" % index, b"v")
        backend.sync()
        items = iter(backend.scan(KeyRange.whole_ring()))
        next(items)
        assert "no active readers" in backend._env.readers()
        assert len([next(items) for _ in range(50)]) == 50
        assert "no active readers" in backend._env.readers()
        assert len(list(items)) == 49
    finally:
        backend.close()


# --- durability: group commit, crashes, the sync system call ------------------------------------------------


def kill_after(path: Path, durability: str, line: bytes) -> None:
    backend_processes.kill_after(
        "funnelkvs.storage.lmdb_backend", "create_lmdb_backend", path, durability, line
    )


@pytest.mark.parametrize("durability", ["sync", "nosync"])
def test_sigkill_keeps_every_synced_write_and_no_unsynced_one(tmp_path: Path, durability: str) -> None:
    # nosync group-commits too: sync() puts the batch in the file, only without fdatasync.
    kill_after(tmp_path, durability, b"pending\n")
    with create_lmdb_backend(tmp_path, {"durability": durability}) as backend:
        assert backend.durable is (durability == "sync")
        assert backend.count() == 499
        assert backend.size() == sum(range(500)) - 7
        assert backend.get(b"synced-499") == b"v" * 499
        assert backend.get(b"synced-7") is None
        assert backend.get(b"pending-0") is None, "a write committed before sync(): not one transaction"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_sync_calls_fdatasync_before_returning(tmp_path: Path) -> None:
    assert_only_sync_syncs("funnelkvs.storage.lmdb_backend", "create_lmdb_backend", tmp_path)


# --- other processes --------------------------------------------------------------------------------------

READER = """
import sys
from pathlib import Path
from funnelkvs.storage.lmdb_backend import create_lmdb_backend
reader = create_lmdb_backend(Path(sys.argv[1]), {"read_only": True, "map_size": 1024 * 1024})
for line in sys.stdin:
    value = reader.get(b"big")
    print(reader.count(), None if value is None else len(value), flush=True)
reader.close()
"""


def test_reader_follows_the_writer_growing_the_map(backend: LmdbBackend) -> None:
    backend.put(b"small", b"s")
    backend.sync()
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(backend.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert reader.stdin is not None and reader.stdout is not None

        def ask() -> bytes:
            assert reader.stdin is not None and reader.stdout is not None
            reader.stdin.write(b"?\n")
            reader.stdin.flush()
            return reader.stdout.readline()

        assert ask() == b"1 None\n"
        backend.put(b"big", b"b" * (100 * MIB))  # past the 64 MiB map: the writer grows it
        backend.sync()
        assert backend._env.info()["map_size"] > 100 * MIB
        assert ask() == b"2 104857600\n"
    finally:
        if reader.stdin is not None:
            reader.stdin.close()
        reader.wait(30)
        if reader.stdout is not None:
            reader.stdout.close()
    assert reader.returncode == 0


def test_forked_child_cannot_use_the_parents_environment(backend: LmdbBackend) -> None:
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
            backend.close()  # only drops references: must not disturb the parent
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
