"""``funnelkvs shell``: the reference's interactive shell, with line editing and history (readline).

Commands: ``get KEY``, ``put KEY VALUE...``, ``delete KEY``, ``ping``, ``stats``, ``help``,
``quit``/``exit``. KEY is one word with shell quoting (``get "my key"``, ``get 'say "hi"'``, ``get a\\ b``);
VALUE is the rest of the line with one pair of surrounding quotes removed, so ``put user:alice "Alice
Smith"`` stores ``Alice Smith`` and ``put k don't panic`` stores ``don't panic``. Keys and values are
the bytes typed, as with the one-shot commands. A line starting with ``#`` is a comment.

An error prints one line and the shell goes on; the next command connects again, so the shell survives
a node restart. Reading from a pipe works the same, without prompts; then every line runs and the exit
status is the one-shot command's status for the last command that failed (a missing key counts as 1),
0 when none did.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from funnelkvs.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from funnelkvs.cli.kv import add_server_option, connected, exit_status_for, run_guarded
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

#: What separates words: the blanks of ``shlex`` (and of a POSIX shell line).
_BLANKS = " \t\r\n"


class UsageError(Exception):
    """A command line the shell cannot run: printed as it is, counted as a usage error (status 2)."""


def unquote(text: str) -> str:
    """``text`` without one pair of surrounding quotes (matching ``"`` or ``'``)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def next_word(text: str, pos: int = 0) -> tuple[str | None, int]:
    """The shell word starting at or after ``pos`` and the index just past it; ``(None, len(text))``
    when only blanks are left. Quoting as ``shlex.split`` (POSIX): a backslash outside quotes takes the
    next character as it is; ``'...'`` takes everything literally; inside ``"..."`` a backslash only
    escapes ``"`` and another backslash. Raises :class:`UsageError` for an unclosed quote."""
    end = len(text)
    while pos < end and text[pos] in _BLANKS:
        pos += 1
    if pos == end:
        return None, end
    word: list[str] = []
    while pos < end and text[pos] not in _BLANKS:
        char = text[pos]
        if char == "\\":
            if pos + 1 == end:
                raise UsageError("Error: nothing after the final backslash")
            word.append(text[pos + 1])
            pos += 2
        elif char == "'":
            close = text.find("'", pos + 1)
            if close < 0:
                raise UsageError("Error: no closing quotation")
            word.append(text[pos + 1 : close])
            pos = close + 1
        elif char == '"':
            pos += 1
            while True:
                if pos == end:
                    raise UsageError("Error: no closing quotation")
                char = text[pos]
                if char == '"':
                    pos += 1
                    break
                if char == "\\" and pos + 1 < end and text[pos + 1] in '"\\':
                    word.append(text[pos + 1])
                    pos += 2
                else:
                    word.append(char)
                    pos += 1
        else:
            word.append(char)
            pos += 1
    return "".join(word), pos


def split_words(text: str) -> list[str]:
    """Every shell word of ``text`` (the same words as ``shlex.split``)."""
    words: list[str] = []
    word, pos = next_word(text)
    while word is not None:
        words.append(word)
        word, pos = next_word(text, pos)
    return words


class Shell:
    """Runs shell commands against a client; each command's output goes to ``out``.

    Lines are text as decoded with ``encoding`` and ``surrogateescape``; keys and values go out encoded
    the same way, which gives back exactly the bytes typed. ``status`` is the exit status of the last
    command that failed (0 while none has).
    """

    def __init__(self, client: Client, out: TextIO, encoding: str = "utf-8") -> None:
        self.client = client
        self.out = out
        self.encoding = encoding
        self.status = EXIT_OK
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
        parts = line.strip().split(None, 1)
        if not parts or parts[0].startswith("#"):
            return True
        command, rest = parts[0], parts[1] if len(parts) > 1 else ""
        name = command.lower()
        if name in ("quit", "exit"):
            return False
        handler = self._handlers.get(name)
        try:
            if handler is None:
                raise UsageError(f"Unknown command: {command}. Type 'help' for available commands.")
            handler(rest)
        except UsageError as exc:
            self.say(str(exc))
            self.status = EXIT_USAGE
        except FunnelKVSError as exc:
            self.say(f"Error: {_one_line(str(exc))}")
            self.status = exit_status_for(exc)
        return True

    def _bytes(self, text: str) -> bytes:
        return text.encode(self.encoding, "surrogateescape")

    def _key_only(self, rest: str, usage: str) -> bytes:
        words = split_words(rest)
        if len(words) != 1:
            raise UsageError(f"Usage: {usage}")
        return self._bytes(words[0])

    def _get(self, rest: str) -> None:
        value = self.client.get(self._key_only(rest, "get <key>"))
        if value is None:
            self.say("Not found")
            self.status = EXIT_NOT_FOUND
        else:
            self.say(f"Value: {value.decode('utf-8', 'backslashreplace')}")

    def _put(self, rest: str) -> None:
        key, end = next_word(rest)
        value = rest[end:].strip()
        if key is None or not value:
            raise UsageError("Usage: put <key> <value>")
        self.client.put(self._bytes(key), self._bytes(unquote(value)))
        self.say("OK")

    def _delete(self, rest: str) -> None:
        self.client.delete(self._key_only(rest, "delete <key>"))
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
    stdin = sys.stdin
    interactive = stdin is not None and stdin.isatty()
    if interactive:
        # A line that is not valid in the terminal's encoding still reaches the node as typed.
        stdin.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    # A value is shown as text: what the terminal cannot show is escaped, never an error.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")

    def read_line() -> str | None:
        """The next line without its end, or None at the end of the input."""
        if interactive:
            return input(PROMPT)
        raw = stdin.buffer.readline() if stdin is not None else b""
        return raw.decode("utf-8", "surrogateescape") if raw else None

    def body() -> int:
        with connected(args) as client:
            encoding = stdin.encoding if interactive else "utf-8"
            shell = Shell(client, sys.stdout, encoding)
            save_history = _setup_readline() if interactive else (lambda: None)
            try:
                if interactive:
                    shell.say(f"FunnelKVS shell on {client.addresses[0]}. Type 'help' for commands.")
                while True:
                    try:
                        line = read_line()
                    except EOFError:
                        line = None
                    except KeyboardInterrupt:
                        shell.say("")  # Ctrl-C drops the line being typed, as in most shells
                        continue
                    if line is None:
                        if interactive:
                            shell.say("")
                        break
                    if not shell.execute(line):
                        break
            finally:
                save_history()
            # At a terminal the user saw every outcome; a script is told about failures.
            return EXIT_OK if interactive else shell.status

    return run_guarded("funnelkvs shell", body)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "shell", help="interactive shell (get, put, delete, ping, stats)", description=__doc__
    )
    add_server_option(parser)
    parser.set_defaults(func=run)
