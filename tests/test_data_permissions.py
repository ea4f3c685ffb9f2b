"""Data directories are private to the node's user (docs/security.md): a new one is 0700 and every file
in it 0600, whatever the umask, including the files the backends create themselves. (The memory
backend writes nothing: it refuses a path, see test_plugins.py.)"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from funnelkvs.client import Client
from funnelkvs.plugins import PluginHost
from funnelkvs.settings import PluginSettings, StorageSettings
from funnelkvs.testing.cluster import NodeProcess

PERSISTENT = ["lmdb", "sqlite"]


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def permissive_umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run with a umask that would make files readable by others; the test process's umask is
    restored afterwards (claiming a data directory tightens it for good)."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def modes(directory: Path) -> dict[str, int]:
    return {entry.name: stat.S_IMODE(entry.stat().st_mode) for entry in directory.iterdir()}


def assert_private(directory: Path) -> None:
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = modes(directory)
    assert files, "the backend wrote nothing"
    assert all(entry.is_file() for entry in directory.iterdir())
    assert files == dict.fromkeys(files, 0o600)


@pytest.mark.parametrize("backend_name", PERSISTENT)
def test_backend_files_are_private(permissive_umask: int, tmp_path: Path, backend_name: str) -> None:
    data = tmp_path / "parent" / "data"
    host = PluginHost.load(PluginSettings(autoload=False), {})
    backend = host.create_backend(StorageSettings(backend=backend_name, path=data))
    try:
        for i in range(100):
            backend.put(b"key%d" % i, b"value" * 100)
        backend.sync()
        assert_private(data)  # while open: LMDB's lock.mdb, SQLite's -wal and -shm
    finally:
        backend.close()
    assert_private(data)
    reopened = host.create_backend(StorageSettings(backend=backend_name, path=data))
    reopened.put(b"again", b"x")
    reopened.sync()
    reopened.close()
    assert_private(data)


def test_an_existing_directory_keeps_its_mode(permissive_umask: int, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    os.chmod(data, 0o750)  # an operator's choice, e.g. for a backup group
    host = PluginHost.load(PluginSettings(autoload=False), {})
    host.create_backend(StorageSettings(backend="lmdb", path=data)).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    assert set(modes(data).values()) == {0o600}


@pytest.mark.parametrize("backend_name", PERSISTENT)
def test_node_process_data_directory_is_private(
    permissive_umask: int,
    tmp_path: Path,
    backend_name: str,
    node_process_factory: Callable[..., NodeProcess],
) -> None:
    data = tmp_path / "data"
    node = node_process_factory(backend=backend_name, data_dir=data)  # inherits the permissive umask
    with Client(node.address) as client:
        for i in range(50):
            client.put(f"key{i}", "value" * 100)
    assert_private(data)
    assert node.stop() == 0
    assert_private(data)
