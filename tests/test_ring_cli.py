"""``funnelkvs ring``, ``stats --cluster`` and ``leave`` (issue 7), and the admin module they use.

Rings are real ``funnelkvs node`` processes on 127.0.0.1 with ephemeral ports, always stopped at
teardown. ``leave`` is tested against real nodes, and its error paths against a fake node (a thread
speaking v2) that answers as told.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from funnelkvs import Client
from funnelkvs.cli import EXIT_OK, EXIT_SERVER_ERROR, EXIT_UNREACHABLE, EXIT_USAGE
from funnelkvs.client import admin
from funnelkvs.errors import InvalidRequest, NodeUnreachable, RemoteProtocolError, RequestTimeout, ServerError
from funnelkvs.protocol import Status
from funnelkvs.protocol.rpc import LEAVE, RING_VIEW
from funnelkvs.protocol.v2 import V2_HEAD, encode_v2_response
from funnelkvs.testing.cluster import NodeProcess, closed_port, funnelkvs_command

KEYS = 300
RING_TIMEOUT = 20.0


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*funnelkvs_command(), *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], status: int) -> None:
    assert result.returncode == status, result.stderr
    assert result.stdout == b""
    assert b"Traceback" not in result.stderr
    assert result.stderr.endswith(b"\n") and result.stderr.count(b"\n") == 1, result.stderr


def ring_is_formed(addresses: list[str]) -> bool:
    """Every node's successor and predecessor are the true ones, and every view holds every node."""
    try:
        infos = [admin.info(address, timeout=2) for address in addresses]
        views = [admin.ring_view(address, timeout=2) for address in addresses]
    except (NodeUnreachable, RequestTimeout):
        return False
    ids = sorted(int(entry["node_id"], 16) for entry in infos)
    for entry in infos:
        index = ids.index(int(entry["node_id"], 16))
        ring = entry["ring"]
        if not ring["successors"] or int(ring["successors"][0]["id"], 16) != ids[(index + 1) % len(ids)]:
            return False
        if ring["predecessor"] is None or int(ring["predecessor"]["id"], 16) != ids[index - 1]:
            return False
    return all(len(view.members) == len(addresses) and view.complete for view in views)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


def start_ring(workdir: Path, count: int) -> list[NodeProcess]:
    """``count`` nodes, the first alone and the others joining it; the caller stops them."""
    nodes: list[NodeProcess] = []
    try:
        nodes.append(NodeProcess.start(workdir, name="ring0"))
        for index in range(1, count):
            nodes.append(NodeProcess.start(workdir, name=f"ring{index}", args=["--join", nodes[0].address]))
        wait_for(lambda: ring_is_formed([node.address for node in nodes]), RING_TIMEOUT, "the ring forms")
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    """Three nodes in a ring, ``KEYS`` keys written through the first."""
    nodes = start_ring(tmp_path_factory.mktemp("ring"), 3)
    try:
        with Client(nodes[0].address) as client:
            client.put_many((f"key-{i}", f"value-{i}") for i in range(KEYS))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def ring_json(address: str) -> list[dict[str, Any]]:
    result = cli("ring", "--json", "-s", address)
    assert result.returncode == EXIT_OK, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    return rows


# --- ring ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("asked", [0, 1, 2])
def test_ring_json_lists_every_member_in_ring_order(ring: list[NodeProcess], asked: int) -> None:
    address = ring[asked].address
    rows = ring_json(address)
    assert len(rows) == 3
    assert rows[0]["address"] == address  # ring order starts at the node asked
    ids = [int(str(row["id"]), 16) for row in rows]
    assert all(len(str(row["id"])) == 40 for row in rows)
    ordered = sorted(ids)
    start = ordered.index(ids[0])
    assert ids == ordered[start:] + ordered[:start]  # increasing from the node asked, wrapping
    assert abs(sum(float(row["owns"]) for row in rows) - 1.0) < 1e-9
    for index, row in enumerate(rows):
        assert row["status"] == "up"
        assert row["state"] == "normal"
        assert row["successor"] == rows[(index + 1) % 3]["address"]
    assert {row["address"] for row in rows} == {node.address for node in ring}


