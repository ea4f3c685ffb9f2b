"""The ring-aware client: the routing table on its own, then real rings of node processes (127.0.0.1,
ephemeral ports, every wait bounded, every process stopped even on failure)."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from funnelkvs import Client
from funnelkvs.client.address import Address, parse_address
from funnelkvs.client.connection import V2Connection
from funnelkvs.client.fanout import exchange_shares
from funnelkvs.client.routing import Member, RingView
from funnelkvs.errors import FunnelKVSError, NodeUnreachable, RemoteProtocolError, RequestTimeout
from funnelkvs.keyspace import RING_SIZE, ring_position
from funnelkvs.protocol import NEED_DATA, Op, RequestDecoder, Status
from funnelkvs.protocol.v2 import V2Request, V2Response, encode_v2_request, encode_v2_response, key_value_body
from funnelkvs.testing.cluster import NodeProcess

RING_TIMEOUT = 30.0

# --- the routing table, without processes -----------------------------------------------------------


def _view(*ids: int) -> RingView:
    return RingView.of((node_id, f"127.0.0.1:{9000 + index}") for index, node_id in enumerate(ids))


def test_owner_is_the_first_id_at_or_after_the_position() -> None:
    view = _view(300, 100, 200)  # given out of order: sorted by id
    assert [member.node_id for member in view.members] == [100, 200, 300]
    a100, a200, a300 = (parse_address(f"127.0.0.1:{9000 + i}") for i in (1, 2, 0))
    assert view.owner_at(0) == a100
    assert view.owner_at(100) == a100  # an id owns its own position
    assert view.owner_at(101) == a200
    assert view.owner_at(200) == a200
    assert view.owner_at(250) == a300
    assert view.owner_at(300) == a300


def test_positions_past_the_highest_id_wrap_to_the_lowest() -> None:
    view = _view(100, 200, 300)
    lowest = view.members[0].address
    assert view.owner_at(301) == lowest
    assert view.owner_at(RING_SIZE - 1) == lowest


def test_one_member_owns_everything() -> None:
    view = _view(12345)
    only = view.members[0].address
    assert {view.owner_at(p) for p in (0, 12345, 12346, RING_SIZE - 1)} == {only}


def test_owner_of_hashes_the_key_with_sha1() -> None:
    view = _view(*(RING_SIZE // 5 * i + 7 for i in range(5)))
    for key in (b"", b"a", b"key:0000000042", "é".encode()):
        position = ring_position(key)
        expected = min(
            (m for m in view.members if m.node_id >= position), key=lambda m: m.node_id, default=None
        )
        assert view.owner_of(key) == (expected or view.members[0]).address


def test_after_lists_the_other_members_from_the_successor_on() -> None:
    view = _view(100, 200, 300, 400)
    a = view.addresses
    assert view.after(a[2]) == [a[3], a[0], a[1]]
    assert view.after(Address("10.0.0.1", 1)) == list(a)


def test_view_from_a_ring_view_answer() -> None:
    answer = {
        "members": [
            {"id": f"{200:040x}", "address": "127.0.0.1:2", "successor": "127.0.0.1:1", "owns": 0.5},
            {"id": f"{100:040x}", "address": "127.0.0.1:1", "successor": "127.0.0.1:2", "owns": 0.5},
        ],
        "complete": False,
        "node": "127.0.0.1:2",
    }
    view = RingView.from_answer(answer, Address("127.0.0.1", 2))
    assert view.members == (Member(100, Address("127.0.0.1", 1)), Member(200, Address("127.0.0.1", 2)))
    assert view.complete is False and view.source == Address("127.0.0.1", 2) and len(view) == 2


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"members": []},
        {"members": [{"id": "xyz", "address": "127.0.0.1:1"}]},
        {"members": [{"id": "00", "address": "no port"}]},
        {"members": [{"id": "1" + "0" * 40, "address": "127.0.0.1:1"}]},  # past the ring
    ],
)
def test_malformed_ring_view_answers_are_protocol_errors(answer: object) -> None:
    with pytest.raises(RemoteProtocolError):
        RingView.from_answer(answer)


def test_a_member_that_keeps_failing_is_routed_around_longer() -> None:
    with Client("127.0.0.1:1") as client:  # nothing is sent: the router's bookkeeping only
        router = client._router
        assert router is not None
        member = Address("127.0.0.1", 2)
        assert not router._is_down(member)
        periods = []
        for _ in range(6):
            router._mark_down(member)
            until, period = router._down[member]
            periods.append(period)
            assert router._is_down(member) and until > time.monotonic()
        assert periods == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
        router._mark_up(member)
        assert not router._is_down(member)
        router._mark_down(member)
        assert router._down[member][1] == 2.0  # a fresh failure starts over


# --- fan-out of pipeline shares, against scripted peers ----------------------------------------------


def _scripted_peer(
    sock: socket.socket, frames: int, answer: Callable[[list[V2Request]], bytes | None]
) -> None:
    """Read ``frames`` v2 requests, then send what ``answer`` makes of them (None: close unanswered)."""
    decoder = RequestDecoder()
    requests: list[V2Request] = []
    with sock:
        while len(requests) < frames:
            data = sock.recv(65536)
            if not data:
                return
            decoder.feed(data)
            while (event := decoder.next_event()) is not NEED_DATA:
                assert isinstance(event, V2Request)
                requests.append(event)
        reply = answer(requests)
        if reply is not None:
            sock.sendall(reply)
            time.sleep(0.05 if frames else 0)


def test_each_share_gets_its_own_answers_or_its_own_error() -> None:
    def reversed_answers(requests: list[V2Request]) -> bytes:
        return b"".join(
            encode_v2_response(Status.SUCCESS, r.request_id, r.body[4:]) for r in reversed(requests)
        )

    def refuse_first(requests: list[V2Request]) -> bytes:
        return encode_v2_response(Status.INVALID_REQUEST, requests[0].request_id, b"too big")

    scripts = [(reversed_answers, 3), (lambda _: None, 2), (refuse_first, 2)]
    shares = []
    threads = []
    for port, (script, count) in enumerate(scripts, start=1):
        mine, theirs = socket.socketpair()
        conn = V2Connection(mine, Address("127.0.0.1", port), 5.0)
        frames = [
            encode_v2_request(Op.GET, 10 * port + i, key_value_body(Op.GET, b"k%d" % i)) for i in range(count)
        ]
        shares.append((conn, frames))
        threads.append(threading.Thread(target=_scripted_peer, args=(theirs, count, script)))
    for thread in threads:
        thread.start()
    try:
        outcomes = exchange_shares(shares)
    finally:
        for thread in threads:
            thread.join(5)
        for conn, _ in shares:
            conn.close()
    answered, dropped, refused = outcomes
    assert isinstance(answered, list)
    assert [(a.request_id, a.body) for a in answered] == [(12, b"k2"), (11, b"k1"), (10, b"k0")]
    assert isinstance(dropped, NodeUnreachable) and "after 0 of 2 answers" in str(dropped)
    assert isinstance(refused, list) and [(a.status, a.request_id) for a in refused] == [
        (Status.INVALID_REQUEST, 30)
    ]
    assert shares[0][0].reusable and not shares[1][0].reusable and not shares[2][0].reusable


def test_a_silent_share_times_out_without_losing_the_others() -> None:
    silent_mine, silent_theirs = socket.socketpair()
    quick_mine, quick_theirs = socket.socketpair()
    frame = encode_v2_request(Op.PING, 7)
    quick = threading.Thread(
        target=_scripted_peer,
        args=(quick_theirs, 1, lambda reqs: encode_v2_response(Status.SUCCESS, 7, b"pong")),
    )
    quick.start()
    try:
        outcomes = exchange_shares(
            [
                (V2Connection(silent_mine, Address("127.0.0.1", 1), 0.3), [frame]),
                (V2Connection(quick_mine, Address("127.0.0.1", 2), 0.3), [frame]),
            ]
        )
    finally:
        quick.join(5)
        for sock in (silent_mine, silent_theirs, quick_mine):
            sock.close()
    assert isinstance(outcomes[0], RequestTimeout)
    assert outcomes[1] == [V2Response(Status.SUCCESS, 7, b"pong")]


# --- real rings ---------------------------------------------------------------------------------------


class Ring:
    """Node processes joined into one ring; :meth:`stop` stops every one."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: list[NodeProcess] = []

    def add(self) -> NodeProcess:
        name = f"node{len(self.nodes)}"
        args = ["--join", self.nodes[0].address] if self.nodes else []
        # One copy per key: these tests count where the client's requests land.
        node = NodeProcess.start(self.workdir, args=args, name=name, config={"replication": {"factor": 1}})
        self.nodes.append(node)
        return node

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes if node.process.poll() is None]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def ring_settled(addresses: list[str]) -> RingView | None:
    """The common view when every node's RING_VIEW lists exactly ``addresses`` (complete) and each node's
    Chord predecessor and successor are its neighbours in that view; else None."""
    expected = {parse_address(a) for a in addresses}
    common: RingView | None = None
    for address in addresses:
        try:
            with Client(address, timeout=2.0) as client:
                view = client.refresh_view()
                info = client.info()
        except FunnelKVSError:
            return None
        if view is None or not view.complete or set(view.addresses) != expected:
            return None
        me = parse_address(address)
        ring = view.addresses
        index = ring.index(me)
        chord = info.get("ring") or {}
        predecessor = (chord.get("predecessor") or {}).get("address")
        successors = chord.get("successors") or [{}]
        if predecessor != str(ring[index - 1]) or successors[0].get("address") != str(
            ring[(index + 1) % len(ring)]
        ):
            return None
        common = view
    return common


