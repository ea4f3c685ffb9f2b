"""Per-request quorums (issue 9): the ``w``/``r`` a caller may give GET, PUT and DELETE.

``w`` is how many replicas must acknowledge a write before the node answers, ``r`` how many replicas'
copies a read waits for (Dynamo 2007 §4.5). They travel only in v2, as the ``w u8 | r u8`` trailer of
the request body (docs/protocol.md, "Per-request quorums"); 0 on the wire means the node's default.
"""

from __future__ import annotations

from typing import Final

from funnelkvs.protocol.v2 import QUORUM_MAX

#: (w, r) on the wire when the caller asked for neither: the node's defaults, no trailer.
NO_QUORUM: Final = (0, 0)


def quorum_count(name: str, value: object) -> int:
    """The wire value of a ``w``/``r`` argument: 0 for None (the node's default), else ``value``.

    Raises ValueError unless ``value`` is None or a whole number from 1 to 255 (the trailer's u8; a
    node refuses more than its replication factor anyway). ``name`` is how the message calls it.
    """
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):  # w=True is a mistake, not 1
        raise ValueError(f"{name} must be a whole number of replicas (at least 1), not {value!r}")
    if not 1 <= value <= QUORUM_MAX:
        raise ValueError(f"{name} must be from 1 to {QUORUM_MAX} replicas, not {value}")
    return int(value)
