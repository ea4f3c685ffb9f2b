"""``funnelkvs shell``: the reference's interactive shell, with line editing and history (readline).

Commands: ``get KEY``, ``put KEY VALUE...`` (the rest of the line is the value; one pair of surrounding
quotes is removed, so ``put user:alice "Alice Smith"`` stores ``Alice Smith``), ``delete KEY``, ``ping``,
``stats``, ``help``, ``quit``/``exit``. An error prints one line and the shell goes on; the next command
connects again, so the shell survives a node restart. Reading from a pipe works the same, without
prompts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from funnelkvs.cli import EXIT_OK
from funnelkvs.cli.kv import add_server_option, connected, run_guarded
from funnelkvs.client import Client
from funnelkvs.errors import FunnelKVSError

PROMPT = "funnelkvs> "
HISTORY_FILE = "~/.funnelkvs_history"
HISTORY_LENGTH = 1000

#: The reference's help text, word for word.
HELP_TEXT = """\
Available commands:
  get <key>           - Retrieve value for key
  put <key> <value>   - Store key-value pair
  delete <key>        - Delete key
  ping                - Check server connection
  stats               - Display server statistics
  help                - Show this help message
  quit                - Exit the client"""

COMMANDS = ("get", "put", "delete", "ping", "stats", "help", "quit", "exit")


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


class Shell:
    """Runs shell commands against a client; each command's output goes to ``out``."""

    def __init__(self, client: Client, out: TextIO) -> None:
        self.client = client
        self.out = out
        self._handlers: dict[str, Callable[[str], None]] = {
            "get": self._get,
            "put": self._put,
            "delete": self._delete,
            "ping": self._ping,
            "stats": self._stats,
            "help": self._help,
        }

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def execute(self, line: str) -> bool:
        """Run one command line; False when the shell should end."""
        command, _, rest = line.strip().partition(" ")
        if not command:
            return True
        name = command.lower()
        if name in ("quit", "exit"):
            return False
        handler = self._handlers.get(name)
        if handler is None:
            self.say(f"Unknown command: {command}. Type 'help' for available commands.")
            return True
        try:
            handler(rest.strip())
        except FunnelKVSError as exc:
            self.say(f"Error: {_one_line(str(exc))}")
        return True

    def _key_only(self, rest: str, usage: str) -> str | None:
        key = unquote(rest)
        if not key or (key == rest and " " in rest):
            self.say(f"Usage: {usage}")
            return None
        return key

    def _get(self, rest: str) -> None:
        key = self._key_only(rest, "get <key>")
        if key is not None:
            value = self.client.get(key)
            if value is None:
                self.say("Not found")
            else:
                self.say(f"Value: {value.decode('utf-8', 'backslashreplace')}")

    def _put(self, rest: str) -> None:
        key, _, value = rest.partition(" ")
        value = value.strip()
        if not key or not value:
            self.say("Usage: put <key> <value>")
            return
        self.client.put(unquote(key), unquote(value))
        self.say("OK")

    def _delete(self, rest: str) -> None:
        key = self._key_only(rest, "delete <key>")
        if key is not None:
            self.client.delete(key)
            self.say("OK")

    def _ping(self, rest: str) -> None:
        self.say(self.client.ping())

    def _stats(self, rest: str) -> None:
        stats = self.client.stats()
        self.say(", ".join(f"{name}: {number}" for name, number in stats.items()))

    def _help(self, rest: str) -> None:
        self.say(HELP_TEXT)


def _one_line(message: str) -> str:
    lines = message.strip().splitlines()
    return lines[0] if lines else "failed"


def _setup_readline() -> Callable[[], None]:
    """Enable line editing, completion and history; returns what saves the history at exit."""
    try:
        import readline
    except ImportError:
        return lambda: None
    history = Path(os.path.expanduser(HISTORY_FILE))
    try:
        readline.read_history_file(history)
    except (OSError, ValueError):
        pass
    readline.set_history_length(HISTORY_LENGTH)

    def complete(text: str, state: int) -> str | None:
        if readline.get_begidx() != 0:
            return None
        matches = [c + " " for c in COMMANDS if c.startswith(text.lower())]
        return matches[state] if state < len(matches) else None

    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")

    def save() -> None:
        try:
            readline.write_history_file(history)
        except (OSError, ValueError):
            pass  # an unwritable home must not spoil leaving the shell

    return save


def run(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()

    def body() -> int:
        with connected(args) as client:
            shell = Shell(client, sys.stdout)
            save_history = _setup_readline() if interactive else (lambda: None)
            try:
                if interactive:
                    shell.say(f"FunnelKVS shell on {client.addresses[0]}. Type 'help' for commands.")
                while True:
                    try:
                        line = input(PROMPT) if interactive else sys.stdin.readline()
                    except EOFError:
                        line = None
                    except KeyboardInterrupt:
                        shell.say("")  # Ctrl-C drops the line being typed, as in most shells
                        continue
                    except UnicodeDecodeError:
                        shell.say("Error: the line is not valid UTF-8")
                        continue
                    if line is None or (not interactive and line == ""):
                        if interactive:
                            shell.say("")
                        return EXIT_OK
                    if not shell.execute(line):
                        return EXIT_OK
            finally:
                save_history()

    return run_guarded("funnelkvs shell", body)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "shell", help="interactive shell (get, put, delete, ping, stats)", description=__doc__
    )
    add_server_option(parser)
    parser.set_defaults(func=run)
