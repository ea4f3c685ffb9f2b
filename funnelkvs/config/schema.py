"""The configuration schema: which keys each section takes, how each is checked, and how the checked
values become :class:`~funnelkvs.settings.Settings`.

Validation never stops at the first problem: every bad key or value is collected, so a user fixes a
file in one round. Keys are strict (an unknown key is an error, with a suggestion), except under
``storage.options`` (checked by the chosen backend) and ``plugins.<name>`` (handed to that plugin).
With ``storage.path`` but no ``storage.backend``, the backend is the one the directory's marker
names (see :mod:`funnelkvs.storage.datadir`); a directory without a marker is a problem.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from funnelkvs.config import validators as v
from funnelkvs.config.problems import ConfigPath, Invalid, Problem, closest, kind, show, unknown_key
from funnelkvs.errors import StorageError
from funnelkvs.settings import (
    LimitsSettings,
    LoggingSettings,
    MetricsSettings,
    NodeSettings,
    PluginSettings,
    ReplicationSettings,
    RingSettings,
    Settings,
    StorageSettings,
)
from funnelkvs.storage.datadir import recorded_backend


@dataclass(frozen=True, slots=True)
class Section:
    settings_type: type[Any]
    fields: dict[str, v.Validator]


#: Section name -> its dataclass and a validator per key. ``plugins`` also takes ``<name>`` sections.
SCHEMA: dict[str, Section] = {
    "node": Section(
        NodeSettings,
        {
            "host": v.host,
            "port": v.listen_port,
            "advertise": v.optional(v.address),
            "join": v.list_of(v.address, "addresses (host:port)"),
            "id": v.optional(v.ring_id),
        },
    ),
    "ring": Section(
        RingSettings,
        {
            "successors": v.positive_int,
            "stabilize_interval": v.seconds,
            "fix_fingers_interval": v.seconds,
            "check_predecessor_interval": v.seconds,
            "rpc_timeout": v.seconds,
            "membership_interval": v.seconds,
        },
    ),
    "storage": Section(
        StorageSettings,
        {"backend": v.name("storage backend"), "path": v.optional(v.path), "options": v.mapping},
    ),
    "replication": Section(
        ReplicationSettings,
        {
            "factor": v.positive_int,
            "write_quorum": v.optional(v.positive_int),
            "read_quorum": v.optional(v.positive_int),
            "anti_entropy_interval": v.seconds,
            "tombstone_grace": v.long_seconds,
            "strategy": v.name("replication strategy"),
            "conflict_resolver": v.name("conflict resolver"),
        },
    ),
    "limits": Section(
        LimitsSettings,
        {
            "max_key_size": v.size(v.MAX_WIRE_LENGTH),
            "max_value_size": v.size(v.MAX_WIRE_LENGTH),
            "max_connections": v.positive_int,
            "max_output_buffer": v.size(),
        },
    ),
    "logging": Section(LoggingSettings, {"level": v.log_level}),
    "metrics": Section(
        MetricsSettings, {"exporters": v.list_of(v.name("metrics exporter"), "exporter names", unique=True)}
    ),
    "plugins": Section(
        PluginSettings,
        {"disabled": v.list_of(v.name("plugin"), "plugin names"), "autoload": v.boolean},
    ),
}

#: Addresses a node can listen on but nobody can connect to.
_UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::", "[::]"})


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def check(self, path: ConfigPath, validator: v.Validator, value: Any) -> tuple[bool, Any]:
        try:
            return True, validator(value)
        except Invalid as exc:
            self.problems.extend(Problem((*path, *p.path), p.message) for p in exc.problems)
            return False, None


def build_settings(data: Any) -> tuple[Settings, list[Problem]]:
    """Check ``data`` (parsed YAML) against the schema; return the settings and every problem found.

    The settings are only meaningful when the problem list is empty.
    """
    collector = _Collector()
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        hint = f"sections {', '.join(SCHEMA)}"
        collector.problems.append(Problem((), f"{show(data)} is {kind(data)}, not a mapping of {hint}"))
        return Settings(), collector.problems

    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key not in SCHEMA:
            collector.problems.append(Problem((str(key),), unknown_key(str(key), SCHEMA)))
            continue
        sections[key] = _build_section(collector, key, SCHEMA[key], value)
    settings = Settings(**sections)
    _check_together(collector, settings)
    storage = data.get("storage")
    if not (isinstance(storage, Mapping) and "backend" in storage):
        _backend_from_marker(collector, settings)
    return settings, collector.problems


def _build_section(collector: _Collector, name: str, section: Section, value: Any) -> Any:
    if value is None:  # a section with every key commented out
        value = {}
    if not isinstance(value, Mapping):
        expected = f"not a mapping (keys: {', '.join(section.fields)})"
        collector.problems.append(Problem((name,), f"{show(value)} is {kind(value)}, {expected}"))
        return section.settings_type()
    checked: dict[str, Any] = {}
    plugin_sections: dict[str, dict[str, Any]] = {}
    for key, item in value.items():
        path = (name, str(key))
        if key in section.fields:
            ok, result = collector.check(path, section.fields[key], item)
            if ok:
                checked[key] = result
        elif name == "plugins" and isinstance(key, str):
            _add_plugin_section(collector, plugin_sections, key, item, section)
        else:
            collector.problems.append(Problem(path, unknown_key(str(key), section.fields)))
    if name == "plugins":
        checked["sections"] = plugin_sections
    return section.settings_type(**checked)


def _add_plugin_section(
    collector: _Collector, sections: dict[str, dict[str, Any]], key: str, value: Any, section: Section
) -> None:
    if value is None or isinstance(value, Mapping):
        ok, result = collector.check(("plugins", key), v.mapping, value)
        if ok:
            sections[key] = result
        return
    # Not a mapping: most likely a misspelled `disabled`/`autoload` rather than a plugin section.
    if closest(key, section.fields) is not None:
        message = unknown_key(key, section.fields)
    else:
        expected = "not a mapping (plugins.<name> sections hold a plugin's settings)"
        message = f"{show(value)} is {kind(value)}, {expected}"
    collector.problems.append(Problem(("plugins", key), message))


def _check_together(collector: _Collector, settings: Settings) -> None:
    """Rules between keys, checked only where each key on its own is valid."""
    replication = settings.replication
    if not _failed(collector, ("replication", "factor")):
        for key in ("write_quorum", "read_quorum"):
            quorum = getattr(replication, key)
            if (
                quorum is not None
                and quorum > replication.factor
                and not _failed(collector, ("replication", key))
            ):
                expected = f"1-{replication.factor}: at most replication.factor"
                collector.problems.append(
                    Problem(("replication", key), f"{quorum} is not a valid quorum ({expected})")
                )
    node = settings.node
    if node.advertise is None:
        if node.host in _UNSPECIFIED_HOSTS and not _failed(collector, ("node", "host")):
            collector.problems.append(
                Problem(
                    ("node", "advertise"),
                    f"null is not valid when node.host is {show(node.host)}, which other nodes cannot "
                    f"connect to (set node.advertise to the host:port this node is reached at)",
                )
            )
    else:
        split = v.split_address(node.advertise)
        if split is not None and split[0] in _UNSPECIFIED_HOSTS:
            collector.problems.append(
                Problem(
                    ("node", "advertise"),
                    f"{show(node.advertise)} is not an address other nodes can connect to "
                    f"(give the host:port this node is reached at)",
                )
            )


def _backend_from_marker(collector: _Collector, settings: Settings) -> None:
    """No ``storage.backend`` given but a ``storage.path``: the backend is the one whose marker the
    directory holds. A directory without one (a new one too) says nothing: the user must choose."""
    path = settings.storage.path
    if path is None or _failed(collector, ("storage", "path")):
        return
    try:
        settings.storage.backend = recorded_backend(path)
    except StorageError as exc:
        hint = "name the backend with storage.backend (--backend), e.g. lmdb or sqlite"
        collector.problems.append(Problem(("storage", "path"), f"{exc}; {hint}"))


def _failed(collector: _Collector, path: ConfigPath) -> bool:
    return any(problem.path[: len(path)] == path for problem in collector.problems)


def settings_to_mapping(settings: Settings) -> dict[str, Any]:
    """The inverse of :func:`build_settings`: plain YAML/JSON-ready data, every key spelled out."""
    data: dict[str, Any] = {}
    for section in dataclasses.fields(settings):
        values = dataclasses.asdict(getattr(settings, section.name))
        if section.name == "storage" and values["path"] is not None:
            values["path"] = str(values["path"])
        if section.name == "plugins":
            values.update(values.pop("sections"))
        data[section.name] = values
    return data
