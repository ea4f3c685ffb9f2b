"""The ``funnelkvs`` command line. Each sub-command lives in its own module with
``add_parser(subparsers)``; the parser's ``func(args) -> int`` runs it and returns the exit status.

Exit statuses: 0 success; 1 key not found; 2 usage or configuration error; 3 node unreachable or
timed out; 4 the node answered with an error; 5 anything else expected (storage, plugin).
Expected failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_SERVER_ERROR = 4
EXIT_FAILURE = 5

#: Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES = ("node", "kv", "shell", "bench", "plugins", "config_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funnelkvs", description="FunnelKVS: a distributed key-value store")
    from funnelkvs import __version__

    parser.add_argument("--version", action="version", version=f"funnelkvs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"funnelkvs.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`funnelkvs plugins --json | head -c1`); nothing left to say to it.
        _silence_stdout()
        return EXIT_OK
    return status


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail too.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a positive, finite number of seconds")
    return value


if __name__ == "__main__":
    sys.exit(main())
