"""``funnelkvs cluster start``: a ring of local nodes in the foreground, for trying FunnelKVS out and
for tests.

Node 1 creates the ring; once it listens, the others start together and ``--join`` it. When every node
listens, their addresses are printed on standard output, one per line, and the command supervises
them: their logs are relayed to standard error (``node-K | ...``), a node that exits is reported there,
and Ctrl-C, SIGTERM or SIGHUP stops them all (SIGTERM each, SIGKILL after 10 s), after which the
command exits 0. Nodes that die are not restarted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from funnelkvs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from funnelkvs.cli.supervisor import OUTPUT_LOCK, Child, stop_all, wait_listening
from funnelkvs.client.address import DEFAULT_PORT

#: Seconds a node may take to listen (a cold interpreter on a busy machine).
START_TIMEOUT = 30.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def node_args(args: argparse.Namespace, index: int, seed: str | None) -> list[str]:
    """The ``funnelkvs node`` arguments of node ``index`` (1-based); ``seed`` is the node to join."""
    port = 0 if args.base_port == 0 else args.base_port + index - 1
    command = ["--host", args.host, "--port", str(port)]
    if args.backend:
        command += ["--backend", args.backend]
    if args.data_dir:
        command += ["--data-dir", str(Path(args.data_dir) / f"node-{index}")]
    if seed is not None:
        command += ["--join", seed]
    return command


def problem_with(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, in one line; None when nothing is."""
    if args.nodes < 1:
        return f"--nodes must be at least 1, not {args.nodes}"
    if not 0 <= args.base_port <= 65535:
        return f"--base-port must be from 0 to 65535, not {args.base_port}"
    if args.base_port and args.base_port + args.nodes - 1 > 65535:
        return f"{args.nodes} nodes from port {args.base_port} run past port 65535"
    if args.data_dir and args.backend == "memory":
        return (
            "the memory backend keeps no data: --data-dir needs a persistent one (--backend lmdb, sqlite...)"
        )
    if not args.host.strip():
        return "--host is empty"
    return None


def fail(message: str) -> None:
    """One line on standard error, never in the middle of a relayed log line."""
    with OUTPUT_LOCK:
        sys.stderr.write(f"funnelkvs cluster: {message}\n")
        sys.stderr.flush()


def run_start(args: argparse.Namespace) -> int:
    problem = problem_with(args)
    if problem is not None:
        fail(problem)
        return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    children: list[Child] = []
    try:
        status = _start(args, children, stop)
        if status is not None:
            return status
        return _supervise(children, stop)
    except OSError as exc:  # the interpreter could not be started again, out of processes...
        fail(f"cannot start a node: {exc.strerror or exc}")
        return EXIT_FAILURE
    finally:
        stop_all(children)
        for sig, handler in previous.items():
            if handler is not None:  # None: a handler not installed from Python, left as it is
                signal.signal(sig, handler)


def _start(args: argparse.Namespace, children: list[Child], stop: threading.Event) -> int | None:
    """Start the nodes and print their addresses; an exit status when the command ends here."""
    children.append(Child("node-1", node_args(args, 1, None), sys.stderr))
    failed = wait_listening(children, stop, START_TIMEOUT)
    if failed is None and not stop.is_set():
        seed = children[0].address
        for index in range(2, args.nodes + 1):
            children.append(Child(f"node-{index}", node_args(args, index, seed), sys.stderr))
        failed = wait_listening(children, stop, START_TIMEOUT)
    if stop.is_set():
        return EXIT_OK
    if failed is not None:
        if failed.timed_out:
            fail(f"{failed.name} did not listen within {START_TIMEOUT:g} s; stopping the others")
            return EXIT_FAILURE
        fail(f"{failed.name} did not start ({failed.describe_exit()}): {failed.last_words()}")
        failed.accounted = True
        # The node's own status says whose fault: 2 is a bad setting, anything else a start-up failure.
        return EXIT_USAGE if failed.process.returncode == EXIT_USAGE else EXIT_FAILURE
    for child in children:
        print(child.address)
    sys.stdout.flush()
    return None


def _supervise(children: list[Child], stop: threading.Event) -> int:
    """Watch the nodes until a stop signal; report each that exits. Every node gone ends the command."""
    while not stop.wait(0.2):
        for child in children:
            if not child.accounted and child.exit_status() is not None:
                child.accounted = True
                report = f"{child.name} ({child.address}) {child.describe_exit()}"
                if (child.process.returncode or 0) > 0:
                    report += f": {child.last_words()}"  # a crash: its last line (a traceback's end) says why
                fail(report)
        if all(child.exit_status() is not None for child in children):
            fail("every node has exited")
            return EXIT_FAILURE
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    cluster = subparsers.add_parser(
        "cluster",
        help="run a local ring of nodes",
        description="Run a ring of local nodes in the foreground (for trying FunnelKVS out and for tests).",
    )
    actions = cluster.add_subparsers(dest="action", metavar="ACTION")
    start = actions.add_parser(
        "start",
        help="start N local nodes that form a ring and supervise them (Ctrl-C stops all)",
        description="Start N local nodes that form a ring: node 1 creates it, the others join it. Their "
        "addresses are printed one per line once all listen; their logs go to standard error. Ctrl-C "
        "(or SIGTERM) stops them all.",
    )
    start.add_argument("--nodes", "-n", type=int, default=3, metavar="N", help="how many nodes (default 3)")
    start.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_PORT,
        metavar="P",
        help=f"node K listens on P+K-1 (default {DEFAULT_PORT}, so node 1 is where the other commands "
        "look by default); 0 gives each node a free port",
    )
    start.add_argument("--host", default="127.0.0.1", help="address the nodes listen on (default 127.0.0.1)")
    start.add_argument("--backend", help="storage backend of every node (default memory)")
    start.add_argument(
        "--data-dir",
        metavar="DIR",
        help="node K keeps its data in DIR/node-K (a persistent backend: --backend lmdb, sqlite...)",
    )
    start.set_defaults(func=run_start)

    def no_action(args: argparse.Namespace) -> int:
        cluster.print_usage(sys.stderr)
        return EXIT_USAGE

    cluster.set_defaults(func=no_action)
