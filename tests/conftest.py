"""Shared fixtures: an in-process node on a thread (for white-box tests that need to inject faults) and
a factory of real node processes (``funnelkvs.testing.cluster``), all stopped at teardown."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from funnelkvs.node import Node
from funnelkvs.settings import Settings
from funnelkvs.storage.backend import StorageBackend
from funnelkvs.storage.memory import MemoryBackend
from funnelkvs.testing.cluster import NodeProcess

# Tests never pick up plugins that happen to be installed in the environment (datasette's rule);
# the tests that want the prometheus plugin ask for it.
os.environ.setdefault("FUNNELKVS_PLUGINS_AUTOLOAD", "0")


class ThreadNode:
    """A node running on a background thread of the test process."""

    def __init__(self, node: Node, thread: threading.Thread) -> None:
        self.node = node
        self.thread = thread

    @property
    def address(self) -> tuple[str, int]:
        return (self.node.host, self.node.port)

    def stop(self) -> None:
        self.node.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "node thread did not stop"


def start_thread_node(backend: StorageBackend | None = None, **limits: Any) -> ThreadNode:
    settings = Settings()
    settings.node.port = 0
    for name, value in limits.items():
        setattr(settings.limits, name, value)
    node = Node(settings, backend or MemoryBackend())
    node.start()
    thread = threading.Thread(
        target=node.serve_forever, kwargs={"install_signal_handlers": False}, daemon=True
    )
    thread.start()
    return ThreadNode(node, thread)


@pytest.fixture
def thread_node_factory() -> Iterator[Callable[..., ThreadNode]]:
    started: list[ThreadNode] = []

    def factory(backend: StorageBackend | None = None, **limits: Any) -> ThreadNode:
        tn = start_thread_node(backend, **limits)
        started.append(tn)
        return tn

    yield factory
    for tn in started:
        if tn.thread.is_alive():
            tn.stop()


@pytest.fixture
def thread_node(thread_node_factory: Callable[..., ThreadNode]) -> ThreadNode:
    return thread_node_factory()


@pytest.fixture
def node_process_factory(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Start real ``funnelkvs node`` processes; every one is stopped at teardown, also on failure."""
    started: list[NodeProcess] = []

    def factory(**kwargs: Any) -> NodeProcess:
        kwargs.setdefault("name", f"node{len(started)}")
        node = NodeProcess.start(tmp_path, **kwargs)
        started.append(node)
        return node

    yield factory
    for node in started:
        node.stop()


@pytest.fixture
def node_process(node_process_factory: Callable[..., NodeProcess]) -> NodeProcess:
    return node_process_factory()