def wait_settled(addresses: list[str], timeout: float = RING_TIMEOUT) -> RingView:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = ring_settled(addresses)
        if view is not None:
            return view
        time.sleep(0.2)
    raise AssertionError(f"the ring of {len(addresses)} nodes did not settle within {timeout} s")


@pytest.fixture
def ring_factory(tmp_path: Path) -> Iterator[Callable[[int], Ring]]:
    rings: list[Ring] = []

    def factory(size: int) -> Ring:
        ring = Ring(tmp_path / f"ring{len(rings)}")
        rings.append(ring)
        for _ in range(size):
            ring.add()
        wait_settled(ring.addresses)
        return ring

    yield factory
    for ring in rings:
        ring.stop()


def keys_stored(address: str) -> int:
    with Client(address, routing=False) as plain:
        keys: int = plain.info()["keys"]
    return keys


def v2_answers(address: str, op: int, keys: list[bytes], value: bytes = b"") -> list[tuple[int, bytes]]:
    """Ask one node directly with v2 (pipelined); ``(status, body)`` per key, in order."""
    conn = V2Connection.open(parse_address(address), 2.0, 10.0)
    try:
        frames = [encode_v2_request(op, i, key_value_body(op, key, value)) for i, key in enumerate(keys)]
        answers = {answer.request_id: answer for answer in conn.call_many(frames)}
    finally:
        conn.close()
    assert len(answers) == len(keys)
    return [(answers[i].status, answers[i].body) for i in range(len(keys))]


