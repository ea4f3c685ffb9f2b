"""v2 frames (funnelkvs.protocol.v2): the codec, and a node serving them beside v1 on one port."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funnelkvs.errors import LocalProtocolError, RemoteProtocolError
from funnelkvs.protocol import NEED_DATA, FrameError, Op, RequestDecoder, Status, encode_request
from funnelkvs.protocol.v2 import (
    V2Request,
    V2Response,
    V2ResponseDecoder,
    encode_v2_request,
    encode_v2_response,
    key_value_body,
    parse_key_request,
    parse_key_value,
)
from tests.conftest import ThreadNode


def test_the_documented_bytes() -> None:
    # docs/protocol.md, "v2 frames": PING with request id 7, and its answer.
    assert encode_v2_request(Op.PING, 7) == bytes.fromhex("4b56530204 00000007 00000000")
    assert encode_v2_response(Status.SUCCESS, 7, b"pong") == bytes.fromhex(
        "4b56530200 00000007 00000004 706f6e67"
    )
    assert encode_v2_request(Op.GET, 1, key_value_body(Op.GET, b"k")) == bytes.fromhex(
        "4b56530201 00000001 00000005 00000001 6b"
    )


def test_key_value_bodies_round_trip_and_reject_bad_lengths() -> None:
    body = key_value_body(Op.PUT, b"key", b"value")
    assert parse_key_value(Op.PUT, body) == (b"key", b"value")
    assert parse_key_value(Op.GET, key_value_body(Op.GET, b"")) == (b"", b"")
    for bad in (b"", body[:-1], body + b"x", struct.pack(">I", 10) + b"short"):
        with pytest.raises(RemoteProtocolError):
            parse_key_value(Op.PUT, bad)
    with pytest.raises(RemoteProtocolError):
        parse_key_value(Op.GET, key_value_body(Op.GET, b"k") + b"extra")


def test_the_quorum_trailer_bytes() -> None:
    # docs/protocol.md, "Per-request quorums": GET "k" with r=2, PUT "k"="v" with w=3.
    assert key_value_body(Op.GET, b"k", r=2) == bytes.fromhex("00000001 6b 00 02")
    assert key_value_body(Op.PUT, b"k", b"v", w=3) == bytes.fromhex("00000001 6b 00000001 76 03 00")
    assert key_value_body(Op.DELETE, b"k", w=1, r=0) == bytes.fromhex("00000001 6b 01 00")
    # No quorum asked: no trailer, the body is the v1 layout byte for byte.
    assert key_value_body(Op.PUT, b"k", b"v", w=0, r=0) == key_value_body(Op.PUT, b"k", b"v")
    assert key_value_body(Op.GET, b"k") == bytes.fromhex("00000001 6b")
    # The frames docs/protocol.md shows.
    assert encode_v2_request(Op.GET, 1, key_value_body(Op.GET, b"k", r=2)) == bytes.fromhex(
        "4b56530201 00000001 00000007 00000001 6b 0002"
    )
    assert encode_v2_request(Op.PUT, 2, key_value_body(Op.PUT, b"k", b"v", w=3)) == bytes.fromhex(
        "4b56530202 00000002 0000000c 00000001 6b 00000001 76 0300"
    )


@pytest.mark.parametrize("op", [Op.GET, Op.PUT, Op.DELETE])
def test_key_requests_round_trip_with_and_without_the_trailer(op: int) -> None:
    value = b"value" if op == Op.PUT else b""
    assert parse_key_request(op, key_value_body(op, b"key", value)) == (b"key", value, 0, 0)
    assert parse_key_request(op, key_value_body(op, b"key", value, w=2, r=255)) == (b"key", value, 2, 255)
    assert parse_key_request(op, key_value_body(op, b"", b"", r=1)) == (b"", b"", 0, 1)
    # An explicit 00 00 trailer (never sent by this encoder) means the defaults too.
    assert parse_key_request(op, key_value_body(op, b"key", value) + b"\x00\x00") == (b"key", value, 0, 0)
    # The old parser keeps refusing what is not the plain layout.
    with pytest.raises(RemoteProtocolError):
        parse_key_value(op, key_value_body(op, b"key", value, w=2))


def test_a_put_value_ending_like_a_trailer_is_read_by_its_length() -> None:
    # The value's last two bytes could pass for "w=2, r=1": only the lengths decide.
    plain = key_value_body(Op.PUT, b"k", b"abc\x02\x01")
    assert parse_key_request(Op.PUT, plain) == (b"k", b"abc\x02\x01", 0, 0)
    with_trailer = key_value_body(Op.PUT, b"k", b"abc\x02\x01", w=3)
    assert parse_key_request(Op.PUT, with_trailer) == (b"k", b"abc\x02\x01", 3, 0)
    # A key that ends like a trailer, in a GET.
    assert parse_key_request(Op.GET, key_value_body(Op.GET, b"k\x00\x02")) == (b"k\x00\x02", b"", 0, 0)


def test_a_large_put_body_in_a_bytearray_parses() -> None:
    value = bytes(range(256)) * 300
    body = bytearray(key_value_body(Op.PUT, b"big", value, w=2, r=2))
    key, got, w, r = parse_key_request(Op.PUT, body)
    assert (key, w, r) == (b"big", 2, 2)
    assert type(got) is bytes and got == value


@pytest.mark.parametrize(
    ("op", "body"),
    [
        (Op.GET, b""),
        (Op.GET, b"\x00\x00\x00"),
        (Op.GET, struct.pack(">I", 1) + b"k" + b"\x01"),  # one byte too many: half a trailer
        (Op.GET, struct.pack(">I", 1) + b"k" + b"\x01\x02\x03"),  # three too many
        (Op.GET, struct.pack(">I", 5) + b"k"),  # the key runs past the body
        (Op.DELETE, struct.pack(">I", 1) + b"k" + b"\x01\x02\x03\x04"),
        (Op.PUT, struct.pack(">I", 1) + b"k"),  # no value length
        (Op.PUT, struct.pack(">I", 1) + b"k" + struct.pack(">I", 1) + b"v" + b"\x01"),
        (Op.PUT, struct.pack(">I", 1) + b"k" + struct.pack(">I", 1) + b"v" + b"\x01\x02\x03"),
        (Op.PUT, struct.pack(">I", 1) + b"k" + struct.pack(">I", 9) + b"v"),  # the value runs past
        (Op.PUT, struct.pack(">I", 1) + b"k" + struct.pack(">I", 2) + b"v"),  # a byte short
    ],
)
def test_parse_key_request_refuses_bodies_that_do_not_add_up(op: int, body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_key_request(op, body)


@pytest.mark.parametrize(("w", "r"), [(256, 0), (0, 256), (-1, 0), (0, -1), (1.0, 0), (0, "2"), (True, 0)])
def test_the_encoder_refuses_quorums_a_u8_cannot_carry(w: object, r: object) -> None:
    with pytest.raises(LocalProtocolError):
        key_value_body(Op.GET, b"k", w=w, r=r)  # type: ignore[arg-type]


def test_the_encoder_refuses_a_quorum_on_an_op_without_a_key() -> None:
    with pytest.raises(LocalProtocolError):
        key_value_body(Op.PING, b"", w=1)
    assert key_value_body(Op.PING, b"") == b""


@given(
    st.sampled_from([Op.GET, Op.PUT, Op.DELETE]),
    st.binary(max_size=40),
    st.binary(max_size=40),
    st.integers(0, 255),
    st.integers(0, 255),
)
def test_any_key_request_round_trips(op: int, key: bytes, value: bytes, w: int, r: int) -> None:
    value = value if op == Op.PUT else b""
    assert parse_key_request(op, key_value_body(op, key, value, w, r)) == (key, value, w, r)


frames = st.lists(
    st.tuples(st.integers(0, 0xFF), st.integers(0, 0xFFFF_FFFF), st.binary(max_size=300)), max_size=8
)


@given(frames, st.lists(st.integers(1, 64), max_size=20))
def test_v1_and_v2_frames_interleave_under_any_split(
    items: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    stream = b""
    expected: list[object] = []
    for op, request_id, body in items:
        stream += encode_v2_request(op, request_id, body) + encode_request(Op.PING)
        expected += [V2Request(op, request_id, body), (Op.PING, b"", b"")]
    decoder = RequestDecoder(large_value=128)
    got: list[object] = []
    position = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[position : position + cut])
        position += cut
        while (event := decoder.next_event()) is not NEED_DATA:
            got.append(tuple(event) if not isinstance(event, V2Request) else V2Request(*event))
        if position >= len(stream):
            break
    assert [tuple(e) for e in got] == [tuple(e) for e in expected]


@given(st.lists(st.tuples(st.integers(0, 0xFF), st.integers(0, 0xFFFF_FFFF), st.binary(max_size=200))))
def test_response_decoder_under_byte_by_byte_feeding(items: list[tuple[int, int, bytes]]) -> None:
    stream = b"".join(encode_v2_response(*item) for item in items)
    decoder = V2ResponseDecoder(large_value=64)
    got = []
    for index in range(len(stream)):
        decoder.feed(stream[index : index + 1])
        while (event := decoder.next_event()) is not NEED_DATA:
            got.append(event)
    assert got == [V2Response(*item) for item in items]


def test_response_decoder_rejects_v1_and_oversize() -> None:
    decoder = V2ResponseDecoder(max_body=10)
    decoder.feed(b"KVS\x01\x00\x00\x00\x00\x00")
    with pytest.raises(RemoteProtocolError):
        decoder.next_event()
    decoder = V2ResponseDecoder(max_body=10)
    decoder.feed(encode_v2_response(0, 1, b"x" * 11))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decoder.next_event()


def test_an_oversize_v2_body_is_a_fatal_error_carrying_the_request_id() -> None:
    decoder = RequestDecoder(max_key_size=16, max_value_size=16)
    decoder.feed(b"KVS\x02\x02" + struct.pack(">II", 42, 1 << 30))
    event = decoder.next_event()
    assert isinstance(event, FrameError) and event.fatal and event.request_id == 42


# --- a node ---------------------------------------------------------------------------------------


def exchange(tn: ThreadNode, data: bytes, count: int) -> list[V2Response]:
    with socket.create_connection(tn.address, timeout=10) as sock:
        sock.sendall(data)
        decoder = V2ResponseDecoder()
        got: list[V2Response] = []
        while len(got) < count:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(got)} answers"
            decoder.feed(chunk)
            while (event := decoder.next_event()) is not NEED_DATA:
                assert isinstance(event, V2Response)
                got.append(event)
        return got


def test_a_node_answers_v2_requests_with_their_ids(thread_node: ThreadNode) -> None:
    requests = b"".join(
        [
            encode_v2_request(Op.PUT, 10, key_value_body(Op.PUT, b"k", b"v")),
            encode_v2_request(Op.GET, 11, key_value_body(Op.GET, b"k")),
            encode_v2_request(Op.GET, 12, key_value_body(Op.GET, b"missing")),
            encode_v2_request(Op.PING, 13),
            encode_v2_request(Op.DELETE, 14, key_value_body(Op.DELETE, b"k")),
            encode_v2_request(Op.GET, 15, key_value_body(Op.GET, b"k")),
            encode_v2_request(0x2F, 16, b"whatever"),  # no handler: INVALID, and the stream stays in step
            encode_v2_request(Op.GET, 17, b"\x00"),  # a malformed body
            encode_v2_request(Op.STATS, 18),
        ]
    )
    got = {response.request_id: response for response in exchange(thread_node, requests, 9)}
    assert got[10] == V2Response(Status.SUCCESS, 10, b"")
    assert got[11] == V2Response(Status.SUCCESS, 11, b"v")
    assert got[12].status == Status.NOT_FOUND
    assert got[13] == V2Response(Status.SUCCESS, 13, b"pong")
    assert got[15].status == Status.NOT_FOUND
    assert got[16].status == Status.INVALID_REQUEST and b"0x2f" in got[16].body
    assert got[17].status == Status.INVALID_REQUEST
    assert got[18] == V2Response(Status.SUCCESS, 18, b"keys: 0, size: 0")


def test_v1_and_v2_on_one_connection(thread_node: ThreadNode) -> None:
    with socket.create_connection(thread_node.address, timeout=10) as sock:
        sock.sendall(encode_request(Op.PING))
        assert sock.recv(100) == b"KVS\x01\x00\x00\x00\x00\x04pong"
        sock.sendall(encode_v2_request(Op.PING, 5))
        assert sock.recv(100) == encode_v2_response(Status.SUCCESS, 5, b"pong")


def test_a_registered_rpc_handler_answers_its_op(thread_node: ThreadNode) -> None:
    def echo(body: bytes) -> tuple[int, bytes]:
        if body == b"bad":
            raise RemoteProtocolError("bad body")
        return Status.SUCCESS, body[::-1]

    thread_node.node.register_rpc(0x2E, echo)  # before any connection: a dict entry
    requests = encode_v2_request(0x2E, 1, b"abc") + encode_v2_request(0x2E, 2, b"bad")
    got = {response.request_id: response for response in exchange(thread_node, requests, 2)}
    assert got[1] == V2Response(Status.SUCCESS, 1, b"cba")
    assert got[2] == V2Response(Status.INVALID_REQUEST, 2, b"bad body")


def test_v2_key_ops_keep_the_nodes_size_limits(thread_node_factory: Callable[..., ThreadNode]) -> None:
    tn = thread_node_factory(max_key_size=8, max_value_size=16)
    requests = b"".join(
        [
            encode_v2_request(Op.PUT, 1, key_value_body(Op.PUT, b"k", b"v" * 16)),
            encode_v2_request(Op.PUT, 2, key_value_body(Op.PUT, b"k", b"v" * 17)),
            encode_v2_request(Op.GET, 3, key_value_body(Op.GET, b"k" * 9)),
        ]
    )
    got = {response.request_id: response.status for response in exchange(tn, requests, 3)}
    assert got == {1: Status.SUCCESS, 2: Status.INVALID_REQUEST, 3: Status.INVALID_REQUEST}
