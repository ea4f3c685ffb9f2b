"""What a backend must answer, worked out without one: the scan a store holding a dict must yield (by
brute force), a fingerprint to compare scans across processes, and the random keys the tests store."""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterable

from funnelkvs.keyspace import RING_SIZE, KeyRange, ring_position


def expected_scan(model: dict[bytes, bytes], key_range: KeyRange) -> list[tuple[bytes, bytes]]:
    """What ``scan(key_range)`` must yield for a store holding ``model``, by brute force: every key
    whose ring position lies in the range, in ring order from just after ``key_range.start`` (keys
    sharing a position, which needs a SHA-1 collision, follow by key bytes)."""
    start = key_range.start
    chosen = [(key, value) for key, value in model.items() if ring_position(key) in key_range]
    chosen.sort(key=lambda item: ((ring_position(item[0]) - start - 1) % RING_SIZE, item[0]))
    return chosen


def scan_fingerprint(pairs: Iterable[tuple[bytes, bytes]]) -> str:
    """A SHA-256 over ``(key, value)`` pairs in order, with lengths, to compare scans across processes."""
    digest = hashlib.sha256()
    for key, value in pairs:
        digest.update(struct.pack(">IQ", len(key), len(value)))
        digest.update(key)
        digest.update(value)
    return digest.hexdigest()


def _ring_order(key_range: KeyRange, key: bytes) -> int:
    return (ring_position(key) - key_range.start - 1) % RING_SIZE


def _random_keys(rng: random.Random, count: int, max_size: int = 24) -> list[bytes]:
    keys = {rng.randbytes(rng.randrange(0, max_size + 1)) for _ in range(count)}
    return sorted(keys)
