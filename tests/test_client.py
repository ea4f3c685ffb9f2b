"""The client library: against a real node, and against a tiny in-test server for the faults a real
node does not produce on demand (silence, dropped connections, error statuses)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from funnelkvs import Client
from funnelkvs.client import Pipeline, parse_address, parse_addresses
from funnelkvs.errors import (
    ClientClosed,
    FunnelKVSError,
    InvalidRequest,
    KeyNotFound,
    LocalProtocolError,
    NodeUnreachable,
    NotAnswered,
    NotResponsible,
    RemoteProtocolError,
    RequestTimeout,
    ServerError,
)
from funnelkvs.keyspace import ring_digest
from funnelkvs.protocol import (
    NEED_DATA,
    RequestDecoder,
    Status,
    encode_response,
    stats_text,
)
from funnelkvs.testing.cluster import NodeProcess, closed_port

# --- a tiny threaded v1 server with fault switches -------------------------------------------------


class FakeNode:
    """Answers v1 requests from a dict, one thread per connection. Switches inject faults."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.store: dict[bytes, bytes] = {}
        self.lock = threading.Lock()
        self.silent = False
        self.drop_requests = 0
        self.force_status: int | None = None
        self.stats_extra = b""
        self.garbage: bytes | None = None
        #: Answer the next requests of a connection with these statuses, then close it.
        self.answer_then_close: list[int] | None = None
        self.accepted = 0
        self.open_connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            with self.lock:
                self.accepted += 1
                self.open_connections.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _answer(self, op: int, key: bytes, value: bytes) -> bytes:
        if self.force_status is not None:
            return encode_response(self.force_status, b"")
        with self.lock:
            if op == 1:
                found = self.store.get(key)
                return encode_response(Status.NOT_FOUND) if found is None else encode_response(0, found)
            if op == 2:
                self.store[key] = value
            elif op == 3:
                self.store.pop(key, None)
            elif op == 4:
                return encode_response(0, b"pong")
            elif op == 5:
                size = sum(len(v) for v in self.store.values())
                return encode_response(0, stats_text(len(self.store), size) + self.stats_extra)
        return encode_response(0)

    def _serve(self, sock: socket.socket) -> None:
        decoder = RequestDecoder()
        sock.settimeout(0.05)
        try:
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                decoder.feed(data)
                out = []
                while (request := decoder.next_event()) is not NEED_DATA:
                    if self.drop_requests > 0:
                        self.drop_requests -= 1
                        return
                    if self.silent:
                        continue
                    if self.garbage is not None:
                        out.append(self.garbage)
                        continue
                    if self.answer_then_close is not None:
                        out.append(encode_response(self.answer_then_close.pop(0)))
                        if not self.answer_then_close:
                            sock.sendall(b"".join(out))
                            return
                        continue
                    out.append(self._answer(*request))  # type: ignore[misc]
                if out:
                    sock.settimeout(None)
                    sock.sendall(b"".join(out))
                    sock.settimeout(0.05)
        except OSError:
            pass
        finally:
            sock.close()

    def drop_all_connections(self) -> None:
        with self.lock:
            conns, self.open_connections = self.open_connections, []
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.drop_all_connections()
        for thread in self._threads:
            thread.join(2)
        self.listener.close()


@pytest.fixture
def fake() -> Iterator[FakeNode]:
    node = FakeNode()
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with NodeProcess.start(tmp_path_factory.mktemp("node")) as process:
        yield process


# --- addresses --------------------------------------------------------------------------------------


def test_parse_address_forms() -> None:
    assert parse_address("127.0.0.1:8001") == ("127.0.0.1", 8001)
    assert parse_address("[::1]:9") == ("::1", 9)
    assert str(parse_address("[::1]:9")) == "[::1]:9"
    assert parse_addresses("a:1, b:2") == [("a", 1), ("b", 2)]
    assert parse_addresses(["a:1", "b:2,c:3"]) == [("a", 1), ("b", 2), ("c", 3)]
    for bad in ("nohost", ":80", "h:0", "h:65536", "h:x", "::1:80", "[::1]80", ""):
        with pytest.raises(ValueError):
            parse_addresses(bad)


