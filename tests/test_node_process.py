"""`funnelkvs node` as a real process: it listens, stops cleanly on SIGTERM and SIGINT (exit 0), can
start again on the same port at once, and fails start-up with one line and no traceback."""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from funnelkvs.protocol import Op, Response, Status, encode_request
from funnelkvs.testing.cluster import NodeProcess, funnelkvs_command
from tests.test_node import read_responses


def ping(address: tuple[str, int]) -> list[Response]:
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(encode_request(Op.PUT, b"k", b"v") + encode_request(Op.PING))
        return read_responses(s, 2)


def test_sigterm_stops_cleanly_and_the_port_is_reusable_at_once(
    node_process_factory: Callable[..., NodeProcess],
) -> None:
    first = node_process_factory()
    address = (first.host, first.port)
    # Leave a connection that the node closes, so the port sits in TIME_WAIT on the node's side.
    assert ping(address) == [Response(Status.SUCCESS), Response(Status.SUCCESS, b"pong")]
    held = socket.create_connection(address, timeout=5)
    assert first.stop(signal.SIGTERM) == 0
    held.close()
    assert "stopped" in first.log()
    second = node_process_factory(port=first.port)
    assert second.port == first.port
    assert ping(address) == [Response(Status.SUCCESS), Response(Status.SUCCESS, b"pong")]
    assert second.stop(signal.SIGINT) == 0
    assert "Traceback" not in first.log() + second.log()


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*funnelkvs_command(), *args], capture_output=True, text=True, timeout=timeout)


def test_unknown_backend_is_one_line_listing_the_choices() -> None:
    result = run_cli("node", "--port", "0", "--backend", "lmbd")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "unknown storage backend 'lmbd'; choose one of: lmdb, memory, sqlite" in lines[0]


def test_port_in_use_is_one_line(node_process: NodeProcess) -> None:
    result = run_cli("node", "--port", str(node_process.port))
    assert result.returncode not in (0, 1)
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{node_process.port}" in result.stderr


def test_bad_config_file_is_reported_with_dotted_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("node:\n  port: 70000\n")
    result = run_cli("node", "--config", str(config))
    assert result.returncode == 2
    assert "node.port: 70000 is not a valid port (0-65535)" in result.stderr
    assert "Traceback" not in result.stderr


def test_out_of_file_descriptors_backs_off_instead_of_spinning(
    node_process_factory: Callable[..., NodeProcess],
) -> None:
    node = node_process_factory()
    # Lower the running node's descriptor limit so that accept() fails with EMFILE.
    resource.prlimit(node.pid, resource.RLIMIT_NOFILE, (40, 40))
    socks = []
    try:
        for _ in range(60):
            try:
                socks.append(socket.create_connection((node.host, node.port), timeout=2))
            except OSError:
                break
        time.sleep(1.5)
        cpu = sum(int(x) for x in open(f"/proc/{node.pid}/stat").read().split()[13:15])
        time.sleep(1.0)
        cpu_after = sum(int(x) for x in open(f"/proc/{node.pid}/stat").read().split()[13:15])
        assert cpu_after - cpu < 50  # clock ticks in 1 s: far from a spinning core (100)
        assert node.log().count("accept failed") < 20
    finally:
        for s in socks:
            s.close()
    assert ping((node.host, node.port)) == [Response(Status.SUCCESS), Response(Status.SUCCESS, b"pong")]


def test_unknown_strategy_or_bad_exporter_options_stop_start_up(tmp_path: Path) -> None:
    config = tmp_path / "names.yaml"
    config.write_text(
        "replication:\n  conflict_resolver: last-write-wins\nmetrics:\n  exporters: [nonesuch]\n"
    )
    result = run_cli("node", "--port", "0", "--config", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    expected = "replication.conflict_resolver: unknown conflict resolver 'last-write-wins'"
    assert any(expected in line for line in lines)
    assert any(line.startswith(f"{config}: metrics.exporters[0]: unknown") for line in lines)


# --- storage settings that would be ignored are refused ---------------------------------------------------


def test_data_dir_without_backend_opens_with_the_backend_that_wrote_it(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    first = node_process_factory(backend="lmdb", data_dir=data)
    assert first.stop() == 0
    again = node_process_factory(data_dir=data, name="again")
    assert "(backend lmdb)" in again.log()
    assert again.stop() == 0


def test_data_dir_that_names_no_backend_is_refused(tmp_path: Path) -> None:
    for data in (tmp_path / "new", tmp_path):
        result = run_cli("node", "--port", "0", "--data-dir", str(data))
        assert result.returncode == 2
        [line] = result.stderr.splitlines()
        assert line.startswith(f"command line: storage.path: data directory {data} ")
        assert line.endswith("name the backend with storage.backend (--backend), e.g. lmdb or sqlite")
    assert not (tmp_path / "new").exists()


def test_memory_backend_with_a_data_dir_is_refused(tmp_path: Path) -> None:
    result = run_cli("node", "--port", "0", "--backend", "memory", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line == (
        f"command line: storage.path: '{tmp_path / 'data'}' is not used by the memory backend (it keeps no "
        "files); remove it, or choose a persistent backend"
    )


def test_data_dir_of_another_backend_is_refused(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    data = tmp_path / "data"
    assert node_process_factory(backend="sqlite", data_dir=data).stop() == 0
    result = run_cli("node", "--port", "0", "--backend", "lmdb", "--data-dir", str(data))
    assert result.returncode == 5
    assert result.stderr == (
        f"funnelkvs node: data directory {data} was created by the 'sqlite' backend (format 2); "
        "this node is configured for 'lmdb'\n"
    )


def test_replication_settings_are_one_warning_until_they_work(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    config = {"replication": {"factor": 2, "write_quorum": 1}}
    node = node_process_factory(config=config)
    [warning] = [line for line in node.log().splitlines() if "WARNING" in line]
    assert "replication.factor: not used by this version" in warning
    plain = node_process_factory(name="plain", config={"replication": {"factor": 1}})
    assert "WARNING" not in plain.log()
