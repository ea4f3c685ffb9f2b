"""What the plugin host records and lists: plugins left out, registered plugins as ``funnelkvs plugins``
shows them, running exporters, and where each plugin came from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from funnelkvs.exporters import MetricsExporter


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin left out because it failed to import or to register its contributions."""

    name: str
    #: ``ExceptionType: message``, one line.
    error: str
    distribution: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "error": self.error, "distribution": self.distribution}


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What ``funnelkvs plugins`` shows about one registered plugin."""

    name: str
    version: str
    builtin: bool
    distribution: str | None
    hooks: tuple[str, ...]
    #: Contribution names by kind (every kind present, possibly empty).
    contributions: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "builtin": self.builtin,
            "distribution": self.distribution,
            "hooks": list(self.hooks),
            "contributions": {kind: list(names) for kind, names in self.contributions.items()},
        }


@dataclass(frozen=True, slots=True)
class RunningExporter:
    name: str
    exporter: MetricsExporter


@dataclass(frozen=True, slots=True)
class _Origin:
    builtin: bool
    version: str
    distribution: str | None = None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _funnelkvs_version() -> str:
    from funnelkvs import __version__

    return __version__
