"""The v1 codec, without sockets: round trips, the reference byte sequences, every malformed frame,
and arbitrary splits and arbitrary bytes (hypothesis)."""

from __future__ import annotations

import random
import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnelkvs.errors import LocalProtocolError, RemoteProtocolError
from funnelkvs.protocol import (
    KEEP_DECODED,
    LARGE_VALUE,
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
@given(st.lists(st.binary(max_size=64), max_size=20), st.sampled_from([1, 8, LARGE_VALUE]))
def test_arbitrary_bytes_never_crash_and_stay_bounded(chunks: list[bytes], large_value: int) -> None:
    decoder = RequestDecoder(max_key_size=32, max_value_size=32, large_value=large_value)
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


# --- memory: large values, released buffers ----------------------------------------------------------

MIB = 1 << 20
#: What the node reads at most per call (funnelkvs.node.RECV_SIZE).
NODE_READ = 256 * 1024


def feed_stream(
    decoder: RequestDecoder, wire: bytes, sizes: list[int], direct: bool
) -> list[Request | FrameError]:
    """Hand ``wire`` to ``decoder`` in reads of the given sizes (cycled; a size of 0 reads 1 byte),
    decoding after each read. With ``direct``, read into :attr:`direct_buffer` whenever it is offered,
    as the node does (at most its length, as recv_into does)."""
    events: list[Request | FrameError] = []
    at = i = 0
    while at < len(wire):
        size = max(1, sizes[i % len(sizes)]) if sizes else len(wire)
        i += 1
        target = decoder.direct_buffer if direct else None
        if target is not None:
            count = min(size, len(target), len(wire) - at)
            target[:count] = wire[at : at + count]
            decoder.direct_received(count)
        else:
            count = min(size, len(wire) - at)
            decoder.feed(wire[at : at + count])
        at += count
        events += decode_all(decoder)
    return events


big_values = st.binary(min_size=0, max_size=300)
requests_with_big_values = st.one_of(
    st.builds(Request, st.sampled_from([Op.GET, Op.DELETE]), keys, st.just(b"")),
    st.builds(Request, st.just(Op.PUT), keys, big_values),
    st.builds(Request, st.sampled_from([Op.PING, Op.STATS]), st.just(b""), st.just(b"")),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(requests_with_big_values, max_size=12),
    st.lists(st.integers(min_value=0, max_value=400), max_size=30),
    st.integers(min_value=1, max_value=64),
    st.booleans(),
)
def test_large_values_decode_the_same_under_any_split_and_leave_nothing_held(
    reqs: list[Request], sizes: list[int], large_value: int, direct: bool
) -> None:
    """Values past ``large_value`` are gathered by themselves (pieces, then an exact buffer, perhaps
    read into directly): the requests are the same as with any other split, and once everything is
    decoded the decoder holds no more than a small last read."""
    wire = b"".join(encode_request(*r) for r in reqs)
    decoder = RequestDecoder(large_value=large_value)
    events = feed_stream(decoder, wire, sizes, direct)
    assert events == [Request(int(r.op), r.key, r.value) for r in reqs]
    for event, request in zip(events, reqs, strict=True):
        assert isinstance(event, Request)
        assert type(event.key) is bytes
        if len(request.value) >= large_value:
            assert type(event.value) in (bytes, bytearray)
        else:
            assert type(event.value) is bytes
    assert decoder.buffered == 0
    assert decoder.buffered_capacity <= KEEP_DECODED
    assert decoder.direct_buffer is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(list(Status)), big_values), max_size=12),
    st.lists(st.integers(min_value=0, max_value=400), max_size=30),
    st.integers(min_value=1, max_value=64),
)
def test_large_responses_decode_the_same_under_any_split(
    responses: list[tuple[Status, bytes]], sizes: list[int], large_value: int
) -> None:
    wire = b"".join(encode_response(s, v) for s, v in responses)
    decoder = ResponseDecoder(large_value=large_value)
    got: list[Response] = []
    at = i = 0
    while at < len(wire):
        size = max(1, sizes[i % len(sizes)]) if sizes else len(wire)
        i += 1
        decoder.feed(wire[at : at + size])
        at += size
        while (event := decoder.next_event()) is not NEED_DATA:
            got.append(event)  # type: ignore[arg-type]
    assert got == [Response(int(s), v) for s, v in responses]
    assert all(type(r.value) is bytes for r in got)
    assert decoder.buffered == 0 and decoder.buffered_capacity == 0


def test_bytes_after_a_gathered_value_are_framed_in_order() -> None:
    """A read that ends one large value and carries the next frames: the rest is decoded after it,
    whether the value was still in pieces or already in its own buffer."""
    first = encode_request(Op.PUT, b"a", b"1" * 100)
    after = encode_request(Op.GET, b"a") + encode_request(Op.PUT, b"b", b"2" * 100) + encode_request(Op.PING)
    for cut in (20, 70, 100):  # under half of the first value, over half, nearly all
        decoder = RequestDecoder(large_value=50)
        decoder.feed(first[:cut])
        assert decode_all(decoder) == []
        decoder.feed(first[cut:] + after[:30])
        decoder.feed(after[30:])  # more before decoding: appended after the value's rest
        assert decode_all(decoder) == [
            Request(Op.PUT, b"a", b"1" * 100),
            Request(Op.GET, b"a"),
            Request(Op.PUT, b"b", b"2" * 100),
            Request(Op.PING),
        ]
        assert decoder.buffered == 0 and decoder.buffered_capacity <= KEEP_DECODED


