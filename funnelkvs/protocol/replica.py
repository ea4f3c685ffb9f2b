"""The bodies of the replica messages: a coordinator's batched writes and reads to a key's replicas.

Pure functions, bytes in and out. Values travel as *envelopes* (:mod:`funnelkvs.versions`): the
version, the kind (value, tombstone, hint) and the value, exactly as the replica stores them.

======  ===============  ========================================  ====================================
op      request          request body                              answer body (status SUCCESS)
======  ===============  ========================================  ====================================
0x18    REPLICA_WRITE    ``count u32 | (key_len u32 | key |        ``count u32 | status u8 * count``
                         env_len u32 | env) * count``              (0 stored or superseded, 3 failed)
0x19    REPLICA_READ     ``count u32 | (key_len u32 | key) *       ``count u32 | (present u8 | env_len
                         count``                                   u32 | env) * count``
======  ===============  ========================================  ====================================

One message carries every item a coordinator has for that replica in one loop pass (Dynamo's
coordinator sends one message per replica per request; batching them is what lets a Python node
keep up: one frame, one future, one answer per peer per pass). A replica stores what it is sent
when it is newer than its copy (a hint envelope as it is: it is then a fallback, Dynamo 4.6) and
answers once every item is durable by its backend's setting.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from funnelkvs.errors import RemoteProtocolError

REPLICA_WRITE: Final = 0x18
REPLICA_READ: Final = 0x19

#: Item status in a REPLICA_WRITE answer.
STORED: Final = 0
FAILED: Final = 3

_U32 = struct.Struct(">I")
_pack_u32 = _U32.pack
_unpack_u32 = _U32.unpack_from
_PRESENT = b"\x01"
_ABSENT = b"\x00\x00\x00\x00\x00"


def encode_writes(items: Sequence[tuple[bytes, bytes | bytearray]]) -> bytes:
    """A REPLICA_WRITE body: ``(key, envelope)`` pairs."""
    pieces: list[bytes | bytearray] = [_pack_u32(len(items))]
    for key, envelope in items:
        pieces += (_pack_u32(len(key)), key, _pack_u32(len(envelope)), envelope)
    return b"".join(pieces)


def decode_writes(body: bytes | bytearray) -> list[tuple[bytes, bytes]]:
    """The ``(key, envelope)`` pairs of a REPLICA_WRITE body; RemoteProtocolError if malformed."""
    reader = _Reader(body)
    items = []
    for _ in range(reader.u32()):
        key = reader.chunk()
        items.append((key, reader.chunk()))
    reader.end()
    return items


def encode_write_results(statuses: Sequence[int]) -> bytes:
    """A REPLICA_WRITE answer: one status byte per item, in request order."""
    return _pack_u32(len(statuses)) + bytes(statuses)


def decode_write_results(body: bytes | bytearray) -> list[int]:
    """The per-item statuses of a REPLICA_WRITE answer."""
    if len(body) < 4 or _unpack_u32(body, 0)[0] != len(body) - 4:
        raise RemoteProtocolError("REPLICA_WRITE answer: count does not match the body")
    return list(body[4:])


def encode_reads(keys: Sequence[bytes]) -> bytes:
    """A REPLICA_READ body."""
    pieces: list[bytes] = [_pack_u32(len(keys))]
    for key in keys:
        pieces += (_pack_u32(len(key)), key)
    return b"".join(pieces)


def decode_reads(body: bytes | bytearray) -> list[bytes]:
    """The keys of a REPLICA_READ body; RemoteProtocolError if malformed."""
    reader = _Reader(body)
    keys = [reader.chunk() for _ in range(reader.u32())]
    reader.end()
    return keys


def encode_read_results(envelopes: Sequence[bytes | bytearray | None]) -> bytes:
    """A REPLICA_READ answer: each key's envelope, or None when the replica has nothing for it."""
    pieces: list[bytes | bytearray] = [_pack_u32(len(envelopes))]
    for envelope in envelopes:
        if envelope is None:
            pieces.append(_ABSENT)
        else:
            pieces += (_PRESENT, _pack_u32(len(envelope)), envelope)
    return b"".join(pieces)


def decode_read_results(body: bytes | bytearray) -> list[bytes | None]:
    """The envelopes of a REPLICA_READ answer (None: nothing stored there)."""
    reader = _Reader(body)
    results: list[bytes | None] = []
    for _ in range(reader.u32()):
        present = reader.take(1)[0]
        envelope = reader.chunk()
        if present not in (0, 1) or (not present and envelope):
            raise RemoteProtocolError("REPLICA_READ answer: bad presence flag")
        results.append(envelope if present else None)
    reader.end()
    return results


class _Reader:
    __slots__ = ("body", "pos")

    def __init__(self, body: bytes | bytearray) -> None:
        self.body = body
        self.pos = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.body):
            raise RemoteProtocolError("replica message: a length runs past the body")
        chunk = bytes(self.body[self.pos : end])
        self.pos = end
        return chunk

    def u32(self) -> int:
        if self.pos + 4 > len(self.body):
            raise RemoteProtocolError("replica message: truncated length")
        value: int = _unpack_u32(self.body, self.pos)[0]
        self.pos += 4
        return value

    def chunk(self) -> bytes:
        return self.take(self.u32())

    def end(self) -> None:
        if self.pos != len(self.body):
            raise RemoteProtocolError("replica message: bytes left after the last item")