# --- against a real node ----------------------------------------------------------------------------


def test_real_node_roundtrip(node: NodeProcess) -> None:
    with Client(node.address) as client:
        assert client.ping() == "pong"
        client.put("greeting", "héllo")
        assert client.get("greeting") == "héllo".encode()
        assert client.get(b"greeting") == "héllo".encode()
        client.put(b"\x00\xffbin", b"\x00\x01\x02")
        assert client[b"\x00\xffbin"] == b"\x00\x01\x02"
        assert client.get("absent") is None
        assert client.get("absent", b"dflt") == b"dflt"
        with pytest.raises(KeyNotFound) as info:
            client["absent"]
        assert isinstance(info.value, KeyError)
        client.put("empty", b"")
        assert client.get("empty") == b""
        client.delete("greeting")
        client.delete("greeting")  # deleting a missing key is fine
        assert client.get("greeting") is None
        stats = client.stats()
        assert stats["keys"] >= 2 and stats["size"] >= 3


def test_real_node_info(node: NodeProcess) -> None:
    with Client(node.address) as client:
        client.put("info-key", "12345")
        info = client.info()
    assert info["address"] == node.address
    assert info["node_id"] == ring_digest(node.address.encode()).hex()
    assert info["keys"] >= 1 and info["bytes"] >= 5
    assert set(info) >= {"keys", "bytes", "node_id", "address", "backend", "uptime_s"}


def test_pool_shared_by_threads(node: NodeProcess) -> None:
    errors: list[BaseException] = []

    with Client(node.address, pool_size=4) as client:

        def work(worker: int) -> None:
            try:
                for i in range(500):
                    key = f"t{worker}:{i}"
                    client.put(key, f"value {worker} {i}")
                    assert client.get(key) == f"value {worker} {i}".encode()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        values = client.get_many(f"t{w}:{i}" for w in range(8) for i in range(500))
    assert values == [f"value {w} {i}".encode() for w in range(8) for i in range(500)]


def test_a_node_without_ring_view_keeps_the_plain_v1_path(fake: FakeNode) -> None:
    # The fake, like the reference implementation, answers a v2 frame in v1: the client turns routing
    # off for good after that one query and goes on with v1 on the same connection.
    with Client(fake.address) as client:
        client.put("k", "v")
        assert not client.routing and client.ring_view is None
        assert client.get("k") == b"v"
        assert client.get_many(["k", "nope", "k"]) == [b"v", None, b"v"]
        assert client.routing_counts["refreshes"] == 1
    assert fake.accepted == 1


