"""The load generator behind ``funnelkvs bench``: closed-loop workers in several processes.

Each worker process drives its share of the connections from one ``selectors`` loop over raw
non-blocking sockets and the protocol codec (no :class:`~funnelkvs.Client`: its pool and locks would
make the client the bottleneck). Every connection keeps ``depth`` requests in flight, sending a new
one as each answer arrives. Keys are ``key:%010d`` drawn uniformly from the key space and values are
``v`` repeated, as the neutral C generator in ``../shared/bench`` does, so figures are comparable.

With ``smart`` (``funnelkvs bench --smart``) the load goes through the ring-aware client's routing:
the coordinator fetches the ring view as :class:`~funnelkvs.Client` does (RING_VIEW), and every
logical connection becomes one socket per member; each request goes to its key's owner as
:class:`~funnelkvs.client.routing.RingView` computes it (one hop, never forwarded while the view
holds), with ``depth`` requests in flight per logical connection across its sockets. Requests stay
v1 frames, whose answers keep request order per socket; a ring of one node is the plain mode.

A latency is the time from the write that carried a request to the read that completed its answer.
Only answers completed inside the measured window (after the warm-up) count. Latencies go into a
log-bucketed histogram (HDR-like, under 0.4% error), merged across processes.

Workers are ``python -m funnelkvs.bench --worker`` subprocesses (no fork of the caller, no pickle):
the coordinator sends each its job as a JSON line on stdin, waits until every worker has connected
and prepared (``ready``), starts them together (``go``), and reads one JSON report line from each
stdout. Before that it checks the key and value sizes against each node's limits (INFO), so a run the
node would refuse fails at once as a usage error. Stopping (at the end, on a failure or on Ctrl-C)
stops every worker in parallel.

The package, one idea a module: :mod:`~funnelkvs.bench.spec` (what to run and what came out),
:mod:`~funnelkvs.bench.histogram` (the latency histogram), :mod:`~funnelkvs.bench.requests` (request
frames built as they are sent), :mod:`~funnelkvs.bench.worker` (the closed loop in a worker process),
:mod:`~funnelkvs.bench.routing` (``--smart``: the ring members and each key's owner),
:mod:`~funnelkvs.bench.prepare` (checking the nodes' limits, populating the key space) and
:mod:`~funnelkvs.bench.coordinator` (starting, driving and stopping the workers; the report).
"""

from __future__ import annotations

from funnelkvs.bench.coordinator import run_bench, split, stop_workers
from funnelkvs.bench.histogram import LatencyHistogram
from funnelkvs.bench.prepare import check_node_limits, populate
from funnelkvs.bench.requests import _Requests as _Requests
from funnelkvs.bench.routing import owner_router, ring_members
from funnelkvs.bench.spec import MIX_GET_RATIO, WORKLOADS, BenchReport, BenchSpec, key_name, value_of
from funnelkvs.bench.worker import _Conn as _Conn
from funnelkvs.bench.worker import worker_process_main

__all__ = [
    "MIX_GET_RATIO",
    "WORKLOADS",
    "BenchReport",
    "BenchSpec",
    "LatencyHistogram",
    "check_node_limits",
    "key_name",
    "owner_router",
    "populate",
    "ring_members",
    "run_bench",
    "split",
    "stop_workers",
    "value_of",
    "worker_process_main",
]
