"""The bodies of the anti-entropy messages: Merkle digests of a key range, the keys and versions of the
buckets that differ, and the purge of tombstones every replica has.

Pure functions, bytes in and out. A *range* is ``start (20) | end (20)`` (ring positions, the keys in
``(start, end]``); a *meta* is the first 17 bytes of a stored envelope (kind, hlc, origin), with a
hint's kind reported as the plain kind it stands for (:mod:`funnelkvs.versions`).

======  =========  ==============================================  ==================================
op      request    request body                                    answer body (status SUCCESS)
======  =========  ==============================================  ==================================
0x1c    AE_DIGEST  range | buckets u16                             ``digest u64 * buckets``
0x1d    AE_KEYS    range | buckets u16 | count u16 | index u16 *   ``count u32 | (key_len u32 | key |
                   count                                           meta (17)) * count``
0x1e    AE_PURGE   ``count u32 | (key_len u32 | key | meta (17))   ``count u32`` (tombstones removed)
                   * count``
======  =========  ==============================================  ==================================
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from funnelkvs.errors import RemoteProtocolError
from funnelkvs.keyspace import RING_SIZE

AE_DIGEST: Final = 0x1C
AE_KEYS: Final = 0x1D
AE_PURGE: Final = 0x1E
META_SIZE: Final = 17
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_RANGE = 40


def _range(start: int, end: int) -> bytes:
    return start.to_bytes(20, "big") + end.to_bytes(20, "big")


def _read_range(body: bytes | bytearray) -> tuple[int, int]:
    if len(body) < _RANGE:
        raise RemoteProtocolError("anti-entropy message: no range")
    start = int.from_bytes(body[:20], "big")
    end = int.from_bytes(body[20:40], "big")
    if start >= RING_SIZE or end >= RING_SIZE:
        raise RemoteProtocolError("anti-entropy message: range outside the ring")
    return start, end


def encode_digest_request(start: int, end: int, buckets: int) -> bytes:
    return _range(start, end) + _U16.pack(buckets)


def decode_digest_request(body: bytes | bytearray) -> tuple[int, int, int]:
    start, end = _read_range(body)
    if len(body) != _RANGE + 2:
        raise RemoteProtocolError("AE_DIGEST: body is not range | buckets")
    buckets: int = _U16.unpack_from(body, _RANGE)[0]
    if buckets < 1:
        raise RemoteProtocolError("AE_DIGEST: no buckets")
    return start, end, buckets


def encode_digests(digests: Sequence[int]) -> bytes:
    return b"".join(_U64.pack(digest) for digest in digests)


def decode_digests(body: bytes | bytearray, buckets: int) -> list[int]:
    if len(body) != 8 * buckets:
        raise RemoteProtocolError(f"AE_DIGEST answer: {len(body)} bytes for {buckets} digests")
    return [_U64.unpack_from(body, 8 * index)[0] for index in range(buckets)]


def encode_keys_request(start: int, end: int, buckets: int, indexes: Sequence[int]) -> bytes:
    return (
        _range(start, end) + _U16.pack(buckets) + _U16.pack(len(indexes)) + b"".join(map(_U16.pack, indexes))
    )


def decode_keys_request(body: bytes | bytearray) -> tuple[int, int, int, list[int]]:
    start, end = _read_range(body)
    if len(body) < _RANGE + 4:
        raise RemoteProtocolError("AE_KEYS: truncated")
    buckets: int = _U16.unpack_from(body, _RANGE)[0]
    count: int = _U16.unpack_from(body, _RANGE + 2)[0]
    if len(body) != _RANGE + 4 + 2 * count or buckets < 1:
        raise RemoteProtocolError("AE_KEYS: bucket list does not match the body")
    indexes = [_U16.unpack_from(body, _RANGE + 4 + 2 * i)[0] for i in range(count)]
    if any(index >= buckets for index in indexes):
        raise RemoteProtocolError("AE_KEYS: bucket index out of range")
    return start, end, buckets, indexes


def encode_metas(items: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``(key, meta)`` pairs (AE_KEYS answer, AE_PURGE request)."""
    pieces = [_U32.pack(len(items))]
    for key, meta in items:
        pieces += (_U32.pack(len(key)), key, meta[:META_SIZE])
    return b"".join(pieces)


def decode_metas(body: bytes | bytearray) -> list[tuple[bytes, bytes]]:
    if len(body) < 4:
        raise RemoteProtocolError("anti-entropy key list: truncated")
    count: int = _U32.unpack_from(body, 0)[0]
    pos = 4
    items = []
    for _ in range(count):
        if pos + 4 > len(body):
            raise RemoteProtocolError("anti-entropy key list: truncated")
        size: int = _U32.unpack_from(body, pos)[0]
        end = pos + 4 + size + META_SIZE
        if end > len(body):
            raise RemoteProtocolError("anti-entropy key list: an entry runs past the body")
        items.append((bytes(body[pos + 4 : pos + 4 + size]), bytes(body[pos + 4 + size : end])))
        pos = end
    if pos != len(body):
        raise RemoteProtocolError("anti-entropy key list: bytes after the last entry")
    return items
