"""Physical nodes and the Chord ids they run (virtual nodes, Stoica et al. 2001, 6.2, Fig. 9).

With V virtual nodes each physical node (a *host*) runs V Chord nodes with independent random ids;
the ring, routing and stabilization see only the Chord nodes. A host fails or joins as a whole, and
load (keys per node) is counted per host: the sum over its ids. With V = 1 a host is one Chord node.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from funnelkvs.keyspace import RING_BITS


class Hosts:
    """Which host runs which Chord id.

    :param virtual_nodes: V, Chord ids per host (at least 1).
    """

    def __init__(self, virtual_nodes: int = 1) -> None:
        if virtual_nodes < 1:
            raise ValueError(f"a host runs at least one Chord node, got {virtual_nodes}")
        self.virtual_nodes = virtual_nodes
        #: Each host's Chord ids, by host number (numbers are never reused).
        self.ids: dict[int, tuple[int, ...]] = {}
        #: The host of each Chord id ever made.
        self.host_of: dict[int, int] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, rng: random.Random) -> tuple[int, tuple[int, ...]]:
        """A new host with V fresh random ids (distinct from every id so far); its number and ids."""
        host = self._next
        self._next += 1
        ids: list[int] = []
        while len(ids) < self.virtual_nodes:
            ident = rng.getrandbits(RING_BITS)
            if ident not in self.host_of:
                self.host_of[ident] = host
                ids.append(ident)
        self.ids[host] = tuple(ids)
        return host, self.ids[host]

    def add_many(self, count: int, rng: random.Random) -> list[int]:
        """``count`` new hosts; all their ids, host by host."""
        return [ident for _ in range(count) for ident in self.add(rng)[1]]

    def remove(self, host: int) -> tuple[int, ...]:
        """The host is gone (failed); its ids."""
        return self.ids.pop(host)

    def numbers(self) -> list[int]:
        """The hosts present, in ascending order (a stable order to draw from)."""
        return sorted(self.ids)

    def per_host(self, counts_by_id: dict[int, int], hosts: Iterable[int] | None = None) -> list[int]:
        """Sum ``counts_by_id`` (a count per Chord id, missing = 0) over each host's ids, one total
        per host in ascending host order."""
        chosen = self.numbers() if hosts is None else hosts
        return [sum(counts_by_id.get(ident, 0) for ident in self.ids[host]) for host in chosen]
