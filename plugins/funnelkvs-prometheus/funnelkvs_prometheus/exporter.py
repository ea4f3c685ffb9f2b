"""The exporter: its options, and an HTTP server in a thread of its own serving ``/metrics``."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from funnelkvs.errors import ConfigError
from funnelkvs.exporters import MetricsSource
from funnelkvs_prometheus.collector import NodeCollector

log = logging.getLogger(__name__)

SECTION = "plugins.prometheus"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9108
METRICS_PATH = "/metrics"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class ExporterOptions:
    host: str = DEFAULT_HOST
    #: 0 binds a free port (tests); :attr:`PrometheusExporter.port` tells which.
    port: int = DEFAULT_PORT


def parse_options(options: dict[str, Any]) -> ExporterOptions:
    """Validate the ``plugins.prometheus`` section; every problem is reported at once."""
    problems = [
        f"{SECTION}.{name}: unknown option (expected one of: host, port)"
        for name in sorted(options)
        if name not in ("host", "port")
    ]
    host = options.get("host", DEFAULT_HOST)
    if not isinstance(host, str) or not host.strip():
        problems.append(f"{SECTION}.host: {host!r} is not a host name or address (expected e.g. 127.0.0.1)")
    port = options.get("port", DEFAULT_PORT)
    # bool is an int subclass: `port: yes` must not bind port 1.
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        problems.append(f"{SECTION}.port: {port!r} is not a valid port (0-65535)")
    if problems:
        raise ConfigError(problems)
    return ExporterOptions(host=host, port=port)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every few seconds would flood stderr; errors still reach the WSGI error stream.
        pass


def _only_metrics(app: WSGIApp) -> WSGIApp:
    def routed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == METRICS_PATH:
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: metrics are at /metrics\n"]

    return routed


class PrometheusExporter:
    """Serves ``source``'s samples at ``http://host:port/metrics`` until :meth:`stop`.

    It has a registry of its own, never prometheus_client's global one: two nodes in one process
    (tests) or an embedding application's own metrics must not collide with the node's.
    """

    def __init__(self, options: ExporterOptions, source: MetricsSource) -> None:
        self.options = options
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(source))
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one picked for port 0)."""
        if self._server is None:
            raise RuntimeError("the exporter is not running")
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        host = self.options.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}{METRICS_PATH}"

    def start(self) -> None:
        if self._server is not None:
            return
        family = socket.getaddrinfo(self.options.host, self.options.port, type=socket.SOCK_STREAM)[0][0]

        class Server(ThreadingWSGIServer):
            address_family = family

        server = make_server(
            self.options.host,
            self.options.port,
            _only_metrics(make_wsgi_app(self.registry)),
            server_class=Server,
            handler_class=_QuietHandler,
        )
        thread = threading.Thread(target=server.serve_forever, name="funnelkvs-prometheus", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        log.info("prometheus exporter serving %s", self.url)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)


def create_exporter(options: dict[str, Any], source: MetricsSource) -> PrometheusExporter:
    """The ``prometheus`` exporter factory (see :mod:`funnelkvs.exporters`)."""
    return PrometheusExporter(parse_options(options), source)