def test_ring_keys_match_each_nodes_own_stats(ring: list[NodeProcess]) -> None:
    rows = ring_json(ring[0].address)
    for row in rows:
        own = cli("stats", "--json", "-s", str(row["address"]))
        assert own.returncode == 0, own.stderr
        assert row["keys"] == json.loads(own.stdout)["keys"]
    # Three members and the default replication factor 3: every node holds every key.
    assert [int(row["keys"]) for row in rows] == [KEYS] * 3
    assert all(int(row["keys"]) > 0 for row in rows)


def test_ring_table_has_one_row_per_member(ring: list[NodeProcess]) -> None:
    result = cli("ring", "-s", ring[1].address)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stderr == b""
    header, *rows = result.stdout.decode().splitlines()
    assert header.split() == [
        "Status",
        "State",
        "Address",
        "Owns",
        "Keys",
        "Bytes",
        "Hints",
        "Transfers",
        "ID",
        "Successor",
    ]
    assert len(rows) == 3
    assert rows[0].split()[2] == ring[1].address
    for row in rows:
        status, state, _address, owns, keys, _bytes, hints, transfers, ident, _successor = row.split()
        assert (status, state) == ("up", "normal")
        assert int(hints) >= 0 and int(transfers) >= 0
        assert owns.endswith("%") and 0 < float(owns[:-1]) <= 100
        assert int(keys) >= 0 and len(ident) == 40


# --- stats --cluster -----------------------------------------------------------------------------------


def test_stats_cluster_json_totals_are_the_sums(ring: list[NodeProcess]) -> None:
    result = cli("stats", "--cluster", "--json", "-s", ring[2].address)
    assert result.returncode == EXIT_OK, result.stderr
    stats = json.loads(result.stdout)
    members = stats["members"]
    assert [member["address"] for member in members] == [row["address"] for row in ring_json(ring[2].address)]
    assert all(member["status"] == "up" for member in members)
    assert {"keys", "bytes", "address", "uptime_s", "connections", "backend", "id"} <= set(members[0])
    totals = stats["totals"]
    # Three members, replication factor 3: each holds every key.
    assert totals["keys"] == sum(member["keys"] for member in members) == 3 * KEYS
    assert totals["bytes"] == sum(member["bytes"] for member in members) > 0
    assert (totals["members"], totals["up"], totals["down"]) == (3, 3, 0)


def test_stats_cluster_text(ring: list[NodeProcess]) -> None:
    result = cli("stats", "--cluster", "-s", ring[0].address)
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split()[:2] == ["Address", "Status"]
    assert len(lines) == 5  # header, three members, the totals
    assert lines[-1].startswith(f"total: {3 * KEYS} keys, ")
    assert lines[-1].endswith("on 3 members (3 up, 0 down)")


def test_plain_stats_is_unchanged(ring: list[NodeProcess]) -> None:
    result = cli("stats", "-s", ring[0].address)
    assert result.returncode == EXIT_OK
    assert result.stdout.startswith(b"keys: ")


# --- a member that crashes -----------------------------------------------------------------------------


def test_a_killed_member_shows_down_or_gone_within_seconds(tmp_path: Path) -> None:
    nodes = start_ring(tmp_path, 3)
    try:
        victim = nodes[2]
        victim.kill()
        killed = time.monotonic()

        def shown_down_or_gone() -> bool:
            rows = {row["address"]: row for row in ring_json(nodes[0].address)}
            row = rows.get(victim.address)
            return row is None or (row["status"] == "down" and row["state"] is None and row["keys"] is None)

        wait_for(shown_down_or_gone, 10.0, "the killed node is down or gone")
        assert time.monotonic() - killed < 10.0
        # Once the ring has healed and each survivor's view is refreshed, it is gone from every view.
        for survivor in nodes[:2]:

            def gone(address: str = survivor.address) -> bool:
                return victim.address not in {row["address"] for row in ring_json(address)}

            wait_for(gone, 10.0, f"the killed node is gone from {survivor.address}'s view")
        rows = ring_json(nodes[1].address)
        assert len(rows) == 2 and abs(sum(float(row["owns"]) for row in rows) - 1.0) < 1e-9
        stats = json.loads(cli("stats", "--cluster", "--json", "-s", nodes[0].address).stdout)
        assert stats["totals"]["members"] == 2
    finally:
        for node in nodes:
            node.stop()