def test_pool_never_exceeds_its_size(fake: FakeNode) -> None:
    with Client(fake.address, pool_size=3) as client:
        threads = [
            threading.Thread(target=lambda: [client.put(b"k", b"v") for _ in range(100)]) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert 1 <= fake.accepted <= 3


def test_pipeline_keeps_request_order(node: NodeProcess) -> None:
    with Client(node.address) as client:
        with client.pipeline() as pipe:
            for i in range(1000):
                pipe.put(f"p{i}", f"v{i}")
        assert isinstance(pipe, Pipeline) and len(pipe) == 0  # executed on leaving the block
        pipe = client.pipeline()
        pipe.get("p1").get("missing").put("p2", "new").get("p2").delete("p1").get("p1").ping().stats()
        results = pipe.execute()
        assert results[:7] == [b"v1", None, None, b"new", None, None, "pong"]
        assert results[7]["keys"] >= 999
        assert client.get_many(f"p{i}" for i in range(3, 1000)) == [f"v{i}".encode() for i in range(3, 1000)]


def test_pipeline_large_batch_does_not_deadlock(node: NodeProcess) -> None:
    # 300 GETs of a 256 KiB value: 75 MiB of answers to a batch written in one go. Without reads
    # interleaved with the writes, both sides would block on full socket buffers.
    big = bytes(range(256)) * 1024
    with Client(node.address, timeout=10) as client:
        client.put("big", big)
        values = client.get_many(["big"] * 300, batch_size=300)
    assert len(values) == 300 and all(v == big for v in values)


def test_put_many_accepts_mapping_and_pairs(node: NodeProcess) -> None:
    with Client(node.address) as client:
        assert client.put_many({"m1": "a", b"m2": b"b"}) == 2
        assert client.put_many(((f"g{i}", str(i)) for i in range(2500)), batch_size=1000) == 2500
        assert client.get_many(["m1", "m2", "g2499", "nope"]) == [b"a", b"b", b"2499", None]


# --- failures ---------------------------------------------------------------------------------------


def test_unreachable_is_quick_and_typed() -> None:
    port = closed_port()
    client = Client(f"127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(NodeUnreachable, match=f"127.0.0.1:{port}"):
        client.ping()
    assert time.monotonic() - started < 1.0
    client.close()


def test_failover_to_next_address(fake: FakeNode) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    with Client([dead, fake.address], pool_size=2) as client:
        for _ in range(5):
            assert client.ping() == "pong"
    with (
        Client(f"{dead},127.0.0.1:{closed_port()}") as client,
        pytest.raises(NodeUnreachable, match="any of 2"),
    ):
        client.ping()


def test_silent_node_times_out_within_bound(fake: FakeNode) -> None:
    fake.silent = True
    with Client(fake.address, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            client.get("k")
        assert 0.25 <= time.monotonic() - started < 1.5
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            client.get_many(["a", "b"])
        assert time.monotonic() - started < 1.5
        fake.silent = False
        assert client.ping() == "pong"  # the timed-out connection was discarded, a fresh one works


def test_reconnects_after_node_closed_idle_connections(fake: FakeNode) -> None:
    with Client(fake.address, pool_size=2) as client:
        client.put("k", "v")
        fake.drop_all_connections()
        time.sleep(0.1)
        assert client.get("k") == b"v"
        assert fake.accepted == 2


def test_retry_once_when_a_pooled_connection_drops_mid_request(fake: FakeNode) -> None:
    with Client(fake.address, pool_size=1) as client:
        client.put("k", "v")
        fake.drop_requests = 1  # the node closes the connection on the next request, unanswered
        assert client.get("k") == b"v"
        assert fake.accepted == 2
        fake.drop_requests = 2  # the retry fails too: the caller learns of it
        with pytest.raises(NodeUnreachable):
            client.get("k")


def test_no_retry_when_disabled_or_on_a_fresh_connection(fake: FakeNode) -> None:
    # routing=False: the dropped request must be the put (else the ring-view query takes the drop).
    with Client(fake.address, retry=False, routing=False) as client:
        client.ping()
        fake.drop_requests = 1
        with pytest.raises(NodeUnreachable):
            client.put("k", "v")
        assert client.ping() == "pong"
    with Client(fake.address, routing=False) as client:
        fake.drop_requests = 1
        with pytest.raises(NodeUnreachable):
            client.ping()  # first use: nothing stale to blame, so no replay
        assert fake.drop_requests == 0


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (Status.INVALID_REQUEST, InvalidRequest),
        (Status.SERVER_ERROR, ServerError),
        (Status.NOT_RESPONSIBLE, NotResponsible),
        (Status.TIMEOUT, RequestTimeout),
        (0x7F, RemoteProtocolError),
    ],
)
def test_error_statuses_are_typed(fake: FakeNode, status: int, error: type[FunnelKVSError]) -> None:
    fake.force_status = status
    with Client(fake.address) as client:
        with pytest.raises(error):
            client.put("k", "v")
        if isinstance(status, Status):
            fake.force_status = None
            assert client.ping() == "pong"  # an error status leaves the connection usable


def test_pipeline_errors_are_collected(fake: FakeNode) -> None:
    with Client(fake.address) as client:
        fake.force_status = Status.SERVER_ERROR
        pipe = client.pipeline().put("a", "1").get("a")
        results = pipe.execute(raise_on_error=False)
        assert [type(r) for r in results] == [ServerError, ServerError]
        with pytest.raises(ServerError):
            client.pipeline().ping().execute()


def test_garbage_answer_is_a_remote_protocol_error(fake: FakeNode) -> None:
    fake.garbage = b"HTTP/1.1 400 Bad Request\r\n\r\n"
    with Client(fake.address) as client, pytest.raises(RemoteProtocolError):
        client.ping()


def test_local_validation_sends_nothing(fake: FakeNode) -> None:
    with Client(fake.address, max_key_size=8, max_value_size=16) as client:
        with pytest.raises(LocalProtocolError):
            client.put("k" * 9, "v")
        with pytest.raises(LocalProtocolError):
            client.put("k", "v" * 17)
        with pytest.raises(LocalProtocolError):
            client.pipeline().get("x" * 9)
        with pytest.raises(TypeError):
            client.put(123, "v")  # type: ignore[arg-type]
        assert fake.accepted == 0


def test_close_and_context_manager(fake: FakeNode) -> None:
    client = Client(fake.address)
    with client as same:
        assert same is client
        client.ping()
    assert client.closed
    with pytest.raises(ClientClosed):
        client.ping()
    client.close()  # idempotent
    with pytest.raises(ClientClosed):
        client.pipeline().ping().execute()


def test_close_while_a_call_is_in_flight(fake: FakeNode) -> None:
    fake.silent = True
    client = Client(fake.address, timeout=0.5)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            client.ping()
        except FunnelKVSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.1)
    client.close()
    thread.join(3)
    assert outcome and isinstance(outcome[0], RequestTimeout)
    with pytest.raises(ClientClosed):
        client.ping()


