"""The hooks a FunnelKVS plugin may implement.

A plugin is a module (or any object) with functions decorated by :data:`hookimpl` and named after a
hook below; built-in plugins and third-party ones (entry-point group ``funnelkvs``) are loaded the same
way by :mod:`funnelkvs.plugins`. Every hook is called at start-up or shutdown, never per request.

Registration hooks are broadcast: every plugin may return a list of named contributions
(:mod:`funnelkvs.contributions`), and the core builds one registry per kind from all of them.
``docs/plugins.md`` is the reference for plugin authors; a test keeps it in step with this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from funnelkvs.contributions import (
        ConflictResolverSpec,
        MetricsExporterSpec,
        ReplicationStrategySpec,
        StorageBackendSpec,
    )
    from funnelkvs.metrics import NodeMetrics
    from funnelkvs.settings import Settings

PROJECT = "funnelkvs"

hookspec = HookspecMarker(PROJECT)
#: Decorate a plugin's hook implementations with this (also exported as ``funnelkvs.hookimpl``).
hookimpl = HookimplMarker(PROJECT)


class NodeView(Protocol):
    """What the lifecycle hooks may rely on about the node they are given.

    Anything else on the object passed in is private to the core and may change without notice.
    """

    @property
    def settings(self) -> Settings:
        """The node's validated settings (``settings.plugins.sections`` holds ``plugins.<name>``)."""
        ...

    @property
    def metrics(self) -> NodeMetrics:
        """The node's counters; read them, do not write them."""
        ...

    @property
    def address(self) -> str:
        """``host:port`` that clients and other nodes use to reach this node."""
        ...

    @property
    def node_id(self) -> str:
        """The node's ring position, as 40 lowercase hex digits."""
        ...


# --- registration -------------------------------------------------------------------------------------


@hookspec
def funnelkvs_register_storage_backends() -> list[StorageBackendSpec]:  # type: ignore[empty-body]
    """Contribute storage backends, selected by ``storage.backend``.

    Each factory is called as ``factory(path, options)`` with ``storage.path`` and
    ``storage.options``; it validates the options (raising :class:`~funnelkvs.errors.ConfigError`
    with dotted paths such as ``storage.options.map_size: ...``) and returns a
    :class:`~funnelkvs.storage.backend.StorageBackend`.

    :return: the plugin's :class:`~funnelkvs.contributions.StorageBackendSpec` list.
    """


@hookspec
def funnelkvs_register_replication_strategies() -> list[ReplicationStrategySpec]:  # type: ignore[empty-body]
    """Contribute replication strategies, selected by ``replication.strategy``.

    Each factory is called as ``factory(replication_settings)`` and returns a
    :class:`~funnelkvs.replication.strategy.ReplicationStrategy`.

    :return: the plugin's :class:`~funnelkvs.contributions.ReplicationStrategySpec` list.
    """


@hookspec
def funnelkvs_register_conflict_resolvers() -> list[ConflictResolverSpec]:  # type: ignore[empty-body]
    """Contribute conflict resolvers, selected by ``replication.conflict_resolver``.

    Each factory is called as ``factory(replication_settings)`` and returns a
    :class:`~funnelkvs.replication.resolver.ConflictResolver`.

    :return: the plugin's :class:`~funnelkvs.contributions.ConflictResolverSpec` list.
    """


@hookspec
def funnelkvs_register_metrics_exporters() -> list[MetricsExporterSpec]:  # type: ignore[empty-body]
    """Contribute metrics exporters, enabled by listing their names in ``metrics.exporters``.

    Each factory is called as ``factory(options, source)``: ``options`` is the ``plugins.<name>``
    config section (an empty dict when absent), ``source`` offers ``samples()``. It returns an
    :class:`~funnelkvs.exporters.MetricsExporter` (``start()``/``stop()``).

    :return: the plugin's :class:`~funnelkvs.contributions.MetricsExporterSpec` list.
    """


# --- lifecycle ----------------------------------------------------------------------------------------


@hookspec
def funnelkvs_node_started(node: NodeView) -> None:
    """Called once the node listens and its exporters run, before it serves its first request.

    It runs on the node's loop thread: return quickly (start a thread for anything slow). Plugins are
    called in pluggy's order (last registered first; ``tryfirst``/``trylast`` honoured). An exception
    is logged and does not stop the other plugins or the node.

    :param node: the started node (:class:`NodeView`).
    :return: nothing; a returned value is ignored.
    """


@hookspec
def funnelkvs_node_stopping(node: NodeView) -> None:
    """Called once when the node begins a clean shutdown, before its exporters stop and its store closes.

    Plugins are called in the reverse order of :func:`funnelkvs_node_started`. An exception is logged
    and does not stop the other plugins or the shutdown.

    :param node: the stopping node (:class:`NodeView`).
    :return: nothing; a returned value is ignored.
    """
