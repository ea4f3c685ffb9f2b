"""Prometheus metrics exporter for FunnelKVS: ``metrics.exporters: [prometheus]`` serves ``/metrics``.

Options (the ``plugins.prometheus`` config section): ``host`` (default 127.0.0.1) and ``port``
(default 9108; 0 picks a free port).
"""

from __future__ import annotations

from funnelkvs.contributions import MetricsExporterSpec
from funnelkvs.hookspecs import hookimpl
from funnelkvs_prometheus.collector import NodeCollector
from funnelkvs_prometheus.exporter import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ExporterOptions,
    PrometheusExporter,
    create_exporter,
    parse_options,
)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ExporterOptions",
    "NodeCollector",
    "PrometheusExporter",
    "create_exporter",
    "parse_options",
]


@hookimpl
def funnelkvs_register_metrics_exporters() -> list[MetricsExporterSpec]:
    return [
        MetricsExporterSpec(
            name="prometheus",
            factory=create_exporter,
            description="serves the node's metrics at http://HOST:PORT/metrics for Prometheus to scrape",
        )
    ]