# --- leave ---------------------------------------------------------------------------------------------


def test_leave_wait_returns_once_the_node_has_exited_and_nothing_is_lost(tmp_path: Path) -> None:
    nodes = start_ring(tmp_path, 3)
    try:
        with Client(nodes[0].address) as client:
            client.put_many((f"key-{i}", f"value-{i}") for i in range(KEYS))
        leaving = nodes[1]
        started = time.monotonic()
        result = cli("leave", "--wait", "-s", leaving.address, "--timeout", "60")
        assert (result.returncode, result.stdout, result.stderr) == (EXIT_OK, b"", b"")
        assert time.monotonic() - started < 60
        assert not admin.accepts_connections(leaving.address)
        assert leaving.process.wait(10) == 0  # the node exited cleanly once its keys were handed over
        survivors = [nodes[0], nodes[2]]
        for survivor in survivors:

            def left(address: str = survivor.address) -> bool:
                return [row["address"] for row in ring_json(address)].count(leaving.address) == 0

            wait_for(left, 10.0, f"the node that left is gone from {survivor.address}'s view")
        stats = json.loads(cli("stats", "--cluster", "--json", "-s", nodes[0].address).stdout)
        assert stats["totals"]["members"] == 2
        # Every key is on both survivors (two members left, so two copies of each).
        assert stats["totals"]["keys"] == 2 * KEYS
        with Client(nodes[2].address) as client:
            assert client.get_many([f"key-{i}" for i in range(KEYS)]) == [
                f"value-{i}".encode() for i in range(KEYS)
            ]
    finally:
        for node in nodes:
            node.stop()


def test_leave_without_wait_returns_at_once_and_the_node_then_exits(tmp_path: Path) -> None:
    nodes = start_ring(tmp_path, 3)
    try:
        result = cli("leave", "-s", nodes[1].address)
        assert (result.returncode, result.stdout, result.stderr) == (EXIT_OK, b"", b"")
        assert nodes[1].process.wait(60) == 0
        wait_for(lambda: len(ring_json(nodes[0].address)) == 2, 10.0, "the ring is down to two nodes")
        # Leaving again, now that nothing listens there: unreachable.
        assert_one_line_error(cli("leave", "-s", nodes[1].address), EXIT_UNREACHABLE)
    finally:
        for node in nodes:
            node.stop()


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["ring"], ["ring", "--json"], ["stats", "--cluster"], ["leave"]])
def test_closed_port_is_unreachable(command: list[str]) -> None:
    result = cli(*command, "-s", f"127.0.0.1:{closed_port()}")
    assert_one_line_error(result, EXIT_UNREACHABLE)
    assert b"cannot connect" in result.stderr and b"Connection refused" in result.stderr


@pytest.mark.parametrize("command", [["ring"], ["stats", "--cluster", "--json"], ["leave"]])
def test_unknown_host_is_unreachable(command: list[str]) -> None:
    result = cli(*command, "-s", "no-such-host.invalid:8001")
    assert_one_line_error(result, EXIT_UNREACHABLE)
    assert b"no-such-host.invalid" in result.stderr


@pytest.mark.parametrize("command", [["ring"], ["stats", "--cluster"], ["leave"]])
@pytest.mark.parametrize("server", ["nonsense", "127.0.0.1:99999"])
def test_bad_address_is_a_usage_error(command: list[str], server: str) -> None:
    assert_one_line_error(cli(*command, "-s", server), EXIT_USAGE)


def test_leave_needs_a_server() -> None:
    result = cli("leave")
    assert result.returncode == EXIT_USAGE
    assert b"--server" in result.stderr and b"Traceback" not in result.stderr


def test_node_that_never_answers_times_out() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepted by the kernel, never answered
    try:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        for command in (["ring"], ["stats", "--cluster"], ["leave"]):
            result = cli(*command, "-s", address, "--timeout", "0.3")
            assert_one_line_error(result, EXIT_UNREACHABLE)
            assert b"did not answer within 0.3 s" in result.stderr
    finally:
        listener.close()


