"""A value together with the version that orders it against other replicas' copies of the key.

:class:`Version` lives in :mod:`funnelkvs.versions` (with the hybrid logical clock that makes it and
the envelope that stores it) and is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from funnelkvs.versions import Version, is_live, pack_tombstone, pack_value, value_of, version_of

__all__ = ["Version", "Versioned"]


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

    @classmethod
    def from_envelope(cls, env: bytes | bytearray) -> Versioned:
        """The copy a stored envelope (plain or hint) holds; see :mod:`funnelkvs.versions`."""
        return cls(value_of(env) if is_live(env) else None, version_of(env))

    def to_envelope(self) -> bytes:
        """The plain envelope (``KIND_VALUE`` or ``KIND_TOMBSTONE``) that stores this copy."""
        if self.value is None:
            return pack_tombstone(self.version)
        return bytes(pack_value(self.version, self.value))
