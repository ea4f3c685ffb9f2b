"""``funnelkvs sim``: thousands of Chord nodes in one process, over a simulated network and clock.

Runs :func:`funnelkvs.sim.experiment.run` and prints its results: a summary, or with ``--json`` the
JSON object. The exit status is 0 whenever the run completed (the results are in the output); bad
arguments are one line on standard error and status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from funnelkvs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="simulate a Chord ring of many nodes in one process",
        description="Build a Chord ring of --nodes nodes through the protocol on a simulated network, "
        "look up every key, optionally fail a fraction of the nodes at once and look up again, optionally "
        "look every key up during churn, then check Zave's properties. Deterministic from --seed.",
    )
    parser.add_argument("--nodes", required=True, metavar="N", help="nodes in the ring (at least 1)")
    parser.add_argument("--keys", metavar="K", help="keys to look up (default 100 x N)")
    parser.add_argument("--seed", default="0", metavar="S", help="seed of every random choice (default 0)")
    parser.add_argument("--successors", metavar="R", help="successor list length (default 2·⌈log2 N⌉)")
    parser.add_argument(
        "--fail-fraction",
        default="0",
        metavar="F",
        help="fraction of the nodes that fail at once after the first lookups, in [0, 1) (default 0)",
    )
    parser.add_argument(
        "--churn",
        default="0",
        metavar="EVENTS",
        help="join-or-fail events while every key is looked up again, then stabilization (default 0)",
    )
    parser.add_argument(
        "--churn-rate",
        default="1",
        metavar="E",
        help="churn events per stabilization period (default 1)",
    )
    parser.add_argument(
        "--virtual-nodes",
        default="1",
        metavar="V",
        help="Chord nodes run by each of the N nodes; keys per node count per physical node (default 1)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as a JSON object")
    parser.set_defaults(func=run)


class _BadArgument(ValueError):
    pass


def _integer(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise _BadArgument(f"{name} must be a whole number, got {text!r}") from None


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _BadArgument(f"{name} must be a number, got {text!r}") from None
    if math.isnan(value):
        raise _BadArgument(f"{name} must be a number, got nan")
    return value


def run(args: argparse.Namespace) -> int:
    from funnelkvs.sim.experiment import SimSettings
    from funnelkvs.sim.experiment import run as run_simulation
    from funnelkvs.sim.network import NotQuiescent
    from funnelkvs.sim.progress import ProgressLine

    try:
        nodes = _integer("--nodes", args.nodes)
        assert nodes is not None
        settings = SimSettings(
            nodes=nodes,
            keys=_integer("--keys", args.keys),
            seed=_integer("--seed", args.seed) or 0,
            successors=_integer("--successors", args.successors),
            fail_fraction=_number("--fail-fraction", args.fail_fraction),
            churn=_integer("--churn", args.churn) or 0,
            churn_rate=_number("--churn-rate", args.churn_rate),
            virtual_nodes=_integer("--virtual-nodes", args.virtual_nodes) or 0,
        )
    except ValueError as exc:
        print(f"funnelkvs sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = ProgressLine(sys.stderr)
    try:
        result = run_simulation(settings, progress)
    except NotQuiescent as exc:
        progress.close()
        print(f"funnelkvs sim: the ring did not settle: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    progress.close()
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(summary(result))
    return EXIT_OK


def summary(result: dict[str, Any]) -> str:
    """The results for a reader."""
    n = result["nodes"]
    load = result["keys_per_node"]
    v = result.get("virtual_nodes", 1)
    vnodes = f" x {v} virtual" if v > 1 else ""
    lines = [
        f"{n} nodes{vnodes}, {result['keys']} keys, successor lists of {result['successors']}, "
        f"seed {result['seed']}: {result['seconds']:.1f} s",
        f"lookups: {result['lookups']}, failed {result['lookup_failures']}",
        f"hops: mean {result['mean_hops']:.3f} (fingers only {result['mean_hops_fingers_only']:.3f}; "
        f"½·log2 N = {0.5 * math.log2(n):.3f}), p1 {result['p1_hops']}, p99 {result['p99_hops']}",
        f"keys per node: mean {load['mean']:.1f}, p1 {load['p1']}, p99 {load['p99']}, max {load['max']}",
    ]
    after = result.get("after_failure")
    if after is not None:
        lines.append(
            f"after {after['failed_nodes']} nodes failed ({after['stabilization_rounds']} rounds to settle): "
            f"lookups {after['lookups']}, failed {after['lookup_failures']}, "
            f"of keys whose node is alive {after['lookup_failures_live_keys']}"
        )
    churn = result.get("during_churn")
    if churn is not None:
        lines.append(
            f"during {churn['events']} churn events ({churn['joins']} joins, {churn['failures']} failures, "
            f"{churn['events_per_period']:g} per period): lookups {churn['lookups']}, "
            f"failed {churn['lookup_failures']} with retries, "
            f"{churn['lookup_failures_without_retries']} without; {churn['nodes_after']} nodes after"
        )
    props = result["properties"]
    held = ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in props.items())
    lines.append(f"properties: {held}")
    return "\n".join(lines) + "\n"
