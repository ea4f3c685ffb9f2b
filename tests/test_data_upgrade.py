"""`funnelkvs data upgrade`: a format-1 data directory (raw values) becomes format 2 (envelopes).

A format-1 directory is made the way the earlier release left one: the backend's files with raw values
and the marker ``{"backend": ..., "format": 1}`` (the backends' on-disk layout did not change; only
what a value means did).
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from funnelkvs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from funnelkvs.cli.data import upgrade_data_dir
from funnelkvs.errors import StorageFormatError
from funnelkvs.keyspace import KeyRange
from funnelkvs.storage.datadir import MARKER_NAME, DataFormat, claim, read_format
from funnelkvs.storage.lmdb_backend import LmdbBackend
from funnelkvs.storage.sqlite_backend import SqliteBackend
from funnelkvs.testing.cluster import funnelkvs_command
from funnelkvs.versions import KIND_VALUE, ZERO, check_envelope, kind_of, value_of, version_of

BACKENDS: dict[str, Any] = {"lmdb": LmdbBackend, "sqlite": SqliteBackend}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*funnelkvs_command(), *args], capture_output=True, text=True, timeout=timeout)


def sample_items(seed: int, count: int = 1500) -> dict[bytes, bytes]:
    """Keys and values as a node stores them: binary, the empty key, an empty value, a 2 MiB value;
    more keys than one upgrade batch (1024)."""
    rng = random.Random(seed)
    items = {rng.randbytes(rng.randint(1, 40)): rng.randbytes(rng.randint(0, 300)) for _ in range(count)}
    items[b""] = b"the empty key"
    items[b"empty value"] = b""
    items[b"big"] = rng.randbytes(2 * 1024 * 1024)
    return items


def make_format1(path: Path, backend: str, items: dict[bytes, bytes]) -> None:
    store = BACKENDS[backend](path)
    try:
        for key, value in items.items():
            store.put(key, value)
        store.sync()
    finally:
        store.close()
    (path / MARKER_NAME).write_text(json.dumps({"backend": backend, "format": 1}) + "\n")


def stored(path: Path, backend: str, data_format: int = 2) -> dict[bytes, bytes]:
    store = BACKENDS[backend](path, read_only=True, data_format=data_format)
    try:
        return dict(store.scan(KeyRange.whole_ring()))
    finally:
        store.close()


def assert_upgraded(path: Path, backend: str, items: dict[bytes, bytes]) -> None:
    assert read_format(path) == DataFormat(backend, 2)
    envelopes = stored(path, backend)
    assert envelopes.keys() == items.keys()
    for key, env in envelopes.items():
        assert check_envelope(env) is None
        assert kind_of(env) == KIND_VALUE and version_of(env) == ZERO
        assert value_of(env) == items[key], key
    assert not path.with_name(path.name + ".upgrading").exists()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_node_refuses_format_1_and_the_command_it_names_upgrades_it(tmp_path: Path, backend: str) -> None:
    data = tmp_path / "data"
    items = sample_items(seed=len(backend))
    make_format1(data, backend, items)

    refused = run_cli("node", "--port", "0", "--backend", backend, "--data-dir", str(data))
    assert refused.returncode == EXIT_FAILURE
    [line] = refused.stderr.splitlines()
    assert line.startswith(f"funnelkvs node: data directory {data} holds {backend} format 1")
    command = line.split("`")[1]
    assert command == f"funnelkvs data upgrade --backend {backend} --path {data}"

    # Run exactly what the message says (with this environment's funnelkvs).
    upgraded = run_cli(*shlex.split(command)[1:])
    assert upgraded.returncode == EXIT_OK, upgraded.stderr
    assert upgraded.stderr == ""
    assert f"{len(items)} keys" in upgraded.stdout
    assert_upgraded(data, backend, items)
    # The backup is the untouched original.
    backup = tmp_path / "data.format1"
    assert read_format(backup) == DataFormat(backend, 1)
    assert stored(backup, backend, data_format=1) == items
    # The backend now opens the directory for writing.
    BACKENDS[backend](data).close()

    again = run_cli("data", "upgrade", "--backend", backend, "--path", str(data))
    assert again.returncode == EXIT_OK
    assert again.stdout.strip() == f"{data} is already at format 2"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_copy_interrupted_midway_is_removed_and_redone(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    items = sample_items(seed=7)
    make_format1(data, backend, items)

    class Crash(Exception):
        pass

    import funnelkvs.versions

    real_pack_value = funnelkvs.versions.pack_value
    packed = 0

    def crashing_pack_value(*args: Any) -> Any:
        nonlocal packed
        packed += 1
        if packed > 1100:  # past the first synced batch: the partial copy is on disk
            raise Crash
        return real_pack_value(*args)

    monkeypatch.setattr(funnelkvs.versions, "pack_value", crashing_pack_value)
    with pytest.raises(Crash):
        upgrade_data_dir(backend, data)
    monkeypatch.undo()
    work = tmp_path / "data.upgrading"
    assert work.is_dir() and 0 < len(stored(work, backend)) < len(items)
    assert read_format(data) == DataFormat(backend, 1), "the original must be untouched"

    result = run_cli("data", "upgrade", "--backend", backend, "--path", str(data))
    assert result.returncode == EXIT_OK, result.stderr
    assert f"removing {work}, left by an interrupted upgrade" in result.stdout
    assert_upgraded(data, backend, items)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_an_upgrade_interrupted_between_the_renames_is_finished(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    items = sample_items(seed=11, count=50)
    make_format1(data, backend, items)
    real_rename = os.rename
    renames: list[tuple[str, str]] = []

    def crash_on_second_rename(source: Any, target: Any) -> None:
        renames.append((str(source), str(target)))
        if len(renames) == 2:
            raise KeyboardInterrupt  # the process dies between the two renames
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        upgrade_data_dir(backend, data)
    monkeypatch.undo()
    assert renames == [
        (str(data), str(tmp_path / "data.format1")),
        (str(tmp_path / "data.upgrading"), str(data)),
    ]
    assert not data.exists()

    result = run_cli("data", "upgrade", "--backend", backend, "--path", str(data))
    assert result.returncode == EXIT_OK, result.stderr
    assert "resuming an interrupted upgrade" in result.stdout
    assert_upgraded(data, backend, items)
    assert stored(tmp_path / "data.format1", backend, data_format=1) == items


def test_a_symbolic_link_keeps_pointing_at_the_upgraded_data(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "data"
    items = sample_items(seed=3, count=20)
    make_format1(real, "lmdb", items)
    link = tmp_path / "data"
    link.symlink_to(real)
    upgrade_data_dir("lmdb", link)
    assert link.is_symlink()
    assert_upgraded(real, "lmdb", items)
    assert (tmp_path / "disk" / "data.format1").is_dir()


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_format1(data, "lmdb", {b"k": b"v"})
    wrong = run_cli("data", "upgrade", "--backend", "sqlite", "--path", str(data))
    assert wrong.returncode == EXIT_USAGE
    assert wrong.stderr == f"funnelkvs data: {data} was written by the 'lmdb' backend; use --backend lmdb\n"
    unknown = run_cli("data", "upgrade", "--backend", "rocks", "--path", str(data))
    assert unknown.returncode == EXIT_USAGE
    assert unknown.stderr.splitlines() == [
        "funnelkvs data: backend 'rocks' has no data directory upgrade (known: lmdb, sqlite)"
    ]
    missing_argument = run_cli("data", "upgrade", "--backend", "lmdb")
    assert missing_argument.returncode == EXIT_USAGE
    assert "Traceback" not in wrong.stderr + unknown.stderr + missing_argument.stderr
    assert read_format(data) == DataFormat("lmdb", 1)


def test_the_memory_backend_has_nothing_to_upgrade(tmp_path: Path) -> None:
    result = run_cli("data", "upgrade", "--backend", "memory", "--path", str(tmp_path / "none"))
    assert result.returncode == EXIT_OK
    assert "nothing to upgrade" in result.stdout


def test_failures_exit_5_with_one_line(tmp_path: Path) -> None:
    missing = run_cli("data", "upgrade", "--backend", "lmdb", "--path", str(tmp_path / "missing"))
    assert missing.returncode == EXIT_FAILURE
    assert missing.stderr == f"funnelkvs data: data directory {tmp_path / 'missing'} does not exist\n"

    data = tmp_path / "data"
    make_format1(data, "lmdb", {b"k": b"v"})
    # A running node holds the directory's writer lock: the upgrade must not copy under it.
    holder = claim(data, "lmdb", 1)
    try:
        busy = run_cli("data", "upgrade", "--backend", "lmdb", "--path", str(data))
    finally:
        holder.release()
    assert busy.returncode == EXIT_FAILURE
    assert busy.stderr.splitlines() == [
        f"funnelkvs data: data directory {data} is in use by another process (pid {os.getpid()})"
    ]
    assert not (tmp_path / "data.upgrading").exists()

    (tmp_path / "data.format1").mkdir()
    in_the_way = run_cli("data", "upgrade", "--backend", "lmdb", "--path", str(data))
    assert in_the_way.returncode == EXIT_FAILURE
    assert "data.format1 already exists" in in_the_way.stderr and len(in_the_way.stderr.splitlines()) == 1

    (data / MARKER_NAME).write_text(json.dumps({"backend": "lmdb", "format": 3}))
    newer = run_cli("data", "upgrade", "--backend", "lmdb", "--path", str(data))
    assert newer.returncode == EXIT_FAILURE
    assert "written by a newer release" in newer.stderr and len(newer.stderr.splitlines()) == 1


def test_reading_format_1_is_read_only(tmp_path: Path) -> None:
    make_format1(tmp_path / "d", "lmdb", {b"k": b"v"})
    with pytest.raises(StorageFormatError, match="funnelkvs data upgrade --backend lmdb"):
        LmdbBackend(tmp_path / "d")
    with pytest.raises(ValueError, match="read-only"):
        LmdbBackend(tmp_path / "d", data_format=1)