def test_ten_thousand_keys_go_straight_to_their_owners(ring_factory: Callable[[int], Ring]) -> None:
    ring = ring_factory(5)
    keys = [f"smart:{i}".encode() for i in range(10_000)]
    with Client(ring.addresses[0]) as client:
        assert client.put_many((key, b"v-" + key) for key in keys) == len(keys)
        view = client.ring_view
        assert view is not None and len(view) == 5 and client.routing
        assert client.get_many(keys) == [b"v-" + key for key in keys]
        for key in keys[:300]:  # single calls take the same route
            assert client.get(key) == b"v-" + key
        # Every request was a v2 frame to the owner the view named: a node that did not own the key
        # would have answered NOT_RESPONSIBLE (a redirect); none had to fall back to forwarding.
        assert client.routing_counts["redirects"] == 0
        assert client.routing_counts["fallbacks"] == 0

    # Each node stores exactly the keys of its own range...
    owners = Counter(view.owner_of(key) for key in keys)
    for address in ring.addresses:
        assert keys_stored(address) == owners[parse_address(address)]
    # ... and asked directly, answers its own keys and names the owner of the others.
    for address in ring.addresses:
        me = parse_address(address)
        for key, (status, body) in zip(keys, v2_answers(address, Op.GET, keys), strict=True):
            owner = view.owner_of(key)
            if owner == me:
                assert (status, body) == (Status.SUCCESS, b"v-" + key)
            else:
                assert (status, body) == (Status.NOT_RESPONSIBLE, str(owner).encode())


