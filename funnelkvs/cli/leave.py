"""``funnelkvs leave``: ask a node to leave the ring gracefully (v2 LEAVE).

The node answers at once and then hands its keys to its successor, tells its neighbours and exits.
The command exits 0 once the node has accepted; with ``--wait`` it then waits until the node's port
refuses connections (the node has closed it on its way out). SIGTERM is not a leave: a node stopped so
keeps its place and its data (docs/operations.md).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from funnelkvs.cli import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, seconds
from funnelkvs.cli.kv import CommandFailed, run_guarded
from funnelkvs.client.address import parse_address
from funnelkvs.client.admin import leave, wait_until_closed

#: Seconds the command may take in all: for the answer alone, and with --wait for the node to exit.
ANSWER_TIMEOUT = 5.0
WAIT_TIMEOUT = 120.0


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        try:
            address = parse_address(args.server)
        except ValueError as exc:
            raise CommandFailed(str(exc), EXIT_USAGE) from exc
        timeout = args.timeout if args.timeout is not None else WAIT_TIMEOUT if args.wait else ANSWER_TIMEOUT
        deadline = time.monotonic() + timeout
        leave(address, timeout=min(timeout, ANSWER_TIMEOUT) if args.wait else timeout)
        if args.wait and not wait_until_closed(address, timeout=max(0.0, deadline - time.monotonic())):
            raise CommandFailed(
                f"{address} accepted the leave but still accepts connections after {timeout:g} s",
                EXIT_UNREACHABLE,
            )
        return EXIT_OK

    return run_guarded("funnelkvs leave", body)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "leave",
        help="make a node leave the ring gracefully",
        description="Ask a node to leave the ring: it hands its keys to its successor, tells its "
        "neighbours and exits. Exits 0 once the node has accepted; --wait also waits until it has exited.",
    )
    parser.add_argument(
        "-s", "--server", metavar="HOST:PORT", required=True, help="the node that is to leave (no default)"
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait until the node has exited (its port refuses connections)"
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help=f"how long the command may take in all (default {ANSWER_TIMEOUT:g}, "
        f"{WAIT_TIMEOUT:g} with --wait)",
    )
    parser.set_defaults(func=run)
