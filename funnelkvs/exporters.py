"""The metrics exporter contract: what a ``MetricsExporterSpec.factory`` takes and returns.

An exporter publishes the node's samples somewhere (an HTTP endpoint, a push gateway, a log). It runs in
threads of its own and only reads :meth:`MetricsSource.samples`: it never calls into the node or its
store, so a slow scrape cannot stall the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from funnelkvs.metrics import Sample


class MetricsSource(Protocol):
    """Where an exporter reads from (the node's :class:`~funnelkvs.metrics.NodeMetrics`)."""

    def samples(self) -> list[Sample]: ...


class MetricsExporter(Protocol):
    def start(self) -> None:
        """Begin exporting (e.g. bind and serve). Raise on failure; the node logs it and goes on."""

    def stop(self) -> None:
        """Stop exporting and release every resource. Calling it twice is harmless."""


#: ``factory(options, source)``: ``options`` is the ``plugins.<exporter name>`` config section (empty
#: when absent). It validates them, raising :class:`~funnelkvs.errors.ConfigError` with dotted paths
#: (``plugins.prometheus.port: ...``), and must not start anything before :meth:`MetricsExporter.start`.
MetricsExporterFactory = Callable[[dict[str, Any], MetricsSource], MetricsExporter]
