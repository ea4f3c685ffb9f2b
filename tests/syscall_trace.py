"""Shared by the backend tests: trace a short script's sync calls and check that only ``sync()``
syncs (group commit), and that it does sync before returning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = """
import os, sys
from pathlib import Path
from {module} import {factory}
backend = {factory}(Path(sys.argv[1]), {{}})
backend.put(b"warm", b"up")
backend.sync()
os.write(2, b"MARK put\\n")
backend.put(b"k", b"v" * 10000)
backend.put(b"k2", b"v")
backend.count()
os.write(2, b"MARK sync\\n")
backend.sync()
os.write(2, b"MARK synced\\n")
backend.close()
"""


def assert_only_sync_syncs(module: str, factory: str, data_dir: Path) -> None:
    """Run puts then ``sync()`` under strace: no sync call between the puts, one inside sync()."""
    traced = subprocess.run(
        ["strace", "-f", "-e", "trace=fsync,fdatasync,msync,write", sys.executable, "-c",
         _SCRIPT.format(module=module, factory=factory), str(data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if traced.returncode != 0 and "ptrace" in traced.stderr:
        pytest.skip("strace cannot trace here")
    lines = traced.stderr.splitlines()
    marks = {
        line.split("MARK ")[1].split("\\n")[0]: index
        for index, line in enumerate(lines)
        if 'write(2, "MARK' in line
    }
    between_writes = lines[marks["put"] : marks["sync"]]
    during_sync = lines[marks["sync"] : marks["synced"]]
    assert not [line for line in between_writes if "sync(" in line], "put() synced: not group commit"
    assert [line for line in during_sync if "fdatasync(" in line or "fsync(" in line], during_sync
