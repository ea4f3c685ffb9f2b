"""The concurrent reader: a child interpreter holding ``open_reader(path)`` while the writer runs, asked
over JSON lines what it sees (never pickle), with every wait bounded."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from funnelkvs.errors import StorageError
from funnelkvs.keyspace import KeyRange
from funnelkvs.testing.conformance.expected import expected_scan, scan_fingerprint

if TYPE_CHECKING:
    from funnelkvs.testing.conformance.suite import BackendConformance

# How long the concurrent-reader child may take for one answer before it is killed.
READER_TIMEOUT = 30.0


def _summary(model: dict[bytes, bytes], probes: list[bytes]) -> dict[str, Any]:
    """What a reader reports about a store holding ``model``."""
    return {
        "count": len(model),
        "size": sum(map(len, model.values())),
        "scan": scan_fingerprint(expected_scan(model, KeyRange.whole_ring())),
        "probes": [None if model.get(key) is None else model[key].hex() for key in probes],
    }


# The reader runs in a fresh interpreter, not a fork: a forked child inherits the writer's open
# environments and threads (py-lmdb, for one, then refuses to open the same files again "in this process").
_READER_MAIN = """
import importlib, sys
from funnelkvs.testing.conformance.reader import _serve_reader
module_name, class_name, path, probes = sys.argv[1:5]
suite = importlib.import_module(module_name)
for part in class_name.split("."):
    suite = getattr(suite, part)
_serve_reader(suite(), path, probes)
"""


def _serve_reader(suite: BackendConformance, path: str, probes_json: str) -> None:
    """The reader child's loop: a ``read`` line on stdin answers a summary line on stdout; ``finish``
    tries a write, answers whether it was refused, and exits. JSON lines only, never pickle."""
    probes = [bytes.fromhex(key) for key in json.loads(probes_json)]
    answers = os.fdopen(os.dup(1), "w")
    try:
        reader = suite.open_reader(Path(path))
    except BaseException as exc:
        print(json.dumps({"error": f"open_reader failed: {exc!r}"}), file=answers, flush=True)
        raise SystemExit(1) from exc
    try:
        for line in sys.stdin:
            try:
                if line.strip() == "read":
                    answer: dict[str, Any] = {
                        "count": reader.count(),
                        "size": reader.size(),
                        "scan": scan_fingerprint(reader.scan(KeyRange.whole_ring())),
                        "probes": [None if (v := reader.get(key)) is None else v.hex() for key in probes],
                    }
                elif line.strip() == "finish":
                    try:
                        reader.put(b"written by a reader", b"x")
                    except StorageError:
                        answer = {"writes_refused": True}
                    else:
                        answer = {"writes_refused": False}
                else:
                    answer = {"error": f"unknown command {line!r}"}
            except Exception as exc:
                answer = {"error": repr(exc)}
            print(json.dumps(answer), file=answers, flush=True)
            if line.strip() == "finish":
                return
    finally:
        reader.close()


class _ReaderProcess:
    """A child interpreter holding ``suite.open_reader(path)``; each :meth:`read` makes it report what
    it sees. The suite's class must be importable by module and qualified name (pytest's default import
    mode does that). Every wait is bounded; the child is always reaped."""

    def __init__(self, suite: BackendConformance, path: Path, probes: list[bytes]) -> None:
        self.argv = [
            sys.executable,
            "-c",
            _READER_MAIN,
            type(suite).__module__,
            type(suite).__qualname__,
            str(path),
            json.dumps([key.hex() for key in probes]),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._errors = tempfile.TemporaryFile()

    def __enter__(self) -> _ReaderProcess:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, env=environment
        )
        return self

    def _ask(self, command: bytes) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + b"\n")
        self.process.stdin.flush()
        stdout = self.process.stdout.fileno()
        deadline = time.monotonic() + READER_TIMEOUT
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the reader process gave no answer in {READER_TIMEOUT:g}s")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                chunk = os.read(stdout, 65536)
                if not chunk:
                    raise AssertionError(f"the reader process exited without answering: {self._stderr()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"the reader process failed: {answer['error']}\n{self._stderr()}")
        return answer

    def _stderr(self) -> str:
        self._errors.seek(0)
        return self._errors.read()[-4000:].decode(errors="replace")

    def read(self) -> dict[str, Any]:
        return self._ask(b"read")

    def finish(self) -> bool:
        return bool(self._ask(b"finish")["writes_refused"])

    def __exit__(self, *exc: object) -> None:
        process = self.process
        try:
            if process is None:
                return
            assert process.stdin is not None and process.stdout is not None
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                status = process.wait(READER_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError("the reader process did not exit") from None
            finally:
                process.stdout.close()
            if exc[0] is None and status != 0:
                raise AssertionError(f"the reader process exited with status {status}: {self._stderr()}")
        finally:
            self._errors.close()
