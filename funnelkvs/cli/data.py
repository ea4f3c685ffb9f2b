"""``funnelkvs data upgrade --backend NAME --path DIR``: convert a data directory to the current format.

Format 1 (releases before replication) stored raw values; format 2 stores versioned envelopes
(:mod:`funnelkvs.versions`), and a node refuses a format-1 directory with a line naming this command.
The upgrade, for the lmdb and sqlite backends (the memory backend keeps no files):

1. takes the writer lock of ``DIR`` (so no node runs on it) and opens it read-only at format 1;
2. writes every key into a new sibling ``DIR.upgrading`` as a ``KIND_VALUE`` envelope of version
   :data:`funnelkvs.versions.ZERO`, so any later write wins over it; syncs it and checks the key count;
3. renames ``DIR`` to ``DIR.format1`` (the backup, left for the operator to delete) and then
   ``DIR.upgrading`` to ``DIR``, syncing the parent directory after each rename.

Crash safety: the original is only renamed, never written, and the new data is complete and synced
before the first rename. A run that stopped in step 2 leaves ``DIR`` as it was and a partial
``DIR.upgrading``, which the next run removes and rebuilds. A run that stopped between the two renames
leaves no ``DIR`` but ``DIR.format1``: the next run rebuilds ``DIR.upgrading`` from the backup and
renames it to ``DIR``. Either way, running the command again finishes the job.

Exit statuses: 0 upgraded, or already at the current format, or nothing to do (memory); 2 usage
(including a ``--backend`` that is not the one that wrote ``DIR``); 5 failure (missing directory, a
node holding the lock, an I/O error, a backup already in the way).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from funnelkvs.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from funnelkvs.errors import FunnelKVSError, StorageError

#: Suffix of the directory the upgrade builds next to ``DIR``.
WORK_SUFFIX: Final = ".upgrading"
# Sync the new directory every this many keys or bytes: bounds what lmdb keeps for a replay and the
# size of one transaction, without a sync per key.
_BATCH_KEYS: Final = 1024
_BATCH_BYTES: Final = 64 * 1024 * 1024
_PROG: Final = "funnelkvs data"


class UsageError(FunnelKVSError):
    """The command line names the wrong backend for the directory, or one with no upgrade."""


@dataclass(frozen=True, slots=True)
class _Persistent:
    """What the upgrade needs of a backend: its current format, the older ones it converts, and how
    to open a directory (``open(path, read_only, data_format, like)``; ``like`` is the old backend,
    for settings the copy should keep)."""

    current: int
    upgradable_from: tuple[int, ...]
    open: Callable[[Path, bool, int, Any], Any]


def _lmdb() -> _Persistent:
    from funnelkvs.storage import lmdb_backend

    def open_lmdb(path: Path, read_only: bool, data_format: int, like: Any) -> Any:
        return lmdb_backend.LmdbBackend(path, read_only=read_only, data_format=data_format)

    return _Persistent(lmdb_backend.FORMAT_VERSION, tuple(lmdb_backend.UPGRADABLE_FROM), open_lmdb)


def _sqlite() -> _Persistent:
    from funnelkvs.storage import sqlite_backend

    def open_sqlite(path: Path, read_only: bool, data_format: int, like: Any) -> Any:
        # The copy keeps the original's journal mode: the node's configured one, most likely.
        mode = like.journal_mode if like is not None else "wal"
        return sqlite_backend.SqliteBackend(
            path, read_only=read_only, data_format=data_format, journal_mode=mode
        )

    return _Persistent(sqlite_backend.FORMAT_VERSION, tuple(sqlite_backend.UPGRADABLE_FROM), open_sqlite)


_UPGRADERS: Final[dict[str, Callable[[], _Persistent]]] = {"lmdb": _lmdb, "sqlite": _sqlite}


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "data",
        help="maintain a node's data directory (upgrade its format)",
        description="Maintain a node's data directory while the node is stopped.",
    )
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    upgrade = actions.add_parser(
        "upgrade",
        help="convert a data directory written by an earlier release to the current format",
        description="Convert a stopped node's data directory DIR, written by an earlier release (format "
        "1: raw values), to the current format (2: versioned envelopes). Every key is copied into "
        f"DIR{WORK_SUFFIX} with the lowest version, so any later write wins over it; then DIR is renamed "
        "DIR.format1 (a backup: delete it once the node runs well) and the new directory takes its name. "
        "Crash-safe: DIR is never written; a leftover DIR.upgrading from an interrupted run is removed "
        "and redone, and a run interrupted between the two renames is finished from DIR.format1, so "
        "running the command again always completes the upgrade. Exit status 0 when done or already "
        "at the current format, 2 for usage errors, 5 for failures.",
    )
    upgrade.add_argument(
        "--backend", required=True, metavar="NAME", help="the backend that wrote DIR (lmdb, sqlite)"
    )
    upgrade.add_argument("--path", required=True, metavar="DIR", help="the data directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        message = upgrade_data_dir(args.backend, Path(args.path), say=_say)
    except UsageError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FunnelKVSError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{_PROG}:{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(message)
    return EXIT_OK


def _say(line: str) -> None:
    print(line, flush=True)


def upgrade_data_dir(backend: str, path: Path, *, say: Callable[[str], None] = lambda line: None) -> str:
    """Upgrade the data directory ``path`` of ``backend`` to the backend's current format (see the
    module docstring); a sentence saying what was done. ``say`` gets progress lines.

    :raises UsageError: ``backend`` has no upgrade, or did not write ``path``.
    :raises StorageError: the directory is missing, locked, unreadable, of an unknown format, or the
        copy failed (``StorageFormatError`` for the format cases); ``OSError`` from a rename or removal.
    """
    from funnelkvs.storage.datadir import claim, read_format

    if backend == "memory":
        return "the memory backend keeps no data directory: nothing to upgrade"
    if backend not in _UPGRADERS:
        known = ", ".join(sorted(_UPGRADERS))
        raise UsageError(f"backend {backend!r} has no data directory upgrade (known: {known})")
    spec = _UPGRADERS[backend]()
    # Through a symbolic link, the directory it names is upgraded: the link keeps pointing at the data.
    path = Path(os.path.realpath(path))
    work = path.with_name(path.name + WORK_SUFFIX)

    found = read_format(path) if path.is_dir() else None
    if path.exists() and not path.is_dir():
        raise StorageError(f"{path} is not a directory")
    if path.is_dir() and found is None:
        raise StorageError(f"{path} has no FUNNELKVS_FORMAT marker: it is not a FunnelKVS data directory")
    if found is not None:
        if found.backend != backend:
            raise UsageError(
                f"{path} was written by the {found.backend!r} backend; use --backend {found.backend}"
            )
        if found.format == spec.current:
            return f"{path} is already at format {spec.current}"
        _check_upgradable(path, found.format, spec)
        source, backup = path, _backup_of(path, found.format)
        if backup.exists():
            raise StorageError(
                f"{backup} already exists (the backup of an earlier upgrade?); move it away first"
            )
    else:
        resumed = _interrupted_backup(path, backend, spec)
        if resumed is None:
            raise StorageError(f"data directory {path} does not exist")
        source, backup = resumed, None
        say(f"resuming an interrupted upgrade: {path} is missing, rebuilding it from {source}")
        found = read_format(source)
        assert found is not None  # _interrupted_backup checked it

    # The writer lock: no node may run on the directory while it is copied and renamed. Held through
    # the renames (the lock is on the open file, which moves with its directory).
    lock = claim(source, backend, found.format)
    try:
        if work.exists() or work.is_symlink():
            say(f"removing {work}, left by an interrupted upgrade")
            _remove(work)
        count = _copy(source, work, found.format, spec)
        _sync_directory(work)
        _sync_directory(path.parent)
        if backup is not None:
            os.rename(path, backup)
            _sync_directory(path.parent)
        os.rename(work, path)
        _sync_directory(path.parent)
    finally:
        lock.release()
    kept = backup if backup is not None else source
    return (
        f"upgraded {path} from format {found.format} to {spec.current}: {count} keys; "
        f"the format-{found.format} data is kept in {kept} (delete it once the node runs well)"
    )


def _backup_of(path: Path, old_format: int) -> Path:
    return path.with_name(f"{path.name}.format{old_format}")


def _check_upgradable(path: Path, data_format: int, spec: _Persistent) -> None:
    from funnelkvs.errors import StorageFormatError

    if data_format > spec.current:
        raise StorageFormatError(
            f"{path} holds format {data_format}, written by a newer release; this one reads format "
            f"{spec.current} and cannot downgrade"
        )
    if data_format not in spec.upgradable_from:
        raise StorageFormatError(f"{path} holds format {data_format}, which this release cannot upgrade")


def _interrupted_backup(path: Path, backend: str, spec: _Persistent) -> Path | None:
    """The backup an upgrade interrupted between its two renames left (``DIR`` missing), or None."""
    from funnelkvs.storage.datadir import read_format

    for old_format in spec.upgradable_from:
        backup = _backup_of(path, old_format)
        if backup.is_dir():
            found = read_format(backup)
            if found is not None and found.backend == backend and found.format == old_format:
                return backup
    return None


def _copy(source: Path, work: Path, data_format: int, spec: _Persistent) -> int:
    """Every key of ``source`` into a new ``work`` directory as a version-ZERO envelope; the key count."""
    from funnelkvs.keyspace import KeyRange
    from funnelkvs.versions import ZERO, pack_value

    old = spec.open(source, True, data_format, None)
    try:
        new = spec.open(work, False, spec.current, old)
        try:
            copied = pending_keys = pending_bytes = 0
            for key, value in old.scan(KeyRange.whole_ring()):
                new.put(key, pack_value(ZERO, value))
                copied += 1
                pending_keys += 1
                pending_bytes += len(value)
                if pending_keys >= _BATCH_KEYS or pending_bytes >= _BATCH_BYTES:
                    new.sync()
                    pending_keys = pending_bytes = 0
            new.sync()
            expected, stored = old.count(), new.count()
            if not copied == expected == stored:
                raise StorageError(
                    f"copying {source} to {work}: {expected} keys to copy, {copied} read, {stored} stored"
                )
        finally:
            new.close()
    finally:
        old.close()
    return copied


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _sync_directory(path: Path) -> None:
    """fsync a directory: makes the names created or renamed in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
