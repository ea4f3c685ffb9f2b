"""Group commit on a storage thread: a blocking backend's writes never stall the event loop.

A backend whose calls can wait (``StorageBackend.blocking``: the disk, a lock, a 64 MiB copy) is
written by one *storage thread*. The loop thread collects the writes of a pass into the filling
:class:`WriteBatch`; at the end of the pass (``flush``) the batch goes to the storage thread, which
applies it and calls ``backend.sync()`` once for all of it (group commit, as in a database's log
writer), then reports back on the loop thread. At most one batch is in flight: writes arriving
meanwhile fill the next one, so a slow sync makes batches bigger, not the queue longer.

Until its batch has committed, a write is kept in :attr:`GroupCommit.pending` (key to value, None for
a delete), which the node's GET consults before the backend: the backend's loop-thread reads see only
what is committed, and a client must still read its own writes (in order, on one connection, since
the node answers in request order). An entry leaves ``pending`` when the batch that wrote it last has
committed (or failed), not before, so a read never sees an older value than one already answered.

Cohorts. With one batch in flight, writers would split into two groups that alternate (those answered
by one commit write again while the next batch is on its way), and each sync would cover half of them:
measured, 50 connections writing one at a time reached about half the rate of a loop that syncs
inline. So after a commit the next batch waits until every connection that commit answered has come
back (sent its next request, or gone), bounded by :data:`COMMIT_DELAY_MAX` and by the last sync's own
duration, whichever is shorter (the idea of PostgreSQL's ``commit_delay``, made adaptive): a lone
writer never waits, and an idle client delays the others by at most one sync time.

Reads that would wait (``StorageBusy``) go to the same thread through :meth:`GroupCommit.read`, so
the storage thread's queue is the only place where anything waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from funnelkvs.loop import EventLoop, TimerHandle
from funnelkvs.storage.backend import StorageBackend
from funnelkvs.versions import newer

T = TypeVar("T")

#: How long a stopping node waits for the storage thread to finish the last batch, in seconds.
FINAL_COMMIT_TIMEOUT = 60.0
#: The longest a batch waits for the connections the previous commit answered, in seconds.
COMMIT_DELAY_MAX = 0.002


class WriteBatch:
    """Writes handed to the storage thread together, and who waits for their commit.

    ``writes`` holds ``(key, value)`` pairs in arrival order (value None: a delete); ``waiters`` the
    objects (client connections) that hold answers until the batch has committed."""

    __slots__ = ("callbacks", "seq", "transitions", "waiters", "writes")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.writes: list[tuple[bytes, bytes | bytearray | None]] = []
        self.waiters: list[Any] = []
        #: ``callback(error)`` on the loop once the batch has committed (error None) or failed.
        self.callbacks: list[Callable[[BaseException | None], None]] = []
        #: Per key changed, ``(key, kind before, kind after)`` (0: absent), once committed.
        self.transitions: list[tuple[bytes, int, int]] = []


def apply_batch(
    backend: StorageBackend, writes: list[tuple[bytes, bytes | bytearray | None]]
) -> tuple[float, list[tuple[bytes, int, int]]]:
    """Apply ``writes`` in order, then one ``sync()`` (storage thread); returns the sync's duration in
    seconds and, per key changed, the key and its envelope kinds before and after (0 for absent).

    A write is an envelope (:mod:`funnelkvs.versions`), stored only when it is newer than the copy
    already there (the check happens here too, not only on the loop: the loop cannot always read
    without waiting); None deletes the key outright (a range handed over, a purge). Raises the first
    error: after a failed write the batch is still synced (the backends abandon a batch with a failed
    write there), so that nothing of it stays half-open in the backend."""
    failure: BaseException | None = None
    # What this batch has made of each key so far: a backend's own reads may not see its uncommitted
    # writes (sqlite through another connection), and a key written twice in a batch is stored once.
    staged: dict[bytes, bytes | bytearray | None] = {}
    before: dict[bytes, int] = {}
    try:
        for key, envelope in writes:
            if key in staged:
                current = staged[key]
            else:
                current = backend.get_waiting(key)
                before[key] = current[0] if current else 0
                if envelope is not None and current is not None and not newer(envelope, current):
                    continue
                staged[key] = envelope
                continue
            if envelope is None or current is None or newer(envelope, current):
                staged[key] = envelope
        for key, envelope in staged.items():
            if envelope is None:
                backend.delete(key)
            else:
                backend.put(key, envelope)
    except Exception as exc:
        failure = exc
    started = time.perf_counter()
    try:
        backend.sync()
    except Exception:
        if failure is None:
            raise
    if failure is not None:
        raise failure
    transitions = [
        (key, before[key], envelope[0] if envelope else 0)
        for key, envelope in staged.items()
        if key in before
    ]
    return time.perf_counter() - started, transitions


class GroupCommit:
    """The filling batch, the one in flight, and the storage thread that commits them.

    ``on_committed(batch, error)`` runs on the loop thread when a batch is done (``error`` None when it
    committed). Loop-thread only, except what runs on the storage thread (``apply_batch`` and reads).
    """

    def __init__(
        self,
        backend: StorageBackend,
        loop: EventLoop,
        on_committed: Callable[[WriteBatch, BaseException | None], None],
    ) -> None:
        self.backend = backend
        self.loop = loop
        self._on_committed = on_committed
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="funnelkvs-storage")
        #: Writes not yet committed: key -> (value or None for a delete, seq of the batch).
        self.pending: dict[bytes, tuple[bytes | bytearray | None, int]] = {}
        self._filling = WriteBatch(1)
        self._in_flight: WriteBatch | None = None
        #: Waiters the last commit answered that have not come back yet (see "Cohorts").
        self.returning: set[Any] = set()
        self._submit_by = 0.0
        self._delay_timer: TimerHandle | None = None
        self._last_sync = 0.0

    def write(self, key: bytes, value: bytes | bytearray | None) -> None:
        """Add a put (or, with None, a delete) to the filling batch."""
        batch = self._filling
        batch.writes.append((key, value))
        self.pending[key] = (value, batch.seq)

    def wait(self, waiter: Any) -> None:
        """``waiter`` holds answers to writes of the filling batch (call once per batch)."""
        self._filling.waiters.append(waiter)

    def flush(self) -> None:
        """Send the filling batch to the storage thread unless one is in flight, or unless the
        connections the last commit answered may still join it (pass-end hook; see "Cohorts")."""
        filling = self._filling
        if self._in_flight is not None or not (filling.writes or filling.waiters or filling.callbacks):
            return
        if self.returning:
            now = self.loop.time()
            if now < self._submit_by:
                if self._delay_timer is None:
                    self._delay_timer = self.loop.call_at(self._submit_by, self._delay_over)
                return
            self.returning.clear()
        batch = self._in_flight = self._filling
        self._filling = WriteBatch(batch.seq + 1)
        future = self._thread.submit(apply_batch, self.backend, batch.writes)
        future.add_done_callback(lambda done: self.loop.call_soon_threadsafe(self._committed, batch, done))

    def _delay_over(self) -> None:
        self._delay_timer = None
        self.returning.clear()
        self.flush()

    def when_committed(self, callback: Callable[[BaseException | None], None]) -> None:
        """``callback(error)`` on the loop once the filling batch (and so every write handed over so
        far) has committed; error None on success."""
        self._filling.callbacks.append(callback)

    def _committed(self, batch: WriteBatch, done: Future[tuple[float, list[tuple[bytes, int, int]]]]) -> None:
        self._in_flight = None
        pending = self.pending
        seq = batch.seq
        for key, _ in batch.writes:
            entry = pending.get(key)
            if entry is not None and entry[1] == seq:
                del pending[key]
        error = done.exception()
        if error is None:
            self._last_sync, batch.transitions = done.result()
        if batch.waiters:
            self.returning = set(batch.waiters)
            self._submit_by = self.loop.time() + min(COMMIT_DELAY_MAX, self._last_sync)
        self._on_committed(batch, error)
        for callback in batch.callbacks:
            callback(error)
        self.flush()

    def read(
        self, key: bytes, on_done: Callable[[bytes | bytearray | None, BaseException | None], None]
    ) -> None:
        """``backend.get_waiting(key)`` on the storage thread; ``on_done(value, error)`` on the loop."""
        future = self._thread.submit(self.backend.get_waiting, key)

        def report(done: Future[bytes | bytearray | None]) -> None:
            error = done.exception()
            self.loop.call_soon_threadsafe(on_done, None if error else done.result(), error)

        future.add_done_callback(report)

    def run(self, job: Callable[[], T], on_done: Callable[[T | None, BaseException | None], None]) -> None:
        """Run ``job()`` on the storage thread, after everything queued before it (so it sees every
        batch submitted so far); ``on_done(result, error)`` on the loop. For reads that may wait
        (a scan of a range to transfer)."""
        future = self._thread.submit(job)

        def report(done: Future[T]) -> None:
            error = done.exception()
            self.loop.call_soon_threadsafe(on_done, None if error else done.result(), error)

        future.add_done_callback(report)

    def close(self) -> None:
        """Commit what is left (the stopping node's last writes, answered or not) and stop the thread.
        Raises the last batch's error. Blocks: for shutdown only."""
        writes = self._filling.writes
        self._filling = WriteBatch(self._filling.seq + 1)
        try:
            # Queued behind the batch in flight (one thread, in order): its result is the last word.
            self._thread.submit(apply_batch, self.backend, writes).result(FINAL_COMMIT_TIMEOUT)
        finally:
            self._thread.shutdown(wait=False, cancel_futures=False)
            self.pending.clear()
