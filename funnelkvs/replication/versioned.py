"""A value together with the version that orders it against other replicas' copies of the key."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """When and where a write was coordinated.

    Ordered by ``(timestamp, origin)``: two writes stamped in the same nanosecond by different nodes
    still compare the same way on every replica, which is what makes last-writer-wins converge.
    """

    #: Nanoseconds since the epoch on the coordinating node's clock.
    timestamp: int
    #: The coordinating node's id (40 hex digits).
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Versioned:
    """One replica's copy of a key: a value, or a tombstone (``value`` None) left by a delete.

    Deletes are versioned too: without a tombstone a replica that missed the delete would resurrect
    the old value at the next read repair.
    """

    value: bytes | None
    version: Version

    @property
    def is_tombstone(self) -> bool:
        return self.value is None
