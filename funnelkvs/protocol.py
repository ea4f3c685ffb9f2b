"""The FunnelKVS wire protocol, sans-I/O (in the style of h11).

This module turns bytes into request/response objects and back. It contains no socket and no clock:
the node, the client library, the peer connections and the tests all feed it bytes and act on what it
returns. See ``docs/protocol.md`` for the byte layout with hex examples.

Version 1 is byte-compatible with the reference FunnelKVS (Erlang)::

    request:  "KVS" | 0x01 | op u8 | [key_len u32 | key] | [value_len u32 | value]
    response: "KVS" | 0x01 | status u8 | value_len u32 | value

All integers are big-endian. Answers on one connection come back in request order.

Decoders are incremental: :meth:`RequestDecoder.feed` only buffers; :meth:`RequestDecoder.next_event`
returns one :class:`Request`, a :class:`FrameError`, or :data:`NEED_DATA`. Any split of the stream,
down to one byte at a time, yields the same requests.

Memory follows what a connection needs now, not the largest thing it ever sent. A buffer whose bytes
have all been decoded is let go (an idle decoder keeps at most :data:`KEEP_DECODED` bytes), and a
value of at least ``large_value`` bytes (:data:`LARGE_VALUE`) that spans reads is gathered by itself:
first as the pieces that arrive, then, once half of it is here, in one buffer of exactly its length,
whose unfilled part :attr:`RequestDecoder.direct_buffer` offers to read straight into. Receiving such
a value peaks at 1.5 times its size (the pieces, under half, and the whole buffer, while one is
copied into the other), and never holds more than twice what has arrived: a header alone announcing
16 MiB allocates nothing.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final, NamedTuple, cast

from funnelkvs.errors import LocalProtocolError, RemoteProtocolError

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
#: A value at least this long that is not complete in the buffer is gathered by itself (see above)
#: rather than in the decode buffer: no copy of the frame, no slice of it, nothing kept afterwards.
LARGE_VALUE: Final = 64 * 1024
#: A decoded buffer up to this size may stay referenced until the next read replaces it (letting
#: every small read go at once would cost the hot path two stores); a larger one is let go as soon
#: as it is all decoded.
KEEP_DECODED: Final = 4096


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


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_event`` when the buffer holds no complete frame.
NEED_DATA: Final = _NeedData()

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


def _append(buf: bytes | bytearray, pos: int, data: bytes) -> tuple[bytes | bytearray, int]:
    """The decode buffer after ``data`` arrives: ``(buffer, position of the first undecoded byte)``.

    Called only when a partial frame is left (when everything was decoded, the new bytes simply become
    the buffer, uncopied). The partial frame moves to a bytearray that then grows in place, so a frame
    arriving in many reads is copied once, not once per read. (Large values do not come this way: see
    :meth:`_Receiver._begin_body`.)
    """
    if type(buf) is bytearray:
        if pos:
            del buf[:pos]
        buf += data
        return buf, 0
    grown = bytearray(buf[pos:])
    grown += data
    return grown, 0


def _held(buf: bytes | bytearray) -> int:
    """Bytes of memory behind a buffer: a bytearray's allocation, a bytes object's length."""
    return buf.__alloc__() if type(buf) is bytearray else len(buf)


def _describe_bad_header(head: bytes) -> str:
    if head[:3] != MAGIC[: len(head[:3])]:
        return f"bad magic {head[:3]!r} (expected b'KVS')"
    if len(head) >= 4 and head[3] == VERSION_2:
        return "protocol version 2 is reserved and not supported by this node yet"
    return f"unsupported protocol version {head[3]:#04x}"


def _describe_bad_op(op: int) -> str:
    for purpose, codes in RESERVED_OP_RANGES.items():
        if op in codes:
            return f"op {op:#04x} is reserved for {purpose}"
    return f"unknown op {op:#04x}"


class _Receiver:
    """The buffering both decoders share: the decode buffer, and the gathering of one large value.

    Two states. *Framing*: ``_buf[_pos:]`` holds the undecoded bytes (``_pos >= 0``). *Gathering a
    value* of ``_size`` bytes whose header has been decoded: ``_pos`` is -1, so that the decoders'
    fast paths step aside; the value's first ``_filled`` bytes are in ``_chunks`` (the pieces as
    they arrived) or, on an :attr:`_exact_body` decoder once half of the value has arrived, at the
    start of ``_body`` (a buffer of exactly ``_size`` bytes, whose unfilled part is
    :attr:`direct_buffer`); bytes past the value wait in ``_after``. A decoder that yields ``bytes``
    never allocates ``_body``: it joins the pieces once, at the end.
    """

    __slots__ = (
        "_after",
        "_body",
        "_buf",
        "_chunks",
        "_filled",
        "_pos",
        "_size",
        "direct_buffer",
        "large_value",
    )

    #: Gather into one exactly-sized bytearray, handed over as the value (else join the pieces into
    #: a bytes object at the end).
    _exact_body = False

    def __init__(self, large_value: int) -> None:
        self.large_value = max(1, large_value)
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._size = 0
        self._filled = 0
        self._chunks: list[bytes] = []
        self._body: bytearray | None = None
        self._after: bytes | bytearray = b""
        #: None, or a writable memoryview: the part of a large value still to come, once the decoder
        #: holds the value's own buffer. A caller may read straight into it (``sock.recv_into``) and
        #: report the count with :meth:`direct_received`, instead of :meth:`feed`: the bytes are then
        #: never copied. Read into it at most its length (recv_into's default), so that only the
        #: value's bytes land there; whatever follows the value comes through :meth:`feed`.
        self.direct_buffer: memoryview | None = None

    def _buffered_body(self) -> int:
        return self._filled + len(self._after) if self._size else 0

    @property
    def buffered_capacity(self) -> int:
        """Bytes of memory this decoder holds: input not yet returned as an event, and the last
        buffer fed if it was small.

        At most :data:`KEEP_DECODED` once everything fed has been decoded (and :meth:`next_event` has
        said :data:`NEED_DATA`), whatever the size of what came before.
        """
        held = _held(self._buf) + _held(self._after) + sum(map(len, self._chunks))
        return held + (len(self._body) if self._body is not None else 0)

    def direct_received(self, count: int) -> None:
        """``count`` bytes were written at the start of :attr:`direct_buffer` (e.g. by recv_into)."""
        view = self.direct_buffer
        if view is None or not 0 <= count <= len(view):
            raise ValueError(f"direct_received({count}) without that much room in direct_buffer")
        self._filled += count
        self.direct_buffer = view[count:] if count < len(view) else None

    def _begin_body(self, buf: bytes | bytearray, start: int, size: int) -> _NeedData:
        """Gather the ``size``-byte value that starts at ``buf[start]`` and does not end in ``buf``."""
        self._size = size
        self._filled = 0
        self._buf = b""
        self._pos = -1
        self._feed_body(memoryview(buf)[start:])
        return NEED_DATA

    def _feed_body(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes that arrive while a value is gathered: the value's part, then the rest to ``_after``."""
        size = self._size
        filled = self._filled
        count = len(data)
        take = min(count, size - filled)
        if take:
            room = self.direct_buffer  # the unfilled part of the value's buffer, once there is one
            if room is None and (not self._exact_body or 2 * (filled + take) < size):
                # A piece of its own (the caller's bytes object itself when it is all value).
                self._chunks.append(data if take == count and type(data) is bytes else bytes(data[:take]))
            else:
                if room is None:
                    # Half is here: from now on the value has its own buffer. Peak: the pieces (under
                    # half) and the buffer, for the time of this copy. Written through a memoryview:
                    # assigning to a slice of the bytearray itself would copy each piece first.
                    self._body = bytearray(size)
                    view = memoryview(self._body)
                    at = 0
                    for chunk in self._chunks:
                        view[at : at + len(chunk)] = chunk
                        at += len(chunk)
                    self._chunks = []
                    room = view[filled:]
                room[:take] = data if take == count else memoryview(data)[:take]
                self.direct_buffer = room[take:] if filled + take < size else None
            self._filled = filled + take
        if take < count:
            rest = bytes(data[take:])
            self._after = rest if not self._after else _append(self._after, 0, rest)[0]

    def _partial(self, buf: bytes | bytearray, pos: int, end: int) -> _NeedData:
        """NEED_DATA for the incomplete frame at ``buf[pos:]``: keep its bytes only, not the whole
        read they end (a connection may stay idle there)."""
        if pos and end > KEEP_DECODED:
            if type(buf) is bytearray:
                del buf[:pos]
            else:
                self._buf = bytearray(memoryview(buf)[pos:])  # what the next feed would make of it
            self._pos = 0
        return NEED_DATA

    def _take_body(self) -> bytes | bytearray | None:
        """The gathered value once complete (the decoder back to framing what followed it), or None."""
        if self._filled < self._size:
            return None
        value: bytes | bytearray
        if self._body is not None:
            value = self._body
            self._body = None
        else:
            value = b"".join(self._chunks)
            self._chunks = []
        self._size = self._filled = 0
        self.direct_buffer = None
        self._buf = self._after
        self._after = b""
        self._pos = 0
        return value


