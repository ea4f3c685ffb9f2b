"""Loading settings: a YAML file, plus command-line overrides, checked as one.

Overrides are dotted paths (``{"node.port": 9000}``) that win over the file and pass the same checks;
a ``None`` override is ignored, so argparse defaults can be passed through unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from funnelkvs.config.problems import COMMAND_LINE, ConfigPath, Problem, format_problem
from funnelkvs.config.schema import build_settings
from funnelkvs.config.yamlfile import ConfigDocument, parse_config_text
from funnelkvs.errors import ConfigError
from funnelkvs.settings import Settings

Overrides = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """Validated settings and where some of them came from (for ``funnelkvs config show``)."""

    settings: Settings
    source: str
    #: Paths whose value came from ``${...}`` substitution, with the text as written.
    from_environment: dict[ConfigPath, str] = field(default_factory=dict)


def load_settings(
    path: str | Path | None,
    overrides: Overrides | None = None,
    env: Mapping[str, str] = os.environ,
) -> Settings:
    """Read, check and return the settings in ``path`` (defaults when None), with ``overrides`` applied.

    Raises :class:`ConfigError` listing every problem, one ``LOCATION: dotted.path: message`` each.
    """
    return read_config(path, overrides, env).settings


def read_config(
    path: str | Path | None,
    overrides: Overrides | None = None,
    env: Mapping[str, str] = os.environ,
) -> LoadedConfig:
    """:func:`load_settings`, also telling which values came from the environment."""
    if path is None:
        document = ConfigDocument(data=None)
        source = COMMAND_LINE  # with no file, every value that can be wrong came from a flag
    else:
        source = str(path)
        document = parse_config_text(_read_text(Path(path), source), source, env)
    settings = _check(document, source, overrides)
    overridden = _override_paths(overrides)
    substituted = {
        key: text for key, text in document.substituted.items() if not _overridden(key, overridden)
    }
    return LoadedConfig(settings, source, substituted)


def settings_from_mapping(
    data: Mapping[str, Any] | None,
    source: str = "<mapping>",
    overrides: Overrides | None = None,
) -> Settings:
    """Check already-parsed data (as YAML would give it); ``source`` names it in error messages."""
    return _check(ConfigDocument(data=data), source, overrides)


def _check(document: ConfigDocument, source: str, overrides: Overrides | None) -> Settings:
    data, overridden, override_problems = _apply_overrides(document.data, overrides)
    settings, problems = build_settings(data)
    # A failed ${VAR} under an overridden path no longer matters; a duplicate key still does.
    file_problems = [
        p for p in document.problems if p.line is not None or not _overridden(p.path, overridden)
    ]
    problems = [*file_problems, *override_problems, *problems]
    if problems:
        located = [(_line(p, document, overridden), p) for p in problems]
        located.sort(key=lambda item: (item[0] is None, item[0] or 0))
        messages = [format_problem(_location(p, line, source, overridden), p) for line, p in located]
        raise ConfigError(list(dict.fromkeys(messages)))
    return settings


def _line(problem: Problem, document: ConfigDocument, overridden: set[ConfigPath]) -> int | None:
    if problem.line is not None:
        return problem.line
    if _overridden(problem.path, overridden):
        return None
    return document.lines.get(problem.path)


def _location(problem: Problem, line: int | None, source: str, overridden: set[ConfigPath]) -> str:
    if problem.line is None and _overridden(problem.path, overridden):
        return COMMAND_LINE
    return f"{source}:{line}" if line is not None else source


def _overridden(path: ConfigPath, overridden: set[ConfigPath]) -> bool:
    return any(path[: len(prefix)] == prefix for prefix in overridden)


def _override_paths(overrides: Overrides | None) -> set[ConfigPath]:
    return {tuple(key.split(".")) for key, value in (overrides or {}).items() if value is not None}


def _apply_overrides(data: Any, overrides: Overrides | None) -> tuple[Any, set[ConfigPath], list[Problem]]:
    """Data with overrides merged in (the input is not modified), the paths set, and bad override keys."""
    if not overrides:
        return data, set(), []
    if data is None:
        data = {}
    if not isinstance(data, Mapping):  # build_settings reports the file itself
        return data, set(), []
    merged = dict(data)
    paths: set[ConfigPath] = set()
    problems: list[Problem] = []
    for key, value in overrides.items():
        if value is None:
            continue
        parts = tuple(key.split("."))
        if not all(parts):
            problems.append(Problem((key,), "is not a dotted key path (like node.port)"))
            paths.add((key,))
            continue
        target = merged
        for part in parts[:-1]:
            child = target.get(part)
            if child is not None and not isinstance(child, Mapping):
                break  # the file's own value there is reported as not a mapping
            target[part] = dict(child or {})
            target = target[part]
        else:
            target[parts[-1]] = value
            paths.add(parts)
    return merged, paths, problems


def _read_text(path: Path, source: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: cannot read config file: not UTF-8 text (byte {exc.start})") from exc
