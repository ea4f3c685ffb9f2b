"""The identifier circle: SHA-1 ring positions and half-open key ranges on it.

A key lives at ``ring_position(key)``, the SHA-1 of its bytes read as a 160-bit big-endian integer.
Storage backends keep keys addressable by this position (as the 20-byte digest, whose byte order is
ring order) because key migration, when a node joins or leaves, moves whole ranges of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

RING_BITS: Final = 160
RING_SIZE: Final = 1 << RING_BITS
POSITION_BYTES: Final = RING_BITS // 8

_sha1 = hashlib.sha1


def ring_digest(key: bytes) -> bytes:
    """The key's ring position as 20 big-endian bytes (byte order is ring order)."""
    return _sha1(key).digest()


def ring_position(key: bytes) -> int:
    """The key's ring position as an integer in ``[0, 2**160)``."""
    return int.from_bytes(_sha1(key).digest(), "big")


def position_bytes(position: int) -> bytes:
    return (position % RING_SIZE).to_bytes(POSITION_BYTES, "big")


def in_half_open(x: int, start: int, end: int) -> bool:
    """``x`` in ``(start, end]`` on the circle. ``start == end`` is the whole circle (Chord's rule for
    a single node, which is its own successor and owns every key)."""
    if start < end:
        return start < x <= end
    return x > start or x <= end


@dataclass(frozen=True, slots=True)
class KeyRange:
    """The ring positions in ``(start, end]``, wrapping past zero when ``end <= start``.

    ``start == end`` means the whole ring. This is the range a node owns: ``(predecessor, self]``.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start < RING_SIZE and 0 <= self.end < RING_SIZE):
            raise ValueError("ring positions must lie in [0, 2**160)")

    @classmethod
    def whole_ring(cls) -> KeyRange:
        return cls(0, 0)

    def __contains__(self, position: int) -> bool:
        return in_half_open(position, self.start, self.end)

    def segments(self) -> list[tuple[bytes, bytes | None]]:
        """The range as non-wrapping byte intervals ``[low, high)`` in ring order, for backends that
        keep entries sorted by a 20-byte position prefix (``digest + key`` sorts the same way).

        ``low`` is inclusive, ``high`` exclusive; ``high`` None means "to the top of the ring".
        ``(s, e]`` is ``[s+1, e+1)``; a wrapping range is ``[s+1, top)`` then ``[0, e+1)``.
        Empty pieces are left out.
        """
        first = self.start + 1
        after_end = self.end + 1

        def bound(position: int) -> bytes | None:
            return None if position >= RING_SIZE else position_bytes(position)

        if self.start < self.end:
            return [(position_bytes(first), bound(after_end))]
        pieces: list[tuple[bytes, bytes | None]] = []
        if first < RING_SIZE:
            pieces.append((position_bytes(first), None))
        pieces.append((position_bytes(0), bound(after_end)))
        return pieces
