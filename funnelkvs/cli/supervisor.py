"""Child node processes for ``funnelkvs cluster start``: started, watched and always stopped.

Each child is ``funnelkvs node`` run by this interpreter, in a session of its own (a Ctrl-C at the
terminal reaches the supervisor, which then stops the children in order). Its output (the node's log)
is read by a thread, relayed to standard error with the child's name in front, and searched for the
line the node logs once it listens. On Linux a child is also told to receive SIGTERM should the
supervisor die without stopping it (``PR_SET_PDEATHSIG``, set before the node program starts), so a
killed supervisor leaves no nodes behind.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Final

#: What a node logs once it listens (funnelkvs/node.py): its bound host and port.
LISTENING: Final = re.compile(r"listening on (\S+):(\d+) \(backend ")
#: Seconds a stopped child gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT: Final = 10.0
#: Held while a whole line is written to standard error (relayed log lines and the supervisor's own).
OUTPUT_LOCK: Final = threading.Lock()
#: Lines of a child's output kept to explain why it exited.
TAIL_LINES: Final = 20

# Run as ``python -S -c`` with (supervisor pid, program, args...): asks the kernel for SIGTERM when the
# supervisor dies, checks it did not die already, then becomes the program (the request survives exec).
_WITH_PARENT_DEATH_SIGNAL: Final = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def node_command(args: Sequence[str]) -> list[str]:
    """The command line of ``funnelkvs node ARGS`` run by this interpreter."""
    command = [sys.executable, "-m", "funnelkvs.cli", "node", *args]
    if sys.platform.startswith("linux"):
        return [sys.executable, "-S", "-c", _WITH_PARENT_DEATH_SIGNAL, str(os.getpid()), *command]
    return command


class Child:
    """One node process: its output relayed to ``relay`` as ``NAME | line``."""

    def __init__(self, name: str, args: Sequence[str], relay: IO[str]) -> None:
        self.name = name
        #: ``host:port`` the node listens on, once it has said so.
        self.address: str | None = None
        self.listening = threading.Event()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        #: Whether its exit has been reported (or was expected: the supervisor stopped it).
        self.accounted = False
        #: It was killed for not listening in time.
        self.timed_out = False
        self._relay = relay
        self.process = subprocess.Popen(
            node_command(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"relay-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.tail.append(line)
            if self.address is None and (match := LISTENING.search(line)):
                host, port = match.group(1), match.group(2)
                self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                self.listening.set()
            with OUTPUT_LOCK:
                try:
                    self._relay.write(f"{self.name} | {line}\n")
                    self._relay.flush()
                except (OSError, ValueError):
                    pass  # nowhere to relay to: keep draining the pipe so the node never blocks
        stream.close()

    def exit_status(self) -> int | None:
        return self.process.poll()

    def describe_exit(self) -> str:
        """``exited with status 1`` / ``was killed by SIGKILL``, for a child that has exited."""
        status = self.process.returncode
        if status is not None and status < 0:
            try:
                return f"was killed by {signal.Signals(-status).name}"
            except ValueError:
                return f"was killed by signal {-status}"
        return f"exited with status {status}"

    def last_words(self) -> str:
        """The last line of its output that says something (for a one-line report)."""
        self._reader.join(2.0)  # the pipe's last lines, once the process is gone
        for line in reversed(self.tail):
            if line.strip():
                return line.strip()
        return "no output"

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass


def wait_listening(children: Sequence[Child], stop: threading.Event, timeout: float) -> Child | None:
    """Wait until every child listens. Returns the first child that exited instead (or None when all
    listen or ``stop`` was set); a child still silent after ``timeout`` is killed and returned."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        waiting = [child for child in children if not child.listening.is_set()]
        if not waiting:
            return None
        for child in waiting:
            if child.exit_status() is not None:
                child.last_words()  # lets the reader finish: the line may be in the pipe still
                if not child.listening.is_set():
                    return child
        if time.monotonic() > deadline:
            for child in waiting:
                child.timed_out = True
                child.signal(signal.SIGKILL)
                child.process.wait()
            return waiting[0]
        stop.wait(0.05)
    return None


def stop_all(children: Sequence[Child], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every child still running, wait up to ``timeout`` for all, SIGKILL what is left."""
    for child in children:
        child.accounted = True
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.signal(signal.SIGKILL)
            child.process.wait()
    for child in children:
        child.last_words()  # joins the reader: everything the child wrote has been relayed
