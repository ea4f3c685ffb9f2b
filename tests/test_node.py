"""The node over real sockets on 127.0.0.1 (in-process, so faults can be injected): the reference
answers, pipelining, many connections, malformed and oversize frames, contained handler errors,
back-pressure on a slow reader, and group commit."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from funnelkvs.errors import StorageError
from funnelkvs.keyspace import KeyRange, ring_digest
from funnelkvs.protocol import NEED_DATA, Op, Response, ResponseDecoder, Status, encode_request
from funnelkvs.storage.memory import MemoryBackend
from tests.conftest import ThreadNode


def connect(tn: ThreadNode) -> socket.socket:
    sock = socket.create_connection(tn.address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_responses(sock: socket.socket, count: int, timeout: float = 10) -> list[Response]:
    decoder = ResponseDecoder()
    out: list[Response] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        while (event := decoder.next_event()) is not NEED_DATA:
            out.append(event)  # type: ignore[arg-type]
        if len(out) >= count:
            break
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(1 << 20)
        if not data:
            break
        decoder.feed(data)
    return out


def roundtrip(sock: socket.socket, *frames: bytes) -> list[Response]:
    sock.sendall(b"".join(frames))
    return read_responses(sock, len(frames))


def test_reference_byte_sequences(thread_node: ThreadNode) -> None:
    with connect(thread_node) as s:
        s.sendall(b"KVS\x01\x02\x00\x00\x00\x03foo\x00\x00\x00\x03bar")
        assert s.recv(100) == b"KVS\x01\x00\x00\x00\x00\x00"
        s.sendall(b"KVS\x01\x01\x00\x00\x00\x03foo")
        assert s.recv(100) == b"KVS\x01\x00\x00\x00\x00\x03bar"
        s.sendall(b"KVS\x01\x04")
        assert s.recv(100) == b"KVS\x01\x00\x00\x00\x00\x04pong"
        s.sendall(b"KVS\x01\x05")
        assert s.recv(100) == b"KVS\x01\x00\x00\x00\x00\x10keys: 1, size: 3"
        s.sendall(b"KVS\x01\x03\x00\x00\x00\x03foo")
        assert s.recv(100) == b"KVS\x01\x00\x00\x00\x00\x00"
        s.sendall(b"KVS\x01\x03\x00\x00\x00\x03foo")  # deleting a missing key also succeeds
        assert s.recv(100) == b"KVS\x01\x00\x00\x00\x00\x00"
        s.sendall(b"KVS\x01\x01\x00\x00\x00\x03foo")
        assert s.recv(100) == b"KVS\x01\x01\x00\x00\x00\x00"


def test_pipelined_answers_come_back_in_order(thread_node: ThreadNode) -> None:
    frames = []
    for i in range(2000):
        frames.append(encode_request(Op.PUT, b"k%d" % i, b"v%d" % i))
        frames.append(encode_request(Op.GET, b"k%d" % i))
    with connect(thread_node) as s:
        answers = roundtrip(s, *frames)
    assert len(answers) == 4000
    for i in range(2000):
        assert answers[2 * i] == Response(Status.SUCCESS, b"")
        assert answers[2 * i + 1] == Response(Status.SUCCESS, b"v%d" % i)


def test_five_hundred_concurrent_connections(thread_node: ThreadNode) -> None:
    socks = [connect(thread_node) for _ in range(500)]
    try:
        for i, s in enumerate(socks):
            s.sendall(encode_request(Op.PUT, b"c%d" % i, b"x" * (i % 50)))
        for s in socks:
            assert read_responses(s, 1) == [Response(Status.SUCCESS)]
        for i, s in enumerate(socks):
            s.sendall(encode_request(Op.GET, b"c%d" % i))
        for i, s in enumerate(socks):
            assert read_responses(s, 1) == [Response(Status.SUCCESS, b"x" * (i % 50))]
        assert thread_node.node.metrics.connections_current == 500
    finally:
        for s in socks:
            s.close()


def test_client_disconnecting_mid_frame_harms_nobody(thread_node: ThreadNode) -> None:
    with connect(thread_node) as other:
        for cut in (1, 4, 7, 12):
            s = connect(thread_node)
            s.sendall(encode_request(Op.PUT, b"key", b"value" * 100)[:cut])
            s.close()
        s = connect(thread_node)
        s.sendall(encode_request(Op.PUT, b"key", b"value" * 100)[:-3])
        s.shutdown(socket.SHUT_RDWR)
        s.close()
        assert roundtrip(other, encode_request(Op.PING)) == [Response(Status.SUCCESS, b"pong")]
        assert roundtrip(other, encode_request(Op.GET, b"key")) == [Response(Status.NOT_FOUND)]
    deadline = time.monotonic() + 5
    while thread_node.node.metrics.connections_current and time.monotonic() < deadline:
        time.sleep(0.01)
    assert thread_node.node.metrics.connections_current == 0


def test_bad_header_answers_invalid_and_keeps_serving(thread_node: ThreadNode) -> None:
    with connect(thread_node) as s:
        s.sendall(b"HELLO")
        assert read_responses(s, 1) == [Response(Status.INVALID_REQUEST)]
        s.sendall(b"KVS\x03\x04")  # no version 3
        assert read_responses(s, 1) == [Response(Status.INVALID_REQUEST)]
        s.sendall(b"KVS\x01\x77")
        assert read_responses(s, 1) == [Response(Status.INVALID_REQUEST)]
        assert roundtrip(s, encode_request(Op.PING)) == [Response(Status.SUCCESS, b"pong")]


@pytest.mark.parametrize(
    "header",
    [
        b"KVS\x01\x01" + struct.pack(">I", 65 * 1024),
        b"KVS\x01\x02\x00\x00\x00\x01k" + struct.pack(">I", 17 * 1024 * 1024),
        b"KVS\x01\x02" + struct.pack(">I", 0xFFFFFFFF),
    ],
)
def test_oversize_length_closes_only_that_connection(thread_node: ThreadNode, header: bytes) -> None:
    with connect(thread_node) as bystander, connect(thread_node) as s:
        s.sendall(header)  # no body follows: the node must decide from the header alone
        assert read_responses(s, 1) == [Response(Status.INVALID_REQUEST)]
        s.settimeout(5)
        assert s.recv(10) == b""  # then the connection is closed
        assert roundtrip(bystander, encode_request(Op.PING)) == [Response(Status.SUCCESS, b"pong")]


def test_configured_limits_apply(thread_node_factory: Callable[..., ThreadNode]) -> None:
    tn = thread_node_factory(max_key_size=8, max_value_size=16)
    with connect(tn) as s:
        assert roundtrip(s, encode_request(Op.PUT, b"k" * 8, b"v" * 16)) == [Response(Status.SUCCESS)]
    with connect(tn) as s:
        assert roundtrip(s, encode_request(Op.PUT, b"k" * 8, b"v" * 17)) == [Response(Status.INVALID_REQUEST)]
    with connect(tn) as s:
        assert roundtrip(s, encode_request(Op.GET, b"k" * 9)) == [Response(Status.INVALID_REQUEST)]


class FaultyBackend(MemoryBackend):
    """Raises on the key b"boom", like a bug in a handler would."""

    def get(self, key: bytes) -> bytes | None:
        if key == b"boom":
            raise RuntimeError("injected handler failure")
        return super().get(key)


def test_handler_exception_gets_server_error_and_the_node_lives_on(
    thread_node_factory: Callable[..., ThreadNode], caplog: pytest.LogCaptureFixture
) -> None:
    tn = thread_node_factory(FaultyBackend())
    with connect(tn) as s:
        answers = roundtrip(
            s,
            encode_request(Op.PUT, b"a", b"1"),
            encode_request(Op.GET, b"boom"),
            encode_request(Op.GET, b"a"),
        )
    assert answers == [
        Response(Status.SUCCESS),
        Response(Status.SERVER_ERROR),
        Response(Status.SUCCESS, b"1"),
    ]
    assert "injected handler failure" in caplog.text
    assert tn.node.metrics.handler_errors == 1


def test_slow_reader_cannot_make_the_node_buffer_without_bound(
    thread_node_factory: Callable[..., ThreadNode],
) -> None:
    cap = 256 * 1024
    tn = thread_node_factory(max_output_buffer=cap)
    value = b"v" * 64 * 1024
    with connect(tn) as s:
        assert roundtrip(s, encode_request(Op.PUT, b"big", value)) == [Response(Status.SUCCESS)]
        # 2000 GETs of 64 KiB = 128 MiB of answers, never read while they are sent.
        requests = encode_request(Op.GET, b"big") * 2000
        sender = threading.Thread(target=lambda: s.sendall(requests))
        sender.daemon = True
        sender.start()
        time.sleep(1.0)
        (conn,) = [c for c in tn.node._connections.values()]
        assert conn.out_size <= cap + len(value) + 9
        # Now read everything: every answer arrives, intact and in order.
        answers = read_responses(s, 2000, timeout=60)
        assert len(answers) == 2000
        assert all(a == Response(Status.SUCCESS, value) for a in answers)
        sender.join(10)


class RecordingDurableBackend(MemoryBackend):
    """A durable-looking backend that records sync calls and can be told to fail them."""

    durable = True

    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0
        self.unsynced: list[bytes] = []
        self.fail_next_sync = False

    def put(self, key: bytes, value: bytes) -> None:
        super().put(key, value)
        self.unsynced.append(key)

    def sync(self) -> None:
        if self.fail_next_sync:
            self.fail_next_sync = False
            raise StorageError("disk on fire")
        self.syncs += 1
        self.unsynced.clear()


def test_group_commit_syncs_before_acknowledging(thread_node_factory: Callable[..., ThreadNode]) -> None:
    backend = RecordingDurableBackend()
    tn = thread_node_factory(backend)
    frames = [encode_request(Op.PUT, b"g%d" % i, b"v") for i in range(500)]
    with connect(tn) as s:
        assert roundtrip(s, *frames) == [Response(Status.SUCCESS)] * 500
    assert backend.unsynced == []  # every acknowledged write was covered by a sync
    assert 1 <= backend.syncs < 500  # one sync covers many writes


def test_failed_sync_answers_server_error(thread_node_factory: Callable[..., ThreadNode]) -> None:
    backend = RecordingDurableBackend()
    tn = thread_node_factory(backend)
    backend.fail_next_sync = True
    with connect(tn) as s:
        answers = roundtrip(s, encode_request(Op.PUT, b"a", b"1"))
        assert answers == [Response(Status.SERVER_ERROR)]
        s.settimeout(5)
        assert s.recv(10) == b""
    with connect(tn) as s:
        assert roundtrip(s, encode_request(Op.PUT, b"a", b"2")) == [Response(Status.SUCCESS)]
    assert tn.node.metrics.sync_errors == 1


def test_stop_finishes_answers_in_flight_and_closes_the_store(
    thread_node_factory: Callable[..., ThreadNode],
) -> None:
    closed: list[bool] = []

    class ClosingBackend(MemoryBackend):
        def close(self) -> None:
            closed.append(True)

    tn = thread_node_factory(ClosingBackend())
    with connect(tn) as s:
        s.sendall(encode_request(Op.PUT, b"a", b"1" * 100000) + encode_request(Op.GET, b"a"))
        answers = read_responses(s, 2)
        tn.stop()
    assert answers[1] == Response(Status.SUCCESS, b"1" * 100000)
    assert closed == [True]


def test_memory_scan_sees_what_the_node_stored(thread_node: ThreadNode) -> None:
    with connect(thread_node) as s:
        roundtrip(s, *[encode_request(Op.PUT, b"s%d" % i, b"v") for i in range(50)])
    assert len(list(thread_node.node.backend.scan(KeyRange.whole_ring()))) == 50


def test_connections_past_the_limit_are_refused_and_others_go_on(
    thread_node_factory: Callable[..., ThreadNode],
) -> None:
    tn = thread_node_factory(max_connections=3)
    kept = [connect(tn) for _ in range(3)]
    try:
        for s in kept:
            assert roundtrip(s, encode_request(Op.PING)) == [Response(Status.SUCCESS, b"pong")]
        extra = connect(tn)
        extra.settimeout(5)
        try:
            extra.sendall(encode_request(Op.PING))
            assert extra.recv(10) == b""  # closed by the node without an answer
        except ConnectionResetError:
            pass  # equally a refusal
        finally:
            extra.close()
        assert roundtrip(kept[0], encode_request(Op.PING)) == [Response(Status.SUCCESS, b"pong")]
    finally:
        for s in kept:
            s.close()
    # once some have closed, new connections are served again
    deadline = time.monotonic() + 5
    while tn.node.metrics.connections_current and time.monotonic() < deadline:
        time.sleep(0.01)
    with connect(tn) as s:
        assert roundtrip(s, encode_request(Op.PING)) == [Response(Status.SUCCESS, b"pong")]


def test_info_describes_the_node(thread_node: ThreadNode) -> None:
    with connect(thread_node) as s:
        roundtrip(s, encode_request(Op.PUT, b"a", b"123"))
        (answer,) = roundtrip(s, encode_request(Op.INFO))
    assert answer.status == Status.SUCCESS
    info = json.loads(answer.value)
    assert info["keys"] == 1 and info["bytes"] == 3
    assert info["backend"] == "memory"
    assert info["address"] == f"{thread_node.address[0]}:{thread_node.address[1]}"
    assert info["node_id"] == ring_digest(info["address"].encode()).hex()
    assert info["connections"] == 1


def test_pipelining_without_reading_does_not_grow_the_input_buffer(
    thread_node_factory: Callable[..., ThreadNode],
) -> None:
    tn = thread_node_factory(max_output_buffer=1024 * 1024)
    value = b"v" * 1024 * 1024
    with connect(tn) as s:
        assert roundtrip(s, encode_request(Op.PUT, b"big", value)) == [Response(Status.SUCCESS)]
        requests = encode_request(Op.GET, b"big") * 200_000  # 4.6 MB of requests, never read

        def send_all() -> None:
            try:
                s.sendall(requests)
            except OSError:
                pass  # the test closes the socket under it

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        time.sleep(1.5)
        (conn,) = list(tn.node._connections.values())
        # The node stopped reading at the output cap: at most one read's worth waits undecoded.
        assert conn.decoder.buffered <= 256 * 1024
        assert conn.out_size <= 1024 * 1024 + len(value) + 9
    sender.join(10)


def test_half_close_after_pipelining_gets_every_answer(thread_node: ThreadNode) -> None:
    value = b"w" * 1024 * 1024
    with connect(thread_node) as s:
        assert roundtrip(s, encode_request(Op.PUT, b"big", value)) == [Response(Status.SUCCESS)]
        s.sendall(encode_request(Op.GET, b"big") * 100)
        s.shutdown(socket.SHUT_WR)
        answers = read_responses(s, 100, timeout=60)
    assert len(answers) == 100
    assert all(a == Response(Status.SUCCESS, value) for a in answers)


def test_tiny_output_cap_serves_long_pipelines(thread_node_factory: Callable[..., ThreadNode]) -> None:
    tn = thread_node_factory(max_output_buffer=1)
    with connect(tn) as s:
        assert roundtrip(s, *[encode_request(Op.PING)] * 3000) == [Response(Status.SUCCESS, b"pong")] * 3000


def test_durable_writes_paused_at_the_cap_are_synced_in_the_same_pass(
    thread_node_factory: Callable[..., ThreadNode],
) -> None:
    backend = RecordingDurableBackend()
    tn = thread_node_factory(backend, max_output_buffer=100)
    started = time.monotonic()
    with connect(tn) as s:
        assert (
            roundtrip(s, *[encode_request(Op.PUT, b"k%d" % i, b"v") for i in range(60)])
            == [Response(Status.SUCCESS)] * 60
        )
    # Without the pass-end loop each paused batch waited for the next timer (1 s): ~5 s in all.
    assert time.monotonic() - started < 1.0
    assert backend.unsynced == []
