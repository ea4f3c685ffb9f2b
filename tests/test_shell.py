"""``funnelkvs shell``: piped stdin through a subprocess, and the command loop in-process."""

from __future__ import annotations

import io
import os
import select
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funnelkvs import Client
from funnelkvs.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from funnelkvs.cli.shell import HELP_TEXT, Shell, UsageError, next_word, split_words
from funnelkvs.testing.cluster import NodeProcess, closed_port, funnelkvs_command

#: The reference FunnelKVS README's help output.
REFERENCE_HELP = """Available commands:
  get <key>           - Retrieve value for key
  put <key> <value>   - Store key-value pair
  delete <key>        - Delete key
  ping                - Check server connection
  stats               - Display server statistics
  help                - Show this help message
  quit                - Exit the client"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    with NodeProcess.start(tmp_path_factory.mktemp("node")) as process:
        yield process


def shell(address: str, script: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*funnelkvs_command(), "shell", "-s", address],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )


def test_help_is_the_reference_text() -> None:
    assert HELP_TEXT == REFERENCE_HELP


def test_reference_session_through_a_pipe(node: NodeProcess, tmp_path: Path) -> None:
    script = "\n".join(
        [
            'put user:alice "Alice Smith"',
            "get user:alice",
            "put note  several words   here",
            "get note",
            "delete user:alice",
            "get user:alice",
            "",
            "ping",
            "help",
            "frobnicate",
            "get",
            "quit",
            "get note",
        ]
    )
    result = shell(node.address, script + "\n", tmp_path)
    # A piped shell exits with the status of the last command that failed: "get" without a key.
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "OK",
        "Value: Alice Smith",
        "OK",
        "Value: several words   here",
        "OK",
        "Not found",
        "pong",
        *REFERENCE_HELP.splitlines(),
        "Unknown command: frobnicate. Type 'help' for available commands.",
        "Usage: get <key>",
    ]


def test_stats_prints_the_reference_line(node: NodeProcess, tmp_path: Path) -> None:
    with Client(node.address) as client:
        stats = client.stats()
    result = shell(node.address, "stats\n", tmp_path)  # EOF ends the shell
    assert result.returncode == 0
    assert result.stdout == f"keys: {stats['keys']}, size: {stats['size']}\n"


def test_unreachable_node_prints_one_line_and_continues(tmp_path: Path) -> None:
    result = shell(f"127.0.0.1:{closed_port()}", "ping\nhelp\nget k\n", tmp_path)
    assert result.returncode == EXIT_UNREACHABLE
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Error: cannot connect to 127.0.0.1:")
    assert lines[1] == "Available commands:"
    assert lines[-1].startswith("Error: cannot connect")
    assert "Traceback" not in result.stdout + result.stderr


def test_shell_survives_a_node_restart(tmp_path: Path) -> None:
    out = io.StringIO()
    first = NodeProcess.start(tmp_path / "a")
    port = first.port
    try:
        with Client(first.address, timeout=2) as client:
            shell = Shell(client, out)
            assert shell.execute("put k v")
            first.stop()
            assert shell.execute("get k")
            with NodeProcess.start(tmp_path / "b", port=port) as second:
                assert second.port == port
                assert shell.execute("ping")
                assert not shell.execute("exit")
    finally:
        first.stop()
    lines = out.getvalue().splitlines()
    assert lines[0] == "OK"
    assert lines[1].startswith("Error: ")
    assert lines[2] == "pong"


def test_execute_parsing() -> None:
    out = io.StringIO()
    shell = Shell(Client("127.0.0.1:1"), out)
    assert shell.execute("   ")
    assert shell.execute("# a comment")
    assert shell.status == EXIT_OK
    assert shell.execute("put onlykey")
    assert shell.execute("delete two words")
    assert shell.execute('get "unclosed')
    assert shell.execute("put 'unclosed value")
    assert shell.execute("get trailing\\")
    assert shell.status == EXIT_USAGE
    assert not shell.execute("QUIT")
    assert out.getvalue().splitlines() == [
        "Usage: put <key> <value>",
        "Usage: delete <key>",
        "Error: no closing quotation",
        "Error: no closing quotation",
        "Error: nothing after the final backslash",
    ]


def test_module_runs_without_tty(node: NodeProcess, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "funnelkvs.cli", "shell", "-s", node.address],
        input="ping\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert (result.returncode, result.stdout) == (0, "pong\n")


# --- bytes, quoting and exit statuses (issue 6, kind 5) ---------------------------------------------


def shell_bytes(address: str, script: bytes, home: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*funnelkvs_command(), "shell", "-s", address],
        input=script,
        capture_output=True,
        timeout=30,
        check=False,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},  # the C locale, as under cron
    )


def test_non_utf8_input_is_sent_as_typed_and_every_line_runs(node: NodeProcess, tmp_path: Path) -> None:
    result = shell_bytes(node.address, b"get bad\xff\nput k2 v2\nput raw\xfe v\x80al\xff\n", tmp_path)
    assert b"Traceback" not in result.stderr, result.stderr
    assert result.stdout.splitlines() == [b"Not found", b"OK", b"OK"]
    assert result.returncode == EXIT_NOT_FOUND
    with Client(node.address) as client:
        assert client.get("k2") == b"v2"
        assert client.get(b"raw\xfe") == b"v\x80al\xff"
    shown = shell_bytes(node.address, b"get raw\xfe\n", tmp_path)
    assert (shown.returncode, shown.stdout) == (0, b"Value: v\\x80al\\xff\n")


def test_keys_use_shell_quoting_and_values_are_the_rest_of_the_line(
    node: NodeProcess, tmp_path: Path
) -> None:
    script = "\n".join(
        [
            'put "my key" val',
            'get "my key"',
            "put 'q k' \"quoted value\"",
            "put k3 don't panic",
            "put k4   'single quoted'  ",
            "put a\\ b  several  words ",
            "get a\\ b",
            'put "" empty key',
            'get ""',
            "delete 'my key'",
            "get my\\ key",
        ]
    )
    result = shell(node.address, script + "\n", tmp_path)
    assert result.stdout.splitlines() == [
        "OK",
        "Value: val",
        "OK",
        "OK",
        "OK",
        "OK",
        "Value: several  words",
        "OK",
        "Value: empty key",
        "OK",
        "Not found",
    ]
    with Client(node.address) as client:
        assert client.get('"my') is None
        assert client.get("q k") == b"quoted value"
        assert client.get("k3") == b"don't panic"
        assert client.get("k4") == b"single quoted"
        assert client.get("") == b"empty key"


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("ping\nstats\n", EXIT_OK),
        ("get nothing-here\nping\n", EXIT_NOT_FOUND),
        ("get nothing-here\nfrobnicate\nping\n", EXIT_USAGE),
        ("frobnicate\nget nothing-here\nping\n", EXIT_NOT_FOUND),
        ("get 'unclosed\nping\n", EXIT_USAGE),
        ("get nothing-here\nquit\nfrobnicate\n", EXIT_NOT_FOUND),
    ],
)
def test_piped_exit_status_is_the_last_failure(
    node: NodeProcess, tmp_path: Path, script: str, status: int
) -> None:
    result = shell(node.address, script, tmp_path)
    assert result.returncode == status, result.stdout
    assert result.stderr == ""


def test_oversize_key_is_a_usage_failure(node: NodeProcess, tmp_path: Path) -> None:
    result = shell(node.address, f"get {'k' * (64 * 1024 + 1)}\nping\n", tmp_path)
    assert result.returncode == EXIT_USAGE
    assert result.stdout.splitlines()[0].startswith("Error: key of 65537 bytes exceeds")
    assert result.stdout.splitlines()[1] == "pong"


_SHELL_TEXT = st.text(alphabet=["a", "b", " ", "\t", "\n", "'", '"', "\\", "é", "\udcff"], max_size=24)


@given(_SHELL_TEXT)
def test_words_are_split_as_shlex_splits_them(text: str) -> None:
    try:
        expected = shlex.split(text)
    except ValueError:
        with pytest.raises(UsageError):
            split_words(text)
        return
    assert split_words(text) == expected


@given(_SHELL_TEXT, _SHELL_TEXT)
def test_next_word_ends_where_the_word_ends(first: str, rest: str) -> None:
    quoted = shlex.quote(first)
    word, end = next_word(f"{quoted} {rest}")
    assert (word, end) == (first, len(quoted))


def test_terminal_session_sends_bytes_as_typed(node: NodeProcess, tmp_path: Path) -> None:
    """At a terminal (a pty; readline on), in a UTF-8 locale, a line that is not UTF-8 still reaches
    the node as the bytes typed; the session ends with status 0."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "TERM": "dumb"}
    process = subprocess.Popen(
        [*funnelkvs_command(), "shell", "-s", node.address],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    try:
        transcript = _converse(master, [b"put tty\xff v\xfe\r", b"get tty\xff\r", b"get nope\r", b"quit\r"])
        assert process.wait(10) == EXIT_OK
    finally:
        process.kill()
        os.close(master)
    assert b"Traceback" not in transcript and b"Error" not in transcript, transcript
    assert b"OK\r\n" in transcript and b"Value: v\\xfe\r\n" in transcript
    with Client(node.address) as client:
        assert client.get(b"tty\xff") == b"v\xfe"


def _converse(master: int, lines: list[bytes]) -> bytes:
    """Type each line after the prompt shows, and return everything the terminal showed."""
    transcript = b""
    for line in [*lines, None]:
        deadline = time.monotonic() + 10
        while not transcript.endswith(b"funnelkvs> ") and time.monotonic() < deadline:
            readable, _, _ = select.select([master], [], [], 0.1)
            if readable:
                try:
                    transcript += os.read(master, 4096)
                except OSError:  # the shell ended and closed the terminal
                    return transcript
        if line is None:
            return transcript
        transcript = transcript.removesuffix(b"funnelkvs> ") + b"\n"
        os.write(master, line)
    return transcript


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_output_that_cannot_be_written_ends_the_shell_with_status_5(node: NodeProcess) -> None:
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [*funnelkvs_command(), "shell", "-s", node.address],
            input=b"ping\nping\n",
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=30,
            check=False,
        )
    assert result.returncode == 5
    assert result.stderr == b"funnelkvs shell: cannot write to standard output: No space left on device\n"
