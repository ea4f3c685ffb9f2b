"""Per-request quorums in the client (issue 9): ``get(r=)``, ``put(w=)``, ``delete(w=)`` and pipelines.

First against a tiny in-test node that speaks v1 and v2 and records what it received (the trailer on
the wire, the error messages and statuses on demand), then against real node processes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from funnelkvs import Client
from funnelkvs.client.admin import ring_view
from funnelkvs.errors import (
    FunnelKVSError,
    InvalidRequest,
    RequestTimeout,
    ServerError,
)
from funnelkvs.protocol import NEED_DATA, FrameError, Op, Request, RequestDecoder, Status, encode_response
from funnelkvs.protocol.rpc import RING_VIEW
from funnelkvs.protocol.v2 import V2Request, encode_v2_response, key_value_body, parse_key_request
from funnelkvs.testing.cluster import NodeProcess, closed_port
from funnelkvs.testing.ring import v2_call, wait_until_stable

QUORUM_MESSAGE = b"write quorum not reached: 1 of 2 acknowledgements in 2.0 s"

# --- a tiny node that speaks v1 and v2 on one port -------------------------------------------------


class FakeNode:
    """Answers v1 and v2 frames on one port (told apart per frame, as a node does) and records every
    request. ``v2_answers[op]`` overrides the v2 answer to an op: ``(status, body)``. RING_VIEW is
    answered INVALID_REQUEST, so a routing client stays on its plain path. ``v1_only``: answer a v2
    frame in v1 with INVALID_REQUEST, as the reference implementation does."""

    def __init__(self, *, v1_only: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.v1_only = v1_only
        self.v2_answers: dict[int, tuple[int, bytes]] = {}
        self.v1_status: int | None = None
        self.requests: list[Request | V2Request] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def key_requests(self) -> list[tuple[str, int, bytes, bytes, int, int]]:
        """``(version, op, key, value, w, r)`` of each GET/PUT/DELETE received, in order."""
        seen = []
        with self.lock:
            requests = list(self.requests)
        for request in requests:
            if isinstance(request, V2Request):
                if request.op in (Op.GET, Op.PUT, Op.DELETE):
                    seen.append(("v2", request.op, *parse_key_request(request.op, request.body)))
            elif request.op in (Op.GET, Op.PUT, Op.DELETE):
                seen.append(("v1", request.op, request.key, request.value, 0, 0))
        return seen

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            with self.lock:
                self._sockets.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        decoder = RequestDecoder()
        with sock:
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                decoder.feed(data)
                while (event := decoder.next_event()) is not NEED_DATA:
                    try:
                        sock.sendall(self._answer(event))
                    except OSError:
                        return

    def _answer(self, event: Request | V2Request | FrameError) -> bytes:
        if isinstance(event, FrameError):
            return encode_response(Status.INVALID_REQUEST)
        with self.lock:
            self.requests.append(event)
        if isinstance(event, V2Request):
            if self.v1_only:
                return encode_response(Status.INVALID_REQUEST)
            if event.op == RING_VIEW:
                return encode_v2_response(Status.INVALID_REQUEST, event.request_id, b"unknown op 0x30")
            status, body = self.v2_answers.get(event.op, self._normal(event.op))
            return encode_v2_response(status, event.request_id, body)
        if event.op == Op.PING:
            return encode_response(Status.SUCCESS, b"pong")
        if self.v1_status is not None:
            return encode_response(self.v1_status)
        return encode_response(*self._normal(event.op))

    @staticmethod
    def _normal(op: int) -> tuple[int, bytes]:
        return (Status.SUCCESS, {Op.GET: b"value", Op.PING: b"pong"}.get(op, b""))

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        with self.lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in self._threads:
            thread.join(timeout=2)


@pytest.fixture
def fake() -> Iterator[FakeNode]:
    node = FakeNode()
    try:
        yield node
    finally:
        node.close()


# --- arguments --------------------------------------------------------------------------------------


BAD_COUNTS: list[object] = [0, -1, 256, True, 1.5, "2"]


@pytest.mark.parametrize("bad", BAD_COUNTS)
def test_bad_w_and_r_are_value_errors_before_anything_is_sent(bad: object) -> None:
    # A closed port: had the client tried to send, the error would be NodeUnreachable.
    with Client(f"127.0.0.1:{closed_port()}") as client:
        calls: list[Callable[[], object]] = [
            lambda: client.get("k", r=bad),  # type: ignore[arg-type]
            lambda: client.get("k", b"-", r=bad),  # type: ignore[arg-type]
            lambda: client.put("k", "v", w=bad),  # type: ignore[arg-type]
            lambda: client.delete("k", w=bad),  # type: ignore[arg-type]
            lambda: client.pipeline().get("k", r=bad),  # type: ignore[arg-type]
            lambda: client.pipeline().put("k", "v", w=bad),  # type: ignore[arg-type]
            lambda: client.pipeline().delete("k", w=bad),  # type: ignore[arg-type]
            lambda: client.get_many(["k"], r=bad),  # type: ignore[arg-type]
            lambda: client.put_many({"k": "v"}, w=bad),  # type: ignore[arg-type]
        ]
        for call in calls:
            with pytest.raises(ValueError, match=r"\b[wr]\b must be"):
                call()


# --- what goes on the wire --------------------------------------------------------------------------


@pytest.mark.parametrize("routing", [True, False])
def test_w_and_r_travel_as_the_v2_trailer_on_the_same_connection(fake: FakeNode, routing: bool) -> None:
    with Client(fake.address, routing=routing, pool_size=1) as client:
        client.put("k", "v1")
        client.put("k", "v2", w=2)
        assert client.get("k", r=3) == b"value"
        client.delete("k", w=1)
        assert client.get("k") == b"value"
        assert client.ping() == "pong"  # the v1 connection is still in step after the v2 answers
    assert fake.key_requests() == [
        ("v1", Op.PUT, b"k", b"v1", 0, 0),  # no quorum asked: plain v1, as before
        ("v2", Op.PUT, b"k", b"v2", 2, 0),
        ("v2", Op.GET, b"k", b"", 0, 3),
        ("v2", Op.DELETE, b"k", b"", 1, 0),
        ("v1", Op.GET, b"k", b"", 0, 0),
    ]


def test_a_pipeline_with_a_quorum_goes_as_v2_in_order(fake: FakeNode) -> None:
    with Client(fake.address, routing=False) as client:
        results = client.pipeline().put("a", "1", w=2).get("a").delete("a").get("a", r=2).ping().execute()
        assert results == [None, b"value", None, b"value", "pong"]
        assert client.put_many({"x": "1", "y": "2"}, w=3) == 2
        assert client.get_many(["x", "y"], r=1) == [b"value", b"value"]
        assert fake.key_requests() == [
            ("v2", Op.PUT, b"a", b"1", 2, 0),
            ("v2", Op.GET, b"a", b"", 0, 0),  # in the same v2 pipeline, without a trailer
            ("v2", Op.DELETE, b"a", b"", 0, 0),
            ("v2", Op.GET, b"a", b"", 0, 2),
            ("v2", Op.PUT, b"x", b"1", 3, 0),
            ("v2", Op.PUT, b"y", b"2", 3, 0),
            ("v2", Op.GET, b"x", b"", 0, 1),
            ("v2", Op.GET, b"y", b"", 0, 1),
        ]
        # Without a quorum a pipeline stays v1.
        client.pipeline().put("z", "1").get("z").execute()
        assert fake.key_requests()[-2:] == [("v1", Op.PUT, b"z", b"1", 0, 0), ("v1", Op.GET, b"z", b"", 0, 0)]


# --- errors carry the node's message ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (Status.TIMEOUT, RequestTimeout),
        (Status.SERVER_ERROR, ServerError),
        (Status.INVALID_REQUEST, InvalidRequest),
    ],
)
def test_a_v2_error_answer_s_message_is_in_the_exception(
    fake: FakeNode, status: int, error: type[FunnelKVSError]
) -> None:
    fake.v2_answers[Op.PUT] = (status, QUORUM_MESSAGE)
    with Client(fake.address, pool_size=1) as client:
        with pytest.raises(error) as raised:
            client.put("k", "v", w=2)
        text = str(raised.value)
        assert fake.address in text and Status(status).name in text
        assert text.endswith(": " + QUORUM_MESSAGE.decode())
        if isinstance(raised.value, ServerError):
            assert raised.value.status == status
        # The same in a pipeline, and the connection stays usable after an error answer.
        [failed] = client.pipeline().put("k", "v", w=2).execute(raise_on_error=False)
        assert isinstance(failed, error) and str(failed).endswith(QUORUM_MESSAGE.decode())
        assert client.ping() == "pong"


def test_timeout_is_a_timeout_in_v1_too(fake: FakeNode) -> None:
    fake.v1_status = Status.TIMEOUT  # a v1 error answer: empty body
    with Client(fake.address) as client, pytest.raises(RequestTimeout, match=r"answered TIMEOUT to PUT$"):
        client.put("k", "v")


def test_a_node_that_speaks_no_v2_refuses_w_and_r_clearly() -> None:
    node = FakeNode(v1_only=True)
    try:
        with Client(node.address, pool_size=1) as client:
            assert client.get("k") == b"value"  # routing turned itself off; v1 as ever
            with pytest.raises(InvalidRequest, match="speaks no v2"):
                client.get("k", r=1)
            assert client.get("k") == b"value"  # the v1 answer to the v2 frame was read: in step
    finally:
        node.close()


def test_plain_path_follows_not_responsible_to_the_owner() -> None:
    # routing=False against a ring: the node asked does not own the key and names the owner.
    owner, other = FakeNode(), FakeNode()
    try:
        other.v2_answers[Op.GET] = (Status.NOT_RESPONSIBLE, owner.address.encode())
        owner.v2_answers[Op.GET] = (Status.SUCCESS, b"from the owner")
        with Client(other.address, routing=False) as client:
            assert client.get("k", r=2) == b"from the owner"
            assert client.pipeline().get("k", r=2).get("k", r=1).execute() == [b"from the owner"] * 2
        assert owner.key_requests() == [
            ("v2", Op.GET, b"k", b"", 0, 2),
            ("v2", Op.GET, b"k", b"", 0, 2),
            ("v2", Op.GET, b"k", b"", 0, 1),
        ]
    finally:
        owner.close()
        other.close()


# --- real nodes ------------------------------------------------------------------------------------


def takes_quorums(address: str) -> bool:
    """Whether the node reads the w/r trailer (the node side of issue 9): a v2 GET with r=1."""
    answer = v2_call(address, Op.GET, key_value_body(Op.GET, b"probe", r=1))
    return answer.status in (Status.SUCCESS, Status.NOT_FOUND)


NOT_YET = "the node does not read the v2 w/r trailer yet (node side of issue 9 not on this branch)"
#: The documented defaults, spelled out so that the tests do not depend on them.
REPLICATION = {"replication": {"factor": 3, "write_quorum": 2, "read_quorum": 2}}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with NodeProcess.start(tmp_path_factory.mktemp("node"), config=REPLICATION) as process:
        yield process


def test_w1_and_r1_work_on_a_single_node(node: NodeProcess) -> None:
    if not takes_quorums(node.address):
        pytest.skip(NOT_YET)
    with Client(node.address) as client:
        client.put("q", "one", w=1)
        assert client.get("q", r=1) == b"one"
        # A ring smaller than the replication factor caps W and R at its members (docs: replication).
        client.put("q", "three", w=3)
        assert client.get("q", r=3) == b"three"
        client.delete("q", w=1)
        assert client.get("q", r=1) is None
        assert client.get("q") is None


def test_a_quorum_over_the_factor_is_refused_with_the_node_s_message(node: NodeProcess) -> None:
    if not takes_quorums(node.address):
        pytest.skip(NOT_YET)
    with Client(node.address) as client:
        for call in (lambda: client.put("q", "v", w=200), lambda: client.get("q", r=200)):
            with pytest.raises(InvalidRequest) as raised:
                call()
            prefix, _, message = str(raised.value).partition(": ")
            assert "answered INVALID_REQUEST" in prefix
            assert message and "size limit" not in message  # the node's words, not the client's hint
            assert raised.value.status == Status.INVALID_REQUEST


def test_quorums_on_a_ring(tmp_path: Path, node: NodeProcess) -> None:
    if not takes_quorums(node.address):
        pytest.skip(NOT_YET)
    nodes = [NodeProcess.start(tmp_path / "ring", name="ring0", config=REPLICATION)]
    try:
        for index in (1, 2):
            nodes.append(
                NodeProcess.start(
                    tmp_path / "ring",
                    name=f"ring{index}",
                    config=REPLICATION,
                    args=["--join", nodes[0].address],
                )
            )
        addresses = [n.address for n in nodes]
        wait_until_stable(nodes, timeout=30.0)
        # Every node's membership view has all three (what names the owner in NOT_RESPONSIBLE).
        wait_for(
            lambda: all(len(ring_view(a).members) == 3 for a in addresses), 30.0, "every view has 3 members"
        )
        with Client(addresses[0]) as client:
            assert len(client.refresh_view() or ()) == 3
            items = {f"key{i}": f"value{i}" for i in range(30)}
            for key, value in items.items():
                client.put(key, value, w=2)
            assert {key: client.get(key, r=2) for key in items} == {k: v.encode() for k, v in items.items()}
            assert client.get_many(list(items), r=2) == [v.encode() for v in items.values()]
        # routing=False: each request goes to the one node given, which names the owner; followed.
        with Client(addresses[1], routing=False) as plain:
            assert [plain.get(key, r=2) for key in items] == [v.encode() for v in items.values()]
            plain.delete("key0", w=2)
            assert plain.get("key0", r=2) is None
    finally:
        for process in nodes:
            process.stop()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (FunnelKVSError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")
