"""The conflict resolver hook (issue 9): "The conflict resolver hook decides between versions (default
last-writer-wins). A test plugin that resolves differently proves the hook is used on every read."

The plugin is ``tests/plugins/funnelkvs_lowest_value_wins.py`` (the smallest value wins). Node
processes load it the way a user's would: an entry point of the group ``funnelkvs`` in a dist-info
on their PYTHONPATH, with autoload on. Replicas are made to disagree with REPLICA_WRITE, each given
its own version, so that last-writer-wins and lowest-value-wins pick different copies; then every
read through every node must answer the configured resolver's pick.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from funnelkvs.client import Client
from funnelkvs.plugins import PluginHost
from funnelkvs.protocol import GET, Response, Status, encode_request
from funnelkvs.replication.resolver import ConflictResolver, LastWriterWins
from funnelkvs.replication.versioned import Version, Versioned
from funnelkvs.settings import PluginSettings
from funnelkvs.testing.cluster import NodeProcess, funnelkvs_command
from funnelkvs.testing.ring import v1_pipeline, v2_call
from tests.test_replication_faults import node_ids, replicas_of, start_replicated_ring

PLUGIN_DIR = Path(__file__).parent / "plugins"
PLUGIN_MODULE = "funnelkvs_lowest_value_wins"
#: How long read repair may take to bring every replica to the pick, in seconds.
REPAIR_TIMEOUT = 10.0


def load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location(PLUGIN_MODULE, PLUGIN_DIR / f"{PLUGIN_MODULE}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plugin = load_plugin()
LOWEST = plugin.NAME


def resolver_named(name: str) -> ConflictResolver:
    resolver: ConflictResolver = plugin.LowestValueWins() if name == LOWEST else LastWriterWins()
    return resolver


# --- the plugin's resolver on its own -----------------------------------------------------------------------


def copies(*items: tuple[bytes | None, int]) -> list[Versioned]:
    return [Versioned(value, Version(hlc, origin)) for origin, (value, hlc) in enumerate(items, start=1)]


def test_the_smallest_live_value_wins_where_last_writer_wins_picks_the_newest() -> None:
    candidates = copies((b"m", 30), (b"a", 10), (b"z", 20))
    assert plugin.LowestValueWins().resolve(b"k", candidates) == [candidates[1]]
    assert LastWriterWins().resolve(b"k", candidates) == [candidates[0]]


def test_the_pick_does_not_depend_on_the_order_of_the_candidates() -> None:
    candidates = copies((b"b", 5), (b"a", 3), (b"a", 9), (None, 1), (b"c", 7))
    resolver = plugin.LowestValueWins()
    picks = {tuple(resolver.resolve(b"k", list(order))) for order in itertools.permutations(candidates)}
    assert picks == {(candidates[2],)}  # "a", and of the two "a" the newer


def test_a_tombstone_newer_than_every_value_wins_and_older_values_do_not_compete() -> None:
    resolver = plugin.LowestValueWins()
    deleted = copies((b"a", 1), (None, 5), (b"b", 3))
    assert resolver.resolve(b"k", deleted) == [deleted[1]]
    rewritten = copies((b"a", 1), (None, 5), (b"b", 8))
    assert resolver.resolve(b"k", rewritten) == [rewritten[2]]  # "a" is older than the delete
    assert resolver.resolve(b"k", []) == []


def test_the_plugin_registers_its_resolver() -> None:
    host = PluginHost.load(PluginSettings(autoload=False), env={}, plugins={"lowest": plugin})
    assert LOWEST in host.conflict_resolvers
    assert "last-writer-wins" in host.conflict_resolvers


# --- through a ring ---------------------------------------------------------------------------------------


def plugin_env(tmp_path: Path) -> dict[str, str]:
    """A dist-info declaring the plugin as the entry point ``lowest`` (the module itself stays in
    tests/plugins), and the environment that makes node processes load it."""
    site = tmp_path / "site"
    info = site / "funnelkvs_lowest_value_wins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: funnelkvs-lowest-value-wins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[funnelkvs]\nlowest = {PLUGIN_MODULE}\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN_DIR)]), "FUNNELKVS_PLUGINS_AUTOLOAD": "1"}


def test_node_processes_load_the_plugin_from_the_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [*funnelkvs_command(), "plugins", "--json"],
        env={**os.environ, **plugin_env(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["failures"] == []
    [entry] = [p for p in report["plugins"] if p["name"] == "lowest"]
    assert entry["contributions"]["conflict_resolvers"] == [LOWEST]


def start_ring_with(tmp_path: Path, factory: Callable[..., NodeProcess], resolver: str) -> list[NodeProcess]:
    # R=3: every read gathers all three copies, so the pick does not depend on which two answer first.
    config: dict[str, Any] = {
        "replication": {"factor": 3, "write_quorum": 2, "read_quorum": 3, "conflict_resolver": resolver}
    }
    return start_replicated_ring(tmp_path, factory, 3, config=config, env=plugin_env(tmp_path))


def diverge(nodes: Sequence[NodeProcess], keys: Sequence[bytes]) -> dict[bytes, list[Versioned]]:
    """Write each key through the client, then give each of its three replicas a different newer copy
    (REPLICA_WRITE straight to the replica). The copies of each key, as the replicas now hold them."""
    from funnelkvs.protocol.replica import REPLICA_WRITE, STORED, decode_write_results, encode_writes
    from funnelkvs.versions import HybridLogicalClock, origin_of

    by_id = node_ids(nodes)
    ids = sorted(by_id)
    with Client([node.address for node in nodes]) as client:
        for key in keys:
            client.put(key, b"first-" + key)
    base = HybridLogicalClock().now() + 1000  # newer than the client's writes
    held: dict[bytes, list[Versioned]] = {}
    for index, key in enumerate(keys):
        # Rotate which replica holds which copy: newest "m", middle "z", oldest "a". Last-writer-wins
        # picks "m", lowest-value-wins "a", and neither is the largest value nor the owner's copy always.
        made = [(b"a-" + key, base + 10), (b"m-" + key, base + 30), (b"z-" + key, base + 20)]
        made = made[index % 3 :] + made[: index % 3]
        held[key] = []
        for node_id, (value, hlc) in zip(replicas_of(key, ids), made, strict=True):
            copy = Versioned(value, Version(hlc, origin_of(f"{node_id:040x}")))
            answer = v2_call(
                by_id[node_id].address, REPLICA_WRITE, encode_writes([(key, copy.to_envelope())])
            )
            assert answer.status == Status.SUCCESS, answer
            assert decode_write_results(answer.body) == [STORED]
            held[key].append(copy)
    return held


def read_everywhere(nodes: Sequence[NodeProcess], keys: Sequence[bytes]) -> dict[str, list[Response]]:
    return {
        node.address: v1_pipeline(node.address, [encode_request(GET, key) for key in keys]) for node in nodes
    }


KEYS = [b"contested-%d" % i for i in range(9)]


@pytest.mark.parametrize("resolver", ["last-writer-wins", LOWEST])
def test_every_read_through_every_node_answers_the_configured_resolvers_pick(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess], resolver: str
) -> None:
    nodes = start_ring_with(tmp_path, node_process_factory, resolver)
    held = diverge(nodes, KEYS)
    expected = {key: resolver_named(resolver).resolve(key, held[key]) for key in KEYS}
    other = "last-writer-wins" if resolver == LOWEST else LOWEST
    assert all(expected[key] != resolver_named(other).resolve(key, held[key]) for key in KEYS)
    for round_ in range(2):  # and again, after whatever read repair the first round did
        for address, answers in read_everywhere(nodes, KEYS).items():
            for key, answer in zip(KEYS, answers, strict=True):
                [pick] = expected[key]
                assert answer == Response(Status.SUCCESS, pick.value or b""), (
                    f"round {round_}, {key!r} through {address}: {answer}, {resolver} picks {pick.value!r}"
                )


def test_read_repair_leaves_every_replica_with_the_plugins_pick(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    from funnelkvs.protocol.replica import REPLICA_READ, decode_read_results, encode_reads

    nodes = start_ring_with(tmp_path, node_process_factory, LOWEST)
    held = diverge(nodes, KEYS)
    picks = {key: plugin.LowestValueWins().resolve(key, held[key])[0].value for key in KEYS}
    read_everywhere(nodes[:1], KEYS)  # one read of each key, which repairs the replicas it read
    by_id = node_ids(nodes)
    ids = sorted(by_id)
    deadline = time.monotonic() + REPAIR_TIMEOUT
    while True:
        stale = {}
        for key in KEYS:
            for node_id in replicas_of(key, ids):
                answer = v2_call(by_id[node_id].address, REPLICA_READ, encode_reads([key]))
                [envelope] = decode_read_results(answer.body)
                value = None if envelope is None else Versioned.from_envelope(envelope).value
                if value != picks[key]:
                    stale[(key, by_id[node_id].address)] = value
        if not stale:
            break
        assert time.monotonic() < deadline, (
            f"replicas still without the pick after {REPAIR_TIMEOUT} s: {stale}"
        )
        time.sleep(0.2)
    # The repaired copies still read as the pick through every node.
    for address, answers in read_everywhere(nodes, KEYS).items():
        assert [answer.value for answer in answers] == [picks[key] for key in KEYS], address
