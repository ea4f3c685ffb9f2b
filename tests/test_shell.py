"""``funnelkvs shell``: piped stdin through a subprocess, and the command loop in-process."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from funnelkvs import Client
from funnelkvs.cli.shell import HELP_TEXT, Shell
from funnelkvs.testing.cluster import NodeProcess, funnelkvs_command

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
    assert result.returncode == 0, result.stderr
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
    result = shell("127.0.0.1:1", "ping\nhelp\nget k\n", tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Error: cannot connect to 127.0.0.1:1")
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
    assert shell.execute("put onlykey")
    assert shell.execute("delete two words")
    assert not shell.execute("QUIT")
    assert out.getvalue().splitlines() == ["Usage: put <key> <value>", "Usage: delete <key>"]


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