def test_info_falls_back_to_stats_on_a_node_without_the_info_op() -> None:
    """A reference node answers INFO (op 06) with INVALID_REQUEST; info() then uses STATS."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        decoder = RequestDecoder()
        with conn:
            while data := conn.recv(4096):
                decoder.feed(data)
                while (event := decoder.next_event()) is not NEED_DATA:
                    if event.op == 0x06:  # type: ignore[union-attr]
                        conn.sendall(encode_response(Status.INVALID_REQUEST))
                    else:
                        conn.sendall(encode_response(Status.SUCCESS, b"keys: 2, size: 7"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host, port = server.getsockname()
    try:
        with Client(f"{host}:{port}", pool_size=1) as client:
            info = client.info()
        assert info["keys"] == 2 and info["bytes"] == 7
        assert info["backend"] is None and info["uptime_s"] is None
    finally:
        server.close()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_timeouts_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError):
        Client("127.0.0.1:1", timeout=bad)
    with pytest.raises(ValueError):
        Client("127.0.0.1:1", connect_timeout=bad)


# --- a node that refuses a request and closes the connection (issue 6, kind 7) ----------------------


@pytest.fixture(scope="module")
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    config = {"limits": {"max_value_size": "1KB"}}
    with NodeProcess.start(tmp_path_factory.mktemp("small"), config=config) as process:
        yield process


def test_pipeline_reports_the_refused_request_and_what_was_not_answered(small_node: NodeProcess) -> None:
    with Client(small_node.address) as client:
        pipe = client.pipeline().put("a", "1").put("b", b"x" * 2000).get("a").ping()
        results = pipe.execute(raise_on_error=False)
        assert results[0] is None
        assert isinstance(results[1], InvalidRequest)
        assert "size limit" in str(results[1])
        assert [type(r) for r in results[2:]] == [NotAnswered, NotAnswered]
        assert "request 3 of 4" in str(results[2]) and "not carried out" in str(results[2])
        assert "PING (request 4 of 4)" in str(results[3])

        pipe = client.pipeline().put("c", "1").put("b", b"x" * 2000).get("a").ping()
        with pytest.raises(InvalidRequest, match="INVALID_REQUEST to PUT"):
            pipe.execute()
        assert client.get("a") == b"1" and client.get("c") == b"1"
        assert client.get("b") is None


def test_pipeline_with_much_queued_behind_the_refused_request(small_node: NodeProcess) -> None:
    # The node closes with most of the batch unread (a reset, not a clean close) while the client is
    # still sending: the answers that arrived before it count all the same.
    with Client(small_node.address) as client:
        pipe = client.pipeline().put("d", "1").put("b", b"x" * 2000)
        for _ in range(100_000):
            pipe.put("e", "1")
        results = pipe.execute(raise_on_error=False)
        assert len(results) == 100_002
        assert results[0] is None and isinstance(results[1], InvalidRequest)
        assert all(type(r) is NotAnswered for r in results[2:])
        assert client.get("e") is None
        assert client.get_many(["d", "b"]) == [b"1", None]


@pytest.mark.parametrize("size", [2000, 8 * 1024 * 1024])
def test_single_oversize_put_raises_the_nodes_answer(small_node: NodeProcess, size: int) -> None:
    with Client(small_node.address, pool_size=1) as client:
        client.ping()  # a pooled connection: the failure must not be taken for a stale one
        with pytest.raises(InvalidRequest, match="size limit"):
            client.put("big", b"x" * size)
        assert client.ping() == "pong"  # the closed connection was not lent again
        assert client.get("big") is None


def test_pipeline_closed_after_a_failed_sync_says_the_outcome_is_unknown(fake: FakeNode) -> None:
    fake.answer_then_close = [Status.SUCCESS, Status.SERVER_ERROR]
    with Client(fake.address, routing=False) as client:  # the scripted answers are for the pipeline
        results = client.pipeline().put("a", "1").put("b", "2").put("c", "3").execute(raise_on_error=False)
        assert results[0] is None and isinstance(results[1], ServerError)
        assert type(results[2]) is NotAnswered and "unknown" in str(results[2])


def test_pipeline_cut_without_an_error_answer_is_unreachable(fake: FakeNode) -> None:
    fake.answer_then_close = [Status.SUCCESS, Status.SUCCESS]
    with Client(fake.address, routing=False) as client:  # the scripted answers are for the pipeline
        with pytest.raises(NodeUnreachable, match="after 2 of 3 answers"):
            client.pipeline().ping().ping().ping().execute(raise_on_error=False)


# --- what a Client accepts (issue 6, kind 8) --------------------------------------------------------


def test_in_is_a_lookup_and_a_client_is_not_iterable(fake: FakeNode) -> None:
    with Client(fake.address) as client:
        client.put("x", "1")
        assert "x" in client and b"x" in client
        assert "y" not in client
        with pytest.raises(TypeError, match="key must be bytes or str"):
            assert 5 in client
        with pytest.raises(TypeError, match="not iterable"):
            iter(client)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((8001,), {}, r"'host:port' text .* not int 8001 \(for a local node: '127.0.0.1:8001'\)"),
        ((b"127.0.0.1:8001",), {}, "not bytes"),
        (([8001],), {}, "not int 8001"),
        (("127.0.0.1:1",), {"timeout": "5"}, "timeout must be a number of seconds or None, not str '5'"),
        (("127.0.0.1:1",), {"connect_timeout": "5"}, "connect_timeout must be a number"),
        (("127.0.0.1:1",), {"pool_size": "8"}, "pool_size must be a whole number"),
        (("127.0.0.1:1",), {"max_value_size": 1.5}, "max_value_size must be a whole number"),
    ],
)
def test_wrong_argument_types_are_refused_clearly(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Client(*args, **kwargs)  # type: ignore[arg-type]


def test_address_pairs_are_accepted(fake: FakeNode) -> None:
    with Client(("127.0.0.1", fake.port)) as client:
        assert client.ping() == "pong"
        with Client(client.addresses) as again:
            assert again.addresses == client.addresses and again.ping() == "pong"
    assert parse_addresses([("::1", 5), "a:2"]) == [("::1", 5), ("a", 2)]
    with pytest.raises(ValueError, match="1 to 65535"):
        parse_addresses(("h", 0))
