"""The conformance test class: the tests every backend inherits, grouped by what they exercise (point
operations, limits, scans, lifecycle, concurrent readers, the model)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from funnelkvs.keyspace import RING_SIZE, KeyRange, ring_position
from funnelkvs.storage.backend import StorageBackend
from funnelkvs.testing.conformance.expected import _random_keys, _ring_order, expected_scan
from funnelkvs.testing.conformance.model import _model_machine
from funnelkvs.testing.conformance.reader import _ReaderProcess, _summary

KIB = 1024
MIB = 1024 * KIB


class BackendConformance:
    """Inherit from this in a ``Test...`` class and override :meth:`make_backend`."""

    #: The backend keeps data across close and reopen on the same path.
    persistent: ClassVar[bool] = True
    #: :meth:`open_reader` opens a second, read-only instance in another process while the first runs.
    concurrent_readers: ClassVar[bool] = False
    #: Examples of the hypothesis model test (each runs up to ``model_steps`` operations).
    model_examples: ClassVar[int] = 25
    model_steps: ClassVar[int] = 30

    # --- to override ----------------------------------------------------------------------------------

    def make_backend(self, path: Path) -> StorageBackend:
        """A backend storing its data at ``path`` (a directory that may not exist yet). Opening the same
        path again after ``close()`` must find the data when ``persistent``."""
        raise NotImplementedError("override make_backend(path) in your BackendConformance subclass")

    def open_reader(self, path: Path) -> StorageBackend:
        """A read-only instance on a path that a writer has open (called in a forked child process).
        It must see what the writer has synced and raise StorageError on writes."""
        raise NotImplementedError("override open_reader(path) when concurrent_readers is True")

    # --- fixtures and helpers -------------------------------------------------------------------------

    @pytest.fixture
    def backend_path(self, tmp_path: Path) -> Path:
        return tmp_path / "data"

    @pytest.fixture
    def backend(self, backend_path: Path) -> Iterator[StorageBackend]:
        with self.opened(backend_path) as backend:
            yield backend

    @contextlib.contextmanager
    def opened(self, path: Path) -> Iterator[StorageBackend]:
        backend = self.make_backend(path)
        try:
            yield backend
        finally:
            backend.close()

    def reopen(self, backend: StorageBackend, path: Path) -> StorageBackend:
        """Sync and close ``backend``, then open ``path`` again (the caller closes the result)."""
        backend.sync()
        backend.close()
        return self.make_backend(path)

    def assert_holds(self, backend: StorageBackend, model: dict[bytes, bytes]) -> None:
        """``backend`` holds exactly ``model``: point reads, count, size and a whole-ring scan."""
        for key, value in model.items():
            assert backend.get(key) == value, f"get({key[:32]!r}...) differs"
        assert backend.count() == len(model)
        assert backend.size() == sum(len(value) for value in model.values())
        assert list(backend.scan(KeyRange.whole_ring())) == expected_scan(model, KeyRange.whole_ring())

    def require_persistent(self) -> None:
        if not self.persistent:
            pytest.skip("the backend is not persistent")

    # --- point operations -----------------------------------------------------------------------------

    def test_empty_store(self, backend: StorageBackend) -> None:
        assert backend.get(b"missing") is None
        assert backend.count() == 0
        assert backend.size() == 0
        assert list(backend.scan(KeyRange.whole_ring())) == []
        assert list(backend.scan(KeyRange(5, 2**100))) == []

    def test_put_get_delete(self, backend: StorageBackend) -> None:
        backend.put(b"alpha", b"one")
        backend.put(b"beta", b"two")
        assert backend.get(b"alpha") == b"one"
        assert backend.get(b"beta") == b"two"
        assert backend.delete(b"alpha") is True
        assert backend.get(b"alpha") is None
        assert backend.get(b"beta") == b"two"
        assert backend.count() == 1

    def test_overwrite(self, backend: StorageBackend) -> None:
        backend.put(b"key", b"short")
        backend.put(b"key", b"a longer value")
        assert backend.get(b"key") == b"a longer value"
        assert (backend.count(), backend.size()) == (1, 14)
        backend.put(b"key", b"")
        assert backend.get(b"key") == b"", "an empty value is a value, not a missing key"
        assert (backend.count(), backend.size()) == (1, 0)

    def test_delete_missing_returns_false(self, backend: StorageBackend) -> None:
        assert backend.delete(b"never stored") is False
        backend.put(b"once", b"1")
        assert backend.delete(b"once") is True
        assert backend.delete(b"once") is False
        assert (backend.count(), backend.size()) == (0, 0)

    def test_empty_key(self, backend: StorageBackend) -> None:
        backend.put(b"", b"value of the empty key")
        backend.put(b"\x00", b"nul")
        assert backend.get(b"") == b"value of the empty key"
        assert backend.get(b"\x00") == b"nul"
        backend.put(b"", b"")
        assert backend.get(b"") == b""
        assert (backend.count(), backend.size()) == (2, 3)
        assert backend.delete(b"") is True
        assert backend.get(b"") is None
        assert backend.get(b"\x00") == b"nul"

    def test_every_byte_value(self, backend: StorageBackend) -> None:
        every = bytes(range(256))
        model = {bytes([byte]): bytes([byte]) * (byte % 7) for byte in range(256)}
        model[every] = every
        model[every[::-1]] = every * 3
        # Keys that are prefixes of one another: no length may be lost to NUL termination.
        model.update({b"k": b"1", b"k\x00": b"2", b"k\x00\x00": b"3", b"\x00k": b"4"})
        for key, value in model.items():
            backend.put(key, value)
        self.assert_holds(backend, model)

    def test_count_and_size(self, backend: StorageBackend) -> None:
        model: dict[bytes, bytes] = {}
        rng = random.Random(7)
        keys = [b"key-%d" % index for index in range(40)]
        for step in range(400):
            key = rng.choice(keys)
            if rng.random() < 0.3:
                assert backend.delete(key) is (key in model)
                model.pop(key, None)
            else:
                value = rng.randbytes(rng.randrange(0, 50))
                backend.put(key, value)
                model[key] = value
            assert backend.count() == len(model), f"count after step {step}"
            assert backend.size() == sum(map(len, model.values())), f"size after step {step}"
            if step % 97 == 0:
                backend.sync()
        self.assert_holds(backend, model)

    # --- limits ---------------------------------------------------------------------------------------

    def test_64kib_keys(self, backend: StorageBackend, backend_path: Path) -> None:
        rng = random.Random(64)
        big = rng.randbytes(64 * KIB)
        model = {
            big: b"first",
            big[:-1] + bytes([big[-1] ^ 1]): b"differs in the last byte",
            big[:-1]: b"one byte shorter",
            b"\xff" * (64 * KIB): b"all ones",
        }
        for key, value in model.items():
            backend.put(key, value)
        self.assert_holds(backend, model)
        assert backend.delete(big[:-1]) is True
        del model[big[:-1]]
        self.assert_holds(backend, model)
        if self.persistent:
            with contextlib.closing(self.reopen(backend, backend_path)) as reopened:
                self.assert_holds(reopened, model)

    def test_16mib_value(self, backend: StorageBackend, backend_path: Path) -> None:
        value = random.Random(16).randbytes(16 * MIB)
        backend.put(b"big", value)
        backend.put(b"small", b"s")
        assert backend.get(b"big") == value
        assert backend.size() == 16 * MIB + 1
        assert list(backend.scan(KeyRange.whole_ring())) == expected_scan(
            {b"big": value, b"small": b"s"}, KeyRange.whole_ring()
        )
        if self.persistent:
            backend = self.reopen(backend, backend_path)
        with contextlib.closing(backend):
            assert backend.get(b"big") == value
            assert (backend.count(), backend.size()) == (2, 16 * MIB + 1)
            backend.put(b"big", b"no longer big")
            assert (backend.count(), backend.size()) == (2, 14)

    # --- scans ----------------------------------------------------------------------------------------

    def test_scan_ranges(self, backend: StorageBackend) -> None:
        rng = random.Random(2024)
        model = {key: key + b"!" for key in _random_keys(rng, 700)}
        for key, value in model.items():
            backend.put(key, value)
        positions = sorted(ring_position(key) for key in model)
        top = RING_SIZE - 1
        ranges = [
            KeyRange.whole_ring(),
            KeyRange(top, top),
            KeyRange(positions[300], positions[300]),  # the whole ring, starting after a key
            KeyRange(positions[10], positions[400]),  # start excluded, end included
            KeyRange(positions[10] - 1, positions[400] - 1),
            KeyRange(positions[600], positions[50]),  # wraps past zero
            KeyRange(positions[-1], positions[0]),  # wraps, holding exactly the first key
            KeyRange(positions[5] - 1, positions[5]),  # exactly one key
            KeyRange(positions[5], positions[6] - 1),  # between two keys: nothing
            KeyRange(0, top),
            KeyRange(top, 0),
            KeyRange(top, 2**159),
            KeyRange(2**159, 2**158),
        ]
        for _ in range(20):
            ranges.append(KeyRange(rng.randrange(RING_SIZE), rng.randrange(RING_SIZE)))
        for phase in ("before sync", "after sync"):
            for key_range in ranges:
                assert list(backend.scan(key_range)) == expected_scan(model, key_range), (phase, key_range)
            backend.sync()

    def test_scan_while_writing(self, backend: StorageBackend) -> None:
        rng = random.Random(99)
        original = {key: b"v-" + key for key in _random_keys(rng, 600)}
        for key, value in original.items():
            backend.put(key, value)
        backend.sync()
        model = dict(original)
        touched: set[bytes] = set()
        seen: list[tuple[bytes, bytes]] = []
        whole = KeyRange.whole_ring()
        for index, (key, value) in enumerate(backend.scan(whole)):
            seen.append((key, value))
            if index % 5 == 0:
                new_key = b"new-%d" % index
                backend.put(new_key, b"n")
                model[new_key] = b"n"
                victim = rng.choice(sorted(original))
                backend.delete(victim)
                model.pop(victim, None)
                changed = rng.choice(sorted(original))
                backend.put(changed, b"changed")
                model[changed] = b"changed"
                touched.update((new_key, victim, changed))
            if index % 77 == 0:
                backend.sync()
        order = [_ring_order(whole, key) for key, _ in seen]
        assert order == sorted(order), "scan left ring order while writing"
        assert len({key for key, _ in seen}) == len(seen), "scan yielded a key twice"
        seen_values = dict(seen)
        for key, value in original.items():
            if key not in touched:
                assert seen_values.get(key) == value, "scan lost an untouched key while writing"
        for key, value in seen:
            if key not in touched:
                assert original.get(key) == value
            else:
                assert value in (original.get(key), b"n", b"changed")
        self.assert_holds(backend, model)

    # --- lifecycle ------------------------------------------------------------------------------------

    def test_sync_repeatable(self, backend: StorageBackend) -> None:
        backend.sync()
        backend.put(b"a", b"1")
        backend.sync()
        backend.sync()
        assert backend.get(b"a") == b"1"
        assert backend.delete(b"a") is True
        backend.sync()
        assert backend.get(b"a") is None

    def test_close_twice_is_harmless(self, backend_path: Path) -> None:
        backend = self.make_backend(backend_path)
        backend.put(b"a", b"1")
        backend.close()
        backend.close()

    def test_reopen_keeps_synced_writes(self, backend_path: Path) -> None:
        self.require_persistent()
        rng = random.Random(5)
        model = {key: rng.randbytes(rng.randrange(0, 300)) for key in _random_keys(rng, 300)}
        with self.opened(backend_path) as backend:
            for key, value in model.items():
                backend.put(key, value)
            for key in list(model)[::3]:
                assert backend.delete(key) is True
                del model[key]
            for key in list(model)[::5]:
                model[key] = b"overwritten"
                backend.put(key, b"overwritten")
            backend.sync()
        with self.opened(backend_path) as backend:
            self.assert_holds(backend, model)
            # close() flushes what no sync() covered.
            backend.put(b"after reopen", b"unsynced")
            model[b"after reopen"] = b"unsynced"
        with self.opened(backend_path) as backend:
            self.assert_holds(backend, model)

    def test_context_manager_closes(self, backend_path: Path) -> None:
        with self.make_backend(backend_path) as backend:
            backend.put(b"k", b"v")
        if self.persistent:
            with self.opened(backend_path) as again:
                assert again.get(b"k") == b"v"

    # --- concurrent readers ---------------------------------------------------------------------------

    def test_concurrent_reader(self, backend: StorageBackend, backend_path: Path) -> None:
        if not self.concurrent_readers:
            pytest.skip("the backend does not offer concurrent readers")
        rng = random.Random(11)
        model = {key: rng.randbytes(rng.randrange(0, 100)) for key in _random_keys(rng, 200)}
        for key, value in model.items():
            backend.put(key, value)
        backend.sync()
        probes = [*list(model)[:20], b"not there"]
        with _ReaderProcess(self, backend_path, probes) as reader:
            assert reader.read() == _summary(model, probes)
            # The writer goes on while the reader stays open; the reader sees each synced state.
            for key in list(model)[::4]:
                assert backend.delete(key) is True
                del model[key]
            for index in range(300):
                key = b"later-%d" % index
                model[key] = rng.randbytes(2000)
                backend.put(key, model[key])
            backend.sync()
            assert reader.read() == _summary(model, probes)
            assert reader.finish() is True, "the reader accepted a write"

    # --- model-based ----------------------------------------------------------------------------------

    def test_matches_dict_model(self, tmp_path: Path) -> None:
        run_state_machine_as_test(
            _model_machine(self, tmp_path),
            settings=settings(
                max_examples=self.model_examples,
                stateful_step_count=self.model_steps,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            ),
        )