def test_pipelines_mixing_every_owner_come_back_in_order(ring_factory: Callable[[int], Ring]) -> None:
    ring = ring_factory(5)
    keys = [f"mix:{i}".encode() for i in range(200)]
    with Client(ring.addresses[1]) as client:
        client.put("warm", "up")  # fetches the view
        view = client.ring_view
        assert view is not None and len(view.members) == 5
        # Ids come from ephemeral ports: a node may own a sliver of the ring that none of the 200
        # keys falls in. Add a key for every owner left out, so the pipeline mixes all five.
        owners = {view.owner_of(key) for key in keys}
        for i in itertools.count():
            if len(owners) == 5:
                break
            key = f"extra:{i}".encode()
            if view.owner_of(key) not in owners:
                owners.add(view.owner_of(key))
                keys.append(key)
        pipe = client.pipeline()
        expected: list[object] = []
        for i, key in enumerate(keys):
            pipe.put(key, b"%d" % i).get(key)
            expected += [None, b"%d" % i]
            if i % 3 == 0:
                pipe.delete(key).get(key)
                expected += [None, None]
            if i % 50 == 0:
                pipe.ping().stats()
                expected += ["pong", None]  # STATS checked below
        results = pipe.execute()
        assert len(results) == len(expected)
        for got, want in zip(results, expected, strict=True):
            if want is None and isinstance(got, dict):
                assert "keys" in got  # a STATS answer in its place
            else:
                assert got == want
        assert client.get_many(keys) == [None if i % 3 == 0 else b"%d" % i for i in range(len(keys))]
        assert client.routing_counts["redirects"] == 0


def test_threads_share_one_routing_client(ring_factory: Callable[[int], Ring]) -> None:
    ring = ring_factory(3)
    errors: list[BaseException] = []
    with Client(ring.addresses[0], pool_size=2, refresh_interval=0.05) as client:  # refreshes while busy

        def work(worker: int) -> None:
            try:
                for i in range(150):
                    key = f"t{worker}:{i}"
                    client.put(key, f"{worker}/{i}")
                    assert client.get(key) == f"{worker}/{i}".encode()
                    if i % 30 == 0:
                        keys = [f"t{worker}:{j}" for j in range(i + 1)]
                        assert client.get_many(keys) == [f"{worker}/{j}".encode() for j in range(i + 1)]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        assert not errors, errors[0]
        counts = client.routing_counts
        assert counts["redirects"] == 0 and counts["fallbacks"] == 0 and counts["refreshes"] > 1
        # pool_size bounds the connections to each member (v2) and to the configured node (v1).
        router = client._router
        assert router is not None
        assert {address for address, v2 in router._pools} == set(client.ring_view.addresses)  # type: ignore[union-attr]
        assert all(len(pool._idle) <= 2 for pool in router._pools.values())
        assert len(client._pool._idle) <= 2


def test_routing_off_sends_everything_to_the_configured_node(ring_factory: Callable[[int], Ring]) -> None:
    ring = ring_factory(3)
    keys = [f"plain:{i}".encode() for i in range(300)]
    with Client(ring.addresses[0], routing=False) as client:
        client.put_many((key, key) for key in keys)
        assert client.get_many(keys) == keys  # the node forwarded what it does not own
        assert client.ring_view is None and not client.routing and client.refresh_view() is None
    with Client(ring.addresses[0]) as smart:
        assert smart.get_many(keys) == keys
        stored = sum(keys_stored(address) for address in ring.addresses)
        assert stored == len(keys)  # forwarded writes landed at the owners, once each


