"""How one Chord node names another: its 160-bit identifier and the address it is reached at."""

from __future__ import annotations

import re
from dataclasses import dataclass

from funnelkvs.keyspace import RING_SIZE, ring_position

_HEX_ID = re.compile(r"[0-9a-fA-F]{40}")


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node as other nodes address it (Stoica et al. 2001, section 4.2: a node is its identifier).

    Equality is by both fields; Chord's rules compare identifiers (``node_id``), never addresses.
    The field names match :class:`funnelkvs.replication.ringview.NodeRef`, which can become this class.
    """

    #: The node's ring position, an int in ``[0, 2**160)``.
    node_id: int
    #: The advertised ``host:port``.
    address: str

    def __repr__(self) -> str:
        return f"NodeRef({self.node_id:040x}, {self.address!r})"


def node_id(address: str, explicit: str | None = None) -> int:
    """A node's identifier: SHA-1 of its advertised ``host:port`` (section 4.2 of the paper), or
    ``explicit`` (the ``node.id`` setting: 40 hex digits) when given.

    :raises ValueError: ``explicit`` is not 40 hex digits.
    """
    if explicit is not None:
        if not _HEX_ID.fullmatch(explicit):
            raise ValueError(f"a node id is 40 hex digits, got {explicit!r}")
        return int(explicit, 16)
    return ring_position(address.encode())


def node_ref(address: str, explicit: str | None = None) -> NodeRef:
    """The :class:`NodeRef` of a node advertised at ``address`` (see :func:`node_id`)."""
    ident = node_id(address, explicit)
    assert 0 <= ident < RING_SIZE
    return NodeRef(ident, address)
