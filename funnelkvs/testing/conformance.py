"""The storage backend conformance suite: one set of tests every backend must pass.

Backend authors (built-in or third-party) subclass :class:`BackendConformance` in a pytest module and
say how to open their backend; pytest collects the inherited tests::

    from pathlib import Path

    from funnelkvs.testing.conformance import BackendConformance
    from my_backend import create_my_backend

    class TestMyBackend(BackendConformance):
        persistent = True
        concurrent_readers = False

        def make_backend(self, path: Path):
            return create_my_backend(path, {})

It needs pytest and hypothesis (``pip install 'funnelkvs[test]'``). What it checks: get/put/delete,
overwrite, all 256 byte values in keys and values, the empty key and value, 64 KiB keys, 16 MiB values,
range scans in ring order against a brute-force filter (ranges that wrap past zero, the whole ring from
any start, boundaries on key positions), count and size (total value bytes), scanning while writing,
``sync()`` then close and reopen (``persistent``), close twice, a reader in another process
(``concurrent_readers``), and a hypothesis model of random operations against a dict.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import select
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from funnelkvs.errors import StorageError
from funnelkvs.keyspace import RING_SIZE, KeyRange, ring_position
from funnelkvs.storage.backend import StorageBackend

__all__ = ["BackendConformance", "expected_scan", "scan_fingerprint"]

KIB = 1024
MIB = 1024 * KIB
# How long the concurrent-reader child may take for one answer before it is killed.
READER_TIMEOUT = 30.0


def expected_scan(model: dict[bytes, bytes], key_range: KeyRange) -> list[tuple[bytes, bytes]]:
    """What ``scan(key_range)`` must yield for a store holding ``model``, by brute force: every key
    whose ring position lies in the range, in ring order from just after ``key_range.start`` (keys
    sharing a position, which needs a SHA-1 collision, follow by key bytes)."""
    start = key_range.start
    chosen = [(key, value) for key, value in model.items() if ring_position(key) in key_range]
    chosen.sort(key=lambda item: ((ring_position(item[0]) - start - 1) % RING_SIZE, item[0]))
    return chosen


def scan_fingerprint(pairs: Iterable[tuple[bytes, bytes]]) -> str:
    """A SHA-256 over ``(key, value)`` pairs in order, with lengths, to compare scans across processes."""
    digest = hashlib.sha256()
    for key, value in pairs:
        digest.update(struct.pack(">IQ", len(key), len(value)))
        digest.update(key)
        digest.update(value)
    return digest.hexdigest()


def _ring_order(key_range: KeyRange, key: bytes) -> int:
    return (ring_position(key) - key_range.start - 1) % RING_SIZE


def _random_keys(rng: random.Random, count: int, max_size: int = 24) -> list[bytes]:
    keys = {rng.randbytes(rng.randrange(0, max_size + 1)) for _ in range(count)}
    return sorted(keys)


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


def _model_machine(suite: BackendConformance, tmp_path: Path) -> type[RuleBasedStateMachine]:
    paths = (tmp_path / f"model-{number}" for number in itertools.count())

    class BackendModel(RuleBasedStateMachine):
        keys = Bundle("keys")

        def __init__(self) -> None:
            super().__init__()
            self.path = next(paths)
            self.backend = suite.make_backend(self.path)
            self.model: dict[bytes, bytes] = {}

        @rule(target=keys, key=st.binary(max_size=6))
        def new_key(self, key: bytes) -> bytes:
            return key

        @rule(key=keys, value=st.binary(max_size=40))
        def put(self, key: bytes, value: bytes) -> None:
            self.backend.put(key, value)
            self.model[key] = value

        @rule(key=keys)
        def delete(self, key: bytes) -> None:
            assert self.backend.delete(key) is (key in self.model)
            self.model.pop(key, None)

        @rule(key=st.one_of(keys, st.binary(max_size=6)))
        def get(self, key: bytes) -> None:
            assert self.backend.get(key) == self.model.get(key)

        @rule(
            start=st.one_of(
                st.integers(0, RING_SIZE - 1),
                keys.map(ring_position),
                keys.map(lambda key: (ring_position(key) - 1) % RING_SIZE),
            ),
            end=st.one_of(
                st.integers(0, RING_SIZE - 1),
                keys.map(ring_position),
                keys.map(lambda key: (ring_position(key) - 1) % RING_SIZE),
            ),
        )
        def scan(self, start: int, end: int) -> None:
            key_range = KeyRange(start, end)
            assert list(self.backend.scan(key_range)) == expected_scan(self.model, key_range)

        @rule()
        def sync(self) -> None:
            self.backend.sync()

        @precondition(lambda self: suite.persistent)
        @rule()
        def reopen(self) -> None:
            self.backend = suite.reopen(self.backend, self.path)

        @invariant()
        def counts_match(self) -> None:
            assert self.backend.count() == len(self.model)
            assert self.backend.size() == sum(map(len, self.model.values()))

        def teardown(self) -> None:
            self.backend.close()

    return BackendModel


def _summary(model: dict[bytes, bytes], probes: list[bytes]) -> dict[str, Any]:
    """What a reader reports about a store holding ``model``."""
    return {
        "count": len(model),
        "size": sum(map(len, model.values())),
        "scan": scan_fingerprint(expected_scan(model, KeyRange.whole_ring())),
        "probes": [None if model.get(key) is None else model[key].hex() for key in probes],
    }


# The reader runs in a fresh interpreter, not a fork: a forked child inherits the writer's open
# environments and threads (py-lmdb, for one, then refuses to open the same files again "in this process").
_READER_MAIN = """
import importlib, sys
from funnelkvs.testing.conformance import _serve_reader
module_name, class_name, path, probes = sys.argv[1:5]
suite = importlib.import_module(module_name)
for part in class_name.split("."):
    suite = getattr(suite, part)
