"""``funnelkvs cluster start`` (issue 7): real node processes on 127.0.0.1, ephemeral ports, bounded in
time; the command and every node it started are gone at teardown, whatever happens."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from funnelkvs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from funnelkvs.client import admin
from funnelkvs.errors import NodeUnreachable, RequestTimeout
from funnelkvs.testing.cluster import funnelkvs_command

START_TIMEOUT = 60.0


def refuses(address: str) -> bool:
    try:
        return not admin.accepts_connections(address, timeout=1)
    except NodeUnreachable:
        return False


def children_of(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux: /proc/PID/task/*/children)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found += [int(child) for child in listing.read().split()]
    except OSError:
        pass
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone(pid: int) -> bool:
    return not alive(pid)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


class ClusterCommand:
    """A running ``funnelkvs cluster start``: its stdout lines as they come, its stderr in a file."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        self.stderr_path = workdir / "cluster.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [*funnelkvs_command(), "cluster", "start", *args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        self.lines: list[str] = []
        self.node_pids: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.decode().rstrip("\n"))

    def addresses(self, count: int, timeout: float = START_TIMEOUT) -> list[str]:
        wait_for(lambda: len(self.lines) >= count or self.process.poll() is not None, timeout, "addresses")
        assert len(self.lines) >= count, self.stderr()
        self.node_pids.update(children_of(self.process.pid))
        return self.lines[:count]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def cleanup(self) -> None:
        self.node_pids.update(children_of(self.process.pid))
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.node_pids:  # anything the command left behind (it should leave nothing)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def cluster_command(tmp_path: Path) -> Iterator[Callable[..., ClusterCommand]]:
    started: list[ClusterCommand] = []

    def start(*args: str) -> ClusterCommand:
        started.append(ClusterCommand(list(args), tmp_path))
        return started[-1]

    yield start
    for command in started:
        command.cleanup()


def view_has(address: str, count: int) -> bool:
    try:
        return len(admin.ring_view(address, timeout=2).members) == count
    except (NodeUnreachable, RequestTimeout):
        return False


def test_three_nodes_form_a_ring_and_sigint_stops_them_all(
    cluster_command: Callable[..., ClusterCommand],
) -> None:
    command = cluster_command("--nodes", "3", "--base-port", "0")
    addresses = command.addresses(3)
    assert len(set(addresses)) == 3
    assert all(address.startswith("127.0.0.1:") for address in addresses)
    for address in addresses:
        wait_for(functools.partial(view_has, address, 3), 10.0, f"{address}'s ring view shows 3 members")
    assert len(command.node_pids) == 3
    command.process.send_signal(signal.SIGINT)
    assert command.process.wait(30) == EXIT_OK, command.stderr()
    for address in addresses:
        assert refuses(address), f"{address} still accepts connections"
    for pid in command.node_pids:
        wait_for(functools.partial(gone, pid), 5.0, f"node process {pid} exits")
    log = command.stderr()
    assert "node-1 | " in log and "node-3 | " in log  # the nodes' logs, relayed with their names
    assert "funnelkvs cluster:" not in log  # no node was reported dead: the command stopped them


def test_sigterm_stops_them_too_and_a_dead_node_is_reported(
    cluster_command: Callable[..., ClusterCommand],
) -> None:
    command = cluster_command("--nodes", "2", "--base-port", "0")
    addresses = command.addresses(2)
    assert len(command.node_pids) == 2
    victim = min(command.node_pids)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: "was killed by SIGKILL" in command.stderr(), 10.0, "the dead node is reported")
    assert command.process.poll() is None  # the other node is still supervised
    command.process.send_signal(signal.SIGTERM)
    assert command.process.wait(30) == EXIT_OK
    assert all(refuses(address) for address in addresses)


def test_a_killed_supervisor_takes_its_nodes_with_it(cluster_command: Callable[..., ClusterCommand]) -> None:
    if not os.path.exists(f"/proc/{os.getpid()}/task"):
        pytest.skip("needs /proc")
    command = cluster_command("--nodes", "2", "--base-port", "0")
    addresses = command.addresses(2)
    command.process.kill()
    command.process.wait(10)
    for pid in command.node_pids:
        wait_for(functools.partial(gone, pid), 15.0, f"orphaned node {pid} exits")
    assert all(refuses(address) for address in addresses)


def test_data_dir_gives_each_node_its_own_directory(
    cluster_command: Callable[..., ClusterCommand], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    command = cluster_command(
        "--nodes", "2", "--base-port", "0", "--backend", "lmdb", "--data-dir", str(data)
    )
    command.addresses(2)
    assert sorted(path.name for path in data.iterdir()) == ["node-1", "node-2"]
    command.process.send_signal(signal.SIGINT)
    assert command.process.wait(30) == EXIT_OK


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*funnelkvs_command(), "cluster", "start", *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=90,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], b"--nodes must be at least 1"),
        (["--nodes", "-2"], b"--nodes must be at least 1"),
        (["--nodes", "3", "--base-port", "65534"], b"run past port 65535"),
        (["--base-port", "70000"], b"--base-port must be from 0 to 65535"),
        (["--backend", "memory", "--data-dir", "somewhere"], b"needs a persistent one"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: bytes) -> None:
    result = run(*args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stdout == b""
    assert result.stderr.count(b"\n") == 1 and message in result.stderr, result.stderr


def test_a_node_that_cannot_start_stops_the_command() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run("--nodes", "2", "--base-port", str(port))
    assert time.monotonic() - started < 60
    assert result.returncode == EXIT_FAILURE
    assert result.stdout == b""
    last = result.stderr.decode().splitlines()[-1]
    assert last.startswith("funnelkvs cluster: node-1 did not start (exited with status 5): ")
    assert "Address already in use" in last


def test_a_node_refusing_its_settings_is_a_usage_error(tmp_path: Path) -> None:
    result = run("--nodes", "2", "--base-port", "0", "--backend", "no-such-backend")
    assert result.returncode == EXIT_USAGE
    assert result.stderr.decode().splitlines()[-1].startswith("funnelkvs cluster: node-1 did not start")
