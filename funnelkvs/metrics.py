"""The node's basic counters, and the read-only view metrics exporters get.

Counters are plain attributes incremented on the loop thread (an int add, no lock, no call into a
plugin). Exporters run in threads of their own and read :meth:`NodeMetrics.samples`; reading an int
attribute is atomic in CPython, and gauges that need the storage backend (keys, bytes) are refreshed
by the loop itself (:meth:`NodeMetrics.refresh_storage`) because a backend belongs to the loop thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from funnelkvs.protocol import Op


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    kind: str  # "counter" or "gauge"
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


class NodeMetrics:
    __slots__ = (
        "address",
        "backend",
        "bytes_received",
        "bytes_sent",
        "clock",
        "connections_current",
        "connections_total",
        "handler_errors",
        "keys",
        "node_id",
        "protocol_errors",
        "requests_by_op",
        "started_at",
        "stored_bytes",
        "sync_errors",
    )

    def __init__(
        self,
        node_id: str = "",
        address: str = "",
        backend: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.backend = backend
        # Durations on the monotonic clock: the wall clock may step back (NTP, an operator) and an
        # uptime must never go negative.
        self.clock = clock
        self.started_at = clock()
        # Indexed by op code (a list, not a dict: one index per request on the hot path).
        self.requests_by_op = [0] * 256
        self.connections_current = 0
        self.connections_total = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.protocol_errors = 0
        self.handler_errors = 0
        self.sync_errors = 0
        self.keys = 0
        self.stored_bytes = 0

    def refresh_storage(self, keys: int, stored_bytes: int) -> None:
        self.keys = keys
        self.stored_bytes = stored_bytes

    @property
    def uptime_s(self) -> float:
        return self.clock() - self.started_at

    def samples(self) -> list[Sample]:
        out = [
            Sample(
                "funnelkvs_requests_total",
                "counter",
                "Requests answered, by op",
                float(self.requests_by_op[op]),
                (("op", op.name.lower()),),
            )
            for op in Op
        ]
        out += [
            Sample(
                "funnelkvs_connections_current",
                "gauge",
                "Open client connections",
                float(self.connections_current),
            ),
            Sample(
                "funnelkvs_connections_total",
                "counter",
                "Client connections accepted",
                float(self.connections_total),
            ),
            Sample(
                "funnelkvs_received_bytes_total",
                "counter",
                "Bytes read from clients",
                float(self.bytes_received),
            ),
            Sample(
                "funnelkvs_sent_bytes_total", "counter", "Bytes written to clients", float(self.bytes_sent)
            ),
            Sample(
                "funnelkvs_protocol_errors_total",
                "counter",
                "Malformed frames received",
                float(self.protocol_errors),
            ),
            Sample(
                "funnelkvs_handler_errors_total",
                "counter",
                "Requests that failed with SERVER_ERROR",
                float(self.handler_errors),
            ),
            Sample("funnelkvs_sync_errors_total", "counter", "Failed storage syncs", float(self.sync_errors)),
            Sample("funnelkvs_keys", "gauge", "Keys stored on this node", float(self.keys)),
            Sample(
                "funnelkvs_stored_bytes",
                "gauge",
                "Bytes of values stored on this node",
                float(self.stored_bytes),
            ),
            Sample("funnelkvs_uptime_seconds", "gauge", "Seconds since the node started", self.uptime_s),
        ]
        return out
