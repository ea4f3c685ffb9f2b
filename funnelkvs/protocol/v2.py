"""v2 frames: a request id per frame, so one connection carries many calls and answers come back in
any order (node-to-node RPC, ring-aware clients, admin queries). Sans-I/O, like the rest of the codec.

::

    request:   "KVS" | 0x02 | op u8     | request id u32 | body length u32 | body
    response:  "KVS" | 0x02 | status u8 | request id u32 | body length u32 | body

All integers are big-endian. The body length covers the whole body, so a receiver can skip a frame it
does not understand and stay in step. The node tells v2 from v1 by the version byte, per frame, on its
one port (:class:`funnelkvs.protocol.frames.RequestDecoder` yields a :class:`V2Request` for a v2
frame). GET, PUT, DELETE, PING, STATS and INFO keep their v1 op codes and v1 body layout (the v1 frame
after its op byte); the node-to-node and admin messages are :mod:`funnelkvs.protocol.rpc`.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from funnelkvs.errors import LocalProtocolError, RemoteProtocolError
from funnelkvs.protocol.receiver import NEED_DATA, _NeedData, _Receiver

HEADER_V2: Final = b"KVS\x02"
#: magic+version (4s), op or status (B), request id (I), body length (I).
V2_HEAD: Final = struct.Struct(">4sBII")
V2_HEADER_SIZE: Final = 13
U32_MAX: Final = 0xFFFF_FFFF
#: The largest body a v2 frame may carry unless a decoder is given another bound: a transfer batch or
#: a PUT of the largest value, whichever is larger, with room for their own fields.
DEFAULT_MAX_BODY: Final = 16 * 1024 * 1024 + 64 * 1024 + 1024

_pack_head = V2_HEAD.pack
_unpack_head = V2_HEAD.unpack_from


class V2Request(NamedTuple):
    """One v2 request: ``body`` is ``bytes``, or the ``bytearray`` a large body was gathered in."""

    op: int
    request_id: int
    body: bytes | bytearray


class V2Response(NamedTuple):
    """One v2 response (``body`` always ``bytes``)."""

    status: int
    request_id: int
    body: bytes


def encode_v2_request(op: int, request_id: int, body: bytes | bytearray = b"") -> bytes:
    """The bytes of one v2 request. Raises :class:`LocalProtocolError` for an out-of-range field."""
    if not 0 <= request_id <= U32_MAX or len(body) > U32_MAX or not 0 <= op <= 0xFF:
        raise LocalProtocolError("op, request id or body length out of range for a v2 frame")
    return _pack_head(HEADER_V2, op, request_id, len(body)) + body


def v2_response_head(status: int, request_id: int, length: int) -> bytes:
    """The 13-byte head of a v2 response whose body (``length`` bytes) is sent as a separate piece."""
    return _pack_head(HEADER_V2, status, request_id, length)


def encode_v2_response(status: int, request_id: int, body: bytes | bytearray = b"") -> bytes:
    """The bytes of one v2 response."""
    return _pack_head(HEADER_V2, status, request_id, len(body)) + body


class V2ResponseDecoder(_Receiver):
    """Incremental decoder of the v2 responses a node sends back (peers, ring-aware clients).

    A stream that breaks the protocol raises :class:`RemoteProtocolError`: the connection is no longer
    usable. A body of at least ``large_value`` bytes that spans reads is gathered by itself and
    joined once (see :mod:`funnelkvs.protocol.receiver`).
    """

    __slots__ = ("_head", "max_body")

    def __init__(self, max_body: int = DEFAULT_MAX_BODY, large_value: int = 64 * 1024) -> None:
        super().__init__(large_value)
        self.max_body = max_body
        self._head = (0, 0)

    def next_event(self) -> V2Response | _NeedData:
        buf = self._buf
        pos = self._pos
        if pos < 0:
            body = self._take_body()
            if body is None:
                return NEED_DATA
            status, request_id = self._head
            return V2Response(status, request_id, bytes(body))
        end = len(buf)
        avail = end - pos
        if avail < V2_HEADER_SIZE:
            if avail and buf[pos : pos + min(avail, 4)] != HEADER_V2[: min(avail, 4)]:
                raise RemoteProtocolError(f"not a v2 response: {bytes(buf[pos : pos + 4])!r}")
            if avail:
                return self._partial(buf, pos, end)
            if end:
                self._buf = b""
                self._pos = 0
            return NEED_DATA
        magic, status, request_id, length = _unpack_head(buf, pos)
        if magic != HEADER_V2:
            raise RemoteProtocolError(f"not a v2 response: {magic!r}")
        if length > self.max_body:
            raise RemoteProtocolError(f"response body length {length} exceeds {self.max_body}")
        start = pos + V2_HEADER_SIZE
        stop = start + length
        if end < stop:
            if length >= self.large_value:
                self._head = (status, request_id)
                return self._begin_body(buf, start, length)
            return self._partial(buf, pos, end)
        body = bytes(buf[start:stop])
        if stop == end:
            self._buf = b""
            self._pos = 0
        else:
            self._pos = stop
        return V2Response(status, request_id, body)


_U32 = struct.Struct(">I")
_unpack_u32 = _U32.unpack_from
_KEYED = frozenset((0x01, 0x03))  # GET, DELETE
_PUT = 0x02


#: The optional quorum trailer of a v2 GET/PUT/DELETE body: ``w u8 | r u8`` (0: the node's default).
QUORUM_TRAILER: Final = struct.Struct(">BB")
QUORUM_TRAILER_SIZE: Final = 2
#: The largest w or r the trailer can carry (a u8).
QUORUM_MAX: Final = 0xFF


def key_value_body(op: int, key: bytes, value: bytes | bytearray = b"", w: int = 0, r: int = 0) -> bytes:
    """The v2 body of GET/DELETE (``key_len u32 | key``) or PUT (``... | value_len u32 | value``):
    the v1 layout after the op byte, then the quorum trailer ``w u8 | r u8`` only when ``w`` or ``r``
    is non-zero (0 means the node's default; docs/protocol.md, "Per-request quorums"). Other ops of
    the v1 set (PING, STATS, INFO) have an empty body and take no quorum.

    Raises :class:`LocalProtocolError` for a key or value longer than a u32 can declare, a ``w`` or
    ``r`` outside 0-255, or a quorum asked of an op without a key.
    """
    if len(key) > U32_MAX or len(value) > U32_MAX:
        raise LocalProtocolError("key or value longer than a u32 length can declare")
    if w or r:
        for name, count in (("w", w), ("r", r)):
            if type(count) is not int or not 0 <= count <= QUORUM_MAX:
                raise LocalProtocolError(
                    f"{name} must be a whole number from 0 to {QUORUM_MAX}, not {count!r}"
                )
        trailer = QUORUM_TRAILER.pack(w, r)
    else:
        trailer = b""
    if op in _KEYED:
        return b"".join((_U32.pack(len(key)), key, trailer))
    if op == _PUT:
        return b"".join((_U32.pack(len(key)), key, _U32.pack(len(value)), value, trailer))
    if trailer:
        raise LocalProtocolError(f"v2 op {op:#04x} has no key: it takes no w or r")
    return b""


def parse_key_value(op: int, body: bytes | bytearray) -> tuple[bytes, bytes | bytearray]:
    """``(key, value)`` from a v2 GET/DELETE/PUT body (value empty for GET and DELETE). Raises
    :class:`RemoteProtocolError` when the lengths do not add up to the body. A quorum trailer is
    refused here: :func:`parse_key_request` is the parser for the bodies a client sends."""
    size = len(body)
    if size < 4:
        raise RemoteProtocolError(f"v2 op {op:#04x}: body of {size} bytes has no key length")
    key_end = 4 + _unpack_u32(body, 0)[0]
    if op == _PUT:
        if key_end + 4 > size:
            raise RemoteProtocolError("v2 PUT: the key runs past the body")
        value_start = key_end + 4
        if value_start + _unpack_u32(body, key_end)[0] != size:
            raise RemoteProtocolError("v2 PUT: key and value lengths do not add up to the body")
        key = bytes(body[4:key_end])
        # A large body arrives as a bytearray: its value is sliced out (one copy, for now).
        return key, bytes(body[value_start:])
    if key_end != size:
        raise RemoteProtocolError(f"v2 op {op:#04x}: the key length does not match the body")
    return bytes(body[4:key_end]), b""


def parse_key_request(op: int, body: bytes | bytearray) -> tuple[bytes, bytes | bytearray, int, int]:
    """``(key, value, w, r)`` from a v2 GET/DELETE/PUT body, with or without the quorum trailer
    (``w``, ``r`` 0 when absent: the node's default). The value is empty for GET and DELETE; any op
    other than PUT is read as a key-only body.

    The length fields alone decide whether a trailer is there (the body is 2 bytes longer than they
    account for), never the bytes themselves: a PUT value may end in anything. Raises
    :class:`RemoteProtocolError` when the body is neither exactly the fields nor the fields and 2 bytes.
    """
    size = len(body)
    if size < 4:
        raise RemoteProtocolError(f"v2 op {op:#04x}: body of {size} bytes has no key length")
    key_end = 4 + _unpack_u32(body, 0)[0]
    if op == _PUT:
        if key_end + 4 > size:
            raise RemoteProtocolError("v2 PUT: the key runs past the body")
        value_start = key_end + 4
        fields_end = value_start + _unpack_u32(body, key_end)[0]
    else:
        value_start = fields_end = key_end
    if fields_end == size:
        w = r = 0
    elif fields_end + QUORUM_TRAILER_SIZE == size:
        w, r = QUORUM_TRAILER.unpack_from(body, fields_end)
    else:
        what = "key and value lengths" if op == _PUT else "the key length"
        if fields_end > size:
            raise RemoteProtocolError(f"v2 op {op:#04x}: {what} run past the {size}-byte body")
        raise RemoteProtocolError(
            f"v2 op {op:#04x}: {what} leave {size - fields_end} bytes of a {size}-byte body "
            f"(0, or {QUORUM_TRAILER_SIZE} for the w/r trailer)"
        )
    key = bytes(body[4:key_end])
    # A large body arrives as a bytearray: its value is sliced out (one copy, for now).
    value = bytes(body[value_start:fields_end]) if op == _PUT else b""
    return key, value, w, r