def test_a_large_value_gathered_holds_at_most_twice_what_arrived() -> None:
    """While a large value arrives the decoder holds its pieces, then (from half on) one buffer of
    exactly its length: never more than twice what was received, whatever the header announced."""
    size = 4 * MIB
    wire = encode_request(Op.PUT, b"k", bytes(size))
    decoder = RequestDecoder()
    decoder.feed(wire[:13])  # the header announces 4 MiB; nothing of it is allocated yet
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered_capacity < 100
    at = 13
    while at < len(wire):
        decoder.feed(wire[at : at + NODE_READ])
        at += NODE_READ
        received = min(at, len(wire)) - 14
        if at < len(wire):
            assert decoder.next_event() is NEED_DATA
            assert received <= decoder.buffered_capacity <= 2 * received
            assert decoder.buffered == min(at, len(wire)) - 14
    (event,) = decode_all(decoder)
    assert event == Request(Op.PUT, b"k", bytes(size))
    assert decoder.buffered_capacity == 0


def test_idle_decoder_lets_a_large_read_go_once_decoded() -> None:
    """The bytes of a read are let go once all of it is decoded, not kept until the next read (a read
    of small frames can be as large as the node's 256 KiB read buffer)."""
    decoder = RequestDecoder()
    decoder.feed(encode_request(Op.PUT, b"k", b"v" * 1000) * 100 + encode_request(Op.GET, b"k")[:5])
    assert len(decode_all(decoder)) == 100
    assert decoder.buffered_capacity < 64  # the partial header only
    decoder.feed(encode_request(Op.GET, b"k")[5:])
    assert decode_all(decoder) == [Request(Op.GET, b"k")]
    assert decoder.buffered_capacity <= KEEP_DECODED
    decoder.feed(encode_request(Op.PING) * 2000)
    assert len(decode_all(decoder)) == 2000
    assert decoder.buffered_capacity == 0


def test_direct_received_refuses_more_than_the_room_offered() -> None:
    decoder = RequestDecoder(large_value=16)
    with pytest.raises(ValueError):
        decoder.direct_received(1)  # no value being gathered
    decoder.feed(encode_request(Op.PUT, b"k", b"x" * 100)[:70])  # over half of the value: exact buffer
    assert decoder.next_event() is NEED_DATA
    room = decoder.direct_buffer
    assert room is not None and len(room) == 100 - (70 - 14)
    with pytest.raises(ValueError):
        decoder.direct_received(len(room) + 1)
    room[:] = b"y" * len(room)
    decoder.direct_received(len(room))
    assert decoder.direct_buffer is None
    assert decoder.next_event() == Request(Op.PUT, b"k", b"x" * 56 + b"y" * 44)


def node_like_receive(
    decoder: RequestDecoder, wire: memoryview, recv_buffer: bytearray
) -> list[Request | FrameError]:
    """What Node._on_client_event does with ``wire`` arriving in reads of at most 256 KiB: read into
    the decoder's direct buffer when it offers one, else into its own fixed buffer, copied out as
    bytes. (``wire`` is a memoryview, so that the harness itself copies nothing.)"""
    view = memoryview(recv_buffer)
    events: list[Request | FrameError] = []
    at = 0
    while at < len(wire):
        direct = decoder.direct_buffer
        target = view if direct is None else direct
        count = min(len(target), len(wire) - at)
        target[:count] = wire[at : at + count]
        at += count
        if direct is None:
            decoder.feed(view[:count].tobytes())
        else:
            decoder.direct_received(count)
        events += decode_all(decoder)
    del direct, target
    return events


@pytest.mark.parametrize("direct", [True, False], ids=["read-into-direct-buffer", "feed-only"])
def test_receiving_16_mib_peaks_at_one_and_a_half_times_the_value(direct: bool) -> None:
    """Receiving one 16 MiB PUT the node's way allocates at most 1.5x the value plus a constant
    (before: frame buffer, a slice and a bytes copy, about 3x), hands the value over as its own
    buffer, and keeps nothing once it is decoded."""
    size = 16 * MIB
    wire = encode_request(Op.PUT, b"big", random.Random(6).randbytes(size))
    decoder = RequestDecoder()
    recv_buffer = bytearray(NODE_READ)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        if direct:
            events = node_like_receive(decoder, memoryview(wire), recv_buffer)
        else:  # each read a new bytes object, as the node's copy out of its read buffer is
            events = feed_stream(decoder, wire, [NODE_READ], direct=False)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    (event,) = events
    assert isinstance(event, Request)
    assert event.value == wire[-size:]
    assert isinstance(event.value, bytearray) and len(event.value) == size
    assert peak <= 1.5 * size + 2 * NODE_READ + 64 * 1024, f"peak {peak / MIB:.2f} MiB"
    assert decoder.buffered_capacity == 0


def test_receiving_a_16_mib_response_peaks_at_twice_the_value() -> None:
    """The client side yields bytes, so one copy is unavoidable: pieces, then one join."""
    size = 16 * MIB
    wire = encode_response(Status.SUCCESS, random.Random(7).randbytes(size))
    decoder = ResponseDecoder()
    chunk = 64 * 1024  # what the client reads per call
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        got = []
        for at in range(0, len(wire), chunk):
            decoder.feed(wire[at : at + chunk])
            while (event := decoder.next_event()) is not NEED_DATA:
                got.append(event)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert got == [Response(Status.SUCCESS, wire[9:])]
    assert peak <= 2 * size + 4 * chunk + 64 * 1024, f"peak {peak / MIB:.2f} MiB"
    assert decoder.buffered_capacity == 0
