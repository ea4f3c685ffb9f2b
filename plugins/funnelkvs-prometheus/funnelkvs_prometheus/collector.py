"""A prometheus_client collector that reads the node's samples at every scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from funnelkvs.exporters import MetricsSource
from funnelkvs.metrics import Sample


class NodeCollector(Collector):
    """Turns :meth:`MetricsSource.samples` into metric families, one per sample name.

    Reading at scrape time (instead of mirroring every counter into prometheus_client objects) keeps
    the node's hot path free of any exporter code: the node only bumps its own ints.
    """

    def __init__(self, source: MetricsSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for sample in self._source.samples():
            family = families.get(sample.name)
            if family is None:
                family = families[sample.name] = _family(sample)
            family.add_metric([value for _, value in sample.labels], sample.value)
        yield from families.values()

    def describe(self) -> list[Metric]:
        # An empty description stops CollectorRegistry from calling collect() at registration time.
        return []


def _family(sample: Sample) -> CounterMetricFamily | GaugeMetricFamily:
    labels = [name for name, _ in sample.labels]
    if sample.kind == "counter":
        # CounterMetricFamily adds the ``_total`` suffix itself; our names already carry it.
        return CounterMetricFamily(sample.name.removesuffix("_total"), sample.help, labels=labels)
    return GaugeMetricFamily(sample.name, sample.help, labels=labels)
