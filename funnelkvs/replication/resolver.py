"""The conflict resolver contract, and the default: last writer wins.

A resolver is given every version of one key that a read gathered from the replicas and returns what
survives: one winner, or several siblings when it cannot order them (a vector-clock resolver would).
Resolvers are pure and order-independent: any permutation of the candidates gives the same answer, so
every replica converges on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from funnelkvs.contributions import ConflictResolverSpec
from funnelkvs.hookspecs import hookimpl
from funnelkvs.replication.versioned import Versioned
from funnelkvs.settings import ReplicationSettings


class ConflictResolver(Protocol):
    def resolve(self, key: bytes, candidates: Sequence[Versioned]) -> list[Versioned]:
        """What survives among ``candidates`` (versions of ``key``): one winner or siblings, each taken
        from ``candidates``. Empty only when ``candidates`` is. A winning tombstone means deleted."""
        ...


ConflictResolverFactory = Callable[[ReplicationSettings], ConflictResolver]


def _lww_order(candidate: Versioned) -> tuple[int, int, bool, bytes]:
    # After (hlc, origin), a put beats a delete and then the larger value wins: equal versions
    # should not happen, but if a bug or a corrupt copy makes them, replicas must still agree. This
    # is the order of funnelkvs.versions.newer on envelopes; the two must never disagree.
    value = candidate.value
    return (candidate.version.hlc, candidate.version.origin, value is not None, value or b"")


class LastWriterWins:
    """The highest version ``(hlc, origin)`` wins, then a put over a delete, then the larger value
    bytes (the order of :func:`funnelkvs.versions.newer`). Concurrent writes to one key are ordered by
    ``(hlc, node id)`` and the loser is dropped silently, so a node whose clock runs fast wins them:
    that is the price of needing no clocks but hybrid logical ones."""

    __slots__ = ()

    name = "last-writer-wins"

    def resolve(self, key: bytes, candidates: Sequence[Versioned]) -> list[Versioned]:
        if not candidates:
            return []
        return [max(candidates, key=_lww_order)]


def create_last_writer_wins(settings: ReplicationSettings) -> LastWriterWins:
    return LastWriterWins()


@hookimpl
def funnelkvs_register_conflict_resolvers() -> list[ConflictResolverSpec]:
    return [
        ConflictResolverSpec(
            name=LastWriterWins.name,
            factory=create_last_writer_wins,
            description="highest (hlc, origin) version wins; then put over delete, then value bytes",
        )
    ]
