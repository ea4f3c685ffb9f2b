"""The plugin host: the pluggy manager and its loaded plugins (built-ins, given plugins, entry points,
each load isolated), the registries built from their contributions, the start-up and shutdown calls
into them, and what ``funnelkvs plugins`` lists."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

from pluggy import PluginManager, PluginValidationError

from funnelkvs import hookspecs
from funnelkvs.contributions import (
    ConflictResolverSpec,
    MetricsExporterSpec,
    ReplicationStrategySpec,
    StorageBackendSpec,
)
from funnelkvs.errors import ConfigError, FunnelKVSError, PluginError, StorageError
from funnelkvs.hookspecs import NodeView
from funnelkvs.plugins.paths import storage_path_problem
from funnelkvs.plugins.records import (
    PluginFailure,
    PluginInfo,
    RunningExporter,
    _funnelkvs_version,
    _one_line,
    _Origin,
)
from funnelkvs.plugins.registry import _KINDS, AnySpec, Kind, Registry, _KindInfo
from funnelkvs.plugins.selection import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, _parse_autoload, _parse_disabled
from funnelkvs.replication.resolver import ConflictResolver
from funnelkvs.replication.strategy import ReplicationStrategy
from funnelkvs.settings import PluginSettings, ReplicationSettings, Settings, StorageSettings
from funnelkvs.storage.backend import StorageBackend
from funnelkvs.storage.options import OptionsChecked, check_only

# The package's name, not this module's: ``funnelkvs plugins`` and tests address this logger by it.
log = logging.getLogger("funnelkvs.plugins")


@final
class PluginHost:
    """The loaded plugins, one registry per contribution kind, and the start-up calls into them.

    Build it with :meth:`load`. Plugin names are the module name for built-ins and the entry-point
    name for third-party plugins; they are what ``plugins.disabled`` and ``FUNNELKVS_DISABLE_PLUGINS``
    take.
    """

    __slots__ = (
        "_origins",
        "autoload",
        "conflict_resolvers",
        "disabled",
        "failures",
        "installed",
        "metrics_exporters",
        "pm",
        "replication_strategies",
        "storage_backends",
    )

    def __init__(self, pm: PluginManager, *, autoload: bool, disabled: frozenset[str]) -> None:
        self.pm = pm
        self.autoload = autoload
        self.disabled = disabled
        self.failures: list[PluginFailure] = []
        #: Every plugin name there is, registered or not (disabled, failed, autoload off): the
        #: built-ins, the plugins given to :meth:`load` and the installed entry points.
        self.installed: frozenset[str] = frozenset(DEFAULT_PLUGINS)
        self.storage_backends: Registry[StorageBackendSpec] = Registry("storage backend")
        self.replication_strategies: Registry[ReplicationStrategySpec] = Registry("replication strategy")
        self.conflict_resolvers: Registry[ConflictResolverSpec] = Registry("conflict resolver")
        self.metrics_exporters: Registry[MetricsExporterSpec] = Registry("metrics exporter")
        self._origins: dict[str, _Origin] = {}

    # --- loading ------------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        settings: PluginSettings | None = None,
        env: Mapping[str, str] = os.environ,
        *,
        plugins: Mapping[str, object] | None = None,
    ) -> PluginHost:
        """Register the built-in plugins, ``plugins`` (name to plugin object, for embedding and
        tests), then the entry points unless autoload is off; validate them and build the registries.
        A plugin that fails to import or to validate is left out and listed in :attr:`failures`.

        :raises PluginError: two plugins with one name, or two claiming one contribution name.
        :raises ConfigError: an invalid ``FUNNELKVS_PLUGINS_AUTOLOAD``.
        """
        settings = settings if settings is not None else PluginSettings()
        pm = PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        host = cls(pm, autoload=_parse_autoload(settings, env), disabled=_parse_disabled(settings, env))
        for name in host.disabled:
            pm.set_blocked(name)
        version = _funnelkvs_version()
        for module_name in DEFAULT_PLUGINS:
            if module_name in host.disabled:
                continue
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:
                host._fail(PluginFailure(module_name, _one_line(exc)))
                continue
            host._register(module, module_name, _Origin(builtin=True, version=version))
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        host.installed |= {*(plugins or {}), *entry_points.names}
        for name, plugin in (plugins or {}).items():
            if name not in host.disabled:
                host._register(plugin, name, _Origin(False, str(getattr(plugin, "__version__", "unknown"))))
        if host.autoload:
            host._load_entry_points(entry_points)
        host._check_pending()
        host._collect_contributions()
        return host

    def _load_entry_points(self, entry_points: importlib.metadata.EntryPoints) -> None:
        for entry_point in entry_points:
            if entry_point.name in self.disabled:
                continue
            dist = entry_point.dist
            origin = _Origin(
                builtin=False,
                version=dist.version if dist is not None else "unknown",
                distribution=dist.name if dist is not None else None,
            )
            # One broken package must not stop the node (conda's rule): any import-time error counts.
            try:
                plugin = entry_point.load()
            except Exception as exc:
                self._fail(PluginFailure(entry_point.name, _one_line(exc), origin.distribution))
                continue
            self._register(plugin, entry_point.name, origin)

    def _register(self, plugin: object, name: str, origin: _Origin) -> None:
        if self.pm.has_plugin(name):
            other = self._origins.get(name)
            raise PluginError(
                f"two plugins are named {name!r} ({self._describe_origin(other)} and "
                f"{self._describe_origin(origin)}); disable or uninstall one of them"
            )
        other_name = self.pm.get_name(plugin)
        if other_name is not None:
            self._fail(
                PluginFailure(name, f"already registered as plugin {other_name!r}", origin.distribution)
            )
            return
        try:
            self.pm.register(plugin, name=name)
        except PluginValidationError as exc:
            # pluggy has registered the plugin and its hooks up to the bad one: undo all of it.
            self.pm.unregister(name=name)
            error = " ".join(str(exc).split()).removeprefix(f"Plugin {name!r} for ")
            self._fail(PluginFailure(name, error, origin.distribution))
            return
        self._origins[name] = origin

    @staticmethod
    def _describe_origin(origin: _Origin | None) -> str:
        if origin is None:
            return "unknown origin"
        if origin.builtin:
            return "built in"
        return f"distribution {origin.distribution}" if origin.distribution else "registered directly"

    def _drop(self, name: str, failure: PluginFailure) -> None:
        """Unregister the plugin called ``name`` (all its hooks) and record why."""
        self.pm.unregister(name=name)
        del self._origins[name]
        self._fail(failure)

    def _fail(self, failure: PluginFailure) -> None:
        log.warning("plugin %r skipped: %s", failure.name, failure.error)
        self.failures.append(failure)

    def _check_pending(self) -> None:
        """Leave out every plugin implementing a hook that no spec declares (a misspelling, like
        ``funnelkvs_node_startd``), as :meth:`PluginManager.check_pending` would refuse it."""
        known = [name for name, caller in vars(self.pm.hook).items() if caller.has_spec()]
        unknown: dict[str, list[str]] = {}
        for hook_name, caller in vars(self.pm.hook).items():
            if hook_name.startswith("_") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if not impl.optionalhook:
                    close = difflib.get_close_matches(hook_name, known, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    unknown.setdefault(impl.plugin_name, []).append(f"unknown hook {hook_name!r}{hint}")
        for name, problems in unknown.items():
            self._drop(name, PluginFailure(name, "; ".join(problems), self._origins[name].distribution))
        self.pm.check_pending()  # nothing is left for it to refuse

    def _collect_contributions(self) -> None:
        # Collected plugin by plugin (not through one broadcast hook call) so that every contribution
        # is attributed to its plugin, and a plugin whose registration raises is dropped as a whole.
        collected: dict[str, list[tuple[_KindInfo, AnySpec]]] = {}
        broken: dict[str, PluginFailure] = {}
        for kind in _KINDS:
            for impl in getattr(self.pm.hook, kind.hook).get_hookimpls():
                name = impl.plugin_name
                if name in broken or impl.wrapper or impl.hookwrapper:
                    continue
                try:
                    specs = self._checked_specs(kind, impl.function())
                except Exception as exc:
                    broken[name] = PluginFailure(
                        name, f"{kind.hook}: {_one_line(exc)}", self._origins[name].distribution
                    )
                    continue
                collected.setdefault(name, []).extend((kind, spec) for spec in specs)
        for name, failure in broken.items():
            self._drop(name, failure)
        for name in self._origins:
            for kind, spec in collected.get(name, []):
                self._registry(kind.key).add(spec, name)

    @staticmethod
    def _checked_specs(kind: _KindInfo, result: object) -> list[AnySpec]:
        if result is None:
            return []
        if not isinstance(result, list | tuple) or not all(isinstance(s, kind.spec_type) for s in result):
            raise TypeError(f"expected a list of {kind.spec_type.__name__}, got {result!r}")
        for spec in result:
            if not spec.name or spec.name != spec.name.strip() or any(c.isspace() for c in spec.name):
                raise TypeError(f"invalid {kind.label} name {spec.name!r}")
        return list(result)

    def _registry(self, kind: Kind) -> Registry[Any]:
        registry: Registry[Any] = getattr(self, kind)
        return registry

    # --- what the node calls at start-up and shutdown --------------------------------------------------

    def create_backend(self, storage: StorageSettings) -> StorageBackend:
        """Open the backend ``storage.backend`` names, with ``storage.path`` and ``storage.options``.

        :raises PluginError: unknown backend name.
        :raises ConfigError: a persistent backend without ``storage.path``, another with one, or bad
            options.
        :raises StorageError: the backend could not open its data.
        """
        spec = self.storage_backends.get(storage.backend)
        if problem := storage_path_problem(spec, storage.path):
            raise ConfigError(problem)
        try:
            backend = spec.factory(storage.path, dict(storage.options))
        except FunnelKVSError:
            raise
        except Exception as exc:
            raise StorageError(f"storage backend {spec.name!r} failed to open: {_one_line(exc)}") from exc
        if not isinstance(backend, StorageBackend):
            raise PluginError(
                f"storage backend {spec.name!r} (plugin {self.storage_backends.provider(spec.name)!r}) "
                f"returned {type(backend).__name__}, not a StorageBackend"
            )
        return backend

    def check_backend_options(self, storage: StorageSettings) -> list[str]:
        """Problems with ``storage.path`` and ``storage.options``, found by the backend's own factory
        run under :func:`~funnelkvs.storage.options.check_only`, which stops it before it opens
        anything (when it reads its options with :class:`~funnelkvs.storage.options.OptionsReader`).

        :raises PluginError: unknown backend name.
        """
        spec = self.storage_backends.get(storage.backend)
        try:
            with check_only():
                backend = spec.factory(storage.path, dict(storage.options))
        except OptionsChecked:
            return []
        except ConfigError as exc:
            return exc.problems
        except Exception as exc:
            return [f"storage.backend: {spec.name!r} failed checking its options: {_one_line(exc)}"]
        # A factory that does not use OptionsReader got as far as opening its store: close it again.
        with contextlib.suppress(Exception):
            backend.close()
        return []

    def create_strategy(self, replication: ReplicationSettings) -> ReplicationStrategy:
        """The strategy ``replication.strategy`` names. :raises PluginError: unknown name."""
        strategy: ReplicationStrategy = self.replication_strategies.get(replication.strategy).factory(
            replication
        )
        return strategy

    def create_resolver(self, replication: ReplicationSettings) -> ConflictResolver:
        """The resolver ``replication.conflict_resolver`` names. :raises PluginError: unknown name."""
        spec = self.conflict_resolvers.get(replication.conflict_resolver)
        resolver: ConflictResolver = spec.factory(replication)
        return resolver

    def start_exporters(self, node: NodeView, settings: Settings | None = None) -> list[RunningExporter]:
        """Create and start the exporters ``metrics.exporters`` lists, reading ``node.metrics``.

        Every name is looked up and every factory called (validating its ``plugins.<name>`` options)
        before any exporter starts, so a config mistake starts nothing. An exporter whose factory or
        ``start()`` fails otherwise is logged and left out; the others run.

        :raises PluginError: an unknown exporter name.
        :raises ConfigError: every bad option of every listed exporter.
        """
        settings = settings if settings is not None else node.settings
        names = list(dict.fromkeys(settings.metrics.exporters))
        specs = [self.metrics_exporters.get(name) for name in names]
        created: list[RunningExporter] = []
        problems: list[str] = []
        for spec in specs:
            options = dict(settings.plugins.sections.get(spec.name) or {})
            try:
                created.append(RunningExporter(spec.name, spec.factory(options, node.metrics)))
            except ConfigError as exc:
                problems.extend(exc.problems)
            except Exception:
                log.exception("metrics exporter %r could not be created; the node runs without it", spec.name)
        if problems:
            raise ConfigError(problems)
        running: list[RunningExporter] = []
        for item in created:
            try:
                item.exporter.start()
            except Exception:
                log.exception("metrics exporter %r failed to start; the node runs without it", item.name)
                self._stop_one(item)
                continue
            running.append(item)
        return running

    def stop_exporters(self, exporters: Sequence[RunningExporter]) -> None:
        """Stop ``exporters`` in reverse start order; one raising does not keep the others running."""
        for item in reversed(exporters):
            self._stop_one(item)

    @staticmethod
    def _stop_one(item: RunningExporter) -> None:
        try:
            item.exporter.stop()
        except Exception:
            log.exception("metrics exporter %r failed to stop", item.name)

    def node_started(self, node: NodeView) -> None:
        """Call every ``funnelkvs_node_started``; one raising is logged and the rest still run."""
        self._call_each("funnelkvs_node_started", {"node": node}, reverse=False)

    def node_stopping(self, node: NodeView) -> None:
        """Call every ``funnelkvs_node_stopping``, in the reverse order of :meth:`node_started`."""
        self._call_each("funnelkvs_node_stopping", {"node": node}, reverse=True)

    def _call_each(self, hook_name: str, kwargs: Mapping[str, object], *, reverse: bool) -> None:
        # A plain hook call stops at the first exception; each implementation is called on its own so
        # that one broken plugin cannot keep the others from seeing start and stop. Start follows
        # pluggy's order (last registered first, tryfirst/trylast honoured); stop unwinds it.
        impls = [
            i for i in getattr(self.pm.hook, hook_name).get_hookimpls() if not (i.wrapper or i.hookwrapper)
        ]
        ordered = impls if reverse else list(reversed(impls))
        for impl in ordered:
            function: Callable[..., object] = impl.function
            try:
                function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception:
                log.exception("plugin %r raised in %s; ignored", impl.plugin_name, hook_name)

    # --- introspection ----------------------------------------------------------------------------------

    def registered(self) -> frozenset[str]:
        """The names of the plugins registered (loaded, not disabled, not failed)."""
        return frozenset(self._origins)

    def contributions(self) -> dict[str, tuple[str, str]]:
        """Every contribution name (of any kind) with its kind's label and the plugin providing it."""
        return {
            name: (kind.label, self._registry(kind.key).provider(name))
            for kind in _KINDS
            for name in self._registry(kind.key).names()
        }

    def describe(self) -> list[PluginInfo]:
        """Every registered plugin: built-ins first in :data:`DEFAULT_PLUGINS` order, then by name."""
        builtin_rank = {name: rank for rank, name in enumerate(DEFAULT_PLUGINS)}
        names = sorted(self._origins, key=lambda n: (builtin_rank.get(n, len(builtin_rank)), n))
        infos = []
        for name in names:
            origin = self._origins[name]
            callers = self.pm.get_hookcallers(self.pm.get_plugin(name)) or []
            infos.append(
                PluginInfo(
                    name=name,
                    version=origin.version,
                    builtin=origin.builtin,
                    distribution=origin.distribution,
                    hooks=tuple(sorted(caller.name for caller in callers)),
                    contributions={kind.key: self._registry(kind.key).names_by(name) for kind in _KINDS},
                )
            )
        return infos
