"""Real node processes for tests: start ``funnelkvs node`` on 127.0.0.1 with an ephemeral port, wait
until it listens, and always stop it (a context manager; SIGTERM, then SIGKILL after a bound).

Usage::

    with NodeProcess.start(tmp_path, backend="lmdb") as node:
        Client(node.address).put("k", "v")
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

_LISTENING = re.compile(rb"listening on ([0-9.]+):(\d+)")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def closed_port() -> int:
    """A loopback port that nothing listens on (for "node unreachable" tests)."""
    probe = socket.create_server(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def funnelkvs_command() -> list[str]:
    """How to run the ``funnelkvs`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("funnelkvs")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "funnelkvs.cli"]


class NodeProcess:
    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, host: str, port: int) -> None:
        self.process = process
        self.log_path = log_path
        self.host = host
        self.port = port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        config: dict[str, Any] | None = None,
        args: list[str] | None = None,
        port: int = 0,
        backend: str | None = None,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        name: str = "node",
        wrapper: list[str] | None = None,
    ) -> NodeProcess:
        """Start a node and wait until it listens. ``config`` is written to a YAML file in ``workdir``;
        ``wrapper`` prefixes the command (e.g. strace)."""
        workdir.mkdir(parents=True, exist_ok=True)
        command = [*(wrapper or []), *funnelkvs_command(), "node", "--host", "127.0.0.1", "--port", str(port)]
        if config is not None:
            config_path = workdir / f"{name}.yaml"
            config_path.write_text(yaml.safe_dump(config))
            command += ["--config", str(config_path)]
        if backend:
            command += ["--backend", backend]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        command += args or []
        log_path = workdir / f"{name}.log"
        process_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log_path, "wb") as log_file:
            # A session of its own, so that stopping signals the whole process group: with a wrapper
            # (strace) signalling only the wrapper would leave the node itself running.
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=process_env,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            match = _LISTENING.search(log_path.read_bytes())
            if match:
                return cls(process, log_path, match.group(1).decode(), int(match.group(2)))
            if process.poll() is not None:
                break
            time.sleep(0.02)
        output = log_path.read_text(errors="replace")
        _terminate(process)
        raise RuntimeError(f"node did not start (exit {process.returncode}):\n{output}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Stop the node (SIGTERM by default) and return its exit status."""
        return _terminate(self.process, sig, timeout)

    def kill(self) -> int:
        return _terminate(self.process, signal.SIGKILL)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _terminate(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT
) -> int:
    """Signal the node's process group, wait, and SIGKILL the group if it outlives ``timeout``."""
    if process.poll() is None:
        _signal_group(process, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout)
    # Whatever else is left in the group (a wrapped node whose wrapper exited first) goes too.
    _signal_group(process, signal.SIGKILL)
    return process.returncode


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
