"""Longer and larger runs, only under `make soak` (CI runs `make test`, which leaves them out)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from funnelkvs import Client
from funnelkvs.testing.cluster import NodeProcess

pytestmark = pytest.mark.soak


@pytest.mark.parametrize("backend", ["memory", "lmdb", "sqlite"])
def test_many_clients_many_operations_match_a_model(
    backend: str, tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    """8 threads, each owning its own keys, run 25,000 random operations; the node ends up holding
    exactly what each thread's model says."""
    kwargs = {} if backend == "memory" else {"backend": backend, "data_dir": tmp_path / "data"}
    node = node_process_factory(**kwargs)
    models: list[dict[bytes, bytes]] = [{} for _ in range(8)]
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        rng = random.Random(index)
        model = models[index]
        try:
            with Client(node.address, pool_size=2) as client:
                for _ in range(25_000):
                    key = b"t%d:%d" % (index, rng.randrange(2_000))
                    roll = rng.random()
                    if roll < 0.5:
                        value = rng.randbytes(rng.randrange(0, 512))
                        client.put(key, value)
                        model[key] = value
                    elif roll < 0.6:
                        client.delete(key)
                        model.pop(key, None)
                    else:
                        assert client.get(key) == model.get(key)
        except BaseException as exc:  # reported below, with the thread's index
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(1800)
    assert not failures, failures[:3]
    with Client(node.address) as client:
        for model in models:
            keys = list(model)
            assert client.get_many(keys) == [model[k] for k in keys]
        assert client.stats()["keys"] == sum(len(m) for m in models)


@pytest.mark.parametrize("backend", ["lmdb", "sqlite"])
def test_sigkill_after_a_hundred_thousand_writes(
    backend: str, tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    data_dir = tmp_path / "data"
    node = node_process_factory(backend=backend, data_dir=data_dir)
    items = {b"soak:%d" % i: b"%d" % i * 10 for i in range(100_000)}
    with Client(node.address) as client:
        assert client.put_many(items.items()) == len(items)
    node.kill()
    restarted = node_process_factory(backend=backend, data_dir=data_dir)
    with Client(restarted.address) as client:
        keys = list(items)
        assert client.get_many(keys) == [items[k] for k in keys]
