"""``funnelkvs plugins [--json] [--config FILE]``: what is registered, what it contributes, what failed."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from funnelkvs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from funnelkvs.errors import ConfigError, PluginError
from funnelkvs.settings import PluginSettings

_KIND_LABELS = {
    "storage_backends": "storage backend",
    "replication_strategies": "replication strategy",
    "conflict_resolvers": "conflict resolver",
    "metrics_exporters": "metrics exporter",
}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list registered plugins and what they contribute",
        description="List every registered plugin (built-in and installed), the hooks it implements, "
        "what it contributes, and the plugins that failed to load.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    parser.add_argument(
        "--config", metavar="FILE", help="honour this config file's plugins section (disabled, autoload)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `funnelkvs --help` does not pay for pluggy and every plugin module.
    from funnelkvs.plugins import PluginHost

    # Load failures are part of the report below; the loader's warnings would only repeat them.
    logging.getLogger("funnelkvs.plugins").addHandler(logging.NullHandler())
    try:
        settings = _plugin_settings(args.config)
        host = PluginHost.load(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"funnelkvs: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except PluginError as exc:
        print(f"funnelkvs: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    report = {
        "plugins": [info.as_dict() for info in host.describe()],
        "failures": [failure.as_dict() for failure in host.failures],
        "disabled": sorted(host.disabled),
        "autoload": host.autoload,
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(report))
    return EXIT_OK


def _plugin_settings(config: str | None) -> PluginSettings:
    if config is None:
        return PluginSettings()
    from funnelkvs.config import load_settings

    return load_settings(config).plugins


def render_table(report: dict[str, Any]) -> str:
    rows = [("NAME", "VERSION", "CONTRIBUTES", "HOOKS")]
    for plugin in report["plugins"]:
        name = plugin["name"]
        if plugin["distribution"]:
            name += f" ({plugin['distribution']})"
        contributes = "; ".join(
            f"{_KIND_LABELS.get(kind, kind)}: {', '.join(names)}"
            for kind, names in plugin["contributions"].items()
            if names
        )
        hooks = ", ".join(hook.removeprefix("funnelkvs_") for hook in plugin["hooks"])
        rows.append((name, plugin["version"], contributes or "-", hooks or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]])
        for row in rows
    ]
    if report["failures"]:
        lines += ["", "failed to load (the node starts without them):"]
        lines += [f"  {failure['name']}: {failure['error']}" for failure in report["failures"]]
    if report["disabled"]:
        lines += ["", f"disabled: {', '.join(report['disabled'])}"]
    if not report["autoload"]:
        lines += ["", "autoload of installed plugins is off"]
    return "\n".join(line.rstrip() for line in lines) + "\n"
