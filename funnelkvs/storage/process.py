"""Which process this is, without a system call per check.

Persistent backends must not use what their parent process opened (LMDB forbids an environment across
fork; sqlitedict's thread does not survive one). They note :func:`current` when they open and compare
it on use. ``os.getpid()`` is a system call on current glibc, so the pid is kept here and refreshed in
a forked child.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _note_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_note_fork)


def current() -> int:
    """The pid of this process (up to date in a forked child)."""
    return _pid
