"""Rejoin on real processes: a node restarted on its data directory without ``--join`` finds its ring
through the peers it remembered; a whole ring restarted at once comes back as one ring; a node away
longer than the tombstone grace period is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from funnelkvs.client import Client
from funnelkvs.replication.rejoin import FILE_NAME
from funnelkvs.testing.cluster import NodeProcess, funnelkvs_command
from funnelkvs.testing.ring import info, split, start_ring, wait_until_stable

CONFIG = {"replication": {"factor": 3, "anti_entropy_interval": 1}}


def start_lmdb_ring(tmp_path: Path, factory: Callable[..., NodeProcess], count: int) -> list[NodeProcess]:
    def start(**kwargs: object) -> NodeProcess:
        return factory(config=CONFIG, backend="lmdb", data_dir=tmp_path / f"{kwargs['name']}-data", **kwargs)

    nodes = start_ring(tmp_path, count, start=start)
    wait_until_stable(nodes)
    return nodes


def wait_for_memory(data_dir: Path, members: int, timeout: float = 20.0) -> None:
    """Until the node has written its peers file with ``members`` members."""
    deadline = time.monotonic() + timeout
    while True:
        path = data_dir / FILE_NAME
        if path.exists() and len(json.loads(path.read_text())["peers"]) == members:
            return
        assert time.monotonic() < deadline, f"{path} does not list {members} members"
        time.sleep(0.2)


def restart(factory: Callable[..., NodeProcess], tmp_path: Path, node: NodeProcess, name: str) -> NodeProcess:
    _, port = split(node.address)
    return factory(
        config=CONFIG, backend="lmdb", data_dir=tmp_path / f"{name}-data", port=port, name=f"{name}-back"
    )


def test_a_restarted_node_without_join_finds_its_ring_through_remembered_peers(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_lmdb_ring(tmp_path, node_process_factory, 3)
    wait_for_memory(tmp_path / "ring2-data", 3)
    nodes[2].kill()
    back = restart(node_process_factory, tmp_path, nodes[2], "ring2")  # no --join
    wait_until_stable([nodes[0], nodes[1], back])
    deadline = time.monotonic() + 10
    while info(back.address)["ring"]["members"] != 3:
        assert time.monotonic() < deadline, "the restarted node does not see the ring of 3"
        time.sleep(0.2)


def test_a_whole_ring_restarted_at_once_comes_back_as_one_ring(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_lmdb_ring(tmp_path, node_process_factory, 3)
    with Client([node.address for node in nodes]) as client:
        client.put_many((b"k%d" % i, b"v%d" % i) for i in range(300))
    for index in range(3):
        wait_for_memory(tmp_path / f"ring{index}-data", 3)
    for node in nodes:
        node.stop()
    back = [restart(node_process_factory, tmp_path, node, f"ring{index}") for index, node in enumerate(nodes)]
    wait_until_stable(back, timeout=40)
    deadline = time.monotonic() + 10  # the membership walk follows the ring within a few seconds
    while [info(node.address)["ring"]["members"] for node in back] != [3, 3, 3]:
        assert time.monotonic() < deadline, "the restarted nodes do not all see one ring of 3"
        time.sleep(0.2)
    with Client([node.address for node in back]) as client:
        assert client.get_many([b"k%d" % i for i in range(300)]) == [b"v%d" % i for i in range(300)]


def test_a_node_away_longer_than_the_grace_period_is_refused(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    node = node_process_factory(config=CONFIG, backend="lmdb", data_dir=tmp_path / "data")
    node.stop()
    memory = tmp_path / "data" / FILE_NAME
    memory.write_text(json.dumps({"format": 1, "last_alive": time.time() - 3 * 86400, "peers": []}))
    command = [
        *funnelkvs_command(),
        "node",
        "--port",
        "0",
        "--backend",
        "lmdb",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 5, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "longer than replication.tombstone_grace" in line and "Traceback" not in result.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="linux only")
def test_the_peers_file_does_not_make_the_data_directory_foreign(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    node = node_process_factory(config=CONFIG, backend="lmdb", data_dir=tmp_path / "data")
    with Client(node.address) as client:
        client.put(b"k", b"v")
    node.stop()
    again = node_process_factory(config=CONFIG, backend="lmdb", data_dir=tmp_path / "data", name="again")
    with Client(again.address) as client:
        assert client.get(b"k") == b"v"
