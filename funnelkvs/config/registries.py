"""Names in the settings checked against the plugin registries, for ``funnelkvs config check``.

Loading settings does not load plugins (the node does that once, at start-up); this check does the
same lookups the node will, and runs the same validation of ``storage.options`` and exporter options,
so a misspelled backend, exporter or option is caught without starting a node.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

from funnelkvs.config.problems import closest
from funnelkvs.errors import ConfigError, PluginError
from funnelkvs.metrics import NodeMetrics
from funnelkvs.plugins import DISABLE_ENV, PluginHost, storage_path_problem
from funnelkvs.settings import Settings


def check_registered_names(settings: Settings, env: Mapping[str, str] = os.environ) -> list[str]:
    """Load the plugins ``settings`` selects; return the problems of :func:`problems_with_names` and
    those the backend's factory finds in ``storage.path`` and ``storage.options``."""
    try:
        host = PluginHost.load(settings.plugins, env)
    except ConfigError as exc:
        return list(exc.problems)
    except PluginError as exc:
        return [f"plugins: {exc}"]
    problems = problems_with_names(host, settings)
    if settings.storage.backend in host.storage_backends:
        # The node runs this validation when it opens the backend; here it stops short of opening.
        problems += host.check_backend_options(settings.storage)
    return list(dict.fromkeys(problems))


def problems_with_names(host: PluginHost, settings: Settings) -> list[str]:
    """Problems (``dotted.path: message``) with the names ``settings`` asks the plugins for.

    Also runs each listed exporter's factory, which validates its ``plugins.<name>`` section without
    starting anything. The node calls this before it binds its port, ``config check`` for a file.
    """
    problems: list[str] = []
    lookups: list[tuple[str, Any, str]] = [
        ("storage.backend", host.storage_backends, settings.storage.backend),
        ("replication.strategy", host.replication_strategies, settings.replication.strategy),
        ("replication.conflict_resolver", host.conflict_resolvers, settings.replication.conflict_resolver),
    ]
    lookups += [
        (f"metrics.exporters[{index}]", host.metrics_exporters, name)
        for index, name in enumerate(settings.metrics.exporters)
    ]
    for path, registry, name in lookups:
        try:
            spec = registry.get(name)
        except PluginError as exc:
            problems.append(f"{path}: {exc}")
            continue
        if path == "storage.backend" and (problem := storage_path_problem(spec, settings.storage.path)):
            problems.append(problem)
        if path.startswith("metrics.exporters"):
            options = dict(settings.plugins.sections.get(name) or {})
            try:
                spec.factory(options, NodeMetrics())
            except ConfigError as exc:
                problems.extend(exc.problems)
            except Exception as exc:  # a plugin's own bug: report it, the check must not crash
                problems.append(f"plugins.{name}: exporter {name!r} rejected its options: {exc}")
    return problems + _unknown_plugin_names(host, settings)


def _unknown_plugin_names(host: PluginHost, settings: Settings) -> list[str]:
    """Plugin names that name no plugin: in ``plugins.disabled`` (and ``FUNNELKVS_DISABLE_PLUGINS``)
    a misspelling would leave the plugin running; a ``plugins.<name>`` section nobody reads would be
    ignored. A plugin that is installed counts even when it is not loaded (disabled, failed, autoload
    off); a section may also be for a contribution (an exporter reads ``plugins.<exporter name>``), so
    sections are only checked when every installed plugin is loaded and all contributions are known."""
    problems: list[str] = []
    contributions = host.contributions()
    disabled = [(f"plugins.disabled[{i}]", name) for i, name in enumerate(settings.plugins.disabled)]
    disabled += [(DISABLE_ENV, name) for name in sorted(host.disabled - set(settings.plugins.disabled))]
    for where, name in disabled:
        if name in host.installed:
            continue
        if name in contributions:
            label, plugin = contributions[name]
            problem = f"{name!r} is not a plugin name but the {label} of plugin {plugin!r}; name that plugin"
        else:
            problem = _named_nothing("plugin", name, host.installed)
        problems.append(f"{where}: {problem}")
    if host.installed - host.registered():
        return problems  # a plugin that is not loaded may read a section named after its contribution
    readers = host.installed | contributions.keys()
    problems += [
        f"plugins.{name}: {_named_nothing('plugin or contribution', name, readers)}"
        for name in settings.plugins.sections
        if name not in readers
    ]
    return problems


def _named_nothing(what: str, name: str, names: Collection[str]) -> str:
    suggestion = closest(name, names)
    hint = f"did you mean {suggestion!r}?" if suggestion is not None else f"known: {', '.join(sorted(names))}"
    return f"no {what} is named {name!r} ({hint})"
