"""``funnelkvs bench``: load a node with closed-loop connections from several processes and report
ops/s and p50/p99/p99.9 latency (see :mod:`funnelkvs.bench` for what exactly is measured).

A key or value over a node's limits is refused before any load, as a usage error (exit status 2)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from funnelkvs.bench import WORKLOADS, BenchReport, BenchSpec, run_bench
from funnelkvs.cli import EXIT_OK, EXIT_USAGE
from funnelkvs.cli.kv import CommandFailed, add_server_option, run_guarded, server_of


def _number(kind: Callable[[str], float], minimum: float, what: str) -> Callable[[str], Any]:
    """An argparse ``type`` that reads a number of ``kind`` no smaller than ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"{text} must be at least {minimum}")
        return value

    return parse


_positive_int = _number(int, 1, "a whole number")
_non_negative_int = _number(int, 0, "a whole number")
_non_negative_float = _number(float, 0, "a number")


def format_report(report: BenchReport) -> str:
    return "\n".join(
        [
            f"{report.workload} on {report.server}: {report.connections} connections, depth {report.depth}, "
            f"{report.processes} processes, {report.keys} keys, {report.value_size}-byte values",
            f"measured {report.duration_s:g} s after {report.warmup_s:g} s warm-up: {report.ops:,} ops",
            f"ops/s    {report.ops_per_s:,.0f}",
            f"latency  p50 {report.p50_us:,.0f} us   p99 {report.p99_us:,.0f} us   "
            f"p99.9 {report.p999_us:,.0f} us   max {report.max_us:,.0f} us",
            f"errors   {report.errors} (not found: {report.not_found})",
        ]
        + (
            [f"routing  each request straight to its key's owner, over {report.routed_members} ring members"]
            if report.routed_members
            else []
        )
    )


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        spec = BenchSpec(
            servers=server_of(args),
            connections=args.connections,
            depth=args.depth,
            workload=args.workload,
            keys=args.keys,
            value_size=args.value_size,
            duration=args.duration,
            warmup=args.warmup,
            smart=args.smart,
        )
        try:
            spec.validate()
        except ValueError as exc:
            raise CommandFailed(str(exc), EXIT_USAGE) from exc
        report = run_bench(spec, args.processes, populate_first=args.populate)
        if args.json:
            print(json.dumps(report.to_json(), sort_keys=True), flush=True)
        else:
            print(format_report(report), flush=True)
        return EXIT_OK

    return run_guarded("funnelkvs bench", body)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="load a node and report ops/s and latency",
        description=(
            "Closed-loop load: each connection keeps DEPTH requests in flight; connections are spread "
            "over worker processes. Keys are key:%010d drawn uniformly from KEYS; mix is 90% GET. "
            "Nothing is stored first unless --populate is given: without it a get run measures misses."
        ),
    )
    add_server_option(parser)
    parser.add_argument("-c", "--connections", type=_positive_int, default=50, help="default 50")
    parser.add_argument(
        "-d", "--depth", type=_positive_int, default=1, help="requests in flight per connection"
    )
    parser.add_argument("-w", "--workload", choices=WORKLOADS, default="get", help="default get")
    parser.add_argument("-k", "--keys", type=_positive_int, default=10_000, help="key space (default 10000)")
    parser.add_argument(
        "--value-size",
        type=_non_negative_int,
        default=16,
        help="bytes per PUT value (default 16; at most the node's max_value_size)",
    )
    parser.add_argument(
        "-t", "--duration", type=_non_negative_float, default=5.0, help="measured seconds (default 5)"
    )
    parser.add_argument(
        "--warmup", type=_non_negative_float, default=0.5, help="seconds before measuring (default 0.5)"
    )
    parser.add_argument(
        "-p",
        "--processes",
        type=_positive_int,
        default=None,
        help=f"worker processes (default: CPU count, {os.cpu_count()})",
    )
    parser.add_argument("--populate", action="store_true", help="PUT every key once first, so GETs hit")
    parser.add_argument(
        "--smart",
        action="store_true",
        help="route each request to its key's owner, as the ring-aware client does (fetches the ring "
        "view from --server; one socket per member for each connection)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)
