"""Durability of acknowledged writes with the persistent backends, at the node level.

SIGKILL alone cannot tell a synced write from one still in the page cache (the kernel keeps the page
cache when a process dies), so both are tested: (1) a node killed with SIGKILL right after
acknowledging writes, restarted on the same data directory, has every acknowledged write; (2) a trace
of the node's system calls shows a sync (fsync, fdatasync or msync) between each storage write and the
acknowledgement that follows it (one sync may cover many writes: group commit).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from funnelkvs import Client
from funnelkvs.protocol import PUT, RESPONSE_OK, encode_request
from funnelkvs.testing.cluster import NodeProcess

BACKENDS = ["lmdb", "sqlite"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_after_acknowledged_writes_loses_nothing(
    backend: str, tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    data_dir = tmp_path / "data"
    node = node_process_factory(backend=backend, data_dir=data_dir)
    expected: dict[bytes, bytes] = {}
    with Client(node.address, pool_size=4) as client:
        # Single writes, a pipelined batch, overwrites and deletes, all acknowledged.
        for i in range(300):
            key, value = b"single:%d" % i, b"value-%d" % i * 3
            client.put(key, value)
            expected[key] = value
        batch = {b"batch:%d" % i: bytes([i % 256]) * (i % 700) for i in range(3000)}
        assert client.put_many(batch.items()) == len(batch)
        expected.update(batch)
        for i in range(0, 300, 3):
            client.put(b"single:%d" % i, b"overwritten")
            expected[b"single:%d" % i] = b"overwritten"
        for i in range(1, 300, 7):
            client.delete(b"single:%d" % i)
            del expected[b"single:%d" % i]
    node.kill()  # at once after the last acknowledgement: no clean shutdown, no final sync
    assert node.process.returncode == -signal.SIGKILL

    restarted = node_process_factory(backend=backend, data_dir=data_dir)
    with Client(restarted.address) as client:
        got = client.get_many(list(expected))
        assert client.get(b"single:1") is None
        assert client.stats()["keys"] == len(expected)
    missing = [k for k, v in zip(expected, got, strict=True) if v != expected[k]]
    assert missing == []


#: Every durability setting of every persistent backend: an acknowledgement means the write is in the
#: database file, so a crash of the process keeps it whatever the setting (docs/storage.md).
DURABILITY_SETTINGS = [
    ("lmdb", {"durability": "sync"}),
    ("lmdb", {"durability": "nosync"}),
    ("sqlite", {"durability": "sync", "journal_mode": "wal"}),
    ("sqlite", {"durability": "nosync", "journal_mode": "wal"}),
    ("sqlite", {"durability": "sync", "journal_mode": "delete"}),
    ("sqlite", {"durability": "nosync", "journal_mode": "delete"}),
]


@pytest.mark.parametrize(
    ("backend", "options"),
    DURABILITY_SETTINGS,
    ids=["-".join([name, *map(str, opts.values())]) for name, opts in DURABILITY_SETTINGS],
)
def test_sigkill_right_after_20000_pipelined_acknowledgements_loses_none(
    backend: str, options: dict[str, str], tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    data_dir = tmp_path / "data"
    config = {"storage": {"backend": backend, "path": str(data_dir), "options": options}}
    node = node_process_factory(config=config)
    count = 20_000
    frames = b"".join(encode_request(PUT, b"key-%d" % i, b"%100d" % i) for i in range(count))
    host, port = node.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(frames)  # one write: the node decodes them in as few passes as it can
        answers = bytearray()
        while len(answers) < count * len(RESPONSE_OK):
            chunk = sock.recv(1 << 16)
            assert chunk, f"the node closed after {len(answers) // len(RESPONSE_OK)} answers"
            answers += chunk
    assert bytes(answers) == RESPONSE_OK * count
    node.kill()  # at once after the last acknowledgement
    assert node.process.returncode == -signal.SIGKILL

    restarted = node_process_factory(config=config)
    with Client(restarted.address) as client:
        assert client.stats()["keys"] == count
        got = client.get_many([b"key-%d" % i for i in range(count)])
    assert [i for i, value in enumerate(got) if value != b"%100d" % i] == []


_SYSCALL = re.compile(r"^(?P<pid>\d+)\s+(?:<\.\.\. (?P<resumed>\w+) resumed>|(?P<call>\w+)\((?P<args>.*))")


def _check_trace(trace: str) -> tuple[int, int]:
    """Walk the trace in order: a storage write makes the state dirty, a completed sync makes it
    clean, and an acknowledgement (a reply frame sent on a socket) must find it clean.
    Returns (acknowledgements seen, syncs seen)."""
    dirty_since: str | None = None
    acks = syncs = 0
    # LMDB writes its meta page through a second descriptor opened O_DSYNC: such a write is synced
    # by the time it returns, so it does not make the state dirty.
    sync_fds: set[int] = set()
    for line in trace.splitlines():
        match = _SYSCALL.match(line)
        if not match:
            continue
        call, args = match.group("call"), match.group("args") or ""
        if match.group("resumed") in {"fsync", "fdatasync", "msync"}:
            dirty_since, syncs = None, syncs + 1
            continue
        if call in {"fsync", "fdatasync", "msync"}:
            if "<unfinished" not in line:
                dirty_since, syncs = None, syncs + 1
            continue
        if call == "openat":
            result = line.rsplit("=", 1)[1].strip().split()[0]
            if result.isdigit():
                fd = int(result)
                if "O_DSYNC" in args or "O_SYNC" in args:
                    sync_fds.add(fd)
                else:
                    sync_fds.discard(fd)
            continue
        if call in {"write", "pwrite64", "pwritev", "pwritev2", "writev"}:
            fd = int(args.split(",", 1)[0])
            if fd > 2 and fd not in sync_fds:  # not stdout/stderr (the node logs there)
                dirty_since = dirty_since or line
            continue
        if call == "sendto" and '"KVS\\1\\0' in args:
            # One send may carry many 9-byte acknowledgements (a pipelined batch).
            acks += int(line.rsplit("=", 1)[1]) // 9
            assert dirty_since is None, (
                f"acknowledged before a sync covered the write:\n{dirty_since}\n{line}"
            )
    return acks, syncs


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("backend", BACKENDS)
def test_trace_shows_a_sync_between_each_write_and_its_acknowledgement(
    backend: str, tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    trace_file = tmp_path / "trace.txt"
    wrapper = [
        "strace", "-f", "-qq", "-s", "16", "-o", str(trace_file),
        "-e", "trace=openat,fsync,fdatasync,msync,write,pwrite64,pwritev,pwritev2,writev,sendto",
    ]  # fmt: skip
    node = node_process_factory(backend=backend, data_dir=tmp_path / "data", wrapper=wrapper)
    with Client(node.address, pool_size=1) as client:
        for i in range(50):
            client.put(b"k%d" % i, b"v%d" % i)
        client.put_many((b"p%d" % i, b"x" * 100) for i in range(500))
    # Stop the traced node itself (strace exits with it); signalling strace would only detach it.
    children = Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGTERM)
    assert node.process.wait(20) == 0
    acks, syncs = _check_trace(trace_file.read_text(errors="replace"))
    assert acks >= 50 + 500
    assert syncs >= 50  # each single write needed its own sync; the pipelined batch shared some