class RequestDecoder(_Receiver):
    """Incremental decoder of the requests a client sends to a node.

    A PUT value of at least ``large_value`` bytes that spans reads is yielded as the ``bytearray`` it
    was gathered in (see :class:`Request`); while it is gathered, :attr:`direct_buffer` may offer its
    unfilled part to read into.
    """

    __slots__ = ("_closed", "_key", "max_key_size", "max_value_size")

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

    @property
    def buffered(self) -> int:
        """Bytes received and not yet decoded (a value being gathered counts from its first byte)."""
        return len(self._buf) - self._pos if self._pos >= 0 else self._buffered_body()

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

    def _fatal(self, reason: str) -> FrameError:
        self._buf = b""
        self._pos = -1  # with no value being gathered: feed ignores everything, next_event says NEED_DATA
        self._closed = True
        return FrameError(reason, True)

    def next_event(self) -> Request | FrameError | _NeedData:
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

    def _next_slow(self, buf: bytes | bytearray, pos: int, end: int) -> Request | FrameError | _NeedData:
        """Short frames (PING, STATS, INFO), incomplete headers and bad headers; a gathered value."""
        if pos < 0:
            if self._size:
                value = self._take_body()
                if value is not None:
                    key, self._key = self._key, b""
                    return _new_request(Request, (PUT, key, value))
            return NEED_DATA  # the value is incomplete, or the decoder is closed
        avail = end - pos
        if avail < 5:
            # Reject a header as soon as its bytes can no longer be a prefix of "KVS\x01", so a
            # client that sent a few stray bytes gets its answer instead of waiting forever.
            if avail and buf[pos:end] != HEADER_V1[:avail]:
                return self._discard(_describe_bad_header(bytes(buf[pos:end])))
            return self._partial(buf, pos, end)
        if not buf.startswith(HEADER_V1, pos):
            return self._discard(_describe_bad_header(bytes(buf[pos : pos + 4])))
        op = buf[pos + 4]
        if op in _BODYLESS_OPS:
            self._pos = pos + 5
            return _new_request(Request, (op, b"", b""))
        if op in _KEYED_OPS or op == PUT:
            return self._partial(buf, pos, end)  # fewer than 9 bytes: the key length is not here yet
        return self._discard(_describe_bad_op(op))


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

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos if self._pos >= 0 else self._buffered_body()

    def feed(self, data: bytes) -> None:
        pos = self._pos
        if pos >= len(self._buf):
            self._buf = data
            self._pos = 0
        elif pos >= 0:
            self._buf, self._pos = _append(self._buf, pos, data)
        else:
            self._feed_body(data)

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


def encode_response(status: int, value: bytes = b"") -> bytes:
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
