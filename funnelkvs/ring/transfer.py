"""Moving a key range to its new owner while both nodes serve (join, graceful leave, restart).

The new owner pulls. When a node's range grows, it knows where the new part was kept:

- it has just joined (its first predecessor P is known): ``(P, self]`` was its successor's;
- its predecessor L left gracefully (L's Leave notice): ``(P, L]`` was L's.

(A range that grows because the predecessor crashed was on the crashed node: with one copy per key
there is nothing to pull; replication brings the copies.)

From that moment the node owns the range, and an :class:`Incoming` records it: the source, the keys
written here since (they win over pulled entries), and how far the pull has got. The pull asks the
source for batches (TRANSFER_PULL, at most :data:`BATCH_ENTRIES` entries each, one batch in flight:
that is the flow control); the source answers NOT_YET while it still owns the range itself, so no
write can land there after its part was pulled. A GET for a key of the range that is not here yet
reads it from the source (TRANSFER_READ). Once the last batch is in, TRANSFER_DONE tells the source,
which drops the range from its store (a leaving node then exits).

The source side never blocks the loop: with a blocking backend its scans run on the storage thread,
and the writes it has not committed yet (the node's pending map) are merged into each batch.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from funnelkvs.chord import NodeRef
from funnelkvs.keyspace import KeyRange, in_half_open, ring_position
from funnelkvs.loop import Future
from funnelkvs.protocol import GET, Status
from funnelkvs.protocol.rpc import (
    NOT_YET,
    TRANSFER_DONE,
    TRANSFER_PULL,
    TRANSFER_READ,
    decode_batch,
    decode_pull,
    decode_range,
    encode_batch,
    encode_pull,
    encode_range,
)
from funnelkvs.protocol.v2 import V2Response, key_value_body, parse_key_value
from funnelkvs.versions import check_envelope, is_live, value_of

if TYPE_CHECKING:
    from funnelkvs.node import Node
    from funnelkvs.ring.driver import RingDriver

log = logging.getLogger("funnelkvs.ring.transfer")

#: Entries per pulled batch (values are small here; a batch of large values is bounded by the peer
#: connection's body limit, which the source respects by stopping a batch at BATCH_BYTES).
BATCH_ENTRIES = 1000
BATCH_BYTES = 8 * 1024 * 1024
#: Entries the source drops per loop pass once a range is done.
DROP_BATCH = 1000
#: How long a pull keeps trying a source that does not answer before giving the range up, in seconds.
SOURCE_DEADLINE = 30.0
#: How long a leaving node waits for its successor to take its keys before it exits anyway, in seconds.
LEAVE_DEADLINE = 120.0

Answer = Callable[[int, bytes], None]


class Incoming:
    """A range this node now owns whose entries are still arriving from ``source``."""

    __slots__ = ("after", "given_up_at", "key_range", "pulled", "source", "written")

    def __init__(self, key_range: KeyRange, source: NodeRef, give_up_at: float) -> None:
        self.key_range = key_range
        self.source = source
        #: Keys written (or deleted) here since the range became ours: a pulled entry never replaces them.
        self.written: set[bytes] = set()
        #: The position the last pulled batch ended at (None: nothing pulled yet).
        self.after: int | None = None
        self.pulled = 0
        self.given_up_at = give_up_at


class Transfers:
    """Both sides of range transfers for one node."""

    def __init__(self, driver: RingDriver) -> None:
        self.driver = driver
        self.node: Node = driver.node
        self.incoming: list[Incoming] = []
        #: Ranges handed over and still to drop from the store.
        self._dropping: list[KeyRange] = []
        #: Entries received and entries served, for INFO and tests.
        self.received = 0
        self.sent = 0
        self.on_done: list[Callable[[KeyRange], None]] = []

    def register(self) -> None:
        node = self.node
        node.register_rpc(TRANSFER_PULL, self._serve_pull)
        node.register_rpc(TRANSFER_READ, self._serve_read)
        node.register_rpc(TRANSFER_DONE, self._serve_done)

    # --- the new owner ---------------------------------------------------------------------------------

    def begin(self, key_range: KeyRange, source: NodeRef) -> None:
        """``key_range`` is ours from now on and its entries are at ``source``: pull them."""
        if source.node_id == self.driver.me.node_id:
            return
        incoming = Incoming(key_range, source, self.driver.loop.time() + SOURCE_DEADLINE)
        self.incoming.append(incoming)
        log.info("taking over (%040x, %040x] from %s", key_range.start, key_range.end, source.address)
        self._pull(incoming)

    def covering(self, position: int) -> Incoming | None:
        for incoming in self.incoming:
            if position in incoming.key_range:
                return incoming
        return None

    def note_write(self, key: bytes, position: int) -> None:
        """A write for ``key`` was applied here: a pulled entry must not replace it."""
        incoming = self.covering(position)
        if incoming is not None:
            incoming.written.add(key)

    def read_through(self, key: bytes, answer: Answer) -> None:
        """GET ``key`` from the source of its incoming range (it is not here yet)."""
        incoming = self.covering(ring_position(key))
        if incoming is None:
            answer(Status.NOT_FOUND, b"")
            return
        from funnelkvs.ring.driver import split_address

        host, port = split_address(incoming.source.address)
        timeout = max(self.driver.settings.rpc_timeout, 5.0)  # data, not liveness
        future = self.node.peer(host, port).call(TRANSFER_READ, key_value_body(GET, key), timeout=timeout)

        def done(result: Future[V2Response]) -> None:
            if result.exception() is not None:
                answer(Status.SERVER_ERROR, b"")
                return
            response = result.result()
            if response.status != Status.SUCCESS:
                answer(response.status, response.body)
            elif is_live(response.body):  # the old owner's envelope
                answer(Status.SUCCESS, value_of(response.body))
            else:
                answer(Status.NOT_FOUND, b"")

        future.add_done_callback(done)

    def _pull(self, incoming: Incoming) -> None:
        from funnelkvs.ring.driver import split_address

        if incoming not in self.incoming:
            return
        host, port = split_address(incoming.source.address)
        body = encode_pull(incoming.key_range.start, incoming.key_range.end, incoming.after, BATCH_ENTRIES)
        timeout = max(self.driver.settings.rpc_timeout, 5.0)
        future = self.node.peer(host, port).call(TRANSFER_PULL, body, timeout=timeout)
        future.add_done_callback(lambda result: self._pulled(incoming, result))

    def _pulled(self, incoming: Incoming, result: Future[V2Response]) -> None:
        loop = self.driver.loop
        if incoming not in self.incoming:
            return
        response = None if result.exception() is not None else result.result()
        if response is None or response.status != Status.SUCCESS:
            if response is not None and response.status == NOT_YET:
                loop.call_later(self.driver.settings.stabilize_interval / 2, self._pull, incoming)
                return
            if loop.time() > incoming.given_up_at:
                log.error(
                    "giving up (%040x, %040x]: %s did not hand it over; its entries are lost",
                    incoming.key_range.start,
                    incoming.key_range.end,
                    incoming.source.address,
                )
                self._finish(incoming, notify=False)
                return
            loop.call_later(self.driver.settings.stabilize_interval, self._pull, incoming)
            return
        entries, more, last = decode_batch(response.body)
        self._apply(incoming, entries)
        incoming.after = last
        incoming.given_up_at = loop.time() + SOURCE_DEADLINE
        if more:
            self._pull(incoming)
        else:
            self._finish(incoming, notify=True)

    def _apply(self, incoming: Incoming, entries: list[tuple[bytes, bytes | None]]) -> None:
        store = self.node.store
        for key, envelope in entries:
            if envelope is None:
                continue  # being removed at the source: nothing to take
            problem = check_envelope(envelope)
            if problem is not None:
                log.error("transfer from %s: %s; entry skipped", incoming.source.address, problem)
                continue
            # Versions decide: a write made here since the range became ours is newer and stays.
            store.write(key, envelope)
            incoming.pulled += 1
            self.received += 1

    def _finish(self, incoming: Incoming, *, notify: bool) -> None:
        self.incoming.remove(incoming)
        key_range = incoming.key_range
        log.info("took over (%040x, %040x]: %d entries", key_range.start, key_range.end, incoming.pulled)
        if notify:
            from funnelkvs.ring.driver import split_address

            host, port = split_address(incoming.source.address)
            body = encode_range(key_range.start, key_range.end)
            self.node.peer(host, port).call(TRANSFER_DONE, body, timeout=self.driver.settings.rpc_timeout)

    # --- the old owner ------------------------------------------------------------------------------

    def _serve_pull(self, body: bytes) -> tuple[int, bytes] | Future[tuple[int, bytes]]:
        start, end, after, limit = decode_pull(body)
        if self.driver.owns(end):
            return NOT_YET, b"still the owner"
        key_range = KeyRange(start, end) if after is None else KeyRange(after, end)
        if after is not None and after == end:
            return Status.SUCCESS, encode_batch([], False, end)
        limit = max(1, min(limit, BATCH_ENTRIES))
        answer: Future[tuple[int, bytes]] = Future()

        def scan() -> list[tuple[bytes, bytes]]:
            taken: list[tuple[bytes, bytes]] = []
            size = 0
            for key, value in itertools.islice(self.node.backend.scan(key_range), limit):
                taken.append((key, value))
                size += len(key) + len(value)
                if size >= BATCH_BYTES:
                    break
            return taken

        def scanned(taken: list[tuple[bytes, bytes]] | None, error: BaseException | None) -> None:
            if error is not None or taken is None:
                log.error("scan for a transfer failed: %s", error)
                answer.set_result((Status.SERVER_ERROR, b""))
                return
            answer.set_result((Status.SUCCESS, self._batch(key_range, taken, limit)))

        commit = self.node.group_commit
        if commit is None:
            scanned(scan(), None)
        else:
            commit.run(scan, scanned)
        return answer

    def _batch(self, key_range: KeyRange, taken: list[tuple[bytes, bytes]], limit: int) -> bytes:
        """The batch answer: the scanned entries with the writes not committed yet merged in."""
        more = len(taken) >= limit or sum(len(k) + len(v) for k, v in taken) >= BATCH_BYTES
        last = ring_position(taken[-1][0]) if more else key_range.end
        covered = KeyRange(key_range.start, last) if last != key_range.start else key_range
        entries: dict[bytes, bytes | bytearray | None] = dict(taken)
        for key, (value, _) in self.node.pending_writes.items():
            if ring_position(key) in covered:
                entries[key] = value
        self.sent += len(entries)
        return encode_batch(list(entries.items()), more, last)

    def _serve_read(self, body: bytes) -> tuple[int, bytes]:
        key, _ = parse_key_value(GET, body)
        pending = self.node.pending_writes.get(key)
        # A blocking read here would stall the loop: a locked sqlite file answers SERVER_ERROR and
        # the reader's node passes that on (rare: only while a range is on its way).
        value = self.node.backend.get(key) if pending is None else pending[0]
        if value is None:
            return Status.NOT_FOUND, b""
        return Status.SUCCESS, bytes(value)

    def _serve_done(self, body: bytes) -> tuple[int, bytes]:
        start, end = decode_range(body)
        key_range = KeyRange(start, end)
        for listener in self.on_done:
            listener(key_range)
        replication = self.node.replication
        # With several copies per key the old owner stays a replica of most of what it handed over;
        # moving copies to where they belong is repair's work, so nothing is dropped here.
        single_copy = replication is None or not replication.active
        if single_copy and not self.driver.owns(end):
            self._dropping.append(key_range)
            self.driver.loop.call_soon(self._drop_some)
        return Status.SUCCESS, b""

    def _drop_some(self) -> None:
        """Drop handed-over entries, :data:`DROP_BATCH` per step, keeping any the node owns again.
        With a blocking backend the scan runs on the storage thread, like the transfer's."""
        if not self._dropping:
            return
        key_range = self._dropping[0]
        node = self.node

        def scan() -> list[bytes]:
            return [key for key, _ in itertools.islice(node.backend.scan(key_range), DROP_BATCH)]

        def scanned(keys: list[bytes] | None, error: BaseException | None) -> None:
            if error is not None or keys is None:
                log.error("dropping a handed-over range failed: %s", error)
                self._dropping.pop(0)
                return
            for key in keys:
                if self.driver.owns(ring_position(key)):
                    continue
                node.store.remove(key)
            if len(keys) < DROP_BATCH:
                self._dropping.pop(0)
            self.driver.loop.call_soon(self._drop_some)

        if node.group_commit is None:
            scanned(scan(), None)
        else:
            node.group_commit.run(scan, scanned)


def grown_by(old: NodeRef | None, new: NodeRef | None, me: int) -> KeyRange | None:
    """The part a range ``(old, me]`` gains when the predecessor goes from ``old`` to ``new`` (None:
    it did not grow)."""
    if old is None or new is None or old.node_id == new.node_id:
        return None
    if in_half_open(old.node_id, new.node_id, me) and old.node_id != me:
        return KeyRange(new.node_id, old.node_id)
    return None
