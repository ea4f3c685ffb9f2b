"""Nothing a backend does (a sync, a lock, a large write) stalls unrelated clients (issue 6 kind 2).

Each case runs a node process, a load in a process of its own, and a probe that PINGs and asks STATS
every 50 ms on its own connection (funnelkvs.testing.stalls). The targets (100 ms, 250 ms for the
large values) are measured by ``python -m funnelkvs.testing.stalls`` (docs/performance.md); these
tests bound the worst round trip at 500 ms, far below what the node did before the storage thread
(3-6 s behind 50,000 pipelined PUTs on sqlite, 2 s per attempt on a locked database), and above the
noise of a loaded 2-core machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from funnelkvs import Client
from funnelkvs.errors import NodeUnreachable, ServerError, StorageError
from funnelkvs.storage.lmdb_backend import create_lmdb_backend
from funnelkvs.storage.sqlite_backend import create_sqlite_backend
from funnelkvs.testing.stalls import Case, hold_exclusive_lock, run_case
from funnelkvs.versions import value_of
from tests.conftest import ThreadNode

BOUND = 0.5


def address(tn: ThreadNode) -> str:
    return "{}:{}".format(*tn.address)


CASES = [
    Case("50k PUTs, lmdb nosync", "lmdb", {"durability": "nosync"}, "pipelined"),
    Case("50k PUTs, sqlite nosync wal", "sqlite", {"durability": "nosync"}, "pipelined"),
    Case("50k PUTs, sqlite sync delete", "sqlite", {"journal_mode": "delete"}, "pipelined"),
    Case("sqlite locked, delete", "sqlite", {"journal_mode": "delete", "timeout": 2}, "locked"),
    Case("4 x 16 MiB PUTs, lmdb", "lmdb", {}, "large"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_an_unrelated_client_is_answered_promptly(case: Case, tmp_path: Path) -> None:
    # quick: 16 MiB values (not 64) and a 2.5 s lock; the 50,000 PUTs stay 50,000 (as in the issue).
    result = run_case(case, tmp_path, quick=case.load != "pipelined")
    # Large values: page faults and copies of 16 MiB on a machine shared with the test run make the
    # figures noisier; the bound stays far below a loop that waits for the disk or a lock.
    bound = BOUND * 2 if case.load == "large" else BOUND
    assert result.samples >= 3, "the probe hardly ran: the load was too short to show anything"
    assert result.worst_ping < bound, f"PING waited {result.worst_ping * 1000:.0f} ms"
    assert result.worst_stats < bound, f"STATS waited {result.worst_stats * 1000:.0f} ms"


# --- the storage thread, in process -------------------------------------------------------------------


def test_a_get_that_meets_a_lock_is_answered_after_it_without_stalling_others(
    tmp_path: Path, thread_node_factory: Callable[..., ThreadNode]
) -> None:
    backend = create_sqlite_backend(tmp_path, {"journal_mode": "delete", "timeout": 10})
    tn = thread_node_factory(backend)
    with Client(address(tn)) as writer:
        writer.put(b"k", b"committed")
    holder = hold_exclusive_lock(backend.file, 1.0)  # readers get SQLITE_BUSY for a second
    try:
        with Client(address(tn)) as reader, Client(address(tn)) as other:
            got: list[bytes | None] = []
            started = time.monotonic()
            thread = threading.Thread(target=lambda: got.append(reader.get(b"k")))
            thread.start()
            time.sleep(0.2)
            ping_started = time.monotonic()
            assert other.ping()
            assert time.monotonic() - ping_started < BOUND, "a GET waiting on the lock stalled a PING"
            assert other.stats()["keys"] == 1  # counters do not wait for the lock either
            thread.join(15)
            waited = time.monotonic() - started
    finally:
        holder.join(15)
    assert got == [b"committed"]
    assert waited >= 0.7, "the GET did not meet the lock: the test proves nothing"


def test_writes_wait_for_their_commit_and_reads_see_them_meanwhile(
    tmp_path: Path, thread_node_factory: Callable[..., ThreadNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = create_lmdb_backend(tmp_path, {})
    release = threading.Event()
    sync = backend.sync

    def slow_sync() -> None:  # the storage thread's sync waits until the test lets it go
        assert release.wait(10)
        sync()

    monkeypatch.setattr(backend, "sync", slow_sync)
    tn = thread_node_factory(backend)
    with Client(address(tn)) as writer, Client(address(tn)) as reader:
        done = threading.Event()
        thread = threading.Thread(target=lambda: (writer.put(b"k", b"v"), done.set()))
        thread.start()
        deadline = time.monotonic() + 5
        while reader.get(b"k") != b"v":  # seen through the node's pending writes before the commit
            assert time.monotonic() < deadline
        assert not done.wait(0.3), "the PUT was acknowledged before its sync returned"
        assert reader.ping()
        release.set()
        assert done.wait(10)
        thread.join(10)
    assert value_of(backend.get(b"k") or b"") == b"v"  # stored in its envelope


def test_a_failed_sync_answers_server_error_to_the_batch_and_closes(
    tmp_path: Path, thread_node_factory: Callable[..., ThreadNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = create_lmdb_backend(tmp_path, {})

    def failing_sync() -> None:
        raise StorageError("disk on fire (injected)")

    tn = thread_node_factory(backend)
    with Client(address(tn)) as client:
        client.put(b"before", b"1")
        monkeypatch.setattr(backend, "sync", failing_sync)
        with pytest.raises((ServerError, NodeUnreachable)):
            client.put(b"k", b"v")
        monkeypatch.undo()
        assert client.get(b"k") is None, "a write whose sync failed is still served"
        assert client.get(b"before") == b"1"
        client.put(b"after", b"2")
    assert tn.node.metrics.sync_errors == 1
