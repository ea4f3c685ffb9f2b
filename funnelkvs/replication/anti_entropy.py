"""Anti-entropy: the copies of each key range are compared by Merkle digests and what differs is
exchanged, so that every key ends up on exactly its N nodes with its newest version (Dynamo 4.7;
Riak's active anti-entropy; Cassandra's repair).

Every ``replication.anti_entropy_interval`` seconds (and at once when the members change) a node runs
a *round* over the ring's *arcs* (the ranges between consecutive members, each with one preference
list):

- **Sync.** For each arc it *leads* (it is the first live member of the arc's preference list), it
  compares its copies with every other target of the arc: the other replicas, and the fallbacks
  standing in for replicas that are down (they get the arc's keys as hints, so that a crash leaves N
  copies again; hinted handoff brings them to the replica when it is back). The comparison is a
  two-level Merkle tree: the arc is cut into :data:`BUCKETS` buckets by ring position; a bucket's
  digest is the sum (mod 2**64) of a 64-bit BLAKE2b hash of each key with its kind and version, so
  both sides compute it in one scan without sorting. Only buckets whose digests differ are listed
  (AE_KEYS: keys and versions), and only keys whose versions differ travel: the newer copy is pushed
  (REPLICA_WRITE) or pulled (REPLICA_READ). Writes here are newer-wins, so a sync racing a client
  write never goes backwards.
- **Surplus.** For each arc whose preference list does not include this node, its plain copies (and
  hints for nodes that left) are pushed to the arc's preference list and dropped once every member
  of it has stored them: after a join or a leave, copies move to where they belong.
- **Purge.** When every target of an arc is a replica that is up and all of them are in sync, the
  leader removes the arc's tombstones older than ``replication.tombstone_grace`` from every replica
  (AE_PURGE; a replica removes only the exact tombstone it is sent).

A round is a chain of steps, one arc and one peer at a time; scans of a blocking backend run on the
storage thread, so the loop never waits on the disk.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from funnelkvs.errors import RemoteProtocolError, StorageBusy
from funnelkvs.keyspace import RING_SIZE, KeyRange, ring_position
from funnelkvs.loop import Future, PeriodicTimer
from funnelkvs.protocol import Status
from funnelkvs.protocol.anti_entropy import (
    AE_DIGEST,
    AE_KEYS,
    AE_PURGE,
    decode_digest_request,
    decode_digests,
    decode_keys_request,
    decode_metas,
    encode_digest_request,
    encode_digests,
    encode_keys_request,
    encode_metas,
)
from funnelkvs.protocol.v2 import V2Response
from funnelkvs.replication.placement import Target
from funnelkvs.replication.ringview import NodeRef
from funnelkvs.versions import HEADER_SIZE, KIND_TOMBSTONE, LOGICAL_BITS, from_hint, is_hint

if TYPE_CHECKING:
    from funnelkvs.replication.service import Replication

log = logging.getLogger("funnelkvs.replication")

#: Leaves of an arc's Merkle tree.
BUCKETS = 64
#: Entries read per scan step (one loop pass, or one job on the storage thread).
SCAN_STEP = 2000
#: Surplus copies moved per round at most.
SURPLUS_BATCH = 2000
#: After a round, no new one for this many times its duration (bounds repair's share of the node).
REST_FACTOR = 9.0
#: How long an anti-entropy call may take, in seconds.
CALL_TIMEOUT = 10.0
_MASK = (1 << 64) - 1

#: A key's meta: kind (plain) + version, the first 17 bytes of its plain envelope.
Meta = bytes


def meta_of(envelope: bytes | bytearray) -> Meta:
    """Kind and version of a stored envelope, a hint reported as the plain kind it carries."""
    kind = envelope[0]
    if kind > KIND_TOMBSTONE:
        kind -= 2
    return bytes((kind,)) + bytes(envelope[1:HEADER_SIZE])


def leaf_hash(key: bytes, meta: Meta) -> int:
    # The meta has a fixed size, so key + meta is unambiguous.
    return int.from_bytes(hashlib.blake2b(key + meta, digest_size=8).digest(), "big")


def bucket_of(position: int, start: int, end: int, buckets: int) -> int:
    """The bucket of ``position`` in the arc ``(start, end]`` (``start == end``: the whole ring)."""
    span = (end - start) % RING_SIZE or RING_SIZE
    return ((position - start - 1) % RING_SIZE) * buckets // span


class ArcScan:
    """What one node holds in an arc: per bucket a digest, and the keys with their metas."""

    __slots__ = ("digests", "entries")

    def __init__(self, buckets: int) -> None:
        self.digests = [0] * buckets
        self.entries: list[dict[bytes, Meta]] = [{} for _ in range(buckets)]


def scan_arc(
    store_scan: Callable[[KeyRange], object],
    start: int,
    end: int,
    buckets: int,
    into: ArcScan | None = None,
    after: int | None = None,
    limit: int | None = None,
) -> tuple[ArcScan, int | None]:
    """Scan ``(start, end]`` of a backend (``store_scan``: its ``scan``) into an :class:`ArcScan`:
    the part after position ``after`` (None: from the start), at most ``limit`` entries. Returns the
    scan and where to go on from (None: the arc is done), so that a large arc is read in steps."""
    result = ArcScan(buckets) if into is None else into
    digests = result.digests
    entries = result.entries
    taken = 0
    last: int | None = None
    key_range = KeyRange(start if after is None else after, end)
    if after is not None and after == end:
        return result, None
    for key, envelope in store_scan(key_range):  # type: ignore[attr-defined]
        position = ring_position(key)
        meta = meta_of(envelope)
        index = bucket_of(position, start, end, buckets)
        digests[index] = (digests[index] + leaf_hash(key, meta)) & _MASK
        entries[index][key] = meta
        taken += 1
        if limit is not None and taken >= limit:
            last = position
            break
    return result, last


class AntiEntropy:
    """One node's anti-entropy rounds and the handlers of the other nodes' (module docstring)."""

    def __init__(self, replication: Replication) -> None:
        self.replication = replication
        self.node = replication.node
        self.loop = replication.node.loop
        self.rounds = 0
        self.keys_repaired = 0
        self.bytes_sent = 0
        self.tombstones_purged = 0
        self.surplus_dropped = 0
        #: Arc syncs and surplus moves under way (``transfers_in_progress`` in stats).
        self.in_progress = 0
        self._running = False
        self._round_started = 0.0
        #: The members changed while a round ran: run another right after it.
        self._again = False
        self._rest_until = 0.0
        self._timer: PeriodicTimer | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        node = self.node
        node.register_rpc(AE_DIGEST, self._serve_digest)
        node.register_rpc(AE_KEYS, self._serve_keys)
        node.register_rpc(AE_PURGE, self._serve_purge)
        interval = node.settings.replication.anti_entropy_interval
        self._timer = self.loop.call_every(interval, self.run_round)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- scans ---------------------------------------------------------------------------------------

    def _scan(
        self, start: int, end: int, done: Callable[[ArcScan | None], None], buckets: int = BUCKETS
    ) -> None:
        """Scan an arc in steps of :data:`SCAN_STEP` entries: on the loop, one step per pass (a volatile
        backend); on the storage thread, one step per job (a blocking one), so that neither the loop
        nor the writes waiting for the storage thread wait for a whole arc."""
        backend = self.node.backend
        commit = self.node.group_commit
        result = ArcScan(buckets)

        def step(after: int | None) -> None:
            job = functools.partial(scan_arc, backend.scan, start, end, buckets, result, after, SCAN_STEP)
            if commit is None:
                try:
                    stepped(job(), None)
                except Exception as exc:
                    stepped(None, exc)
            else:
                commit.run(job, stepped)

        def stepped(outcome: tuple[ArcScan, int | None] | None, error: BaseException | None) -> None:
            if error is not None or outcome is None:
                log.error("anti-entropy scan failed: %s", error)
                done(None)
                return
            _, after = outcome
            if after is None:
                done(result)
            else:
                self.loop.call_soon(step, after)

        step(None)

    # --- a round -------------------------------------------------------------------------------------

    def run_round(self, urgent: bool = False) -> None:
        """Start a round unless one is running (or the ring keeps one copy per key), or the node is
        resting after the last one. ``urgent`` (the members changed): no rest, and if a round is
        running, another follows it at once."""
        replication = self.replication
        if self._running:
            self._again |= urgent
            return
        if not replication.active or (not urgent and self.loop.time() < self._rest_until):
            return
        self._running = True
        self._round_started = self.loop.time()
        members = replication.members
        ids = list(members.ids)
        me = replication.me.node_id
        now = self.loop.time()
        steps: list[Callable[[Callable[[], None]], None]] = []
        placement = replication.placement
        for index, end in enumerate(ids):
            start = ids[index - 1]
            preference = placement.preference_list(end)
            targets = placement.targets(end, now)
            leader = next((node for node in preference if members.is_up(node.node_id, now)), None)
            if leader is not None and leader.node_id == me:
                peers = [target for target in targets if target.node.node_id != me]
                purge = len(peers) == len(preference) - 1 and all(t.hint_for is None for t in peers)
                steps.append(functools.partial(self._sync_arc, start, end, peers, purge))
            elif all(node.node_id != me for node in preference):
                steps.append(functools.partial(self._move_surplus, start, end, preference))
        self._run_steps(steps)

    def _run_steps(self, steps: list[Callable[[Callable[[], None]], None]]) -> None:
        if not steps:
            self._running = False
            self.rounds += 1
            # Rest for REST_FACTOR times as long as the round took: on a large store a round is long,
            # and repair must not take more than about a tenth of the node's time.
            self._rest_until = self.loop.time() + REST_FACTOR * (self.loop.time() - self._round_started)
            if self._again:
                self._again = False
                self.loop.call_soon(self.run_round, True)
            return
        step = steps.pop(0)
        self.in_progress += 1

        def next_step() -> None:
            self.in_progress -= 1
            # A callback of its own: a long round must not grow the stack.
            self.loop.call_soon(self._run_steps, steps)

        try:
            step(next_step)
        except Exception:
            log.exception("anti-entropy step failed")
            next_step()

    # --- sync of one arc -----------------------------------------------------------------------------

    def _sync_arc(
        self, start: int, end: int, peers: list[Target], purge: bool, done: Callable[[], None]
    ) -> None:
        def scanned(mine: ArcScan | None) -> None:
            if mine is None:
                done()
                return
            in_sync: list[bool] = []
            self._sync_peers(start, end, mine, list(peers), in_sync, purge, done)

        self._scan(start, end, scanned)

    def _sync_peers(
        self,
        start: int,
        end: int,
        mine: ArcScan,
        peers: list[Target],
        in_sync: list[bool],
        purge: bool,
        done: Callable[[], None],
    ) -> None:
        if not peers:
            if purge and in_sync and all(in_sync):
                self._purge(mine)
            done()
            return
        target = peers.pop(0)

        def synced(ok: bool) -> None:
            in_sync.append(ok)
            self._sync_peers(start, end, mine, peers, in_sync, purge, done)

        self._sync_with(start, end, mine, target, synced)

    def _call(self, node: NodeRef, op: int, body: bytes) -> Future[V2Response]:
        from funnelkvs.ring.driver import split_address

        host, port = split_address(node.address)
        self.bytes_sent += len(body)
        return self.node.peer(host, port, "replica").call(op, body, timeout=CALL_TIMEOUT)

    def _sync_with(
        self, start: int, end: int, mine: ArcScan, target: Target, synced: Callable[[bool], None]
    ) -> None:
        """Compare the arc with one target; ``synced(True)`` when it was in sync already."""
        future = self._call(target.node, AE_DIGEST, encode_digest_request(start, end, BUCKETS))

        def digests(answer: Future[V2Response]) -> None:
            try:
                response = answer.result()
                if response.status != Status.SUCCESS:
                    raise RemoteProtocolError(f"AE_DIGEST answered status {response.status}")
                theirs = decode_digests(response.body, BUCKETS)
            except Exception as exc:
                log.debug("anti-entropy with %s: %s", target.node.address, exc)
                synced(False)
                return
            differ = [index for index in range(BUCKETS) if theirs[index] != mine.digests[index]]
            if not differ:
                synced(True)
                return
            keys = self._call(target.node, AE_KEYS, encode_keys_request(start, end, BUCKETS, differ))
            keys.add_done_callback(lambda answer: self._compare(mine, differ, target, answer, synced))

        future.add_done_callback(digests)

    def _compare(
        self,
        mine: ArcScan,
        differ: list[int],
        target: Target,
        answer: Future[V2Response],
        synced: Callable[[bool], None],
    ) -> None:
        try:
            response = answer.result()
            if response.status != Status.SUCCESS:
                raise RemoteProtocolError(f"AE_KEYS answered status {response.status}")
            theirs = dict(decode_metas(response.body))
        except Exception as exc:
            log.debug("anti-entropy with %s: %s", target.node.address, exc)
            synced(False)
            return
        coordinator = self.replication.coordinator
        store = self.replication.store
        ours: dict[bytes, Meta] = {}
        for index in differ:
            ours.update(mine.entries[index])
        pushed = pulled = 0
        for key, meta in ours.items():
            other = theirs.get(key)
            if other is not None and other[1:] >= meta[1:]:
                continue
            try:
                envelope = store.read(key)
            except StorageBusy:
                continue
            if envelope is None:
                continue
            plain = from_hint(envelope)[0] if is_hint(envelope) else bytes(envelope)
            self.bytes_sent += len(plain)
            coordinator.send_copy(target, key, plain, _ignore)
            pushed += 1
        if target.hint_for is None:
            # Pull what the replica has newer (a fallback's hints reach us through handoff).
            for key, meta in theirs.items():
                own = ours.get(key)
                if own is not None and own[1:] >= meta[1:]:
                    continue
                self.replication.channels.read(target.node, key, functools.partial(self._pulled, key))
                pulled += 1
        self.keys_repaired += pushed + pulled
        synced(False)

    def _pulled(self, key: bytes, envelope: bytes | None, failed: bool, timed_out: bool) -> None:
        if envelope is None or failed:
            return
        plain = from_hint(envelope)[0] if is_hint(envelope) else envelope
        self.replication.store.write(key, plain)

    # --- tombstone purge -----------------------------------------------------------------------------

    def _purge(self, mine: ArcScan) -> None:
        grace_ms = int(self.node.settings.replication.tombstone_grace * 1000)
        now_ms = time.time_ns() // 1_000_000
        old: list[tuple[bytes, Meta]] = []
        for bucket in mine.entries:
            for key, meta in bucket.items():
                if meta[0] == KIND_TOMBSTONE:
                    physical_ms = int.from_bytes(meta[1:9], "big") >> LOGICAL_BITS
                    if now_ms - physical_ms > grace_ms:
                        old.append((key, meta))
        if not old:
            return
        body = encode_metas(old)
        for node in self.replication.placement.preference_list(ring_position(old[0][0])):
            if node.node_id != self.replication.me.node_id:
                self._call(node, AE_PURGE, body)
        self.tombstones_purged += self._remove_exact(old)

    def _remove_exact(self, items: list[tuple[bytes, Meta]]) -> int:
        store = self.replication.store
        removed = 0
        for key, meta in items:
            try:
                current = store.read(key)
            except StorageBusy:
                continue
            if current is not None and current[0] == KIND_TOMBSTONE and meta_of(current) == meta:
                store.remove(key)
                removed += 1
        return removed

    # --- surplus copies ------------------------------------------------------------------------------

    def _move_surplus(
        self, start: int, end: int, preference: list[NodeRef], done: Callable[[], None]
    ) -> None:
        replication = self.replication
        members = replication.members
        now = self.loop.time()
        if not preference or not all(members.is_up(node.node_id, now) for node in preference):
            done()  # a preference-list member is down: keep the copies until it is back
            return

        def scanned(mine: ArcScan | None) -> None:
            if mine is None:
                done()
                return
            moving: list[bytes] = []
            for bucket in mine.entries:
                for key in bucket:
                    moving.append(key)
                    if len(moving) >= SURPLUS_BATCH:
                        break
            if not moving:
                done()
                return
            self._push_and_drop(moving, preference, done)

        self._scan(start, end, scanned)

    def _push_and_drop(self, keys: list[bytes], preference: list[NodeRef], done: Callable[[], None]) -> None:
        replication = self.replication
        store = replication.store
        members = replication.members
        pending = 0
        finished = False

        def one_done() -> None:
            nonlocal pending
            pending -= 1
            if pending == 0 and finished:
                done()

        for key in keys:
            try:
                envelope = store.read(key)
            except StorageBusy:
                continue
            if envelope is None:
                continue
            envelope = bytes(envelope)
            if is_hint(envelope):
                plain, target_id = from_hint(envelope)
                if members.get(int.from_bytes(target_id, "big")) is not None:
                    continue  # hinted handoff's: its target is still a member
            else:
                plain = envelope
            pending += 1
            self._move_one(key, envelope, plain, preference, one_done)
        finished = True
        if pending == 0:
            done()

    def _move_one(
        self, key: bytes, envelope: bytes, plain: bytes, preference: list[NodeRef], done: Callable[[], None]
    ) -> None:
        acks = 0
        answered = 0

        def written(ok: bool, timed_out: bool) -> None:
            nonlocal acks, answered
            answered += 1
            acks += ok
            if answered < len(preference):
                return
            if acks == len(preference):
                store = self.replication.store
                try:
                    current = store.read(key)
                except StorageBusy:
                    current = None
                if current is not None and bytes(current) == envelope:
                    store.remove(key)
                    self.surplus_dropped += 1
                    self.keys_repaired += 1
            done()

        for node in preference:
            self.bytes_sent += len(plain)
            self.replication.channels.write(node, key, plain, written)

    # --- the other side --------------------------------------------------------------------------------

    def _serve_digest(self, body: bytes) -> tuple[int, bytes] | Future[tuple[int, bytes]]:
        start, end, buckets = decode_digest_request(body)
        if buckets > 4096:
            raise RemoteProtocolError("AE_DIGEST: at most 4096 buckets")
        answer: Future[tuple[int, bytes]] = Future()

        def scanned(result: ArcScan | None) -> None:
            if result is None:
                answer.set_result((Status.SERVER_ERROR, b"scan failed"))
            else:
                answer.set_result((Status.SUCCESS, encode_digests(result.digests)))

        self._scan_for_peer(start, end, buckets, scanned)
        return answer

    def _serve_keys(self, body: bytes) -> tuple[int, bytes] | Future[tuple[int, bytes]]:
        start, end, buckets, indexes = decode_keys_request(body)
        if buckets > 4096:
            raise RemoteProtocolError("AE_KEYS: at most 4096 buckets")
        answer: Future[tuple[int, bytes]] = Future()

        def scanned(result: ArcScan | None) -> None:
            if result is None:
                answer.set_result((Status.SERVER_ERROR, b"scan failed"))
                return
            items = [item for index in indexes for item in result.entries[index].items()]
            answer.set_result((Status.SUCCESS, encode_metas(items)))

        self._scan_for_peer(start, end, buckets, scanned)
        return answer

    def _scan_for_peer(
        self, start: int, end: int, buckets: int, done: Callable[[ArcScan | None], None]
    ) -> None:
        self._scan(start, end, done, buckets)

    def _serve_purge(self, body: bytes) -> tuple[int, bytes]:
        items = decode_metas(body)
        removed = self._remove_exact(items)
        self.tombstones_purged += removed
        return Status.SUCCESS, removed.to_bytes(4, "big")


def _ignore(ok: bool, timed_out: bool) -> None:
    pass
