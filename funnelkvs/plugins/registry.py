"""The four contribution kinds (storage backends, replication strategies, conflict resolvers, metrics
exporters) and :class:`Registry`: one kind's contributions by name, each with the plugin providing it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, final

from funnelkvs.contributions import (
    ConflictResolverSpec,
    MetricsExporterSpec,
    ReplicationStrategySpec,
    StorageBackendSpec,
)
from funnelkvs.errors import PluginError
from funnelkvs.plugins.selection import DISABLE_ENV

Kind = Literal["storage_backends", "replication_strategies", "conflict_resolvers", "metrics_exporters"]
AnySpec = StorageBackendSpec | ReplicationStrategySpec | ConflictResolverSpec | MetricsExporterSpec
SpecT = TypeVar(
    "SpecT", StorageBackendSpec, ReplicationStrategySpec, ConflictResolverSpec, MetricsExporterSpec
)


@dataclass(frozen=True, slots=True)
class _KindInfo:
    key: Kind
    hook: str
    label: str
    spec_type: type[AnySpec]


_KINDS: tuple[_KindInfo, ...] = (
    _KindInfo(
        "storage_backends", "funnelkvs_register_storage_backends", "storage backend", StorageBackendSpec
    ),
    _KindInfo(
        "replication_strategies",
        "funnelkvs_register_replication_strategies",
        "replication strategy",
        ReplicationStrategySpec,
    ),
    _KindInfo(
        "conflict_resolvers",
        "funnelkvs_register_conflict_resolvers",
        "conflict resolver",
        ConflictResolverSpec,
    ),
    _KindInfo(
        "metrics_exporters", "funnelkvs_register_metrics_exporters", "metrics exporter", MetricsExporterSpec
    ),
)


@final
class Registry(Generic[SpecT]):
    """The contributions of one kind, by name, each with the plugin that provided it."""

    __slots__ = ("_providers", "_specs", "label")

    def __init__(self, label: str) -> None:
        #: What the contributions are, for messages: ``storage backend``.
        self.label = label
        self._specs: dict[str, SpecT] = {}
        self._providers: dict[str, str] = {}

    def add(self, spec: SpecT, plugin: str) -> None:
        """Register ``spec`` as provided by ``plugin``; a name already taken is a PluginError."""
        other = self._providers.get(spec.name)
        if other is not None:
            raise PluginError(
                f"{self.label} {spec.name!r} is registered by both plugin {other!r} and plugin {plugin!r}; "
                f"disable one of them (plugins.disabled or {DISABLE_ENV})"
            )
        self._specs[spec.name] = spec
        self._providers[spec.name] = plugin

    def get(self, name: str) -> SpecT:
        """The contribution called ``name``; an unknown name is a PluginError listing the choices."""
        try:
            return self._specs[name]
        except KeyError:
            choices = ", ".join(self.names()) or "(none registered)"
            raise PluginError(f"unknown {self.label} {name!r}; choose one of: {choices}") from None

    def provider(self, name: str) -> str:
        """The name of the plugin that registered ``name``."""
        self.get(name)
        return self._providers[name]

    def names(self) -> list[str]:
        return sorted(self._specs)

    def names_by(self, plugin: str) -> list[str]:
        return sorted(name for name, provider in self._providers.items() if provider == plugin)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def __iter__(self) -> Iterator[SpecT]:
        return (self._specs[name] for name in self.names())
