"""Where a Chord node is in its life on the ring, and the error for a request that finds it off the
ring (Zave 2017: only members answer, or a caller would copy an empty successor list)."""

from __future__ import annotations

from enum import Enum

from funnelkvs.errors import FunnelKVSError


class Status(Enum):
    """Where a node is in its life on the ring."""

    NEW = "new"  # neither created nor joined
    JOINING = "joining"
    NORMAL = "normal"
    LEAVING = "leaving"
    LEFT = "left"


class NotOnRing(FunnelKVSError):
    """A Chord request reached a node that is not a member of a ring (new, joining, or left)."""
