"""The ``funnelkvs`` command line. Each sub-command lives in its own module with
``add_parser(subparsers)``; the parser's ``func(args) -> int`` runs it and returns the exit status.

Exit statuses: 0 success; 1 key not found; 2 usage or configuration error; 3 node unreachable or
timed out; 4 the node answered with an error; 5 anything else expected (storage, plugin).
Expected failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
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
    return status


if __name__ == "__main__":
    sys.exit(main())
