"""Which plugins load: the built-in modules, the entry-point group, and ``plugins.disabled`` and
``plugins.autoload`` with the environment variables that override them."""

from __future__ import annotations

from collections.abc import Mapping

from funnelkvs.errors import ConfigError
from funnelkvs.settings import PluginSettings

#: Built-in plugin modules, registered by the same code path as entry points (pytest's
#: ``default_plugins``, datasette's ``DEFAULT_PLUGINS``). Their plugin name is the module name.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "funnelkvs.storage.memory",
    "funnelkvs.storage.lmdb_backend",
    "funnelkvs.storage.sqlite_backend",
    "funnelkvs.replication.strategy",
    "funnelkvs.replication.resolver",
)
ENTRY_POINT_GROUP = "funnelkvs"
#: Comma-separated plugin names to leave out, added to ``plugins.disabled``.
DISABLE_ENV = "FUNNELKVS_DISABLE_PLUGINS"
#: ``0``/``1`` (also false/true, no/yes, off/on): overrides ``plugins.autoload`` when set.
AUTOLOAD_ENV = "FUNNELKVS_PLUGINS_AUTOLOAD"

_FALSE = frozenset({"0", "false", "no", "off"})
_TRUE = frozenset({"1", "true", "yes", "on"})


def _parse_disabled(settings: PluginSettings, env: Mapping[str, str]) -> frozenset[str]:
    names = {name.strip() for name in settings.disabled}
    names.update(part.strip() for part in env.get(DISABLE_ENV, "").split(","))
    names.discard("")
    return frozenset(names)


def _parse_autoload(settings: PluginSettings, env: Mapping[str, str]) -> bool:
    raw = env.get(AUTOLOAD_ENV)
    if raw is None or not raw.strip():
        return settings.autoload
    value = raw.strip().lower()
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise ConfigError(f"{AUTOLOAD_ENV}: {raw!r} is not a boolean (expected 0 or 1)")
