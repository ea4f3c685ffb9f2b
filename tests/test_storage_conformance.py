"""The backend conformance suite (funnelkvs.testing.conformance) run against the three built-in backends."""

from __future__ import annotations

from pathlib import Path

from funnelkvs.storage.backend import StorageBackend
from funnelkvs.storage.lmdb_backend import create_lmdb_backend
from funnelkvs.storage.memory import create_memory_backend
from funnelkvs.storage.sqlite_backend import create_sqlite_backend
from funnelkvs.testing.conformance import BackendConformance


class TestMemoryConformance(BackendConformance):
    persistent = False

    def make_backend(self, path: Path) -> StorageBackend:
        return create_memory_backend(path, {})


class TestLmdbConformance(BackendConformance):
    concurrent_readers = True

    def make_backend(self, path: Path) -> StorageBackend:
        # The smallest map, and small scan batches, so that map growth and scan resumption run in
        # every test that stores more than a little.
        return create_lmdb_backend(path, {"map_size": 1024 * 1024, "scan_batch": 16})

    def open_reader(self, path: Path) -> StorageBackend:
        return create_lmdb_backend(path, {"read_only": True})


class TestLmdbDefaultsConformance(BackendConformance):
    concurrent_readers = True
    model_examples = 10

    def make_backend(self, path: Path) -> StorageBackend:
        return create_lmdb_backend(path, {})

    def open_reader(self, path: Path) -> StorageBackend:
        return create_lmdb_backend(path, {"read_only": True})


class TestSqliteConformance(BackendConformance):
    concurrent_readers = True

    def make_backend(self, path: Path) -> StorageBackend:
        return create_sqlite_backend(path, {"scan_batch": 16})

    def open_reader(self, path: Path) -> StorageBackend:
        return create_sqlite_backend(path, {"read_only": True})


class TestSqliteDefaultsConformance(BackendConformance):
    concurrent_readers = True
    model_examples = 10

    def make_backend(self, path: Path) -> StorageBackend:
        return create_sqlite_backend(path, {})

    def open_reader(self, path: Path) -> StorageBackend:
        return create_sqlite_backend(path, {"read_only": True})


def test_memory_scan_pages_through_a_large_range_while_written() -> None:
    from funnelkvs.keyspace import KeyRange, ring_position
    from funnelkvs.storage.memory import SCAN_PAGE, MemoryBackend

    backend = MemoryBackend()
    keys = [b"k%d" % i for i in range(SCAN_PAGE * 4 + 7)]
    for key in keys:
        backend.put(key, key)
    seen = []
    for key, value in backend.scan(KeyRange.whole_ring()):  # five pages
        seen.append(key)
        backend.put(b"new-" + key, b"x")  # writes while the scan goes on
        if not key.startswith(b"new-"):
            assert value == key
    originals = [key for key in seen if not key.startswith(b"new-")]
    assert originals == sorted(keys, key=lambda k: (ring_position(k), k)), "each key once, in ring order"
    assert seen == sorted(seen, key=lambda k: (ring_position(k), k))
    assert any(key.startswith(b"new-") for key in seen), "later pages see writes made meanwhile"
