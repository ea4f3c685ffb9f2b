"""A node's data directory: which backend and format wrote it, and which process writes it now.

A persistent backend calls :func:`claim` before it opens anything. The first claim of an empty (or
missing) directory writes ``FUNNELKVS_FORMAT``, a small JSON marker ``{"backend": "lmdb", "format": 2}``;
every later claim compares it with the opener's own name and format version and refuses a mismatch with
:class:`~funnelkvs.errors.StorageFormatError`, so that the sqlite backend never reads an LMDB file as
garbage (or the other way round). A directory that is not empty but has no marker is refused too: it
holds something FunnelKVS did not write.

The format number says how the backend's files are to be read, values included: format 1 (releases
before replication) stored raw values, format 2 stores every value as a versioned envelope
(:mod:`funnelkvs.versions`). A backend that can convert an older format says so (``upgradable_from``)
and the refusal then names the command that converts it, ``funnelkvs data upgrade`` (see
:mod:`funnelkvs.cli.data`).

A writer also takes an exclusive ``flock`` on ``FUNNELKVS_LOCK``, held until :meth:`DataDir.release`,
so two nodes pointed at one directory fail fast instead of interleaving their writes. The kernel drops
the lock when the process dies, SIGKILL included, so a restart after a crash is never locked out.
Read-only openers (concurrent readers) take no lock.

Only the node's user may read a data directory: it holds every value in clear. A writer's claim adds
``077`` to the process umask and leaves it there, so a new directory is created ``0700`` and every file
in it ``0600``, whatever the umask the node was started with: the marker and lock here, and the files
the backend creates itself after the claim returns (LMDB's ``data.mdb`` and ``lock.mdb``, SQLite's
database, ``-wal`` and ``-shm``, a journal created mid-run). The umask is not restored because the
backend creates files for as long as it runs; besides ``FUNNELKVS_PEERS``
(:mod:`funnelkvs.replication.rejoin`), a node process creates no other files. An existing
directory keeps the mode it has (an operator may have chosen it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from funnelkvs.errors import StorageError, StorageFormatError

MARKER_NAME: Final = "FUNNELKVS_FORMAT"
LOCK_NAME: Final = "FUNNELKVS_LOCK"
# A marker is a few dozen bytes; anything much larger is not ours and is not worth parsing.
_MAX_MARKER_BYTES: Final = 4096
_MARKER_TEMPORARY: Final = f".{MARKER_NAME}.tmp"
# Not signs of foreign data: a fresh ext4 mount point's lost+found, our lock, a marker write cut short.
_IGNORED_ENTRIES: Final = frozenset({"lost+found", LOCK_NAME, _MARKER_TEMPORARY})


@dataclass(frozen=True, slots=True)
class DataFormat:
    """What the marker records."""

    backend: str
    format: int


class DataDir:
    """A claimed data directory. Writers hold its lock until :meth:`release` (idempotent)."""

    __slots__ = ("_lock_fd", "format", "path")

    def __init__(self, path: Path, data_format: DataFormat, lock_fd: int | None) -> None:
        self.path = path
        self.format = data_format
        self._lock_fd = lock_fd

    def release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def __repr__(self) -> str:
        return f"DataDir({str(self.path)!r}, {self.format.backend!r}, format {self.format.format})"


def claim(
    path: Path,
    backend_name: str,
    format_version: int,
    *,
    read_only: bool = False,
    upgradable_from: Collection[int] = (),
) -> DataDir:
    """Check (or, on first use, record) that ``path`` belongs to ``backend_name`` at ``format_version``.

    A missing directory is created (not when ``read_only``). Writers get the directory's lock.
    ``upgradable_from``: the older formats ``funnelkvs data upgrade`` converts for this backend; the
    refusal of such a directory names that command.

    :raises StorageFormatError: the directory was written by another backend or format, holds data
        with no marker, or its marker is unreadable.
    :raises StorageError: the directory cannot be created or read, or another process holds its lock.
    """
    path = Path(path)
    wanted = DataFormat(backend_name, format_version)
    try:
        if not read_only:
            _keep_private()
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif not path.is_dir():
            raise StorageFormatError(f"data directory {path} does not exist")
        if not path.is_dir():
            raise StorageError(f"data directory {path} is not a directory")
        lock_fd = None if read_only else _lock(path)
        try:
            found = _read_marker(path)
            if found is None:
                if read_only:
                    raise StorageFormatError(
                        f"data directory {path} has no {MARKER_NAME} marker: "
                        "it is not a FunnelKVS data directory"
                    )
                _refuse_foreign_files(path)
                _write_marker(path, wanted)
            elif found != wanted:
                raise StorageFormatError(_mismatch(path, found, wanted, upgradable_from))
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
    except FileExistsError as exc:
        raise StorageError(f"data directory {path} is not a directory") from exc
    except OSError as exc:
        raise StorageError(f"data directory {path}: {exc.strerror or exc}") from exc
    return DataDir(path, wanted, lock_fd)


def read_format(path: Path) -> DataFormat | None:
    """The marker of ``path`` (None when it has none), without claiming anything."""
    return _read_marker(Path(path))


def recorded_backend(path: Path) -> str:
    """The backend the marker of ``path`` names: what a node told a directory but no backend opens.

    :raises StorageFormatError: ``path`` is missing, not a directory, or has no marker (so nothing
        says which backend to use), or its marker is unreadable.
    :raises StorageError: the marker cannot be read.
    """
    path = Path(path)
    if not path.is_dir():
        missing = "is not a directory" if path.exists() else "does not exist"
        raise StorageFormatError(f"data directory {path} {missing}, so no marker says which backend wrote it")
    found = _read_marker(path)
    if found is None:
        raise StorageFormatError(
            f"data directory {path} has no {MARKER_NAME} marker saying which backend wrote it"
        )
    return found.backend


def _keep_private() -> None:
    """Add 077 to the process umask (for good: see the module docstring)."""
    previous = os.umask(0o077)
    os.umask(previous | 0o077)


def upgrade_command(backend_name: str, path: Path) -> str:
    """The shell command that converts ``path`` to ``backend_name``'s current format."""
    return f"funnelkvs data upgrade --backend {shlex.quote(backend_name)} --path {shlex.quote(str(path))}"