_serve_reader(suite(), path, probes)
"""


def _serve_reader(suite: BackendConformance, path: str, probes_json: str) -> None:
    """The reader child's loop: a ``read`` line on stdin answers a summary line on stdout; ``finish``
    tries a write, answers whether it was refused, and exits. JSON lines only, never pickle."""
    probes = [bytes.fromhex(key) for key in json.loads(probes_json)]
    answers = os.fdopen(os.dup(1), "w")
    try:
        reader = suite.open_reader(Path(path))
    except BaseException as exc:
        print(json.dumps({"error": f"open_reader failed: {exc!r}"}), file=answers, flush=True)
        raise SystemExit(1) from exc
    try:
        for line in sys.stdin:
            try:
                if line.strip() == "read":
                    answer: dict[str, Any] = {
                        "count": reader.count(),
                        "size": reader.size(),
                        "scan": scan_fingerprint(reader.scan(KeyRange.whole_ring())),
                        "probes": [None if (v := reader.get(key)) is None else v.hex() for key in probes],
                    }
                elif line.strip() == "finish":
                    try:
                        reader.put(b"written by a reader", b"x")
                    except StorageError:
                        answer = {"writes_refused": True}
                    else:
                        answer = {"writes_refused": False}
                else:
                    answer = {"error": f"unknown command {line!r}"}
            except Exception as exc:
                answer = {"error": repr(exc)}
            print(json.dumps(answer), file=answers, flush=True)
            if line.strip() == "finish":
                return
    finally:
        reader.close()


class _ReaderProcess:
    """A child interpreter holding ``suite.open_reader(path)``; each :meth:`read` makes it report what
    it sees. The suite's class must be importable by module and qualified name (pytest's default import
    mode does that). Every wait is bounded; the child is always reaped."""

    def __init__(self, suite: BackendConformance, path: Path, probes: list[bytes]) -> None:
        self.argv = [
            sys.executable,
            "-c",
            _READER_MAIN,
            type(suite).__module__,
            type(suite).__qualname__,
            str(path),
            json.dumps([key.hex() for key in probes]),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._errors = tempfile.TemporaryFile()

    def __enter__(self) -> _ReaderProcess:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, env=environment
        )
        return self

    def _ask(self, command: bytes) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + b"\n")
        self.process.stdin.flush()
        stdout = self.process.stdout.fileno()
        deadline = time.monotonic() + READER_TIMEOUT
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the reader process gave no answer in {READER_TIMEOUT:g}s")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                chunk = os.read(stdout, 65536)
                if not chunk:
                    raise AssertionError(f"the reader process exited without answering: {self._stderr()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"the reader process failed: {answer['error']}\n{self._stderr()}")
        return answer

    def _stderr(self) -> str:
        self._errors.seek(0)
        return self._errors.read()[-4000:].decode(errors="replace")

    def read(self) -> dict[str, Any]:
        return self._ask(b"read")

    def finish(self) -> bool:
        return bool(self._ask(b"finish")["writes_refused"])

    def __exit__(self, *exc: object) -> None:
        process = self.process
        try:
            if process is None:
                return
            assert process.stdin is not None and process.stdout is not None
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                status = process.wait(READER_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError("the reader process did not exit") from None
            finally:
                process.stdout.close()
            if exc[0] is None and status != 0:
                raise AssertionError(f"the reader process exited with status {status}: {self._stderr()}")
        finally:
            self._errors.close()
