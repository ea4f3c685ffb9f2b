"""The replication strategy contract, and the default: the key's successor and the nodes after it.

A strategy decides *which* nodes hold a key's replicas; how many is ``replication.factor`` (``n``), and
how many must answer is the quorum settings' business, not the strategy's. Strategies are pure: same
position, view and ``n``, same answer, on every node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from funnelkvs.contributions import ReplicationStrategySpec
from funnelkvs.hookspecs import hookimpl
from funnelkvs.replication.ringview import NodeRef, RingView
from funnelkvs.settings import ReplicationSettings


class ReplicationStrategy(Protocol):
    def preference_list(self, position: int, ring: RingView, n: int) -> list[NodeRef]:
        """The nodes that should hold the key at ring ``position``, coordinator (the key's owner)
        first, at most ``n`` of them and no node twice. Fewer than ``n`` when the view has fewer
        distinct nodes; empty only for an empty view."""
        ...


ReplicationStrategyFactory = Callable[[ReplicationSettings], ReplicationStrategy]


class SuccessorListStrategy:
    """Chord's successor-list replication: the key's successor, then the next ``n - 1`` distinct nodes
    clockwise. With ``n == 1`` that is one copy on the owner."""

    __slots__ = ()

    name = "successor-list"

    def preference_list(self, position: int, ring: RingView, n: int) -> list[NodeRef]:
        if n < 1:
            raise ValueError(f"replication factor must be at least 1, got {n}")
        chosen: list[NodeRef] = []
        # Distinct by address, not only by id: a host running several virtual nodes must not hold
        # two replicas of one key, or one crash loses both.
        addresses: set[str] = set()
        for node in ring.clockwise(position):
            if node.address in addresses:
                continue
            addresses.add(node.address)
            chosen.append(node)
            if len(chosen) == n:
                break
        return chosen


def create_successor_list_strategy(settings: ReplicationSettings) -> SuccessorListStrategy:
    return SuccessorListStrategy()


@hookimpl
def funnelkvs_register_replication_strategies() -> list[ReplicationStrategySpec]:
    return [
        ReplicationStrategySpec(
            name=SuccessorListStrategy.name,
            factory=create_successor_list_strategy,
            description="the key's successor and the next factor-1 distinct nodes clockwise",
        )
    ]
