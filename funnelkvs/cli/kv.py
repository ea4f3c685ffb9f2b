"""``funnelkvs get|put|delete|ping|stats``: one request to one node, for scripts and humans
(``stats --cluster``: one to each member of the node's ring).

``get`` writes the raw value to standard output (a newline is added only on a terminal). Expected
failures print one line on standard error and exit with a status from :mod:`funnelkvs.cli`.

``get --r N``, ``put --w N``, ``delete --w N``: the request's read or write quorum (issue 9; sent as
v2, see :mod:`funnelkvs.client.quorums`). A bad N is a usage error (one line, exit 2); a node that
cannot reach the quorum in time answers TIMEOUT (exit 3), one that refuses N INVALID_REQUEST (exit 4),
its message on the line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from funnelkvs.cli import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    seconds,
    show_key,
)
from funnelkvs.client import DEFAULT_SERVER, Client
from funnelkvs.client.admin import ClusterView
from funnelkvs.client.quorums import quorum_count
from funnelkvs.errors import (
    ClientClosed,
    FunnelKVSError,
    LocalProtocolError,
    NodeUnreachable,
    RequestTimeout,
    ServerError,
)

SERVER_ENV = "FUNNELKVS_SERVER"


class CommandFailed(Exception):
    """Ends a command with ``status`` after printing ``message`` (one line) on standard error."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def add_server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s",
        "--server",
        metavar="HOST:PORT",
        default=None,
        help=f"node to talk to (default: ${SERVER_ENV}, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--timeout", type=seconds, default=5.0, metavar="SECONDS", help="answer timeout (default 5)"
    )


def server_of(args: argparse.Namespace) -> str:
    server: str | None = args.server or os.environ.get(SERVER_ENV)
    return server or DEFAULT_SERVER


def exit_status_for(exc: FunnelKVSError) -> int:
    if isinstance(exc, NodeUnreachable | RequestTimeout):
        return EXIT_UNREACHABLE
    if isinstance(exc, LocalProtocolError):
        return EXIT_USAGE
    if isinstance(exc, ServerError):
        return EXIT_SERVER_ERROR
    if isinstance(exc, ClientClosed):
        return EXIT_FAILURE
    return EXIT_SERVER_ERROR  # a RemoteProtocolError: the node answered with something broken


def fail(prog: str, message: str) -> None:
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"{prog}: {first_line}", file=sys.stderr)


@contextmanager
def connected(args: argparse.Namespace) -> Iterator[Client]:
    """A one-connection client for ``--server``; a bad address is a usage error."""
    try:
        client = Client(server_of(args), pool_size=1, timeout=args.timeout)
    except ValueError as exc:
        raise CommandFailed(str(exc), EXIT_USAGE) from exc
    with client:
        yield client


def run_guarded(prog: str, body: Callable[[], int]) -> int:
    """Run a command body, turning expected failures into one line on stderr and an exit status."""
    try:
        return body()
    except CommandFailed as exc:
        fail(prog, str(exc))
        return exc.status
    except FunnelKVSError as exc:
        fail(prog, str(exc))
        return exit_status_for(exc)


def quorum_option(args: argparse.Namespace, name: str) -> int | None:
    """The ``--w``/``--r`` given (None when not), checked before anything is sent: a value that is not
    a whole number from 1 to 255 is :class:`CommandFailed` with :data:`EXIT_USAGE`.

    Parsed here rather than by an argparse ``type``, whose errors print the usage too (several lines)."""
    text: str | None = getattr(args, name)
    if text is None:
        return None
    try:
        count = int(text, 10)
    except ValueError:
        raise CommandFailed(
            f"--{name} must be a whole number of replicas (at least 1), not {text!r}", EXIT_USAGE
        ) from None
    try:
        return quorum_count(f"--{name}", count) or None
    except ValueError as exc:
        raise CommandFailed(str(exc), EXIT_USAGE) from None


def add_quorum_option(parser: argparse.ArgumentParser, name: str, what: str) -> None:
    parser.add_argument(
        f"--{name}",
        metavar="N",
        default=None,
        help=f"{what} (default: the node's replication.{'write' if name == 'w' else 'read'}_quorum)",
    )


def argv_bytes(text: str) -> bytes:
    """Command-line text as the bytes the user typed (``os.fsencode`` undoes surrogate escapes)."""
    return os.fsencode(text)


# --- commands -------------------------------------------------------------------------------------


def run_get(args: argparse.Namespace) -> int:
    def body() -> int:
        key = argv_bytes(args.key)
        r = quorum_option(args, "r")
        with connected(args) as client:
            value = client.get(key, r=r)
        if value is None:
            raise CommandFailed(f"key not found: {show_key(key)}", EXIT_NOT_FOUND)
        out = sys.stdout.buffer
        out.write(value)
        if sys.stdout.isatty():
            out.write(b"\n")
        out.flush()
        return EXIT_OK

    return run_guarded("funnelkvs get", body)


def run_put(args: argparse.Namespace) -> int:
    def body() -> int:
        w = quorum_option(args, "w")
        value = sys.stdin.buffer.read() if args.value == "-" else argv_bytes(args.value)
        with connected(args) as client:
            client.put(argv_bytes(args.key), value, w=w)
        return EXIT_OK

    return run_guarded("funnelkvs put", body)


