"""Interval arithmetic on the identifier circle (Stoica et al. 2001, section 4.1).

All intervals wrap past zero. ``(a, b)`` with ``a == b`` is the whole circle except ``a``; ``(a, b]``
with ``a == b`` is the whole circle (a node alone owns every key). The half-open form is
:func:`funnelkvs.keyspace.in_half_open`, re-exported here so Chord code imports one module.
"""

from __future__ import annotations

from funnelkvs.keyspace import RING_BITS, RING_SIZE, in_half_open

__all__ = ["RING_BITS", "RING_SIZE", "distance", "in_half_open", "in_open"]

_MASK = RING_SIZE - 1


def in_open(x: int, a: int, b: int) -> bool:
    """``x`` in ``(a, b)`` on the circle; ``a == b`` is every point but ``a``."""
    if a < b:
        return a < x < b
    if a > b:
        return x > a or x < b
    return x != a


def distance(a: int, b: int) -> int:
    """Clockwise distance from ``a`` to ``b``, in ``[0, 2**160)``; ``distance(a, a) == 0``."""
    return (b - a) & _MASK
