"""``funnelkvs config check FILE...`` and ``funnelkvs config show [FILE]``: a config file checked or
printed without starting a node."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from funnelkvs.cli import EXIT_OK, EXIT_USAGE
from funnelkvs.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config",
        help="check or show a node configuration file",
        description="Check or show a node configuration file without starting a node.",
    )
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate config files; print FILE: ok, or every problem (exit status 2)",
        description="Validate config files without starting a node. Prints 'FILE: ok', or every problem "
        "on standard error, one per line, and exits with status 2.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="YAML config file")
    check.add_argument(
        "--no-plugins",
        action="store_true",
        help="do not check backend, strategy, resolver and exporter names, storage.options and exporter "
        "options against the installed plugins",
    )
    show = actions.add_parser(
        "show",
        help="print the effective settings (defaults filled in) as YAML or JSON",
        description="Print the settings a node would run with: the file's values with every default "
        "filled in. Values taken from environment variables are shown as their ${...} reference "
        "unless --show-secrets is given.",
    )
    show.add_argument("file", nargs="?", metavar="FILE", help="YAML config file (default: all defaults)")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.add_argument("--show-secrets", action="store_true", help="print values from the environment")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.config_action == "show":
        return _show(args)
    return _check(args)


def _check(args: argparse.Namespace) -> int:
    from funnelkvs.config import read_config
    from funnelkvs.config.registries import check_registered_names

    status = EXIT_OK
    for file in args.files:
        try:
            settings = read_config(file).settings
        except ConfigError as exc:
            problems = exc.problems  # already located: FILE:LINE: dotted.path: message
        else:
            names = [] if args.no_plugins else check_registered_names(settings)
            problems = [f"{file}: {problem}" for problem in names]
        if problems:
            status = EXIT_USAGE
            for problem in problems:
                print(problem, file=sys.stderr)
        else:
            print(f"{file}: ok")
    return status


def _show(args: argparse.Namespace) -> int:
    import yaml

    from funnelkvs.config import read_config, settings_to_mapping

    try:
        loaded = read_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    data = settings_to_mapping(loaded.settings)
    if not args.show_secrets:
        for path, reference in loaded.from_environment.items():
            _replace(data, path, reference)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    return EXIT_OK


def _replace(data: Any, path: tuple[str | int, ...], value: str) -> None:
    for part in path[:-1]:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(data, dict | list) and path:
        try:
            data[path[-1]] = value  # type: ignore[index]
        except (IndexError, TypeError):
            pass
