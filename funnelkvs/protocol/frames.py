"""v1 and v2 frames: op codes, statuses, the incremental decoders and the encoders (sans-I/O).

This module turns bytes into request/response objects and back. It contains no socket and no clock:
the node, the client library, the peer connections and the tests all feed it bytes and act on what it
returns. See ``docs/protocol.md`` for the byte layout with hex examples.

Version 1 is byte-compatible with the reference FunnelKVS (Erlang)::

    request:  "KVS" | 0x01 | op u8 | [key_len u32 | key] | [value_len u32 | value]
    response: "KVS" | 0x01 | status u8 | value_len u32 | value

All integers are big-endian. Answers on one connection come back in request order.

Decoders are incremental: :meth:`RequestDecoder.feed` only buffers; :meth:`RequestDecoder.next_event`
returns one :class:`Request`, a :class:`FrameError`, or :data:`NEED_DATA`. Any split of the stream,
down to one byte at a time, yields the same requests. How they buffer (and gather large values
without copies) is :mod:`funnelkvs.protocol.receiver`.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final, NamedTuple, cast

from funnelkvs.errors import LocalProtocolError, RemoteProtocolError
from funnelkvs.protocol.receiver import (
    LARGE_VALUE,
    NEED_DATA,
    _append,
    _NeedData,
    _Receiver,
)
from funnelkvs.protocol.v2 import DEFAULT_MAX_BODY, HEADER_V2, V2_HEAD, V2_HEADER_SIZE, V2Request

MAGIC: Final = b"KVS"
VERSION_1: Final = 0x01
#: Reserved for the v2 framing (a u32 request id after the op code, answers out of order). A v1 node
#: answers a v2 frame INVALID_REQUEST until v2 lands; see docs/protocol.md, "The v2 plan".
VERSION_2: Final = 0x02
HEADER_V1: Final = MAGIC + bytes([VERSION_1])

DEFAULT_MAX_KEY_SIZE: Final = 64 * 1024
DEFAULT_MAX_VALUE_SIZE: Final = 16 * 1024 * 1024
#: The largest length a u32 field can declare.
U32_MAX: Final = 0xFFFF_FFFF


class Op(IntEnum):
    """Request op codes. v1 uses 0x01-0x05; the ranges below are reserved for later frames."""

    GET = 0x01
    PUT = 0x02
    DELETE = 0x03
    PING = 0x04
    STATS = 0x05
    #: FunnelKVS extension (not in the reference): the node describes itself as a JSON object.
    INFO = 0x06


#: Op codes reserved for later frames (never valid in v1; documented in docs/protocol.md).
RESERVED_OP_RANGES: Final = {
    "client extensions (v1 and v2)": range(0x07, 0x10),
    "node-to-node RPC (v2)": range(0x10, 0x30),
    "admin queries (v2)": range(0x30, 0x40),
}


class Status(IntEnum):
    SUCCESS = 0x00
    NOT_FOUND = 0x01
    INVALID_REQUEST = 0x02
    SERVER_ERROR = 0x03
    TIMEOUT = 0x04
    NOT_RESPONSIBLE = 0x05


# Plain ints for the hot path: comparing IntEnum members costs a lookup each time.
GET: Final = 0x01
PUT: Final = 0x02
DELETE: Final = 0x03
PING: Final = 0x04
STATS: Final = 0x05
INFO: Final = 0x06
_BODYLESS_OPS: Final = frozenset((PING, STATS, INFO))
_KEYED_OPS: Final = frozenset((GET, DELETE))


class Request(NamedTuple):
    """One decoded request. ``key`` and ``value`` are empty where the op carries none.

    A NamedTuple rather than a frozen dataclass: it is built once per request on the hot path, and
    tuple construction is several times cheaper than a frozen dataclass ``__init__``.

    ``value`` is ``bytes``, except a value the decoder gathered by itself (at least
    :data:`LARGE_VALUE` bytes, spanning reads): that one is the ``bytearray`` it was received into,
    handed over (the decoder keeps no reference to it), so that it is never copied into a ``bytes``.
    Every backend (``StorageBackend.put``) and encoder takes it as it is; a backend that keeps values
    it did not copy must not assume they are hashable.
    """

    op: int
    key: bytes = b""
    value: bytes | bytearray = b""


class Response(NamedTuple):
    status: int
    value: bytes = b""


class FrameError(NamedTuple):
    """The stream broke the protocol.

    ``fatal=False`` (bad magic, bad version, unknown op): the decoder has discarded everything it had
    buffered, as the reference does, and keeps decoding what is fed next; answer INVALID_REQUEST.
    ``fatal=True`` (a declared length beyond the limit): the frame boundary cannot be recovered without
    reading the oversized body, so answer INVALID_REQUEST and close the connection.
    """

    reason: str
    fatal: bool
    #: The request id of the v2 frame that broke the rules (answer it in v2), None for v1.
    request_id: int | None = None


_unpack_v2_head = V2_HEAD.unpack_from
_U32 = struct.Struct(">I")
_unpack_u32 = _U32.unpack_from
#: magic+version, op, first length: the 9 bytes that start every keyed request.
_unpack_head = struct.Struct(">4sBI").unpack_from
#: Builds a Request without NamedTuple's Python-level ``__new__`` (a C call; ~2x cheaper per request).
_new_request = tuple.__new__
#: magic+version (4s), status (B), value length (I): ``RESPONSE_HEAD.pack(HEADER_V1, status, n)``.
RESPONSE_HEAD: Final = struct.Struct(">4sBI")
_pack_response_head = RESPONSE_HEAD.pack
RESPONSE_HEADER_SIZE: Final = 9


def _describe_bad_header(head: bytes) -> str:
    if head[:3] != MAGIC[: len(head[:3])]:
        return f"bad magic {head[:3]!r} (expected b'KVS')"
    return f"unsupported protocol version {head[3]:#04x}"


def _describe_bad_op(op: int) -> str:
    for purpose, codes in RESERVED_OP_RANGES.items():
        if op in codes:
            return f"op {op:#04x} is reserved for {purpose}"
    return f"unknown op {op:#04x}"


class RequestDecoder(_Receiver):
    """Incremental decoder of the requests a client sends to a node.

    A PUT value of at least ``large_value`` bytes that spans reads is yielded as the ``bytearray`` it
    was gathered in (see :class:`Request`); while it is gathered, :attr:`direct_buffer` may offer its
    unfilled part to read into.
    """

    __slots__ = ("_closed", "_key", "_v2", "max_body", "max_key_size", "max_value_size")

    _exact_body = True

    def __init__(
        self,
        max_key_size: int = DEFAULT_MAX_KEY_SIZE,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        large_value: int = LARGE_VALUE,
    ) -> None:
        super().__init__(large_value)
        self.max_key_size = max_key_size
        self.max_value_size = max_value_size
        self._closed = False
        self._key = b""
        #: (op, request id) of the v2 frame whose large body is being gathered, else None.
        self._v2: tuple[int, int] | None = None
        #: The largest v2 body accepted: a PUT of the largest key and value, with their lengths.
        self.max_body = max(max_key_size + max_value_size + 8, DEFAULT_MAX_BODY)

    @property
    def closed(self) -> bool:
        """True after a fatal frame error: nothing more will be decoded."""
        return self._closed

    def feed(self, data: bytes) -> None:
        pos = self._pos
        if pos >= len(self._buf):
            # Everything buffered was decoded (the common case): take the new bytes as they are.
            self._buf = data
            self._pos = 0
        elif pos >= 0:
            self._buf, self._pos = _append(self._buf, pos, data)
        elif self._size:
            self._feed_body(data)
        # else closed: ignored

    def _discard(self, reason: str) -> FrameError:
        self._buf = b""
        self._pos = 0
        return FrameError(reason, False)

    def _fatal(self, reason: str, request_id: int | None = None) -> FrameError:
        self._buf = b""
        self._pos = -1  # with no value being gathered: feed ignores everything, next_event says NEED_DATA
        self._closed = True
        return FrameError(reason, True, request_id)

    def next_event(self) -> Request | V2Request | FrameError | _NeedData:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        # Fast path: a whole 9-byte keyed header is here. One unpack reads magic+version, op and the
        # key length at once; it is most of the cost of a small GET.
        if end - pos >= 9:
            head, op, klen = _unpack_head(buf, pos)
            if head == HEADER_V1 and (op == GET or op == DELETE or op == PUT):
                if klen > self.max_key_size:
                    return self._fatal(f"key length {klen} exceeds the maximum of {self.max_key_size}")
                key_end = pos + 9 + klen
                if op != PUT:
                    if end < key_end:
                        return self._partial(buf, pos, end)
                    self._pos = key_end
                    key = buf[pos + 9 : key_end]
                    # A partial frame lives in a bytearray; requests always carry bytes.
                    return _new_request(Request, (op, key if type(key) is bytes else bytes(key), b""))
                if end < key_end + 4:
                    return self._partial(buf, pos, end)
                vlen = _unpack_u32(buf, key_end)[0]
                if vlen > self.max_value_size:
                    return self._fatal(f"value length {vlen} exceeds the maximum of {self.max_value_size}")
                stop = key_end + 4 + vlen
                if end < stop:
                    if vlen >= self.large_value:
                        key = buf[pos + 9 : key_end]
                        self._key = key if type(key) is bytes else bytes(key)
                        return self._begin_body(buf, key_end + 4, vlen)
                    return self._partial(buf, pos, end)
                self._pos = stop
                key = buf[pos + 9 : key_end]
                value = buf[key_end + 4 : stop]
                if type(buf) is not bytes:
                    key, value = bytes(key), bytes(value)
                return _new_request(Request, (PUT, key, value))
        elif pos == end:
            if end > 4096:  # KEEP_DECODED; a literal, this is the end of every read
                # Everything decoded: let the buffer go, so an idle connection holds no large read.
                self._buf = b""
                self._pos = 0
            return NEED_DATA  # the usual end of a read, without another call
        return self._next_slow(buf, pos, end)

    def _next_slow(
        self, buf: bytes | bytearray, pos: int, end: int
    ) -> Request | V2Request | FrameError | _NeedData:
        """Short frames (PING, STATS, INFO), incomplete headers and bad headers; a gathered value."""
        if pos < 0:
            if self._size:
                value = self._take_body()
                if value is not None:
                    if self._v2 is not None:
                        (op, request_id), self._v2 = self._v2, None
                        return V2Request(op, request_id, value)
                    key, self._key = self._key, b""
                    return _new_request(Request, (PUT, key, value))
            return NEED_DATA  # the value is incomplete, or the decoder is closed
        avail = end - pos
        if avail < 5:
            # Reject a header as soon as its bytes can no longer be a prefix of "KVS\x01" (or of
            # "KVS\x02"), so a client that sent a few stray bytes gets its answer instead of waiting.
            if avail and buf[pos:end] != HEADER_V1[:avail] and buf[pos:end] != HEADER_V2[:avail]:
                return self._discard(_describe_bad_header(bytes(buf[pos:end])))
            return self._partial(buf, pos, end)
        if buf.startswith(HEADER_V2, pos):
            return self._next_v2(buf, pos, end)
        if not buf.startswith(HEADER_V1, pos):
            return self._discard(_describe_bad_header(bytes(buf[pos : pos + 4])))
        op = buf[pos + 4]
        if op in _BODYLESS_OPS:
            self._pos = pos + 5
            return _new_request(Request, (op, b"", b""))
        if op in _KEYED_OPS or op == PUT:
            return self._partial(buf, pos, end)  # fewer than 9 bytes: the key length is not here yet
        return self._discard(_describe_bad_op(op))

    def _next_v2(self, buf: bytes | bytearray, pos: int, end: int) -> V2Request | FrameError | _NeedData:
        """A v2 frame (docs/protocol.md, "v2 frames"): yielded whole, whatever its op; the node
        answers an op it does not know (the body length keeps the stream in step)."""
        if end - pos < V2_HEADER_SIZE:
            return self._partial(buf, pos, end)
        _, op, request_id, length = _unpack_v2_head(buf, pos)
        if length > self.max_body:
            return self._fatal(f"v2 body length {length} exceeds the maximum of {self.max_body}", request_id)
        start = pos + V2_HEADER_SIZE
        stop = start + length
        if end < stop:
            if length >= self.large_value:
                self._v2 = (op, request_id)
                return self._begin_body(buf, start, length)
            return self._partial(buf, pos, end)
        self._pos = stop
        return V2Request(op, request_id, bytes(buf[start:stop]))


class ResponseDecoder(_Receiver):
    """Incremental decoder of the responses a node sends back (used by clients and peers).

    A response that breaks the protocol raises :class:`RemoteProtocolError`: unlike a node, a client
    cannot answer garbage, and the connection is no longer usable.

    Values are always ``bytes``. One of at least ``large_value`` bytes that spans reads is kept as
    the pieces that arrive and joined once when complete (a peak of twice its size, for that moment;
    a ``bytes`` object cannot be filled in place), never in a growing frame buffer; the buffer of a
    complete answer is let go as it is decoded.
    """

    __slots__ = ("_status", "max_value_size")

    def __init__(self, max_value_size: int = U32_MAX, large_value: int = LARGE_VALUE) -> None:
        super().__init__(large_value)
        self.max_value_size = max_value_size
        self._status = 0

    def next_event(self) -> Response | _NeedData:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        avail = end - pos
        if avail < RESPONSE_HEADER_SIZE:
            if pos < 0:
                value = self._take_body()  # bytes: this decoder joins the pieces
                return NEED_DATA if value is None else Response(self._status, cast(bytes, value))
            if avail and buf[pos : pos + min(avail, 4)] != HEADER_V1[: min(avail, 4)]:
                raise RemoteProtocolError(_describe_bad_header(bytes(buf[pos : pos + 4])))
            if avail:
                return self._partial(buf, pos, end)
            if end:
                self._buf = b""
                self._pos = 0
            return NEED_DATA
        if buf[pos : pos + 4] != HEADER_V1:
            raise RemoteProtocolError(_describe_bad_header(bytes(buf[pos : pos + 4])))
        status = buf[pos + 4]
        vlen = _unpack_u32(buf, pos + 5)[0]
        if vlen > self.max_value_size:
            raise RemoteProtocolError(f"response value length {vlen} exceeds {self.max_value_size}")
        stop = pos + RESPONSE_HEADER_SIZE + vlen
        if end < stop:
            if vlen >= self.large_value:
                self._status = status
                return self._begin_body(buf, pos + RESPONSE_HEADER_SIZE, vlen)
            return self._partial(buf, pos, end)
        value = bytes(buf[pos + RESPONSE_HEADER_SIZE : stop])
        if stop == end:
            # Let the buffer go now: a client decodes one answer per call and may then sit idle.
            self._buf = b""
            self._pos = 0
        else:
            self._pos = stop
        return Response(status, value)


def encode_request(op: int, key: bytes = b"", value: bytes = b"") -> bytes:
    """The v1 bytes of one request. Raises :class:`LocalProtocolError` for what v1 cannot carry."""
    if op in _KEYED_OPS:
        if len(key) > U32_MAX:
            raise LocalProtocolError("key longer than a u32 length can declare")
        return HEADER_V1 + bytes((op,)) + _U32.pack(len(key)) + key
    if op == PUT:
        if len(key) > U32_MAX or len(value) > U32_MAX:
            raise LocalProtocolError("key or value longer than a u32 length can declare")
        return b"".join((HEADER_V1, bytes((PUT,)), _U32.pack(len(key)), key, _U32.pack(len(value)), value))
    if op in _BODYLESS_OPS:
        return HEADER_V1 + bytes((op,))
    raise LocalProtocolError(f"op {op:#04x} is not a v1 request")


def encode_response(status: int, value: bytes | bytearray = b"") -> bytes:
    """The v1 bytes of one response."""
    return _pack_response_head(HEADER_V1, status, len(value)) + value


# Answers that never change, encoded once.
RESPONSE_OK: Final = encode_response(Status.SUCCESS)
RESPONSE_NOT_FOUND: Final = encode_response(Status.NOT_FOUND)
RESPONSE_INVALID: Final = encode_response(Status.INVALID_REQUEST)
RESPONSE_SERVER_ERROR: Final = encode_response(Status.SERVER_ERROR)
RESPONSE_PONG: Final = encode_response(Status.SUCCESS, b"pong")


def stats_text(keys: int, size: int) -> bytes:
    """The reference's STATS answer body: ``keys: N, size: N``."""
    return f"keys: {keys}, size: {size}".encode()


def parse_stats_text(text: bytes) -> dict[str, int]:
    """Inverse of :func:`stats_text`; tolerant of extra ``name: N`` fields a later node may add."""
    out: dict[str, int] = {}
    for part in text.decode("utf-8", "replace").split(","):
        name, sep, number = part.partition(":")
        if sep:
            try:
                out[name.strip()] = int(number.strip())
            except ValueError:
                continue
    return out
