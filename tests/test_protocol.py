"""The v1 codec, without sockets: round trips, the reference byte sequences, every malformed frame,
and arbitrary splits and arbitrary bytes (hypothesis)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnelkvs.errors import LocalProtocolError, RemoteProtocolError
from funnelkvs.protocol import (
    NEED_DATA,
    FrameError,
    Op,
    Request,
    RequestDecoder,
    Response,
    ResponseDecoder,
    Status,
    encode_request,
    encode_response,
    parse_stats_text,
    stats_text,
)


def decode_all(decoder: RequestDecoder) -> list[Request | FrameError]:
    events: list[Request | FrameError] = []
    while (event := decoder.next_event()) is not NEED_DATA:
        events.append(event)  # type: ignore[arg-type]
    return events


def decode_requests(data: bytes, **limits: int) -> list[Request | FrameError]:
    decoder = RequestDecoder(**limits)
    decoder.feed(data)
    return decode_all(decoder)


# --- the reference byte sequences ------------------------------------------------------------------

REFERENCE_REQUESTS = [
    (b"KVS\x01\x01\x00\x00\x00\x03foo", Request(Op.GET, b"foo")),
    (b"KVS\x01\x02\x00\x00\x00\x03foo\x00\x00\x00\x03bar", Request(Op.PUT, b"foo", b"bar")),
    (b"KVS\x01\x03\x00\x00\x00\x03foo", Request(Op.DELETE, b"foo")),
    (b"KVS\x01\x04", Request(Op.PING)),
    (b"KVS\x01\x05", Request(Op.STATS)),
    (b"KVS\x01\x06", Request(Op.INFO)),
]


@pytest.mark.parametrize(("wire", "request_"), REFERENCE_REQUESTS)
def test_reference_request_bytes(wire: bytes, request_: Request) -> None:
    assert decode_requests(wire) == [request_]
    assert encode_request(*request_) == wire


@pytest.mark.parametrize(
    ("response", "wire"),
    [
        (Response(Status.SUCCESS, b""), b"KVS\x01\x00\x00\x00\x00\x00"),
        (Response(Status.SUCCESS, b"pong"), b"KVS\x01\x00\x00\x00\x00\x04pong"),
        (Response(Status.NOT_FOUND, b""), b"KVS\x01\x01\x00\x00\x00\x00"),
        (Response(Status.INVALID_REQUEST, b""), b"KVS\x01\x02\x00\x00\x00\x00"),
        (Response(Status.SERVER_ERROR, b""), b"KVS\x01\x03\x00\x00\x00\x00"),
        (Response(Status.TIMEOUT, b""), b"KVS\x01\x04\x00\x00\x00\x00"),
        (Response(Status.NOT_RESPONSIBLE, b""), b"KVS\x01\x05\x00\x00\x00\x00"),
    ],
)
def test_reference_response_bytes(response: Response, wire: bytes) -> None:
    assert encode_response(*response) == wire
    decoder = ResponseDecoder()
    decoder.feed(wire)
    assert decoder.next_event() == response
    assert decoder.next_event() is NEED_DATA


def test_stats_text_matches_reference_and_parses() -> None:
    assert stats_text(3, 42) == b"keys: 3, size: 42"
    assert parse_stats_text(b"keys: 3, size: 42") == {"keys": 3, "size": 42}
    assert parse_stats_text(b"keys: 3, size: 42, extra: x") == {"keys": 3, "size": 42}


# --- malformed frames ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"XYZ\x01\x04", "bad magic"),
        (b"KVX\x01\x04", "bad magic"),
        (b"KVS\x09\x04", "unsupported protocol version"),
        (b"KVS\x02\x04", "version 2 is reserved"),
        (b"KVS\x01\x00", "unknown op 0x00"),
        (b"KVS\x01\x07", "reserved for client extensions"),
        (b"KVS\x01\x10", "reserved for node-to-node RPC"),
        (b"KVS\x01\x30", "reserved for admin queries"),
        (b"KVS\x01\xff", "unknown op 0xff"),
    ],
)
def test_bad_header_discards_buffer_and_keeps_decoding(wire: bytes, reason: str) -> None:
    decoder = RequestDecoder()
    decoder.feed(wire + b"KVS\x01\x04")  # a valid PING in the same buffer is discarded with it
    (event,) = decode_all(decoder)
    assert isinstance(event, FrameError)
    assert reason in event.reason
    assert not event.fatal
    assert decoder.buffered == 0
    decoder.feed(b"KVS\x01\x04")  # what arrives next is decoded afresh
    assert decode_all(decoder) == [Request(Op.PING)]


def test_partial_bad_magic_is_rejected_before_five_bytes() -> None:
    decoder = RequestDecoder()
    decoder.feed(b"G")
    (event,) = decode_all(decoder)
    assert isinstance(event, FrameError) and not event.fatal
    decoder.feed(b"KV")
    assert decoder.next_event() is NEED_DATA  # still a possible prefix


@pytest.mark.parametrize(
    "wire",
    [
        b"KVS\x01\x01" + struct.pack(">I", 65537),
        b"KVS\x01\x03" + struct.pack(">I", 0xFFFFFFFF),
        b"KVS\x01\x02" + struct.pack(">I", 65537),
        b"KVS\x01\x02\x00\x00\x00\x01k" + struct.pack(">I", 16 * 1024 * 1024 + 1),
    ],
)
def test_oversize_length_is_fatal_without_waiting_for_the_body(wire: bytes) -> None:
    decoder = RequestDecoder(max_key_size=65536, max_value_size=16 * 1024 * 1024)
    decoder.feed(wire)  # only the header: the body is never needed to decide
    (event,) = decode_all(decoder)
    assert isinstance(event, FrameError) and event.fatal
    assert "exceeds the maximum" in event.reason
    assert decoder.closed
    decoder.feed(b"KVS\x01\x04")
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered == 0


def test_limits_are_inclusive() -> None:
    key = b"k" * 10
    assert decode_requests(encode_request(Op.PUT, key, b"v" * 20), max_key_size=10, max_value_size=20) == [
        Request(Op.PUT, key, b"v" * 20)
    ]


def test_requests_before_an_error_are_kept_in_order() -> None:
    events = decode_requests(encode_request(Op.PING) + encode_request(Op.GET, b"a") + b"BAD!!")
    assert events[:2] == [Request(Op.PING), Request(Op.GET, b"a")]
    assert isinstance(events[2], FrameError)


def test_encode_rejects_non_v1_ops() -> None:
    with pytest.raises(LocalProtocolError):
        encode_request(0x10)


@pytest.mark.parametrize("wire", [b"XVS\x01\x00\x00\x00\x00\x00", b"KVS\x02\x00\x00\x00\x00\x00", b"Q"])
def test_response_decoder_rejects_garbage(wire: bytes) -> None:
    decoder = ResponseDecoder()
    decoder.feed(wire)
    with pytest.raises(RemoteProtocolError):
        decoder.next_event()


def test_response_decoder_enforces_its_value_limit() -> None:
    decoder = ResponseDecoder(max_value_size=4)
    decoder.feed(b"KVS\x01\x00\x00\x00\x00\x05")
    with pytest.raises(RemoteProtocolError):
        decoder.next_event()


# --- properties ------------------------------------------------------------------------------------

keys = st.binary(max_size=64)
values = st.binary(max_size=256)
requests = st.one_of(
    st.builds(Request, st.sampled_from([Op.GET, Op.DELETE]), keys, st.just(b"")),
    st.builds(Request, st.just(Op.PUT), keys, values),
    st.builds(Request, st.sampled_from([Op.PING, Op.STATS]), st.just(b""), st.just(b"")),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return pieces


@settings(max_examples=200, deadline=None)
@given(st.lists(requests, max_size=20), st.lists(st.integers(min_value=0), max_size=30))
def test_any_split_of_a_valid_stream_decodes_the_same(reqs: list[Request], cuts: list[int]) -> None:
    wire = b"".join(encode_request(*r) for r in reqs)
    decoder = RequestDecoder()
    events: list[Request | FrameError] = []
    for piece in split(wire, cuts):
        decoder.feed(piece)
        events += decode_all(decoder)
    assert events == [Request(int(r.op), r.key, r.value) for r in reqs]
    assert decoder.buffered == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(requests, min_size=1, max_size=10))
def test_one_byte_at_a_time(reqs: list[Request]) -> None:
    wire = b"".join(encode_request(*r) for r in reqs)
    decoder = RequestDecoder()
    events: list[Request | FrameError] = []
    for i in range(len(wire)):
        decoder.feed(wire[i : i + 1])
        events += decode_all(decoder)
    assert events == list(reqs)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_bytes_never_crash_and_stay_bounded(chunks: list[bytes]) -> None:
    decoder = RequestDecoder(max_key_size=32, max_value_size=32)
    fed = 0
    for chunk in chunks:
        decoder.feed(chunk)
        fed += len(chunk)
        for event in decode_all(decoder):
            assert isinstance(event, Request | FrameError)
            if isinstance(event, Request):
                assert event.op in {1, 2, 3, 4, 5, 6}
                assert len(event.key) <= 32 and len(event.value) <= 32
        # Never more buffered than one maximal frame (9 + 32 + 4 + 32 bytes) plus the last chunk.
        assert decoder.buffered <= 9 + 32 + 4 + 32 + 64


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(list(Status)), values), max_size=20),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_responses_round_trip_under_any_split(responses: list[tuple[Status, bytes]], cuts: list[int]) -> None:
    wire = b"".join(encode_response(s, v) for s, v in responses)
    decoder = ResponseDecoder()
    got: list[Response] = []
    for piece in split(wire, cuts):
        decoder.feed(piece)
        while (event := decoder.next_event()) is not NEED_DATA:
            got.append(event)  # type: ignore[arg-type]
    assert got == [Response(int(s), v) for s, v in responses]
