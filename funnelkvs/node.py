"""A FunnelKVS node: the loop, the listening socket, client connections, and request dispatch.

The path of a request: the loop reports a readable socket; :meth:`Node._on_client_event` reads once,
feeds the connection's :class:`~funnelkvs.protocol.RequestDecoder`, answers every complete request
into the connection's output buffer, and writes. The store is the backend chosen at start-up; there is
no plugin call on this path.

Group commit: with a blocking or durable backend (lmdb, sqlite) a pass's writes go to the storage
thread as one batch (:mod:`funnelkvs.group_commit`), which applies them and syncs once; a connection
with answers to writes of that batch is *held* (neither read nor written) until the batch has
committed, then its answers go out in order, or SERVER_ERROR from the first write if the sync failed.
Other connections are served meanwhile: nothing that can wait on the disk or a lock runs on the loop
thread. A GET the backend cannot answer without waiting holds its connection the same way while the
storage thread reads. With a volatile backend (memory) everything happens on the loop and answers are
written at once.

Back-pressure: a connection whose unsent output reaches ``limits.max_output_buffer`` is no longer read
(nor are its buffered requests decoded) until the output has drained, so a client that pipelines
without reading cannot make the node buffer without bound.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import socket
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from funnelkvs.chord import NodeRef
from funnelkvs.connection import MAX_SLOTS, ClientConnection
from funnelkvs.errors import StorageBusy, StorageError
from funnelkvs.group_commit import GroupCommit
from funnelkvs.keyspace import ring_digest, ring_position
from funnelkvs.late_answers import LateAnswers
from funnelkvs.listener import Listener
from funnelkvs.local_store import LocalStore
from funnelkvs.loop import EVENT_READ, EVENT_READ_ANY, EVENT_WRITE, EventLoop, PeriodicTimer
from funnelkvs.metrics import NodeMetrics
from funnelkvs.peer import PeerConnection
from funnelkvs.protocol import (
    DELETE,
    GET,
    HEADER_V1,
    INFO,
    NEED_DATA,
    PING,
    PUT,
    RESPONSE_HEAD,
    RESPONSE_INVALID,
    RESPONSE_NOT_FOUND,
    RESPONSE_OK,
    RESPONSE_PONG,
    RESPONSE_SERVER_ERROR,
    STATS,
    FrameError,
    RequestDecoder,
    Status,
    encode_response,
    stats_text,
)
from funnelkvs.protocol.v2 import V2Request, encode_v2_response
from funnelkvs.replication.rejoin import RejoinMemory, Remembered, absence_problem, rejoin_seeds
from funnelkvs.replication.remembering import Remembering
from funnelkvs.replication.service import Replication
from funnelkvs.ring.driver import RingDriver, resolve_seed
from funnelkvs.settings import Settings
from funnelkvs.storage.backend import StorageBackend
from funnelkvs.v2_service import SLOTTED, Handler, V2Service
from funnelkvs.versions import (
    HEADER_SIZE,
    KIND_HINT_VALUE,
    KIND_VALUE,
    HybridLogicalClock,
    Version,
    origin_of,
    pack_tombstone,
    pack_value,
    value_of,
)

if TYPE_CHECKING:
    from funnelkvs.plugins import PluginHost

log = logging.getLogger("funnelkvs.node")

#: One read takes up to this much. The node reads into one preallocated buffer: ``sock.recv(n)``
#: allocates n bytes per call, and past glibc's mmap threshold (128 KiB) that is an mmap/munmap pair
#: per read, which measured at 20 us against 4 us for a small request.
RECV_SIZE = 256 * 1024
#: Connections accepted per readable event on the listener, so a burst of connects does not starve
#: established clients.
ACCEPT_BATCH = 128
#: How long the node stops accepting after accept() failed (e.g. out of file descriptors).
ACCEPT_BACKOFF = 0.5
#: How long a stopping node keeps writing answers already decoded before it closes what is left.
DRAIN_TIMEOUT = 5.0
STATS_REFRESH_INTERVAL = 1.0
#: Values shorter than this are joined to their answer header at once (one list item, not two).
SMALL_VALUE = 4096

_SUCCESS = int(Status.SUCCESS)
pack_head = RESPONSE_HEAD.pack


class Node(LateAnswers):
    def __init__(
        self,
        settings: Settings,
        backend: StorageBackend,
        *,
        plugins: PluginHost | None = None,
        loop: EventLoop | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.plugins = plugins
        self.loop = loop or EventLoop()
        self.metrics = NodeMetrics(backend=backend.name)
        self._listener: Listener | None = None
        self._connections: dict[int, ClientConnection] = {}
        self._peers: dict[tuple[str, int, str], PeerConnection] = {}
        self._recv_buffer = bytearray(RECV_SIZE)
        self._recv_view = memoryview(self._recv_buffer)
        self._commit: GroupCommit | None = None
        if backend.blocking or backend.durable:
            self._commit = GroupCommit(backend, self.loop, self._on_committed)
        #: This node's copies: envelopes in the backend, the pending overlay, counts by kind.
        self.store = LocalStore(backend, self._commit, self.loop)
        #: Writes not yet committed (always empty without a storage thread); GET reads them first.
        self._pending: dict[bytes, tuple[bytes | bytearray | None, int]] = self.store.pending
        #: Stamps the versions of the writes this node coordinates (and of its single-copy writes).
        self.hlc = HybridLogicalClock()
        self._origin = 0
        self._max_output = settings.limits.max_output_buffer
        self.v2 = V2Service(self)
        self._stopping = False
        self._stopped = threading.Event()
        self._exporters: list[Any] = []
        self._stats_timer: PeriodicTimer | None = None
        self.host = settings.node.host
        self.port = settings.node.port
        #: The node's place on the Chord ring (made at start, once the port and so the address is known).
        self.ring: RingDriver | None = None
        #: Copies on the successor list, quorums, the coordinator (made at start, like the ring).
        self.replication: Replication | None = None
        #: The peers and last time alive kept in the data directory (persistent backends only).
        self._remembering: Remembering | None = None

    # --- identity ----------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The advertised ``host:port`` (known once the node has bound its port)."""
        return self.settings.node.advertise or f"{self.host}:{self.port}"

    @property
    def node_id(self) -> str:
        """The node's ring id in hex: ``node.id``, or SHA-1 of its advertised address."""
        if self.settings.node.id is not None:
            return self.settings.node.id
        return ring_digest(self.address.encode()).hex()

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and listen; after this the loop serves clients as soon as it runs. Raises StorageError
        when the data directory was last used longer ago than ``replication.tombstone_grace``."""
        limits = self.settings.limits
        remembered = Remembered()
        data_path = self.settings.storage.path
        if data_path is not None and self._commit is not None:
            # The peers this node last knew, and when it last ran (funnelkvs.replication.rejoin).
            memory = RejoinMemory(data_path)
            remembered = memory.load()
            self._remembering = Remembering(self, memory, remembered.last_alive)
            problem = absence_problem(
                remembered.last_alive,
                time.time(),
                self.settings.replication.tombstone_grace,
                data_dir=str(data_path),
            )
            if problem is not None:
                raise StorageError(problem)
        self._listener = Listener(
            self.loop,
            self.settings.node.host,
            self.settings.node.port,
            self._on_connection,
            lambda: len(self._connections) < limits.max_connections,
        )
        self.host, self.port = self._listener.host, self._listener.port
        self.metrics.node_id = self.node_id
        self.metrics.address = self.address
        # Seeds are resolved here, once, before the loop runs: never a DNS wait on the loop.
        configured = [resolve_seed(seed) for seed in self.settings.node.join]
        seeds = rejoin_seeds(configured, remembered, self.address)
        self.ring = RingDriver(
            self, NodeRef(int(self.node_id, 16), self.address), self.settings.ring, seeds, bool(configured)
        )
        self._origin = origin_of(self.node_id)
        if self.plugins is not None:
            strategy = self.plugins.create_strategy(self.settings.replication)
            resolver = self.plugins.create_resolver(self.settings.replication)
        else:
            from funnelkvs.replication import LastWriterWins, SuccessorListStrategy

            strategy, resolver = SuccessorListStrategy(), LastWriterWins()
        self.replication = Replication(self, self.store, strategy, resolver, self.hlc)
        self.replication.start()
        self.store.count_existing()
        self._listener.start()
        if self._commit is not None:
            self.loop.add_pass_end_hook(self._commit.flush)
        self._refresh_stats()
        self._stats_timer = self.loop.call_every(STATS_REFRESH_INTERVAL, self._refresh_stats)
        if self._remembering is not None:
            self._remembering.start()
        self.ring.start()
        if self.plugins is not None:
            self._exporters = self.plugins.start_exporters(self, self.settings)
            self.plugins.node_started(self)
        log.info(
            "funnelkvs node %s listening on %s:%d (backend %s)",
            self.node_id[:12],
            self.host,
            self.port,
            self.backend.name,
        )

    def serve_forever(self, install_signal_handlers: bool = True) -> None:
        """Run the loop until :meth:`stop` (or SIGINT/SIGTERM), then shut down cleanly."""
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.loop.run_forever()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Stop the node from any thread: stop accepting, finish answers in flight, close the store."""
        self.loop.call_soon_threadsafe(self._begin_stop)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.stop()

    def _begin_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._stats_timer is not None:
            self._stats_timer.cancel()
        if self._remembering is not None:
            self._remembering.stop()
        if self.ring is not None:
            self.ring.stop()
        for conn in list(self._connections.values()):
            conn.closing = True
            if conn.waiting or conn.slots:
                continue  # flushed (then closed) when its storage jobs and forwards are done
            if conn.out_size == 0:
                self._close(conn)
            else:
                self._set_events(conn, EVENT_WRITE)
        self.loop.call_later(DRAIN_TIMEOUT, self._finish_stop)
        self._maybe_finish_stop()

    def _maybe_finish_stop(self) -> None:
        if self._stopping and not self._connections:
            self.loop.stop()

    def _finish_stop(self) -> None:
        for conn in list(self._connections.values()):
            self._close(conn)
        self.loop.stop()

    def _shutdown(self) -> None:
        try:
            if self.plugins is not None:
                self.plugins.node_stopping(self)
                self.plugins.stop_exporters(self._exporters)
        finally:
            for conn in list(self._connections.values()):
                self._close(conn)
            for peer in list(self._peers.values()):
                peer.close()
            if self._listener is not None:
                self._listener.close()
            try:
                if self._remembering is not None:
                    self._remembering.save_now()
                # Every acknowledged write is already synced; this covers writes whose answers were
                # never sent (the client left), so that a clean stop keeps them too.
                if self._commit is not None:
                    self._commit.close()
                else:
                    self.backend.sync()
            finally:
                try:
                    self.backend.close()
                finally:
                    self.loop.close()
                    self._stopped.set()
                    log.info("funnelkvs node %s stopped", self.node_id[:12])

    # --- node-to-node ------------------------------------------------------------------------------

    def peer(self, host: str, port: int, channel: str = "data") -> PeerConnection:
        """The (cached) outbound connection to another node, on this node's loop. ``channel``:
        ``"data"`` for forwarded requests and transfers, ``"control"`` for the Chord RPCs, which must
        not queue behind thousands of forwarded requests: a ping that waits its turn there looks like
        a dead peer to the failure detector; ``"replica"`` for the coordinator's replica messages,
        which must not queue behind forwarded requests either (their answers wait on quorums that
        need this node's replica answers: a cycle)."""
        key = (host, port, channel)
        peer = self._peers.get(key)
        if peer is None or peer.closed:
            limits = self.settings.limits
            peer = PeerConnection(
                self.loop, (host, port), max_body=limits.max_key_size + limits.max_value_size + 1024
            )
            self._peers[key] = peer
        return peer

    # --- connections -------------------------------------------------------------------------------

    def _on_connection(self, sock: socket.socket, address: str) -> None:
        limits = self.settings.limits
        conn = ClientConnection(sock, address, RequestDecoder(limits.max_key_size, limits.max_value_size))
        self._connections[sock.fileno()] = conn
        self.metrics.connections_total += 1
        self.metrics.connections_current += 1
        # partial, not a lambda: one Python frame less per event.
        conn.handler = functools.partial(self._on_client_event, conn)
        self.loop.register(sock, EVENT_READ, conn.handler)

    def _set_events(self, conn: ClientConnection, events: int) -> None:
        if conn.events != events:
            conn.events = events
            self.loop.modify(conn.sock, events)

    @property
    def group_commit(self) -> GroupCommit | None:
        """The storage thread's batching, for a blocking or durable backend (else None)."""
        return self._commit

    @property
    def pending_writes(self) -> dict[bytes, tuple[bytes | bytearray | None, int]]:
        """Writes handed to the storage thread and not committed yet (GET reads them first)."""
        return self._pending

    def register_rpc(self, op: int, handler: Handler) -> None:
        """Answer v2 requests with op ``op`` by ``handler`` (see :meth:`V2Service.register`)."""
        self.v2.register(op, handler)

    def _close(self, conn: ClientConnection) -> None:
        if self._connections.pop(conn.sock.fileno(), None) is None:
            return
        if self._commit is not None:
            self._commit.returning.discard(conn)
        self.loop.unregister(conn.sock)
        conn.sock.close()
        conn.out.clear()
        conn.out_size = 0
        self.metrics.connections_current -= 1
        if self._stopping:
            self._maybe_finish_stop()

    def _on_client_event(self, conn: ClientConnection, mask: int) -> None:
        if mask & EVENT_WRITE:
            self._flush(conn)
            if conn.sock.fileno() < 0:
                return
        if mask & EVENT_READ_ANY and not conn.closing and not conn.paused:
            # A large value being received has a buffer of its own: the rest of it is read straight in.
            direct = conn.decoder.direct_buffer
            try:
                received = conn.sock.recv_into(self._recv_buffer if direct is None else direct)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn)
                return
            if not received:
                # The client closed (or half-closed) its side: answer what it sent, then close.
                conn.closing = True
                if not conn.waiting:
                    self._flush(conn)
                return
            self.metrics.bytes_received += received
            if direct is None:
                conn.decoder.feed(self._recv_view[:received].tobytes())
            else:
                conn.decoder.direct_received(received)
                # Drop our view of the value's buffer: while any view of it lives, the envelope
                # cannot be made in place (funnelkvs.versions.pack_value) and the value is copied.
                direct = None
            self._answer(conn)
            if not conn.waiting:  # else its answers wait for the storage thread, in order
                self._flush(conn)

    def _answer(self, conn: ClientConnection) -> None:
        """Decode and answer buffered requests until the decoder needs data or the output is full.

        Never writes: the caller flushes (at once, or once the storage thread has committed the writes).
        """
        next_event = conn.decoder.next_event
        backend = self.backend
        get = backend.get
        commit = self._commit
        pending = self._pending
        ring = self.ring
        forwarding = ring is not None and not ring.alone
        replication = self.replication
        coordinating = replication is not None and replication.active
        store = self.store
        if commit is not None and commit.returning:
            commit.returning.discard(conn)  # it is back: the next batch need not wait for it
        out = conn.out
        size = conn.out_size
        cap = self._max_output
        requests = self.metrics.requests_by_op
        # Where this pass's first unsynced write answer starts: a failed sync cuts the output there.
        sync_mark = -1 if (conn.wants_sync or commit is None) else None
        op: int
        key: bytes
        value: bytes | bytearray
        while size < cap and conn.slots < MAX_SLOTS:
            event = next_event()
            if event is NEED_DATA:
                break
            if type(event) is V2Request:
                if sync_mark is None and (event.op == PUT or event.op == DELETE):
                    sync_mark = len(out)  # before its answer: a failed sync cuts the output here
                answered = self.v2.answer(conn, event)
                if answered is None:
                    break  # the storage thread answers it; later requests wait behind it
                if answered is SLOTTED:
                    continue  # its place is in the output already
                out.append(answered)
                size += len(answered)  # type: ignore[arg-type]
                continue
            if type(event) is FrameError:
                self.metrics.protocol_errors += 1
                log.debug("client %s: %s", conn.address, event.reason)
                invalid = (
                    RESPONSE_INVALID
                    if event.request_id is None
                    else encode_v2_response(Status.INVALID_REQUEST, event.request_id, event.reason.encode())
                )
                out.append(invalid)
                size += len(invalid)
                if event.fatal:
                    conn.closing = True
                    break
                continue
            op, key, value = event  # type: ignore[misc,assignment]  # a Request: the rest is handled
            if (forwarding or coordinating) and op <= DELETE:  # GET, PUT, DELETE
                position = ring_position(key)
                if forwarding and not ring.owns(position):  # type: ignore[union-attr]
                    # Another node owns the key: its answer takes this place in the output.
                    slot = conn.add_slot()
                    done = functools.partial(self._on_forwarded, conn, slot)
                    ring.forwarder.forward(op, key, value, position, done)  # type: ignore[union-attr]
                    requests[op] += 1
                    continue
                if coordinating:
                    # This node coordinates the key's copies; the answer comes once a quorum has.
                    slot = conn.add_slot()
                    done = functools.partial(self._on_forwarded, conn, slot)
                    coordinator = replication.coordinator  # type: ignore[union-attr]
                    if op == GET:
                        coordinator.read(key, position, 0, done)
                    else:
                        coordinator.write(key, position, value if op == PUT else None, 0, done)
                    requests[op] += 1
                    continue
                transfers = ring.transfers  # type: ignore[union-attr]
                if transfers.incoming and transfers.covering(position) is not None:
                    if op != GET:
                        transfers.note_write(key, position)
                    elif self.v2.absent_here(key):
                        # Not here yet: the range is still on its way from its old owner.
                        slot = conn.add_slot()
                        transfers.read_through(key, functools.partial(self._on_forwarded, conn, slot))
                        requests[op] += 1
                        continue
            answer: bytes | bytearray
            try:
                if op == GET:
                    if pending:
                        entry = pending.get(key)
                        found = get(key) if entry is None else entry[0]
                    else:
                        found = get(key)
                    # The stored envelope: its kind, version, then the value (funnelkvs.versions).
                    kind = 0 if found is None else found[0]
                    if kind == KIND_VALUE:
                        length = len(found) - HEADER_SIZE  # type: ignore[arg-type]
                        if length < SMALL_VALUE:
                            answer = pack_head(HEADER_V1, _SUCCESS, length) + found[HEADER_SIZE:]  # type: ignore[index]
                        else:
                            # A large value goes out as a second piece: it is copied once, by the
                            # join in _flush, however large it is.
                            out.append(pack_head(HEADER_V1, _SUCCESS, length))
                            size += 9
                            answer = memoryview(found)[HEADER_SIZE:]  # type: ignore[arg-type,assignment]
                    elif kind == KIND_HINT_VALUE:
                        answer = encode_response(_SUCCESS, value_of(found))  # type: ignore[arg-type]
                    else:
                        answer = RESPONSE_NOT_FOUND
                elif op == PUT or op == DELETE:
                    version = Version(self.hlc.now(), self._origin)
                    envelope = pack_value(version, value) if op == PUT else pack_tombstone(version)
                    if commit is not None and sync_mark is None:
                        sync_mark = len(out)
                    store.write(key, envelope)
                    answer = RESPONSE_OK
                elif op == PING:
                    answer = RESPONSE_PONG
                elif op == STATS:
                    answer = encode_response(_SUCCESS, stats_text(store.live, store.value_bytes()))
                elif op == INFO:
                    answer = encode_response(_SUCCESS, json.dumps(self.info()).encode())
                else:  # the decoder only yields v1 ops; anything else is a bug, answered as one
                    raise AssertionError(f"decoder yielded op {op:#04x}")
            except StorageBusy:
                # Reading would wait (a lock): the storage thread reads, and this connection's later
                # requests wait behind the answer, in order.
                requests[op] += 1
                conn.waiting += 1
                commit.read(key, functools.partial(self.on_read, conn, -1))  # type: ignore[union-attr]
                break
            except Exception:
                log.exception("request op=%#04x from %s failed", op, conn.address)
                self.metrics.handler_errors += 1
                answer = RESPONSE_SERVER_ERROR
            requests[op] += 1
            out.append(answer)
            size += len(answer)
        conn.out_size = size
        conn.paused = size >= cap or conn.slots >= MAX_SLOTS
        if sync_mark is not None and sync_mark >= 0:
            conn.wants_sync = True
            conn.sync_mark = sync_mark
            conn.waiting += 1
            commit.wait(conn)  # type: ignore[union-attr]
        if conn.waiting:
            self._hold(conn)

    def _flush(self, conn: ClientConnection) -> None:
        """Write as much ready output as the socket takes (everything up to the first answer still to
        come from another node); while it drains completely and requests wait undecoded (the output
        had reached the cap), answer more; then choose the events to wait for.

        A loop, not mutual recursion with _answer: a small output cap would otherwise recurse once
        per request."""
        cap = self._max_output
        while True:
            out = conn.out
            ready = conn.ready_prefix() if conn.slots else len(out)
            if ready and conn.out_size:
                data = out[0] if ready == 1 else b"".join(out[:ready])
                try:
                    sent = conn.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    self._close(conn)
                    return
                self.metrics.bytes_sent += sent
                conn.out_size -= sent
                if sent < len(data):
                    out[:ready] = [data[sent:]]
                    # Read more only when nothing waits undecoded and the output is under the cap:
                    # otherwise a client that pipelines without reading would grow the input buffer.
                    reading = not conn.closing and not conn.paused and conn.out_size < cap
                    self._set_events(conn, EVENT_WRITE | EVENT_READ if reading else EVENT_WRITE)
                    return
                if ready == len(out):
                    out.clear()
                else:
                    del out[:ready]
            if conn.slots:
                # Blocked behind an answer another node still owes: nothing to write until it comes
                # (_on_forwarded flushes again). Go on reading unless paused or closing.
                if conn.closing or conn.paused:
                    self._hold(conn)
                else:
                    self._set_events(conn, EVENT_READ)
                return
            if conn.paused:
                # Requests left undecoded when the output was full: answer them now it has drained.
                self._answer(conn)
                if conn.waiting:
                    return  # their answers go out once the storage thread is done
                continue
            if conn.closing:
                self._close(conn)
                return
            if conn.events != EVENT_READ:
                self._set_events(conn, EVENT_READ)
            return

    def _refresh_stats(self) -> None:
        self.metrics.refresh_storage(self.store.live, self.store.value_bytes())

    def info(self) -> dict[str, Any]:
        """What ``funnelkvs stats --json`` shows about this node."""
        replication = self.replication
        return {
            # Live keys stored here as a replica (primaries and replicas; not tombstones, not hints).
            "keys": self.store.live,
            "bytes": self.store.value_bytes(),
            "hints_pending": self.store.hints,
            "tombstones": self.store.tombstones,
            "transfers_in_progress": 0 if self.ring is None else len(self.ring.transfers.incoming),
            # Quorums, hints and repair (added to transfers_in_progress: anti-entropy steps).
            **(Replication.idle_counters() if replication is None else replication.counters()),
            "node_id": self.node_id,
            "address": self.address,
            "backend": self.backend.name,
            "uptime_s": round(self.metrics.uptime_s, 3),
            "connections": self.metrics.connections_current,
            # Clients (the bench tool among them) check sizes against these before sending.
            "max_key_size": self.settings.limits.max_key_size,
            "max_value_size": self.settings.limits.max_value_size,
            "ring": None if self.ring is None else self.ring.describe(),
        }
