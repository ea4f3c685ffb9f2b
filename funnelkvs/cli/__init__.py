"""The ``funnelkvs`` command line. Each sub-command lives in its own module with
``add_parser(subparsers)``; the parser's ``func(args) -> int`` runs it and returns the exit status.

Exit statuses: 0 success; 1 key not found; 2 usage or configuration error; 3 node unreachable or
timed out; 4 the node answered with an error; 5 anything else expected (storage, plugin, output that
cannot be written). Expected failures print one line on stderr, never a traceback; :func:`main` turns
a failure to write standard output into that, for every command.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_SERVER_ERROR = 4
EXIT_FAILURE = 5

#: Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "node",
    "kv",
    "ring",
    "leave",
    "forget",
    "cluster",
    "shell",
    "bench",
    "plugins",
    "config_cmd",
    "data",
    "sim",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funnelkvs", description="FunnelKVS: a distributed key-value store")
    from funnelkvs import __version__

    parser.add_argument("--version", action="version", version=f"funnelkvs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"funnelkvs.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status. Output that cannot be written ends any command the same way:
    one line on standard error and :data:`EXIT_FAILURE` (a reader that went away is not an error)."""
    original = sys.stdout
    guarded = _GuardedOutput(original if original is not None else _ClosedOutput())
    sys.stdout = guarded  # type: ignore[assignment]
    outcome: int | SystemExit = EXIT_FAILURE
    prog = "funnelkvs"
    try:
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            if getattr(args, "command", None):
                prog = f"funnelkvs {args.command}"
            if not getattr(args, "func", None):
                parser.print_help(sys.stderr)
                outcome = EXIT_USAGE
            else:
                outcome = args.func(args)
        except SystemExit as exc:  # argparse: --help, --version and usage errors
            outcome = exc
        # What Python would flush at exit, flushed here, where a failure can still be reported.
        guarded.flush()
    except KeyboardInterrupt:
        outcome = 130
    except BrokenPipeError:
        # The reader went away (`funnelkvs plugins --json | head -c1`); nothing left to say to it.
        _silence_stdout(original)
        outcome = EXIT_OK
    except OutputError as exc:
        _silence_stdout(original)
        print(f"{prog}: cannot write to standard output: {exc}", file=sys.stderr)
        outcome = EXIT_FAILURE
    finally:
        sys.stdout = original
    if isinstance(outcome, SystemExit):
        raise outcome
    return outcome


class OutputError(Exception):
    """Standard output cannot be written (a full disk, a closed descriptor): ends the command.

    Not an ``OSError``, so no command's own I/O error handling can mistake it for its own failure."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.strerror or str(cause) or type(cause).__name__)


class _GuardedOutput:
    """Stands in for ``sys.stdout`` (and its ``buffer``) while a command runs: a failed write or flush
    raises :class:`OutputError`, wherever the command writes from. A broken pipe stays itself."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _guard(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(exc) from exc
        except ValueError as exc:
            if not getattr(self._stream, "closed", False):
                raise  # e.g. text the stream cannot encode: a bug to see, not an output failure
            raise OutputError(OSError(errno.EBADF, "standard output is closed")) from exc

    def write(self, data: Any) -> Any:
        return self._guard(self._stream.write, data)

    def writelines(self, lines: Any) -> None:
        self._guard(self._stream.writelines, lines)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    @property
    def buffer(self) -> _GuardedOutput:
        return _GuardedOutput(self._stream.buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _ClosedOutput(io.RawIOBase):
    """Standard output when its descriptor was closed before Python started (``sys.stdout`` is None):
    writing fails as writing to a closed descriptor does, and nothing else does."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise OSError(errno.EBADF, "standard output is closed")

    @property
    def buffer(self) -> _ClosedOutput:
        return self

    encoding = "utf-8"
    errors = "strict"


def _silence_stdout(stream: Any) -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail too.
    if stream is None:
        return  # its descriptor was closed from the start: nothing is flushed at exit
    try:
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError):
        pass


def show_key(key: bytes | str) -> str:
    """A key as messages show it: in double quotes, escaped, so that an empty key, spaces and bytes
    that are not UTF-8 stay visible (``"a b"``, ``""``, ``"bad\\xff"``)."""
    text = key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key
    parts = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            parts.append("\\" + char)
        elif char in _NAMED_ESCAPES:
            parts.append(_NAMED_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as surrogateescape keeps it
            parts.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            parts.append(char)
        elif code < 0x100:
            parts.append(f"\\x{code:02x}")
        elif code < 0x10000:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(f"\\U{code:08x}")
    parts.append('"')
    return "".join(parts)


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


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
