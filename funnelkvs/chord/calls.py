"""The kinds of call a Chord node has outstanding, and the reply each expects (a reply of another
type counts as a failed call), and what a lookup is for. Used by :mod:`funnelkvs.chord.node_state`."""

from __future__ import annotations

from typing import Final

from funnelkvs.chord.messages import Ack, Found, Neighbours, NextHop, Pong

# What an outstanding call is for (the first item of each entry in ChordNode._calls).
STABILIZE = 1  # GetNeighbours to the successor
CANDIDATE = 2  # GetNeighbours to the successor's predecessor (liveness check, then adopt)
NOTIFY = 3
PING_PREDECESSOR = 4
LOOKUP = 5
JOIN_NEIGHBOURS = 6  # GetNeighbours to the successor a join found
LEAVE = 7

EXPECTED_REPLY: Final[dict[int, type | tuple[type, ...]]] = {
    STABILIZE: Neighbours,
    CANDIDATE: Neighbours,
    NOTIFY: Ack,
    PING_PREDECESSOR: Pong,
    LOOKUP: (Found, NextHop),
    JOIN_NEIGHBOURS: Neighbours,
    LEAVE: Ack,
}

# What a lookup is for (Lookup.purpose).
FOR_CALLER = 0
FOR_JOIN = 1
FOR_FINGER = 2
