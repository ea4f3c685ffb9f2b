"""What a plugin contributes: named factories, one dataclass per kind.

Plugins return lists of these from the registration hooks in :mod:`funnelkvs.hookspecs`; the core
collects them into one registry per kind (:mod:`funnelkvs.plugins`), rejects two plugins claiming one
name, and looks a contribution up by the name the config gives. Factories are called once, at start-up:
nothing here is on the request path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from funnelkvs.storage.backend import StorageBackend

#: ``factory(path, options)``: ``path`` is ``storage.path`` (None when unset), ``options`` is
#: ``storage.options``. It raises :class:`funnelkvs.errors.ConfigError` naming each bad option by its
#: dotted path (``storage.options.map_size: ...``).
StorageBackendFactory = Callable[[Path | None, dict[str, Any]], StorageBackend]


@dataclass(frozen=True, slots=True)
class StorageBackendSpec:
    name: str
    factory: StorageBackendFactory
    description: str
    #: Keeps data across restarts (needs ``storage.path``).
    persistent: bool = False


@dataclass(frozen=True, slots=True)
class ReplicationStrategySpec:
    name: str
    factory: Callable[..., Any]
    description: str


@dataclass(frozen=True, slots=True)
class ConflictResolverSpec:
    name: str
    factory: Callable[..., Any]
    description: str


@dataclass(frozen=True, slots=True)
class MetricsExporterSpec:
    name: str
    factory: Callable[..., Any]
    description: str