def run_delete(args: argparse.Namespace) -> int:
    def body() -> int:
        w = quorum_option(args, "w")
        with connected(args) as client:
            client.delete(argv_bytes(args.key), w=w)
        return EXIT_OK

    return run_guarded("funnelkvs delete", body)


def run_ping(args: argparse.Namespace) -> int:
    def body() -> int:
        with connected(args) as client:
            print(client.ping(), flush=True)
        return EXIT_OK

    return run_guarded("funnelkvs ping", body)


def run_stats(args: argparse.Namespace) -> int:
    if args.cluster:
        return run_cluster_stats(args)

    def body() -> int:
        with connected(args) as client:
            info: dict[str, Any] = client.info()
        if args.json:
            print(json.dumps(info, sort_keys=True), flush=True)
        else:
            # The reference's text first, then what v1 STATS does not carry.
            print(f"keys: {info['keys']}, size: {info['bytes']}")
            for name in ("node_id", "address", "backend", "uptime_s"):
                if info.get(name) is not None:
                    print(f"{name}: {info[name]}")
            sys.stdout.flush()
        return EXIT_OK

    return run_guarded("funnelkvs stats", body)


def cluster_stats(view: ClusterView) -> dict[str, Any]:
    """``stats --cluster --json``: each member of a ring view with its INFO (less its Chord
    neighbours), and the totals over the members that answered."""
    members = []
    for member in view.members:
        info = {name: value for name, value in (member.info or {}).items() if name not in ("ring", "node_id")}
        row: dict[str, Any] = {
            "id": member.member.id,
            "address": member.member.address,
            "status": member.status,
            "state": member.state,
            "keys": None,
            "bytes": None,
        }
        row.update(info)
        row["address"] = member.member.address  # as the ring knows it, not as the member reports it
        if member.error is not None:
            row["error"] = member.error
        members.append(row)
    totals = {
        "members": len(members),
        "up": view.up,
        "down": view.down,
        "keys": sum(row["keys"] or 0 for row in members),
        "bytes": sum(row["bytes"] or 0 for row in members),
    }
    return {"node": view.node, "complete": view.complete, "members": members, "totals": totals}


def run_cluster_stats(args: argparse.Namespace) -> int:
    from funnelkvs.cli.ring import gather, table

    def shown(value: object) -> str:
        return "-" if value is None else str(value)

    def body() -> int:
        stats = cluster_stats(gather(args))
        if args.json:
            print(json.dumps(stats), flush=True)
            return EXIT_OK
        header = ("Address", "Status", "State", "Keys", "Bytes", "Backend", "Uptime", "Connections")
        rows = [
            (
                row["address"],
                row["status"],
                shown(row["state"]),
                shown(row["keys"]),
                shown(row["bytes"]),
                shown(row.get("backend")),
                "-" if row.get("uptime_s") is None else f"{row['uptime_s']:.0f} s",
                shown(row.get("connections")),
            )
            for row in stats["members"]
        ]
        print(table(header, rows, right=frozenset({3, 4, 6, 7})))
        totals = stats["totals"]
        print(
            f"total: {totals['keys']} keys, {totals['bytes']} bytes on {totals['members']} members "
            f"({totals['up']} up, {totals['down']} down)"
        )
        if not stats["complete"]:
            print(
                f"({stats['node']}'s last walk of the ring did not come back around: members may be missing)"
            )
        sys.stdout.flush()
        return EXIT_OK

    return run_guarded("funnelkvs stats", body)


def add_parser(subparsers: Any) -> None:
    get = subparsers.add_parser(
        "get", help="print the value of a key", description="Print the raw value of KEY."
    )
    get.add_argument("key", metavar="KEY")
    add_quorum_option(get, "r", "replicas whose copies the read waits for")
    add_server_option(get)
    get.set_defaults(func=run_get)

    put = subparsers.add_parser("put", help="store a value", description="Store VALUE under KEY.")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", help="the value; '-' reads it (as bytes) from standard input")
    add_quorum_option(put, "w", "replicas that must acknowledge the write")
    add_server_option(put)
    put.set_defaults(func=run_put)

    delete = subparsers.add_parser("delete", help="delete a key", description="Delete KEY (missing is fine).")
    delete.add_argument("key", metavar="KEY")
    add_quorum_option(delete, "w", "replicas that must acknowledge the delete")
    add_server_option(delete)
    delete.set_defaults(func=run_delete)

    ping = subparsers.add_parser("ping", help="check that a node answers", description="Print 'pong'.")
    add_server_option(ping)
    ping.set_defaults(func=run_ping)

    stats = subparsers.add_parser(
        "stats",
        help="show a node's key count and size (--cluster: every member's)",
        description="Node stats; with --cluster, the stats of every member of the node's ring and the "
        "totals.",
    )
    stats.add_argument("--json", action="store_true", help="one JSON object (keys, bytes, node_id, ...)")
    stats.add_argument(
        "--cluster",
        action="store_true",
        help="every member of the ring the node is on (as its ring view has them), and the totals",
    )
    add_server_option(stats)
    stats.set_defaults(func=run_stats)
