"""``funnelkvs ring``: every member of the ring, in ring order, one row each (like ``nodetool status``).

The members are the answering node's view (RING_VIEW, refreshed by the node every
``ring.membership_interval`` seconds, so it lags a join or a crash by about that much); each member is
then asked for its INFO, in parallel. A member that does not answer within ``--timeout`` is ``down``
and its state and key count are unknown.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from funnelkvs.cli import EXIT_OK, EXIT_USAGE
from funnelkvs.cli.kv import CommandFailed, add_server_option, run_guarded, server_of
from funnelkvs.client.admin import ClusterView, cluster_view


def gather(args: argparse.Namespace) -> ClusterView:
    """The ring view of ``--server`` with every member's INFO; a bad address is a usage error."""
    try:
        return cluster_view(server_of(args), timeout=args.timeout)
    except ValueError as exc:
        raise CommandFailed(str(exc), EXIT_USAGE) from exc


def rows_of(view: ClusterView) -> list[dict[str, Any]]:
    """One JSON object per member, in ring order from the answering node."""
    rows = []
    for member in view.members:
        info = member.info or {}
        rows.append(
            {
                "id": member.member.id,
                "address": member.member.address,
                "status": member.status,
                "state": member.state,
                "owns": member.member.owns,
                "keys": info.get("keys"),
                "bytes": info.get("bytes"),
                "hints": info.get("hints_pending"),
                "transfers": info.get("transfers_in_progress"),
                "successor": member.successor,
            }
        )
    return rows


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    """Columns padded to their widest cell, two spaces apart; columns in ``right`` aligned right."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for cells in (header, *rows):
        padded = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def _shown(value: object) -> str:
    return "-" if value is None else str(value)


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        view = gather(args)
        rows = rows_of(view)
        if args.json:
            print(json.dumps(rows), flush=True)
            return EXIT_OK
        header = (
            "Status",
            "State",
            "Address",
            "Owns",
            "Keys",
            "Bytes",
            "Hints",
            "Transfers",
            "ID",
            "Successor",
        )
        cells = [
            (
                row["status"],
                _shown(row["state"]),
                row["address"],
                f"{row['owns'] * 100:.2f}%",
                _shown(row["keys"]),
                _shown(row["bytes"]),
                _shown(row["hints"]),
                _shown(row["transfers"]),
                row["id"],
                row["successor"],
            )
            for row in rows
        ]
        print(table(header, cells, right=frozenset({3, 4, 5, 6, 7})))
        if not view.complete:
            print(f"({view.node}'s last walk of the ring did not come back around: members may be missing)")
        sys.stdout.flush()
        return EXIT_OK

    return run_guarded("funnelkvs ring", body)


def add_parser(subparsers: Any) -> None:
    ring = subparsers.add_parser(
        "ring",
        help="show every member of the ring",
        description="Every member of the ring, in ring order from the node asked: status (up/down), "
        "state (joining/normal/leaving), address, share of the ring owned, keys and bytes stored, hints "
        "kept for other nodes, transfers and repair steps in progress, id, "
        "successor.",
    )
    ring.add_argument(
        "--json",
        action="store_true",
        help="a JSON list of objects: id, address, status, state, owns (a fraction), keys, bytes, hints, "
        "transfers, successor",
    )
    add_server_option(ring)
    ring.set_defaults(func=run)
