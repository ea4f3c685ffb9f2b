"""The funnelkvs-prometheus plugin package: options, the exporter over HTTP, loading through its entry
point, and a real node with it enabled."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from funnelkvs.errors import ConfigError
from funnelkvs.metrics import NodeMetrics
from funnelkvs.plugins import PluginHost
from funnelkvs.protocol import Op
from funnelkvs.settings import PluginSettings, Settings

funnelkvs_prometheus = pytest.importorskip("funnelkvs_prometheus")
from funnelkvs_prometheus import ExporterOptions, PrometheusExporter, create_exporter, parse_options  # noqa: E402


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def metrics() -> NodeMetrics:
    return NodeMetrics(node_id="ab" * 20, address="127.0.0.1:1", backend="memory")


@pytest.fixture
def exporter(metrics: NodeMetrics) -> Iterator[PrometheusExporter]:
    running = create_exporter({"port": 0}, metrics)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_options_defaults() -> None:
    assert parse_options({}) == ExporterOptions(host="127.0.0.1", port=9108)
    assert parse_options({"host": "::1", "port": 0}) == ExporterOptions(host="::1", port=0)


def test_options_report_every_problem_with_its_dotted_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_options({"port": 70000, "host": "", "bind": "x"})
    assert info.value.problems == [
        "plugins.prometheus.bind: unknown option (expected one of: host, port)",
        "plugins.prometheus.host: '' is not a host name or address (expected e.g. 127.0.0.1)",
        "plugins.prometheus.port: 70000 is not a valid port (0-65535)",
    ]
    for port in (True, "9108", -1, 1.5):
        with pytest.raises(ConfigError, match=r"^plugins\.prometheus\.port: "):
            parse_options({"port": port})


def test_metrics_served_with_current_counters(exporter: PrometheusExporter, metrics: NodeMetrics) -> None:
    metrics.requests_by_op[Op.GET] = 7
    metrics.connections_current = 3
    samples = scrape(exporter.url)
    assert samples[("funnelkvs_requests_total", (("op", "get"),))] == 7
    assert samples[("funnelkvs_requests_total", (("op", "put"),))] == 0
    assert samples[("funnelkvs_connections_current", ())] == 3
    # Read at scrape time: a counter bumped after the first scrape shows in the next.
    metrics.requests_by_op[Op.GET] += 5
    metrics.refresh_storage(keys=12, stored_bytes=340)
    samples = scrape(exporter.url)
    assert samples[("funnelkvs_requests_total", (("op", "get"),))] == 12
    assert samples[("funnelkvs_keys", ())] == 12
    assert samples[("funnelkvs_stored_bytes", ())] == 340


def test_only_metrics_path_is_served(exporter: PrometheusExporter) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(exporter.url.replace("/metrics", "/other"), timeout=5)
    assert info.value.code == 404


def test_uses_its_own_registry(exporter: PrometheusExporter) -> None:
    assert REGISTRY.get_sample_value("funnelkvs_keys") is None
    assert exporter.registry.get_sample_value("funnelkvs_keys") == 0


def test_stop_closes_the_server(metrics: NodeMetrics) -> None:
    running = create_exporter({"port": 0}, metrics)
    running.start()
    url = running.url
    scrape(url)
    running.stop()
    running.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def fake_node(sections: dict[str, dict[str, object]]) -> SimpleNamespace:
    settings = Settings()
    settings.metrics.exporters = ["prometheus"]
    settings.plugins.sections = sections
    return SimpleNamespace(settings=settings, metrics=NodeMetrics(), address="127.0.0.1:1", node_id="0" * 40)


def test_registered_through_its_entry_point() -> None:
    host = PluginHost.load(PluginSettings(), env={})
    assert host.metrics_exporters.provider("prometheus") == "prometheus"
    node = fake_node({"prometheus": {"port": 0}})
    node.metrics.requests_by_op[Op.PING] = 2
    [running] = host.start_exporters(node)
    try:
        assert isinstance(running.exporter, PrometheusExporter)
        assert scrape(running.exporter.url)[("funnelkvs_requests_total", (("op", "ping"),))] == 2
    finally:
        host.stop_exporters([running])
    with pytest.raises(ConfigError, match=r"plugins\.prometheus\.port: 'x' is not a valid port"):
        host.start_exporters(fake_node({"prometheus": {"port": "x"}}))


def test_real_node_with_the_exporter(tmp_path: Path) -> None:
    cluster = pytest.importorskip("funnelkvs.testing.cluster")
    from funnelkvs.client import Client

    config = {"metrics": {"exporters": ["prometheus"]}, "plugins": {"prometheus": {"port": 0}}}
    # tests/conftest.py switches autoload off for the whole run; this test is about the installed package.
    env = {"FUNNELKVS_PLUGINS_AUTOLOAD": "1", "FUNNELKVS_DISABLE_PLUGINS": ""}
    with cluster.NodeProcess.start(tmp_path, config=config, env=env) as node:
        match = re.search(r"prometheus exporter serving (http://\S+/metrics)", node.log())
        assert match, node.log()
        url = match.group(1)
        with Client(node.address) as client:
            for i in range(5):
                client.put(f"key-{i}", b"v" * 10)
            assert client.get("key-1") == b"v" * 10
        samples = scrape(url)
        assert samples[("funnelkvs_requests_total", (("op", "put"),))] == 5
        assert samples[("funnelkvs_requests_total", (("op", "get"),))] == 1
        assert samples[("funnelkvs_connections_total", ())] >= 1
        assert node.stop() == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)
