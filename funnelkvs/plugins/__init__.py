"""Loading plugins and turning their contributions into registries the node picks from by name.

Built-in plugins (:data:`DEFAULT_PLUGINS`) are registered exactly like third-party ones, which come from
the entry-point group ``funnelkvs``. Each load is isolated: a package that fails to import, implements a
hook that does not exist (a misspelling) or a hook with a parameter the hook lacks, or whose registration
hook raises, is logged, listed in :attr:`PluginHost.failures`, and the node starts without it. Only two
plugins claiming one name raise :class:`~funnelkvs.errors.PluginError`, since guessing which of the two
to drop would be worse.

Everything here runs at start-up or shutdown: the node resolves its backend, strategy, resolver and
exporters once, so no request ever goes through pluggy.

The package, one idea a module: :mod:`~funnelkvs.plugins.selection` (which plugins load: the built-ins,
the entry-point group, ``plugins.disabled`` and ``plugins.autoload`` with their environment overrides),
:mod:`~funnelkvs.plugins.registry` (the contribution kinds and a :class:`Registry` per kind, by name),
:mod:`~funnelkvs.plugins.records` (what the host records and lists: failures, plugin descriptions,
running exporters), :mod:`~funnelkvs.plugins.paths` (whether a backend takes ``storage.path``) and
:mod:`~funnelkvs.plugins.host` (:class:`PluginHost`: loading, validation, the
start-up and shutdown calls, introspection).
"""

from __future__ import annotations

# The ``X as X`` imports keep names importable from here that were when this package was one module.
from funnelkvs.plugins.host import PluginHost
from funnelkvs.plugins.host import log as log
from funnelkvs.plugins.paths import storage_path_problem
from funnelkvs.plugins.records import PluginFailure, PluginInfo, RunningExporter
from funnelkvs.plugins.registry import AnySpec as AnySpec
from funnelkvs.plugins.registry import Kind as Kind
from funnelkvs.plugins.registry import Registry
from funnelkvs.plugins.registry import SpecT as SpecT
from funnelkvs.plugins.selection import AUTOLOAD_ENV, DEFAULT_PLUGINS, DISABLE_ENV, ENTRY_POINT_GROUP

__all__ = [
    "AUTOLOAD_ENV",
    "DEFAULT_PLUGINS",
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "PluginFailure",
    "PluginHost",
    "PluginInfo",
    "Registry",
    "RunningExporter",
    "storage_path_problem",
]