def test_a_stale_view_is_corrected_by_not_responsible(ring_factory: Callable[[int], Ring]) -> None:
    ring = ring_factory(5)
    before = [f"stale:{i}".encode() for i in range(1500)]  # written with five nodes, moved by the join
    after = [f"stale:{i}".encode() for i in range(1500, 3000)]  # written with a stale view
    keys = before + after
    # refresh_interval long: only a NOT_RESPONSIBLE can make this client look at the ring again.
    with Client(ring.addresses[0], refresh_interval=600.0) as client:
        client.put_many((key, b"v-" + key) for key in before)
        old_view = client.ring_view
        assert old_view is not None and len(old_view) == 5
        newcomer = ring.add()
        new_view = wait_settled(ring.addresses)
        moved = [key for key in keys if new_view.owner_of(key) == parse_address(newcomer.address)]
        assert any(key in moved for key in before) and any(key in moved for key in after)
        assert client.ring_view is old_view  # still the five-node view
        # Requests routed by the stale view reach the old owners, which name the newcomer: the client
        # follows, so reads find the keys the join moved and writes land where the ring now puts them.
        assert client.get_many(before) == [b"v-" + key for key in before]
        assert client.routing_counts["redirects"] >= 1
        client.put_many((key, b"v-" + key) for key in after)
        assert client.get_many(keys) == [b"v-" + key for key in keys]
        statuses = [status for status, _ in v2_answers(newcomer.address, Op.GET, moved)]
        assert statuses == [Status.SUCCESS] * len(moved)
        # The redirects asked for a refresh: calls soon use the six-node view.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and len(client.ring_view or ()) != 6:
            client.get(moved[0])
            time.sleep(0.05)
        assert client.ring_view is not None and len(client.ring_view) == 6
        redirects = client.routing_counts["redirects"]
        assert [client.get(key) for key in moved] == [b"v-" + key for key in moved]
        assert client.routing_counts["redirects"] == redirects  # straight to the newcomer now
    # Once the range transfer is over, each node stores exactly its own range.
    owners = Counter(new_view.owner_of(key) for key in keys)
    expected = [owners[parse_address(address)] for address in ring.addresses]
    deadline = time.monotonic() + 20.0
    while True:
        stored = [keys_stored(address) for address in ring.addresses]
        if stored == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert stored == expected


def test_reads_on_survivors_go_on_after_a_node_is_killed(ring_factory: Callable[[int], Ring]) -> None:
    ring = ring_factory(5)
    keys = [f"kill:{i}".encode() for i in range(2000)]
    victim = ring.nodes[2]
    # refresh_interval long: the view is refreshed because of the failure, not because it aged.
    with Client(ring.addresses[0], refresh_interval=600.0) as client:
        client.put_many((key, b"v-" + key) for key in keys)
        view = client.ring_view
        assert view is not None and len(view) == 5
        dead = parse_address(victim.address)
        survivors = [key for key in keys if view.owner_of(key) != dead]
        lost = [key for key in keys if view.owner_of(key) == dead]
        assert survivors and lost
        victim.kill()
        # Right after the kill (the ring has not healed): every key of a live owner reads back, single
        # calls and pipelines, with at most a few retries each.
        deadline = time.monotonic() + 20.0
        for key in survivors[:500]:
            while True:
                try:
                    assert client.get(key) == b"v-" + key
                    break
                except FunnelKVSError:
                    assert time.monotonic() < deadline, f"{key!r} stayed unreadable"
                    time.sleep(0.1)
        assert client.get_many(survivors) == [b"v-" + key for key in survivors]
        # A key of the dead node: routed around (marked down, sent through another node); once the ring
        # has healed its successor owns the range (one copy per key: the value is gone).
        healed = wait_settled(ring.addresses)
        assert dead not in healed.addresses
        deadline = time.monotonic() + 20.0
        while True:
            try:
                if client.get(lost[0]) is None:
                    break
            except FunnelKVSError:
                pass
            assert time.monotonic() < deadline, "the dead node's key never answered"
            time.sleep(0.2)
        # The failure asked for a refresh: the next calls fetch a view without the dead node.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and dead in (client.ring_view or healed).addresses:
            client.get(survivors[0])
            time.sleep(0.05)
        assert client.ring_view is not None and dead not in client.ring_view.addresses
        assert client.routing_counts["fallbacks"] >= 1
        client.put(lost[0], "again")
        assert client.get(lost[0]) == b"again"


def test_a_single_node_stays_on_the_plain_path(node_process_factory: Callable[..., NodeProcess]) -> None:
    node = node_process_factory()
    with Client(node.address) as client:
        client.put("a", "1")
        view = client.ring_view
        assert view is not None and len(view) == 1 and view.addresses == (parse_address(node.address),)
        assert client.get_many(["a", "b"]) == [b"1", None]
        assert client.routing_counts == {"redirects": 0, "fallbacks": 0, "refreshes": 1}
        assert json.loads(json.dumps(client.info()))["keys"] == 1
