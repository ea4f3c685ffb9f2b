"""RejoinMemory (the peers a node last knew, kept in its data directory), absence_problem and
rejoin_seeds: funnelkvs/replication/rejoin.py."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from funnelkvs.errors import FunnelKVSError
from funnelkvs.keyspace import ring_digest
from funnelkvs.replication.rejoin import (
    FILE_NAME,
    TEMPORARY_NAME,
    RejoinMemory,
    Remembered,
    absence_problem,
    human_duration,
    may_create_ring,
    rejoin_seeds,
)
from funnelkvs.storage import datadir

DAY = 86400.0


def peer(address: str) -> tuple[str, str]:
    return ring_digest(address.encode()).hex(), address


PEERS = [peer("10.0.0.1:8001"), peer("10.0.0.2:8002"), peer("[::1]:8003"), peer("db-3.example:8004")]


# --- the file ------------------------------------------------------------------------------------------


def test_missing_file_remembers_nothing(tmp_path: Path) -> None:
    assert RejoinMemory(tmp_path).load() == Remembered((), None)


def test_round_trip(tmp_path: Path) -> None:
    memory = RejoinMemory(tmp_path)
    memory.save(PEERS, 1_717_171_717.25)
    loaded = RejoinMemory(tmp_path).load()
    assert loaded.peers == tuple(PEERS)
    assert loaded.last_alive == 1_717_171_717.25
    # A later save replaces the whole content, peers included.
    memory.save(PEERS[:1], 1_717_171_800.0)
    assert memory.load() == Remembered((PEERS[0],), 1_717_171_800.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


def test_file_is_private_and_ids_are_lowercased(tmp_path: Path) -> None:
    node_id, address = PEERS[0]
    RejoinMemory(tmp_path).save([(node_id.upper(), address)], 1.0)
    assert stat.S_IMODE((tmp_path / FILE_NAME).stat().st_mode) & 0o077 == 0
    assert RejoinMemory(tmp_path).load().peers == ((node_id, address),)


def test_a_leftover_temporary_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    # A crash between the temporary file's write and the rename leaves it behind, half-written.
    (tmp_path / TEMPORARY_NAME).write_text('{"format": 1, "last_al')
    assert RejoinMemory(tmp_path).load() == Remembered()
    memory = RejoinMemory(tmp_path)
    memory.save(PEERS, 5.0)
    (tmp_path / TEMPORARY_NAME).write_text("garbage")
    assert memory.load() == Remembered(tuple(PEERS), 5.0)
    memory.save(PEERS[:2], 6.0)
    assert not (tmp_path / TEMPORARY_NAME).exists()
    assert memory.load() == Remembered(tuple(PEERS[:2]), 6.0)


def test_a_truncated_file_is_treated_as_absent_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory = RejoinMemory(tmp_path)
    memory.save(PEERS, 1_000.0)
    path = tmp_path / FILE_NAME
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    os.utime(path, (2_000.0, 2_000.0))
    with caplog.at_level(logging.WARNING, logger="funnelkvs.replication.rejoin"):
        loaded = memory.load()
    # No peers, but the absence check still has a time to go by: when the file was last written.
    assert loaded == Remembered((), 2_000.0)
    assert any(str(path) in record.getMessage() for record in caplog.records)
    assert all(record.levelno == logging.WARNING for record in caplog.records)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        json.dumps({"format": 2, "last_alive": 1.0, "peers": []}).encode(),
        json.dumps({"format": 1, "last_alive": True, "peers": []}).encode(),
        json.dumps({"format": 1, "last_alive": "yesterday", "peers": []}).encode(),
        json.dumps({"format": 1, "last_alive": 1.0, "peers": {}}).encode(),
        json.dumps({"format": 1, "last_alive": 1.0, "peers": [["ab", "10.0.0.1:1"]]}).encode(),
        json.dumps({"format": 1, "last_alive": 1.0, "peers": [{"id": "ab" * 19, "address": "h:1"}]}).encode(),
        json.dumps({"format": 1, "last_alive": 1.0, "peers": [{"id": "zz" * 20, "address": "h:1"}]}).encode(),
        json.dumps({"format": 1, "last_alive": 1.0, "peers": [{"id": "ab" * 20, "address": "h"}]}).encode(),
        json.dumps({"format": 1, "last_alive": 1.0, "peers": [{"id": "ab" * 20, "address": "h:0"}]}).encode(),
        json.dumps({"format": 1, "last_alive": 1.0, "peers": [{"id": "ab" * 20, "address": ":80"}]}).encode(),
        json.dumps({"format": 1, "last_alive": 1.0, "peers": [{"id": "ab" * 20}]}).encode(),
        b'{"format": 1, "last_alive": NaN, "peers": []}',
        b" " * ((1 << 20) + 1),
    ],
)
def test_foreign_content_is_treated_as_absent_with_a_warning(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / FILE_NAME
    path.write_bytes(content)
    os.utime(path, (3_000.0, 3_000.0))
    with caplog.at_level(logging.WARNING, logger="funnelkvs.replication.rejoin"):
        assert RejoinMemory(tmp_path).load() == Remembered((), 3_000.0)
    assert len(caplog.records) == 1 and "not a peers file" in caplog.records[0].getMessage()


def test_an_unreadable_file_is_treated_as_absent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE_NAME).mkdir()  # open() fails with IsADirectoryError, an OSError
    with caplog.at_level(logging.WARNING, logger="funnelkvs.replication.rejoin"):
        loaded = RejoinMemory(tmp_path).load()
    assert loaded.peers == () and loaded.last_alive is not None
    assert "cannot be read" in caplog.text


@pytest.mark.parametrize(
    ("peers", "last_alive"),
    [([("ab" * 19, "10.0.0.1:1")], 1.0), ([peer("no-port")], 1.0), (PEERS, float("inf"))],
)
def test_save_refuses_bad_content_and_keeps_the_old_file(
    tmp_path: Path, peers: list[tuple[str, str]], last_alive: float
) -> None:
    memory = RejoinMemory(tmp_path)
    memory.save(PEERS[:1], 7.0)
    with pytest.raises(ValueError):
        memory.save(peers, last_alive)
    assert memory.load() == Remembered((PEERS[0],), 7.0)


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = RejoinMemory(tmp_path)
    memory.save(PEERS, 8.0)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        memory.save(PEERS[:1], 9.0)
    monkeypatch.undo()
    assert memory.load() == Remembered(tuple(PEERS), 8.0)


def test_saves_from_several_threads_leave_one_whole_file(tmp_path: Path) -> None:
    memory = RejoinMemory(tmp_path)
    errors: list[BaseException] = []

    def save_many(index: int) -> None:
        try:
            for round_ in range(20):
                memory.save(PEERS[: 1 + (index + round_) % len(PEERS)], float(index * 100 + round_))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=save_many, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    loaded = memory.load()
    assert loaded.last_alive is not None and loaded.last_alive % 100 == 19  # one thread's last save
    assert loaded.peers == tuple(PEERS[: len(loaded.peers)])


def test_a_claimed_data_directory_with_the_file_is_claimed_again(tmp_path: Path) -> None:
    # The node saves the file after its backend claimed the directory: the marker is there, so the
    # check for foreign files (made only on a directory without a marker) never sees it.
    claimed = datadir.claim(tmp_path, "lmdb", 2)
    RejoinMemory(tmp_path).save(PEERS, 1.0)
    claimed.release()
    again = datadir.claim(tmp_path, "lmdb", 2)
    again.release()
    assert RejoinMemory(tmp_path).load().peers == tuple(PEERS)


# --- how long a node may be away -------------------------------------------------------------------------


def test_a_node_that_never_ran_or_was_away_within_the_grace_may_rejoin() -> None:
    now = 1_800_000_000.0
    assert absence_problem(None, now, DAY) is None
    assert absence_problem(now - 10, now, DAY) is None
    assert absence_problem(now - DAY, now, DAY) is None  # exactly the grace: still allowed
    assert absence_problem(now + 3600, now, DAY) is None  # the clock was stepped back


def test_a_node_away_longer_than_the_grace_is_refused_with_one_line() -> None:
    now = 1_800_000_000.0
    assert absence_problem(now - DAY - 1, now, DAY) is not None
    problem = absence_problem(now - 3 * DAY, now, DAY, data_dir=Path("./data"))
    assert problem is not None and "\n" not in problem
    assert problem.startswith("data directory data was last used 3 days ago")
    assert "longer than replication.tombstone_grace (1 day)" in problem
    assert "bring deleted keys back" in problem and "empty data directory" in problem
    hours = absence_problem(now - 7200, now, 3600.0)
    assert hours is not None and "2 hours ago" in hours and "(1 hour)" in hours
    assert absence_problem(now - 7200, now, 3600.0, data_dir="") == hours
    assert hours.startswith("the data directory was last used")


@pytest.mark.parametrize("grace", [0.0, -1.0, float("nan"), float("inf")])
def test_absence_problem_refuses_a_meaningless_grace(grace: float) -> None:
    with pytest.raises(ValueError):
        absence_problem(1.0, 2.0, grace)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "0 seconds"),
        (1.0, "1 second"),
        (59.0, "59 seconds"),
        (60.0, "1 minute"),
        (90.0, "1.5 minutes"),
        (5400.0, "1.5 hours"),
        (DAY, "1 day"),
        (3 * DAY + 1, "3 days"),
        (10.5 * DAY, "10.5 days"),
        (-5.0, "0 seconds"),
    ],
)
def test_human_duration(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


# --- where to join through -------------------------------------------------------------------------------


def fake_resolver(names: dict[str, str]) -> Callable[[str], tuple[str, int]]:
    """Resolves the hosts in ``names``, numeric hosts to themselves, and fails for the rest."""

    def resolve(address: str) -> tuple[str, int]:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if host in names:
            return names[host], int(port)
        if host[:1].isdigit() or ":" in host:
            return host, int(port)
        raise FunnelKVSError(f"seed {address}: cannot resolve {host!r}")

    return resolve


def test_configured_seeds_come_first_then_remembered_peers_without_this_node() -> None:
    remembered = Remembered(
        (peer("10.0.0.5:8001"), peer("10.0.0.9:8009"), peer("10.0.0.6:8001"), peer("[::1]:8003")), 1.0
    )
    order = rejoin_seeds([("10.0.0.7", 8001)], remembered, "10.0.0.9:8009")
    assert order == [("10.0.0.7", 8001), ("10.0.0.5", 8001), ("10.0.0.6", 8001), ("::1", 8003)]


def test_without_configured_seeds_the_remembered_peers_are_the_seeds() -> None:
    remembered = Remembered((peer("127.0.0.1:8001"), peer("127.0.0.1:8002")), 1.0)
    assert rejoin_seeds([], remembered, "127.0.0.1:8002") == [("127.0.0.1", 8001)]
    assert rejoin_seeds([], Remembered(), "127.0.0.1:8002") == []
    # A lone node remembers only itself: nothing to join through, it starts a ring as before.
    assert rejoin_seeds([], Remembered((peer("127.0.0.1:8002"),), 1.0), "127.0.0.1:8002") == []


def test_duplicates_are_tried_once_whatever_name_they_were_given() -> None:
    resolve = fake_resolver({"db-1.example": "10.0.0.1", "me.example": "10.0.0.3"})
    remembered = Remembered(
        (
            peer("db-1.example:8001"),  # the configured seed, by name
            peer("10.0.0.2:8001"),
            peer("10.0.0.2:8001"),
            peer("10.0.0.3:8001"),  # this node, by number
        ),
        1.0,
    )
    order = rejoin_seeds(
        [("10.0.0.1", 8001), ("10.0.0.4", 8001), ("10.0.0.1", 8001)],
        remembered,
        "me.example:8001",
        resolve=resolve,
    )
    assert order == [("10.0.0.1", 8001), ("10.0.0.4", 8001), ("10.0.0.2", 8001)]


def test_a_remembered_peer_that_no_longer_resolves_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    resolve = fake_resolver({"db-2.example": "10.0.0.2"})
    remembered = Remembered((peer("gone.example:8001"), peer("db-2.example:8002")), 1.0)
    with caplog.at_level(logging.WARNING, logger="funnelkvs.replication.rejoin"):
        order = rejoin_seeds([], remembered, "unresolvable-me.example:8000", resolve=resolve)
    assert order == [("10.0.0.2", 8002)]
    assert "gone.example:8001" in caplog.text


def test_the_default_resolver_is_the_rings_seed_resolver() -> None:
    remembered = Remembered((peer("127.0.0.1:9001"), peer("[::1]:9002")), 1.0)
    assert rejoin_seeds([], remembered, "127.0.0.1:9000") == [("127.0.0.1", 9001), ("::1", 9002)]


# --- a whole ring restarted at once ----------------------------------------------------------------------


def test_only_the_lowest_waiting_node_without_seeds_creates_the_ring() -> None:
    low, mid, high = sorted(peer(f"10.0.0.{i}:8001")[0] for i in range(1, 4))
    # Nobody answered: the node does not wait for the dead, it starts the ring again.
    assert may_create_ring(mid, False, [])
    # Every node answered as new: the lowest id creates, the others wait for it.
    assert may_create_ring(low, False, [mid, high])
    assert not may_create_ring(mid, False, [low, high])
    assert not may_create_ring(high, False, [low])
    # Configured seeds: keep trying them, whatever the ids.
    assert not may_create_ring(low, True, [])
    assert not may_create_ring(low, True, [mid, high])
    # Ids compare as numbers, whatever their case.
    assert may_create_ring("0" * 39 + "f", False, ["0" * 38 + "10"])
    assert not may_create_ring("F" + "0" * 39, False, ["e" + "0" * 39])
