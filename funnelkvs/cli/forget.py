"""``funnelkvs forget ADDRESS``: remove a member that will not come back (a dead machine) from the ring.

A crashed node stays a member: its keys' preference lists keep naming it and fallbacks keep its
copies as hints, waiting for it to return (docs/replication.md). When it never will, this command
tells every member that it left, as a graceful leave would have (MEMBER_LEFT, op 0x1b): preference
lists move on to the next members and anti-entropy gives them their copies, and hints kept for the
forgotten node go to the new preference lists. Like Riak's ``cluster force-remove``; the node itself
must be down (a live node answering the ring would be met again and come back as a member).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from funnelkvs.cli import EXIT_OK, EXIT_SERVER_ERROR, EXIT_USAGE, seconds
from funnelkvs.cli.kv import CommandFailed, run_guarded
from funnelkvs.client.address import parse_address
from funnelkvs.client.admin import accepts_connections, admin_call, checked
from funnelkvs.errors import FunnelKVSError
from funnelkvs.replication.service import MEMBER_LEFT, MEMBERS

ANSWER_TIMEOUT = 5.0


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        try:
            server = parse_address(args.server)
            gone_host, gone_port = parse_address(args.address)
        except ValueError as exc:
            raise CommandFailed(str(exc), EXIT_USAGE) from exc
        gone = f"{gone_host}:{gone_port}"
        if accepts_connections(gone, timeout=1.0):
            raise CommandFailed(
                f"{gone} still accepts connections: stop it first, or use funnelkvs leave", EXIT_USAGE
            )
        table = json.loads(checked(admin_call(server, MEMBERS, timeout=args.timeout), server, "MEMBERS"))
        members = {str(address): str(node_id) for node_id, address in table["members"]}
        if gone not in members:
            raise CommandFailed(
                f"{gone} is not a member of the ring {server[0]}:{server[1]} knows", EXIT_USAGE
            )
        notice = json.dumps([members[gone], gone]).encode()
        told, failed = 0, []
        for address in members:
            if address == gone:
                continue
            try:
                checked(
                    admin_call(address, MEMBER_LEFT, notice, timeout=args.timeout), address, "MEMBER_LEFT"
                )
                told += 1
            except FunnelKVSError as exc:
                failed.append(f"{address} ({exc})")
        if not told:
            raise CommandFailed(f"no member took the notice: {'; '.join(failed)}", EXIT_SERVER_ERROR)
        # Members that missed it learn it by gossip from those that took it.
        print(
            f"{gone} forgotten by {told} member(s)"
            + (f"; not reached: {', '.join(failed)}" if failed else "")
        )
        return EXIT_OK

    return run_guarded("funnelkvs forget", body)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "forget",
        help="remove a dead member from the ring for good",
        description="Tell every member that ADDRESS left the ring (it must be down and never coming "
        "back): its keys get new replicas, and hints kept for it go to them.",
    )
    parser.add_argument("address", metavar="ADDRESS", help="host:port of the dead member")
    parser.add_argument(
        "-s", "--server", metavar="HOST:PORT", required=True, help="a live member to ask for the member list"
    )
    parser.add_argument("--timeout", type=seconds, default=ANSWER_TIMEOUT, metavar="SECONDS", help="per call")
    parser.set_defaults(func=run)
