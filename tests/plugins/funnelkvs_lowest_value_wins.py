"""A test plugin: the conflict resolver ``lowest-value-wins``, which picks differently from
last-writer-wins so that a test can tell which resolver a read went through (issue 9: "a test plugin
that resolves differently proves the hook is used on every read").

Rule: among the live versions not older than the newest tombstone, the smallest value bytes win (on
equal values, the highest version, so the answer is one element of the candidates whatever their
order); when every live version is older than the newest tombstone, that tombstone wins (the key is
deleted). Order-independent, as the resolver contract requires (docs/plugins.md, Conflict resolver).

The node processes of tests/test_resolver_hook.py load it as the entry point ``lowest`` of a
dist-info written on their PYTHONPATH.
"""

from __future__ import annotations

from collections.abc import Sequence

from funnelkvs.contributions import ConflictResolverSpec
from funnelkvs.hookspecs import hookimpl
from funnelkvs.replication.versioned import Versioned
from funnelkvs.settings import ReplicationSettings

NAME = "lowest-value-wins"


class LowestValueWins:
    __slots__ = ()

    name = NAME

    def resolve(self, key: bytes, candidates: Sequence[Versioned]) -> list[Versioned]:
        if not candidates:
            return []
        tombstones = [c for c in candidates if c.value is None]
        newest_tombstone = max(tombstones, key=lambda c: c.version) if tombstones else None
        live = [
            c
            for c in candidates
            if c.value is not None and (newest_tombstone is None or c.version > newest_tombstone.version)
        ]
        if not live:
            assert newest_tombstone is not None
            return [newest_tombstone]
        # Smallest value first; on equal values the highest version (negated hlc, origin).
        return [min(live, key=lambda c: (c.value, -c.version.hlc, -c.version.origin))]


def create(settings: ReplicationSettings) -> LowestValueWins:
    return LowestValueWins()


@hookimpl
def funnelkvs_register_conflict_resolvers() -> list[ConflictResolverSpec]:
    return [ConflictResolverSpec(name=NAME, factory=create, description="test: the smallest value wins")]
