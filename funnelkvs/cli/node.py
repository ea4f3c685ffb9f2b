"""``funnelkvs node``: start a node in the foreground from a config file and flags."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from funnelkvs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from funnelkvs.errors import ConfigError, FunnelKVSError, PluginError

log = logging.getLogger("funnelkvs.node")


def add_parser(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "node", help="start a node in the foreground", description="Start a FunnelKVS node in the foreground."
    )
    p.add_argument("--config", "-c", metavar="FILE", help="YAML config file (see config.example.yaml)")
    p.add_argument("--host", help="address to listen on (node.host, default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, help="port to listen on (node.port, 0-65535, default 8001; 0 picks a free one)"
    )
    p.add_argument("--advertise", metavar="HOST:PORT", help="address other nodes and clients use")
    p.add_argument(
        "--join", metavar="HOST:PORT", action="append", help="seed node of an existing ring (repeatable)"
    )
    p.add_argument(
        "--backend",
        help="storage backend name (storage.backend: memory, lmdb, sqlite, ...); default: the one that "
        "wrote --data-dir, or memory without --data-dir",
    )
    p.add_argument("--data-dir", metavar="DIR", help="data directory of a persistent backend (storage.path)")
    p.add_argument("--log-level", help="logging.level (DEBUG, INFO, WARNING, ERROR)")
    p.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {
        "node.host": args.host,
        "node.port": args.port,
        "node.advertise": args.advertise,
        "node.join": args.join,
        "storage.backend": args.backend,
        "storage.path": args.data_dir,
        "logging.level": args.log_level,
    }
    return {path: value for path, value in pairs.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    from funnelkvs.config import load_settings
    from funnelkvs.config.registries import problems_with_names
    from funnelkvs.node import Node
    from funnelkvs.plugins import PluginHost

    source = args.config or "command line"

    def report(problems: list[str], prefix: bool) -> int:
        for problem in problems:
            print(f"{source}: {problem}" if prefix else problem, file=sys.stderr)
        return EXIT_USAGE

    try:
        # Problems from the loader already name their file and line (or "command line").
        settings = load_settings(args.config, overrides_from_args(args))
    except ConfigError as exc:
        return report(exc.problems, prefix=False)
    logging.basicConfig(
        level=settings.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        # A plugin that fails to import or validate is logged and left out; only a clash of two
        # plugins over one name (or a bad FUNNELKVS_PLUGINS_AUTOLOAD) stops the start here.
        plugins = PluginHost.load(settings.plugins)
    except ConfigError as exc:  # the environment variable's own name starts the message
        return report(exc.problems, prefix=False)
    except PluginError as exc:
        print(f"funnelkvs node: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    # Every name the settings ask the plugins for (backend, strategy, resolver, exporters and their
    # options) is checked before anything is opened or bound.
    problems = problems_with_names(plugins, settings)
    if problems:
        return report(problems, prefix=True)
    try:
        backend = plugins.create_backend(settings.storage)
    except ConfigError as exc:
        return report(exc.problems, prefix=True)
    except FunnelKVSError as exc:
        print(f"funnelkvs node: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    node = Node(settings, backend, plugins=plugins)
    try:
        node.start()
    except FunnelKVSError as exc:
        backend.close()
        print(f"funnelkvs node: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        node.serve_forever()
    except FunnelKVSError as exc:  # e.g. the final storage sync or close failed
        print(f"funnelkvs node: stopped with an error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
