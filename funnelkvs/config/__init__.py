"""Node configuration: YAML files and command-line overrides, checked into :class:`Settings`.

Modules: :mod:`~funnelkvs.config.yamlfile` (safe YAML, duplicate keys, line numbers),
:mod:`~funnelkvs.config.envsubst` (``${VAR}`` references), :mod:`~funnelkvs.config.validators` and
:mod:`~funnelkvs.config.schema` (what each key accepts), :mod:`~funnelkvs.config.loading` (putting
it together), :mod:`~funnelkvs.config.registries` (names checked against the plugin registries).
"""

from __future__ import annotations

from funnelkvs.config.loading import LoadedConfig, load_settings, read_config, settings_from_mapping
from funnelkvs.config.schema import SCHEMA, settings_to_mapping
from funnelkvs.config.validators import parse_size, split_address
from funnelkvs.errors import ConfigError

__all__ = [
    "SCHEMA",
    "ConfigError",
    "LoadedConfig",
    "load_settings",
    "parse_size",
    "read_config",
    "settings_from_mapping",
    "settings_to_mapping",
    "split_address",
]
