"""Node-to-node calls on the loop (v2 frames): a node calls another node through its own event loop,
with a future per call and a deadline, many calls in flight matched by id; unreachable and silent
peers fail the future, never the loop."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from funnelkvs.errors import LocalProtocolError, NodeUnreachable, RequestTimeout
from funnelkvs.loop import Future
from funnelkvs.protocol import Op, Status
from funnelkvs.protocol.v2 import V2Response, encode_v2_response, key_value_body
from funnelkvs.testing.cluster import closed_port
from funnelkvs.versions import Version, pack_value, value_of
from tests.conftest import ThreadNode


def call_from_loop(
    tn: ThreadNode, host: str, port: int, op: int, key: bytes = b"", value: bytes = b"", timeout: float = 2.0
) -> Future[V2Response]:
    """Make ``tn``'s node call a peer from its own loop thread; wait for the future from here."""
    done = threading.Event()
    box: list[Future[V2Response]] = []

    def start() -> None:
        future = tn.node.peer(host, port).call(op, key_value_body(op, key, value), timeout=timeout)
        box.append(future)
        future.add_done_callback(lambda f: done.set())

    tn.node.loop.call_soon_threadsafe(start)
    assert done.wait(timeout + 5), "the call neither finished nor hit its deadline"
    return box[0]


def test_a_node_pings_another_node_through_its_loop(thread_node_factory: Callable[..., ThreadNode]) -> None:
    a, b = thread_node_factory(), thread_node_factory()
    assert call_from_loop(a, *b.address, Op.PING).result()[::2] == (Status.SUCCESS, b"pong")
    assert call_from_loop(a, *b.address, Op.PUT, b"k", b"v").result()[::2] == (Status.SUCCESS, b"")
    assert value_of(b.node.backend.get(b"k") or b"") == b"v"  # stored in its envelope
    assert call_from_loop(a, *b.address, Op.GET, b"k").result()[::2] == (Status.SUCCESS, b"v")
    # and back the other way at the same time: neither loop waits for the other
    assert call_from_loop(b, *a.address, Op.PING).result()[::2] == (Status.SUCCESS, b"pong")


def test_many_calls_in_flight_are_matched_by_id(thread_node_factory: Callable[..., ThreadNode]) -> None:
    a, b = thread_node_factory(), thread_node_factory()
    for i in range(100):
        b.node.backend.put(b"k%d" % i, pack_value(Version(1, 0), b"v%d" % i))  # as a node stores it
    results: list[Future[V2Response]] = []
    done = threading.Event()

    def start() -> None:
        peer = a.node.peer(*b.address)
        for i in range(100):
            results.append(peer.call(Op.GET, key_value_body(Op.GET, b"k%d" % i)))
        results[-1].add_done_callback(lambda f: done.set())

    a.node.loop.call_soon_threadsafe(start)
    assert done.wait(10)
    assert [f.result().body for f in results] == [b"v%d" % i for i in range(100)]


def test_unreachable_peer_fails_the_future(thread_node: ThreadNode) -> None:
    future = call_from_loop(thread_node, "127.0.0.1", closed_port(), Op.PING)
    with pytest.raises(NodeUnreachable):
        future.result()


def test_silent_peer_hits_the_deadline_and_the_node_keeps_serving(thread_node: ThreadNode) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) but never answers
    try:
        started = time.monotonic()
        future = call_from_loop(thread_node, *silent.getsockname(), Op.PING, timeout=0.3)
        with pytest.raises(RequestTimeout):
            future.result()
        assert time.monotonic() - started < 3
        other = call_from_loop(thread_node, *thread_node.address, Op.PING)
        assert other.result()[::2] == (Status.SUCCESS, b"pong")
    finally:
        silent.close()


def test_a_call_that_cannot_be_encoded_does_not_disturb_the_next(
    thread_node_factory: Callable[..., ThreadNode],
) -> None:
    a, b = thread_node_factory(), thread_node_factory()
    errors: list[BaseException] = []

    def bad_call() -> None:
        try:
            a.node.peer(*b.address).call(0x100)  # no such op code: v2 carries one byte
        except LocalProtocolError as exc:
            errors.append(exc)

    a.node.loop.call_soon_threadsafe(bad_call)
    assert call_from_loop(a, *b.address, Op.PING).result()[::2] == (Status.SUCCESS, b"pong")
    assert len(errors) == 1


def test_unresolvable_address_fails_the_future(thread_node: ThreadNode) -> None:
    future = call_from_loop(thread_node, "no-such-host.invalid", 80, Op.PING)
    with pytest.raises(NodeUnreachable):
        future.result()


def test_a_late_answer_fails_only_its_own_call(thread_node: ThreadNode) -> None:
    """A peer that answers the first call after its deadline, and the second at once: the first call
    times out, the second succeeds on the same connection, and the late answer is dropped."""
    server = socket.create_server(("127.0.0.1", 0))
    answered = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while len(data) < 26:  # two 13-byte PING frames (ids 0 and 1)
                data += conn.recv(100)
            conn.sendall(encode_v2_response(Status.SUCCESS, 1, b"second"))
            time.sleep(0.6)
            conn.sendall(encode_v2_response(Status.SUCCESS, 0, b"late"))
            answered.set()
            time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    results: list[Future[V2Response]] = []
    done = threading.Event()

    def start() -> None:
        peer = thread_node.node.peer(*server.getsockname())
        results.append(peer.call(Op.PING, timeout=0.3))
        results.append(peer.call(Op.PING, timeout=5))
        results[1].add_done_callback(lambda f: done.set())

    try:
        thread_node.node.loop.call_soon_threadsafe(start)
        assert done.wait(5)
        assert results[1].result().body == b"second"
        assert answered.wait(5)
        with pytest.raises(RequestTimeout):
            results[0].result()
        assert call_from_loop(thread_node, *thread_node.address, Op.PING).result().body == b"pong"
    finally:
        server.close()


def test_calls_made_in_one_pass_leave_in_one_write(thread_node_factory: Callable[..., ThreadNode]) -> None:
    a, b = thread_node_factory(), thread_node_factory()
    assert call_from_loop(a, *b.address, Op.PING).result().body == b"pong"  # connected now
    queued: list[int] = []
    futures: list[Future[V2Response]] = []
    done = threading.Event()

    def start() -> None:
        peer = a.node.peer(*b.address)
        for _ in range(50):
            futures.append(peer.call(Op.PING, timeout=5))
        queued.append(len(peer._out))  # nothing sent during the pass: one write on the next
        futures[-1].add_done_callback(lambda f: done.set())

    a.node.loop.call_soon_threadsafe(start)
    assert done.wait(5)
    assert queued == [50 * 13]
    assert all(future.result().body == b"pong" for future in futures)
