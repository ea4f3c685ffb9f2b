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
