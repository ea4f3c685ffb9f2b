"""The ring as a client sees it: which member owns a key, from a node's RING_VIEW answer.

Pure code (no sockets, no clocks): :class:`RingView` is built from the JSON a node answers to RING_VIEW
(op 0x30, docs/protocol.md) and answers :meth:`RingView.owner_of`. A key lives at
``ring_position(key)`` (the SHA-1 of its bytes as a 160-bit integer); its owner is the first member
whose id is at or after that position, wrapping past the top of the ring to the lowest id (Chord's
successor rule, as the nodes' own membership computes it).

The view is a hint: a node asked for a key it does not own says so (NOT_RESPONSIBLE) and the client
looks again.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from funnelkvs.client.address import Address, parse_address
from funnelkvs.errors import RemoteProtocolError
from funnelkvs.keyspace import RING_SIZE, ring_position


@dataclass(frozen=True, slots=True)
class Member:
    """One node of the ring: its 160-bit id and the address it serves on."""

    node_id: int
    address: Address


@dataclass(frozen=True, slots=True)
class RingView:
    """The members of a ring sorted by id (at least one), and who answered with them.

    Immutable: a client swaps in a new view rather than editing one, so threads can route with the
    view they hold without a lock.
    """

    members: tuple[Member, ...]
    #: The node that answered RING_VIEW (None for a view built by hand).
    source: Address | None = None
    #: False when that node's walk of the ring did not come back around (some members may be missing).
    complete: bool = True
    _ids: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _addresses: tuple[Address, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a ring view has at least one member")
        ordered = tuple(sorted(self.members, key=lambda member: member.node_id))
        object.__setattr__(self, "members", ordered)
        object.__setattr__(self, "_ids", tuple(member.node_id for member in ordered))
        object.__setattr__(self, "_addresses", tuple(member.address for member in ordered))

    @classmethod
    def of(cls, members: Iterable[tuple[int, Address | str]]) -> RingView:
        """A view from ``(id, address)`` pairs, in any order (for tests and tools)."""
        return cls(
            tuple(
                Member(node_id, address if isinstance(address, Address) else parse_address(address))
                for node_id, address in members
            )
        )

    @classmethod
    def from_answer(cls, answer: Any, source: Address | None = None) -> RingView:
        """The view in a RING_VIEW answer (the parsed JSON object). Raises :class:`RemoteProtocolError`
        when it is not the documented shape: ``{"members": [{"id": "<40 hex>", "address":
        "host:port", ...}, ...], "complete": bool, ...}`` with at least one member."""
        if not isinstance(answer, dict) or not isinstance(answer.get("members"), list):
            raise RemoteProtocolError("RING_VIEW answer has no members list")
        members: list[Member] = []
        for row in answer["members"]:
            try:
                node_id = int(row["id"], 16)
                address = parse_address(row["address"])
            except (TypeError, KeyError, ValueError) as exc:
                raise RemoteProtocolError(f"RING_VIEW answer has a malformed member: {row!r}") from exc
            if not 0 <= node_id < RING_SIZE:
                raise RemoteProtocolError(f"RING_VIEW member id out of the ring: {row['id']!r}")
            members.append(Member(node_id, address))
        if not members:
            raise RemoteProtocolError("RING_VIEW answer lists no member")
        return cls(tuple(members), source, bool(answer.get("complete", True)))

    def __len__(self) -> int:
        return len(self.members)

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Member addresses in ring order (by id)."""
        return self._addresses

    def owner_at(self, position: int) -> Address:
        """The address of the member owning ring position ``position``: the first id ``>= position``,
        else (past the highest id) the lowest."""
        index = bisect.bisect_left(self._ids, position)
        addresses = self._addresses
        return addresses[index] if index < len(addresses) else addresses[0]

    def owner_of(self, key: bytes) -> Address:
        """The address of the member owning ``key``."""
        return self.owner_at(ring_position(key))

    def after(self, address: Address) -> list[Address]:
        """Every other member, starting with the one after ``address`` in ring order (the node that
        takes over ``address``'s keys if it fails); every member when ``address`` is not one."""
        addresses = self._addresses
        if address not in addresses:
            return list(addresses)
        index = addresses.index(address)
        return [addresses[(index + step) % len(addresses)] for step in range(1, len(addresses))]
