"""Shared by the persistent-backend tests: a backend driven in a child process that is killed at a
chosen point (what a crash keeps), and a traced child that shows which calls sync (group commit)."""

from __future__ import annotations

import signal
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


_WRITER = """
import sys, time
from pathlib import Path
from {module} import {factory}
backend = {factory}(Path(sys.argv[1]), {{"durability": sys.argv[2]}})
for index in range(500):
    backend.put(b"synced-%d" % index, b"v" * index)
backend.delete(b"synced-7")
backend.sync()
print("synced", flush=True)
for index in range(100):
    backend.put(b"pending-%d" % index, b"p")
backend.count()  # a round trip (sqlite): every statement queued before it has run
print("pending", flush=True)
time.sleep(60)
"""


def kill_after(module: str, factory: str, data_dir: Path, durability: str, line: bytes) -> None:
    """Write 500 synced entries (one deleted) then 100 unsynced ones in a child; SIGKILL it once it
    prints ``line`` (``synced`` or ``pending``)."""
    script = _WRITER.format(module=module, factory=factory)
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(data_dir), durability], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        while (got := child.stdout.readline()) != line:
            assert got, "the writer died"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
