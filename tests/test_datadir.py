"""Data directory markers and locks (funnelkvs.storage.datadir)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from funnelkvs.errors import StorageError, StorageFormatError
from funnelkvs.storage.datadir import (
    LOCK_NAME,
    MARKER_NAME,
    DataFormat,
    claim,
    read_format,
    recorded_backend,
    upgrade_command,
)


def test_first_claim_creates_directory_and_marker(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "node1"
    data_dir = claim(path, "lmdb", 1)
    try:
        assert path.is_dir()
        assert json.loads((path / MARKER_NAME).read_text()) == {"backend": "lmdb", "format": 1}
        assert read_format(path) == DataFormat("lmdb", 1)
        assert data_dir.format == DataFormat("lmdb", 1)
    finally:
        data_dir.release()


def test_a_new_directory_and_its_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        data_dir = claim(tmp_path / "new" / "node1", "lmdb", 1)
        data_dir.release()
        # The umask stays tightened: the backend creates its own files after the claim returns.
        assert os.umask(0) == 0o077
    finally:
        os.umask(previous)
    for path in (tmp_path / "new", tmp_path / "new" / "node1"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for name in (MARKER_NAME, LOCK_NAME):
        assert stat.S_IMODE((tmp_path / "new" / "node1" / name).stat().st_mode) == 0o600


def test_read_only_claim_leaves_the_umask_alone(tmp_path: Path) -> None:
    claim(tmp_path / "d", "lmdb", 1).release()
    previous = os.umask(0o022)
    try:
        claim(tmp_path / "d", "lmdb", 1, read_only=True).release()
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)


def test_recorded_backend(tmp_path: Path) -> None:
    claim(tmp_path / "d", "sqlite", 1).release()
    assert recorded_backend(tmp_path / "d") == "sqlite"
    with pytest.raises(
        StorageFormatError, match=re.escape(f"{tmp_path} has no {MARKER_NAME} marker saying which")
    ):
        recorded_backend(tmp_path)
    with pytest.raises(StorageFormatError, match="missing does not exist, so no marker says which backend"):
        recorded_backend(tmp_path / "missing")
    with pytest.raises(StorageFormatError, match=f"{MARKER_NAME} is not a directory"):
        recorded_backend(tmp_path / "d" / MARKER_NAME)
    (tmp_path / "d" / MARKER_NAME).write_text("{}")
    with pytest.raises(StorageFormatError, match="unreadable"):
        recorded_backend(tmp_path / "d")


def test_same_backend_claims_again(tmp_path: Path) -> None:
    claim(tmp_path / "d", "sqlite", 1).release()
    (tmp_path / "d" / "funnelkvs.sqlite3").write_bytes(b"data")
    claim(tmp_path / "d", "sqlite", 1).release()


def test_other_backend_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "x"
    claim(path, "sqlite", 1).release()
    with pytest.raises(StorageFormatError) as caught:
        claim(path, "lmdb", 1)
    assert str(caught.value) == (
        f"data directory {path} was created by the 'sqlite' backend (format 1); "
        "this node is configured for 'lmdb'"
    )
    assert json.loads((path / MARKER_NAME).read_text())["backend"] == "sqlite", "the marker was changed"


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    claim(tmp_path, "lmdb", 2).release()
    with pytest.raises(
        StorageFormatError, match=r"holds lmdb format 2, written by a newer release; .* reads format 1 only"
    ):
        claim(tmp_path, "lmdb", 1)
    claim(tmp_path / "old", "lmdb", 1).release()
    with pytest.raises(StorageFormatError, match=r"holds lmdb format 1; .* reads format 3 only$"):
        claim(tmp_path / "old", "lmdb", 3, upgradable_from=(2,))


def test_an_upgradable_format_is_refused_with_the_command_that_upgrades_it(tmp_path: Path) -> None:
    path = tmp_path / "node 1"  # a space: the command must still be one a shell runs as shown
    claim(path, "lmdb", 1).release()
    with pytest.raises(StorageFormatError) as caught:
        claim(path, "lmdb", 2, upgradable_from=(1,))
    assert str(caught.value) == (
        f"data directory {path} holds lmdb format 1, written by an earlier release; this release reads "
        f"format 2: upgrade it with `funnelkvs data upgrade --backend lmdb --path '{path}'`"
    )
    assert "\n" not in str(caught.value)
    assert read_format(path) == DataFormat("lmdb", 1), "the marker was changed"
    assert upgrade_command("sqlite", Path("/d")) == "funnelkvs data upgrade --backend sqlite --path /d"


@pytest.mark.parametrize("backend_module", ["lmdb_backend", "sqlite_backend"])
def test_persistent_backends_record_format_2_and_refuse_format_1(tmp_path: Path, backend_module: str) -> None:
    import importlib

    module = importlib.import_module(f"funnelkvs.storage.{backend_module}")
    backend_class = {"lmdb_backend": "LmdbBackend", "sqlite_backend": "SqliteBackend"}[backend_module]
    backend = getattr(module, backend_class)(tmp_path / "d")
    name = backend.name
    backend.close()
    assert module.FORMAT_VERSION == 2 and module.UPGRADABLE_FROM == (1,)
    assert read_format(tmp_path / "d") == DataFormat(name, 2)
    (tmp_path / "d" / MARKER_NAME).write_text(json.dumps({"backend": name, "format": 1}))
    with pytest.raises(StorageFormatError, match=f"funnelkvs data upgrade --backend {name} --path"):
        getattr(module, backend_class)(tmp_path / "d")
    # Reading a format-1 directory is for the upgrade only, and read-only.
    getattr(module, backend_class)(tmp_path / "d", read_only=True, data_format=1).close()
    with pytest.raises(ValueError, match="read-only"):
        getattr(module, backend_class)(tmp_path / "d", data_format=1)


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[1, 2]",
        b'{"backend": "lmdb"}',
        b'{"backend": "", "format": 1}',
        b'{"backend": "lmdb", "format": "1"}',
        b'{"backend": "lmdb", "format": true}',
        b"\x80\x04\x95cos\nsystem\n.",  # a pickle is never unpickled: it is just not JSON
        b" " * 5000,
    ],
)
def test_unreadable_marker_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / MARKER_NAME).write_bytes(content)
    with pytest.raises(StorageFormatError, match="unreadable FUNNELKVS_FORMAT marker"):
        claim(tmp_path, "lmdb", 1)


def test_foreign_files_without_marker_are_refused(tmp_path: Path) -> None:
    (tmp_path / "data.mdb").write_bytes(b"someone else's")
    with pytest.raises(StorageFormatError, match=r"is not empty \(data\.mdb\) and has no FUNNELKVS_FORMAT"):
        claim(tmp_path, "lmdb", 1)
    assert not (tmp_path / MARKER_NAME).exists()


def test_lost_found_and_an_interrupted_marker_write_are_not_foreign(tmp_path: Path) -> None:
    (tmp_path / "lost+found").mkdir()
    (tmp_path / f".{MARKER_NAME}.tmp").write_bytes(b'{"backe')
    claim(tmp_path, "lmdb", 1).release()
    assert read_format(tmp_path) == DataFormat("lmdb", 1)


def test_a_file_is_not_a_data_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError, match="is not a directory"):
        claim(tmp_path / "file", "lmdb", 1)


def test_read_only_claim_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StorageFormatError, match="does not exist"):
        claim(tmp_path / "missing", "lmdb", 1, read_only=True)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(StorageFormatError, match="not a FunnelKVS data directory"):
        claim(tmp_path, "lmdb", 1, read_only=True)
    assert not (tmp_path / MARKER_NAME).exists()


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    first = claim(tmp_path, "lmdb", 1)
    with pytest.raises(StorageError, match=rf"in use by another process \(pid {os.getpid()}\)"):
        claim(tmp_path, "lmdb", 1)
    reader = claim(tmp_path, "lmdb", 1, read_only=True)  # readers take no lock
    reader.release()
    first.release()
    first.release()  # harmless
    claim(tmp_path, "lmdb", 1).release()


def test_lock_dies_with_a_killed_process(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from funnelkvs.storage.datadir import claim\n"
        "claim(Path(sys.argv[1]), 'lmdb', 1)\n"
        "print('claimed', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"claimed\n"
        with pytest.raises(StorageError, match=rf"pid {child.pid}"):
            claim(tmp_path, "lmdb", 1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert (tmp_path / LOCK_NAME).exists()
    claim(tmp_path, "lmdb", 1).release()
