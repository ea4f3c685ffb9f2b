"""Versions of a key and the envelope every backend stores: a hybrid logical clock, and bytes helpers.

Envelope layout (all integers big-endian)::

    kind u8 | hlc u64 | origin u64 | [target 20 bytes, hint kinds only] | value bytes (value kinds only)

``kind`` is one of :data:`KIND_VALUE`, :data:`KIND_TOMBSTONE`, :data:`KIND_HINT_VALUE`,
:data:`KIND_HINT_TOMBSTONE`. The header is :data:`HEADER_SIZE` (17) bytes, so a stored value costs 17
bytes more than its payload (37 for a hint). A hint is a write a fallback node keeps for the replica
``target`` (a 20-byte node id) that was down when it was made (Dynamo, DeCandia et al. 2007, §4.6).

Because ``hlc`` and ``origin`` sit big-endian right after the kind byte, ``env[1:17]`` compared as
bytes orders two envelopes exactly as their :class:`Version` objects compare: code on the request path
orders versions by slicing, without building objects.

The hybrid logical clock follows Kulkarni, Demirbas et al., "Logical Physical Clocks and Consistent
Snapshots in Globally Distributed Databases" (2014): an HLC value is ``(l << 16) | c`` with ``l`` the
physical time in milliseconds and ``c`` a 16-bit logical counter. Packed that way, the paper's rules
for ``l`` and ``c`` become one ``max`` over integers (see :meth:`HybridLogicalClock.now`).

The helpers here run once or more per request: they use precompiled :class:`struct.Struct` objects
and slicing, and do not validate what they are given (:func:`check_envelope` does, for bytes that come
from the network or from disk). Misuse (a tombstone given to :func:`value_of`, a target of the wrong
size) raises ``ValueError``, like the standard library does for a bad argument.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "HINT_TARGET_SIZE",
    "KIND_HINT_TOMBSTONE",
    "KIND_HINT_VALUE",
    "KIND_TOMBSTONE",
    "KIND_VALUE",
    "LOGICAL_BITS",
    "MAX_HLC",
    "ZERO",
    "HybridLogicalClock",
    "Version",
    "as_hint",
    "check_envelope",
    "from_hint",
    "is_hint",
    "is_live",
    "kind_of",
    "logical_of",
    "newer",
    "origin_of",
    "pack_tombstone",
    "pack_value",
    "physical_ms_of",
    "value_of",
    "version_of",
]

#: kind u8, hlc u64, origin u64.
HEADER: Final = struct.Struct(">BQQ")
HEADER_SIZE: Final = HEADER.size  # 17
#: The node id of the replica a hint is kept for (a SHA-1 ring id).
HINT_TARGET_SIZE: Final = 20
_HINT_HEADER_SIZE: Final = HEADER_SIZE + HINT_TARGET_SIZE  # 37

KIND_VALUE: Final = 0x01
KIND_TOMBSTONE: Final = 0x02
KIND_HINT_VALUE: Final = 0x03
KIND_HINT_TOMBSTONE: Final = 0x04
# A hint kind is its plain kind + 2 (as_hint and from_hint rely on it).
_HINT_OFFSET: Final = KIND_HINT_VALUE - KIND_VALUE

#: Bits of an HLC value that hold the logical counter; the rest is milliseconds since the epoch.
LOGICAL_BITS: Final = 16
_LOGICAL_MASK: Final = (1 << LOGICAL_BITS) - 1
#: The largest HLC value an envelope can hold (u64).
MAX_HLC: Final = (1 << 64) - 1
_MAX_ORIGIN: Final = (1 << 64) - 1
_NS_PER_MS: Final = 1_000_000
_ORIGIN_HEX_DIGITS: Final = 16
_NODE_ID_HEX_DIGITS: Final = 40

_NODE_ID_HEX: Final = re.compile(f"[0-9a-fA-F]{{{_NODE_ID_HEX_DIGITS}}}")

_VERSION: Final = struct.Struct(">QQ")
_KIND_BYTES: Final = tuple(bytes((kind,)) for kind in range(256))


@dataclass(frozen=True, order=True, slots=True)
class Version:
    """When and where a write was coordinated. Ordered by ``(hlc, origin)``.

    Two writes coordinated by one node always differ in ``hlc`` (its clock is strictly monotonic);
    writes by two nodes in the same HLC tick differ in ``origin``, so every replica orders any two
    versions the same way, which is what makes last-writer-wins converge.
    """

    #: Hybrid logical clock value: ``(milliseconds since the epoch << 16) | logical counter``, u64.
    hlc: int
    #: The first 8 bytes of the coordinating node's id as an integer (:func:`origin_of`), u64.
    origin: int

    def __post_init__(self) -> None:
        if not (0 <= self.hlc <= MAX_HLC and 0 <= self.origin <= _MAX_ORIGIN):
            raise ValueError(f"version out of range (hlc and origin are u64): {self.hlc}, {self.origin}")

    def to_bytes(self) -> bytes:
        """The 16 bytes ``hlc u64 | origin u64`` (``env[1:17]`` of an envelope carrying it)."""
        return _VERSION.pack(self.hlc, self.origin)


#: The version of data that predates versioning (an upgraded format-1 directory): any write wins over it.
ZERO: Final = Version(0, 0)


def origin_of(node_id_hex: str) -> int:
    """The origin a node stamps its versions with: the first 8 bytes of its 160-bit id.

    :param node_id_hex: the node id as 40 hex digits (either case).
    :raises ValueError: not 40 hex digits.
    """
    if _NODE_ID_HEX.fullmatch(node_id_hex) is None:
        raise ValueError(f"a node id is {_NODE_ID_HEX_DIGITS} hex digits, got {node_id_hex!r}")
    return int(node_id_hex[:_ORIGIN_HEX_DIGITS], 16)


def physical_ms_of(hlc: int) -> int:
    """The physical part of an HLC value: milliseconds since the epoch."""
    return hlc >> LOGICAL_BITS


def logical_of(hlc: int) -> int:
    """The logical counter of an HLC value (0..65535)."""
    return hlc & _LOGICAL_MASK


class HybridLogicalClock:
    """A hybrid logical clock (Kulkarni et al. 2014): close to the wall clock, yet strictly monotonic
    and never behind any clock value it has seen.

    :param wall_ns: the physical clock, in nanoseconds since the epoch (``time.time_ns``; tests pass a
        fake). It may stand still or go backwards (NTP steps): the HLC then counts in its logical part.

    Not thread-safe: a node has one, used from its event loop.
    """

    __slots__ = ("_last", "_wall_ns")

    def __init__(self, wall_ns: Callable[[], int] = time.time_ns) -> None:
        self._wall_ns = wall_ns
        self._last = 0

    @property
    def last(self) -> int:
        """The last value handed out or observed (0 before the first event)."""
        return self._last

    def now(self) -> int:
        """The HLC value of a local or send event: greater than every value before it.

        The paper's rule ``l = max(l', pt); c = c' + 1 if l == l' else 0`` is, on packed values,
        ``max(last + 1, pt << 16)``; a logical counter at 65535 carries into the physical part, which
        thus moves on 1 ms ahead of the wall clock until the wall clock catches up.

        :raises OverflowError: the clock would pass :data:`MAX_HLC` (a wall clock ~8900 years ahead).
        """
        physical = (self._wall_ns() // _NS_PER_MS) << LOGICAL_BITS
        following = self._last + 1
        value = physical if physical > following else following
        if value > MAX_HLC:
            raise OverflowError("hybrid logical clock past 2**64 - 1")
        self._last = value
        return value

    def observe(self, remote_hlc: int) -> int:
        """A receive event carrying ``remote_hlc``: returns this event's HLC value, after which every
        :meth:`now` is greater than ``remote_hlc``.

        The paper's receive rule (``l = max(l', l_m, pt)`` with ``c`` taken from whichever of ``l'`` and
        ``l_m`` gave ``l``, plus one) is, packed, ``max(last + 1, remote + 1, pt << 16)``.

        Nothing bounds how far ahead a remote clock may be: a node whose wall clock runs fast drags the
        HLC of every node it talks to forward (see docs/replication.md).

        :raises ValueError: ``remote_hlc`` is not in ``[0, MAX_HLC)``.
        """
        if not 0 <= remote_hlc < MAX_HLC:
            raise ValueError(f"remote HLC value out of range: {remote_hlc}")
        if remote_hlc > self._last:
            self._last = remote_hlc
        return self.now()


# --- envelopes ----------------------------------------------------------------------------------------


def pack_value(version: Version, value: bytes | bytearray) -> bytes | bytearray:
    """The envelope of a put of ``value`` at ``version``.

    A ``bytearray`` is turned into the envelope in place (the header is inserted at its front) and
    returned: the function takes ownership of it, and the caller must not use it as the value again.
    That spares a second buffer the size of the value (up to 16 MiB). ``bytes``, and a ``bytearray``
    that cannot be resized because a ``memoryview`` of it is alive, are copied once into new
    ``bytes`` (the ``bytearray`` is then left unchanged).
    """
    header = HEADER.pack(KIND_VALUE, version.hlc, version.origin)
    if isinstance(value, bytearray):
        try:
            value[0:0] = header
        except BufferError:
            # A memoryview of it is alive (the connection's receive buffer, say): a bytearray with
            # exports cannot be resized, so this one is copied like bytes, and left as it was.
            return header + value
        return value
    return header + value


def pack_tombstone(version: Version) -> bytes:
    """The envelope of a delete at ``version`` (17 bytes)."""
    return HEADER.pack(KIND_TOMBSTONE, version.hlc, version.origin)


def kind_of(env: bytes | bytearray) -> int:
    """The kind byte of an envelope."""
    return env[0]


def version_of(env: bytes | bytearray) -> Version:
    """The version an envelope carries."""
    hlc, origin = _VERSION.unpack_from(env, 1)
    return Version(hlc, origin)


def is_live(env: bytes | bytearray) -> bool:
    """True for a put (``KIND_VALUE`` or ``KIND_HINT_VALUE``), False for a delete."""
    kind = env[0]
    return kind == KIND_VALUE or kind == KIND_HINT_VALUE


def is_hint(env: bytes | bytearray) -> bool:
    """True for a hint (``KIND_HINT_VALUE`` or ``KIND_HINT_TOMBSTONE``)."""
    kind = env[0]
    return kind == KIND_HINT_VALUE or kind == KIND_HINT_TOMBSTONE


def value_of(env: bytes | bytearray) -> bytes:
    """The value of a live envelope, plain or hint.

    :raises ValueError: the envelope is a tombstone (plain or hint) or of an unknown kind.
    """
    kind = env[0]
    if kind == KIND_VALUE:
        start = HEADER_SIZE
    elif kind == KIND_HINT_VALUE:
        start = _HINT_HEADER_SIZE
    else:
        raise ValueError(f"envelope of kind {kind} has no value")
    if type(env) is bytes:
        return env[start:]  # already a fresh bytes object
    return bytes(memoryview(env)[start:])  # one copy, not a bytearray slice and then a copy of it


def as_hint(env: bytes | bytearray, target_id: bytes) -> bytes:
    """The hint a fallback keeps for ``target_id``: kind 1 -> 3 or 2 -> 4, the target after the header.

    :raises ValueError: ``env`` is not a plain envelope, or ``target_id`` is not 20 bytes.
    """
    kind = env[0]
    if kind != KIND_VALUE and kind != KIND_TOMBSTONE:
        raise ValueError(f"only a plain envelope becomes a hint, not kind {kind}")
    if len(target_id) != HINT_TARGET_SIZE:
        raise ValueError(f"a hint target is a {HINT_TARGET_SIZE}-byte node id, got {len(target_id)} bytes")
    view = memoryview(env)
    # join reads the memoryviews in place: the value is copied once, into the result.
    return b"".join((_KIND_BYTES[kind + _HINT_OFFSET], view[1:HEADER_SIZE], target_id, view[HEADER_SIZE:]))


def from_hint(env: bytes | bytearray) -> tuple[bytes, bytes]:
    """``(plain envelope, target id)`` of a hint: what to send to the target once it is back.

    :raises ValueError: ``env`` is not a hint.
    """
    kind = env[0]
    if kind != KIND_HINT_VALUE and kind != KIND_HINT_TOMBSTONE:
        raise ValueError(f"envelope of kind {kind} is not a hint")
    view = memoryview(env)
    plain = b"".join((_KIND_BYTES[kind - _HINT_OFFSET], view[1:HEADER_SIZE], view[_HINT_HEADER_SIZE:]))
    return plain, bytes(view[HEADER_SIZE:_HINT_HEADER_SIZE])


def newer(a: bytes | bytearray, b: bytes | bytearray) -> bool:
    """True when envelope ``a`` orders strictly after ``b``: every replica must keep the same one.

    By version (``env[1:17]`` as bytes, i.e. ``(hlc, origin)``); on equal versions a put beats a
    delete, and between two puts the larger value bytes win (equal versions only arise from a bug or
    a corrupt copy, but replicas must still converge). Hints compare by the write they carry, so a
    hint and the plain envelope of the same write are neither newer than the other.
    """
    version_a = a[1:HEADER_SIZE]
    version_b = b[1:HEADER_SIZE]
    if version_a != version_b:
        return version_a > version_b
    live_a = is_live(a)
    if live_a != is_live(b):
        return live_a
    if not live_a:
        return False
    return value_of(a) > value_of(b)


def check_envelope(env: bytes | bytearray) -> str | None:
    """What is wrong with ``env`` as an envelope (a sentence), or None when it is well-formed.

    For bytes from the network or the disk; the caller raises the error that fits where they came
    from (``RemoteProtocolError``, ``StorageError``). A tombstone must be exactly its header.
    """
    if len(env) < HEADER_SIZE:
        return f"envelope of {len(env)} bytes is shorter than its {HEADER_SIZE}-byte header"
    kind = env[0]
    if kind == KIND_VALUE:
        return None
    if kind == KIND_TOMBSTONE:
        return None if len(env) == HEADER_SIZE else "tombstone envelope carries a value"
    if kind == KIND_HINT_VALUE:
        return None if len(env) >= _HINT_HEADER_SIZE else "hint envelope has no complete target id"
    if kind == KIND_HINT_TOMBSTONE:
        if len(env) == _HINT_HEADER_SIZE:
            return None
        return "hint tombstone envelope is not header + target id"
    return f"unknown envelope kind {kind}"
