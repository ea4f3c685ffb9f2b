"""The storage thread's batching rules (funnelkvs.group_commit), with a recording backend."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from funnelkvs.errors import StorageError
from funnelkvs.group_commit import GroupCommit, WriteBatch, apply_batch
from funnelkvs.loop import EventLoop
from funnelkvs.storage.memory import MemoryBackend
from funnelkvs.versions import Version, pack_value


def env(hlc: int, value: bytes) -> bytes:
    """A stored envelope: the storage thread keeps the newest version of a key."""
    return bytes(pack_value(Version(hlc, 0), value))


class RecordingBackend(MemoryBackend):
    """A memory backend that records calls, can fail a put, and can make sync() wait."""

    blocking = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.fail_on: bytes | None = None
        self.sync_gate: threading.Event | None = None
        self.sync_seconds = 0.0

    def put(self, key: bytes, value: bytes) -> None:
        self.calls.append(("put", key))
        if key == self.fail_on:
            raise StorageError("injected")
        super().put(key, value)

    def delete(self, key: bytes) -> bool:
        self.calls.append(("delete", key))
        return super().delete(key)

    def sync(self) -> None:
        if self.sync_gate is not None:
            assert self.sync_gate.wait(10)
        time.sleep(self.sync_seconds)
        self.calls.append(("sync", b""))


def test_apply_batch_stores_each_key_once_then_syncs_once() -> None:
    backend = RecordingBackend()
    backend.put(b"b", env(1, b"old"))
    backend.calls.clear()
    _, transitions = apply_batch(backend, [(b"a", env(1, b"1")), (b"b", None), (b"a", env(2, b"2"))])
    assert backend.calls == [("put", b"a"), ("delete", b"b"), ("sync", b"")]
    assert backend.get(b"a") == env(2, b"2")
    assert sorted(transitions) == [(b"a", 0, 1), (b"b", 1, 0)]  # a: absent -> value; b: value -> gone


def test_apply_batch_keeps_the_newer_version() -> None:
    backend = RecordingBackend()
    backend.put(b"a", env(5, b"new"))
    backend.calls.clear()
    _, transitions = apply_batch(backend, [(b"a", env(3, b"old")), (b"a", env(4, b"older"))])
    assert backend.calls == [("sync", b"")]
    assert backend.get(b"a") == env(5, b"new")
    assert transitions == []


def test_a_failed_write_still_syncs_and_raises() -> None:
    backend = RecordingBackend()
    backend.fail_on = b"b"
    with pytest.raises(StorageError, match="injected"):
        apply_batch(backend, [(b"a", env(1, b"1")), (b"b", env(1, b"2")), (b"c", env(1, b"3"))])
    assert backend.calls == [("put", b"a"), ("put", b"b"), ("sync", b"")]


def run_until(loop: EventLoop, condition: Any, timeout: float = 5.0) -> None:
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        loop._run_once(max_wait=0.01)


def test_pending_keeps_a_key_until_the_batch_that_wrote_it_last_has_committed() -> None:
    loop = EventLoop()
    backend = RecordingBackend()
    backend.sync_gate = threading.Event()
    done: list[tuple[int, BaseException | None]] = []
    commit = GroupCommit(backend, loop, lambda batch, error: done.append((batch.seq, error)))
    try:
        commit.write(b"k", env(1, b"first"))
        commit.wait("writer-1")
        commit.flush()  # batch 1 in flight, waiting at the gate
        commit.write(b"k", env(2, b"second"))  # batch 2 filling
        commit.wait("writer-2")
        assert commit.pending[b"k"] == (env(2, b"second"), 2)
        backend.sync_gate.set()
        run_until(loop, lambda: len(done) == 2)
        assert done == [(1, None), (2, None)]
        assert commit.pending == {}
        assert backend.get(b"k") == env(2, b"second")
    finally:
        commit.close()
        loop.close()


def test_after_a_commit_the_next_batch_waits_for_the_writers_it_answered() -> None:
    loop = EventLoop()
    backend = RecordingBackend()
    backend.sync_seconds = 0.01  # the delay is min(2 ms, the last sync)
    committed: list[WriteBatch] = []
    commit = GroupCommit(backend, loop, lambda batch, error: committed.append(batch))
    try:
        for name in ("a", "b"):
            commit.write(name.encode(), b"v")
            commit.wait(name)
        commit.flush()
        run_until(loop, lambda: len(committed) == 1)
        assert commit.returning == {"a", "b"}
        commit.write(b"c", b"v")  # a third writer arrives while a and b are on their way back
        commit.wait("c")
        commit.flush()
        assert commit._in_flight is None, "submitted without waiting for a and b"
        commit.returning.discard("a")
        commit.write(b"a2", b"v")
        commit.wait("a")
        # b never comes back: the batch goes once the delay is over (min(2 ms, the last sync)).
        run_until(loop, lambda: len(committed) == 2)
        assert [key for key, _ in committed[1].writes] == [b"c", b"a2"]
    finally:
        commit.close()
        loop.close()


def test_a_lone_writer_does_not_wait() -> None:
    loop = EventLoop()
    backend = RecordingBackend()
    committed: list[WriteBatch] = []
    commit = GroupCommit(backend, loop, lambda batch, error: committed.append(batch))
    try:
        commit.write(b"k", b"1")
        commit.wait("w")
        commit.flush()
        run_until(loop, lambda: len(committed) == 1)
        commit.returning.discard("w")  # the node does this when the writer's next request arrives
        commit.write(b"k", b"2")
        commit.wait("w")
        commit.flush()
        assert commit._in_flight is not None, "a lone writer's next batch waited"
        run_until(loop, lambda: len(committed) == 2)
    finally:
        commit.close()
        loop.close()