# --- a fake node: leave and admin_call -----------------------------------------------------------------


class FakeNode:
    """A thread that accepts connections and answers each v2 request with ``answer(op, body)``: a
    (status, body) pair, ``"close"`` (close without answering) or ``"silent"`` (never answer). After an
    answer the connection is closed when ``close_after_answer``; ``close_listener`` closes the port."""

    def __init__(
        self, answer: Callable[[int, bytes], tuple[int, bytes] | str], close_after_answer: bool = False
    ) -> None:
        self.answer = answer
        self.close_after_answer = close_after_answer
        self.requests: list[tuple[int, int, bytes]] = []
        self.listener: socket.socket | None = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, args=(self.listener,), daemon=True)
        self._thread.start()

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            head = _read_exactly(conn, V2_HEAD.size)
            _magic, op, request_id, length = V2_HEAD.unpack(head)
            body = _read_exactly(conn, length)
            self.requests.append((op, request_id, body))
            reply = self.answer(op, body)
            if reply == "close":
                conn.close()
                return
            if reply == "silent":
                return
            assert isinstance(reply, tuple)
            conn.sendall(encode_v2_response(reply[0], request_id, reply[1]))
            if self.close_after_answer:
                conn.close()
        except OSError:
            pass

    def close_listener(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def close(self) -> None:
        self.close_listener()
        for conn in self._connections:
            conn.close()


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


@pytest.fixture
def fake_node_factory() -> Iterator[Callable[..., FakeNode]]:
    made: list[FakeNode] = []

    def make(answer: Callable[[int, bytes], tuple[int, bytes] | str], **kwargs: bool) -> FakeNode:
        made.append(FakeNode(answer, **kwargs))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


def test_leave_sends_v2_leave_and_exits_0_on_success(fake_node_factory: Callable[..., FakeNode]) -> None:
    fake = fake_node_factory(lambda op, body: (Status.SUCCESS, b""), close_after_answer=True)
    result = cli("leave", "-s", fake.address)
    assert (result.returncode, result.stdout, result.stderr) == (EXIT_OK, b"", b"")
    assert [(op, body) for op, _, body in fake.requests] == [(LEAVE, b"")]


def test_leave_error_answer_is_one_line_and_exit_4(fake_node_factory: Callable[..., FakeNode]) -> None:
    fake = fake_node_factory(
        lambda op, body: (Status.SERVER_ERROR, b"the only node of its ring cannot leave")
    )
    result = cli("leave", "-s", fake.address)
    assert_one_line_error(result, EXIT_SERVER_ERROR)
    assert b"answered LEAVE with SERVER_ERROR: the only node of its ring cannot leave" in result.stderr
    fake_invalid = fake_node_factory(lambda op, body: (Status.INVALID_REQUEST, b"unknown op 0x31"))
    assert_one_line_error(cli("leave", "-s", fake_invalid.address), EXIT_SERVER_ERROR)


def test_leave_closed_without_an_answer_is_unreachable(fake_node_factory: Callable[..., FakeNode]) -> None:
    fake = fake_node_factory(lambda op, body: "close")
    result = cli("leave", "-s", fake.address)
    assert_one_line_error(result, EXIT_UNREACHABLE)
    assert b"closed the connection before answering" in result.stderr


def test_leave_wait_returns_once_the_port_is_closed(fake_node_factory: Callable[..., FakeNode]) -> None:
    fake = fake_node_factory(lambda op, body: (Status.SUCCESS, b""), close_after_answer=True)
    process = subprocess.Popen(
        [*funnelkvs_command(), "leave", "--wait", "-s", fake.address, "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: bool(fake.requests), 20, "the leave is sent")
        time.sleep(0.5)
        assert process.poll() is None  # the port still accepts connections: still waiting
        fake.close_listener()
        assert process.wait(10) == EXIT_OK
    finally:
        if process.poll() is None:
            process.kill()
        out, err = process.communicate()
    assert (out, err) == (b"", b"")


def test_leave_wait_gives_up_after_the_timeout(fake_node_factory: Callable[..., FakeNode]) -> None:
    fake = fake_node_factory(lambda op, body: (Status.SUCCESS, b""))
    started = time.monotonic()
    result = cli("leave", "--wait", "-s", fake.address, "--timeout", "1")
    assert time.monotonic() - started < 10
    assert_one_line_error(result, EXIT_UNREACHABLE)
    assert b"still accepts connections after 1 s" in result.stderr


def test_admin_call_checks_the_request_id(fake_node_factory: Callable[..., FakeNode]) -> None:
    class WrongId(FakeNode):
        def _handle(self, conn: socket.socket) -> None:
            head = _read_exactly(conn, V2_HEAD.size)
            _magic, _op, request_id, length = V2_HEAD.unpack(head)
            _read_exactly(conn, length)
            conn.sendall(encode_v2_response(0, (request_id + 1) & 0xFFFFFFFF, b"{}"))

    fake = WrongId(lambda op, body: (0, b""))
    try:
        with pytest.raises(RemoteProtocolError, match="answered request"):
            admin.admin_call(fake.address, RING_VIEW, timeout=5)
    finally:
        fake.close()


def test_admin_errors_map_to_the_error_tree(fake_node_factory: Callable[..., FakeNode]) -> None:
    bad_json = fake_node_factory(lambda op, body: (Status.SUCCESS, b"not json"))
    with pytest.raises(RemoteProtocolError, match="not JSON"):
        admin.ring_view(bad_json.address)
    wrong_shape = fake_node_factory(lambda op, body: (Status.SUCCESS, b'{"members": [{"id": "ab"}]}'))
    with pytest.raises(RemoteProtocolError, match="malformed view"):
        admin.ring_view(wrong_shape.address)
    invalid = fake_node_factory(lambda op, body: (Status.INVALID_REQUEST, b"unknown op 0x30"))
    with pytest.raises(InvalidRequest, match="unknown op 0x30"):
        admin.ring_view(invalid.address)
    failing = fake_node_factory(lambda op, body: (Status.SERVER_ERROR, b""))
    with pytest.raises(ServerError) as raised:
        admin.info(failing.address)
    assert raised.value.status == Status.SERVER_ERROR
    silent = fake_node_factory(lambda op, body: "silent")
    with pytest.raises(RequestTimeout):
        admin.info(silent.address, timeout=0.2)
    with pytest.raises(NodeUnreachable, match="Connection refused"):
        admin.info(f"127.0.0.1:{closed_port()}")
    with pytest.raises(ValueError):
        admin.info("nonsense")


def test_a_member_that_does_not_answer_info_is_down(fake_node_factory: Callable[..., FakeNode]) -> None:
    """The view comes from one node; members that do not answer INFO show as down with unknown state."""
    silent = fake_node_factory(lambda op, body: "silent")

    def view(op: int, body: bytes) -> tuple[int, bytes]:
        if op != RING_VIEW:
            info = {
                "keys": 7,
                "bytes": 70,
                "node_id": "0" * 39 + "1",
                "address": "x",
                "ring": {"state": "normal"},
            }
            return Status.SUCCESS, json.dumps(info).encode()
        members = [
            {"id": "0" * 39 + "1", "address": answering.address, "successor": silent.address, "owns": 0.25},
            {"id": "8" + "0" * 39, "address": silent.address, "successor": answering.address, "owns": 0.75},
        ]
        return Status.SUCCESS, json.dumps({"members": members, "complete": True}).encode()

    answering = fake_node_factory(view)
    result = cli("ring", "--json", "--timeout", "0.5", "-s", answering.address)
    assert result.returncode == EXIT_OK, result.stderr
    rows = json.loads(result.stdout)
    assert [(row["status"], row["state"], row["keys"]) for row in rows] == [
        ("up", "normal", 7),
        ("down", None, None),
    ]
    assert rows[1]["successor"] == answering.address  # the view's, for a member that did not say
    stats = json.loads(
        cli("stats", "--cluster", "--json", "--timeout", "0.5", "-s", answering.address).stdout
    )
    assert stats["totals"] == {"members": 2, "up": 1, "down": 1, "keys": 7, "bytes": 70}
    assert "did not answer" in stats["members"][1]["error"]
    table = cli("ring", "--timeout", "0.5", "-s", answering.address).stdout.decode().splitlines()
    assert table[2].split()[:2] == ["down", "-"]