def _mismatch(path: Path, found: DataFormat, wanted: DataFormat, upgradable_from: Collection[int]) -> str:
    if found.backend != wanted.backend:
        return (
            f"data directory {path} was created by the {found.backend!r} backend (format {found.format}); "
            f"this node is configured for {wanted.backend!r}"
        )
    if found.format in upgradable_from:
        return (
            f"data directory {path} holds {found.backend} format {found.format}, written by an earlier "
            f"release; this release reads format {wanted.format}: upgrade it with "
            f"`{upgrade_command(found.backend, path)}`"
        )
    newer = ", written by a newer release" if found.format > wanted.format else ""
    return (
        f"data directory {path} holds {found.backend} format {found.format}{newer}; "
        f"this version of the {wanted.backend!r} backend reads format {wanted.format} only"
    )


def _lock(path: Path) -> int:
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise StorageError(f"data directory {path} is in use by another process{holder}") from None
    except BaseException:
        os.close(fd)
        raise
    # The pid is only for the message above; the flock is what excludes.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _lock_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
        return f" (pid {pid})"
    return ""


def _read_marker(path: Path) -> DataFormat | None:
    marker = path / MARKER_NAME
    try:
        with marker.open("rb") as file:
            raw = file.read(_MAX_MARKER_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(
            f"data directory {path}: cannot read {MARKER_NAME}: {exc.strerror or exc}"
        ) from exc
    problem = f"data directory {path} has an unreadable {MARKER_NAME} marker"
    if len(raw) > _MAX_MARKER_BYTES:
        raise StorageFormatError(f"{problem} (larger than {_MAX_MARKER_BYTES} bytes)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageFormatError(f"{problem} (not JSON: {exc})") from exc
    if not isinstance(data, dict):
        raise StorageFormatError(f"{problem} (expected a JSON object)")
    backend, version = data.get("backend"), data.get("format")
    if not isinstance(backend, str) or not backend:
        raise StorageFormatError(f'{problem} ("backend" must be a non-empty string)')
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise StorageFormatError(f'{problem} ("format" must be a non-negative integer)')
    return DataFormat(backend, version)


def _refuse_foreign_files(path: Path) -> None:
    foreign = sorted(entry.name for entry in path.iterdir() if entry.name not in _IGNORED_ENTRIES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise StorageFormatError(
            f"data directory {path} is not empty ({shown}) and has no {MARKER_NAME} marker; "
            "use a new or empty directory"
        )


def _write_marker(path: Path, data_format: DataFormat) -> None:
    text = json.dumps({"backend": data_format.backend, "format": data_format.format}) + "\n"
    temporary = path / _MARKER_TEMPORARY
    # Written aside, synced, then renamed: a crash leaves either no marker or a whole one.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path / MARKER_NAME)
    directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
