"""Replication contracts: which nodes hold a key (strategies) and which version wins (resolvers).

The defaults registered here (``successor-list``, ``last-writer-wins``) are plugins like any other;
the replication issue builds quorum reads and writes on these contracts.
"""

from funnelkvs.replication.resolver import ConflictResolver, LastWriterWins
from funnelkvs.replication.ringview import NodeRef, RingView
from funnelkvs.replication.strategy import ReplicationStrategy, SuccessorListStrategy
from funnelkvs.replication.versioned import Version, Versioned

__all__ = [
    "ConflictResolver",
    "LastWriterWins",
    "NodeRef",
    "ReplicationStrategy",
    "RingView",
    "SuccessorListStrategy",
    "Version",
    "Versioned",
]
