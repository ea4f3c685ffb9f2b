"""Issue 10's repair soak, only under ``make soak``: a few minutes of puts, overwrites and deletes on a
5-node lmdb ring (N=3, W=2, R=2, anti-entropy every second) while nodes are killed and restarted on
their data directories (one, or two adjacent ones at the same moment) and paused (SIGSTOP/SIGCONT),
round after round. After each round the ring must be right again and every hint delivered within the
rejoin bound; at the end, exactly 3 copies of every live key on its preference list and nowhere
else, no live copy of a deleted key anywhere, INFO ``keys`` summing to 3 x the live keys, and the
history's checker clean through every node. Helpers and bounds: tests/test_repair_faults.py.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from funnelkvs.client import Client
from funnelkvs.errors import FunnelKVSError
from funnelkvs.testing.cluster import NodeProcess
from funnelkvs.testing.history import History, Outcome
from funnelkvs.testing.ring import info
from tests.test_repair_faults import (
    CRASH_REPAIR_BOUND,
    REJOIN_REPAIR_BOUND,
    assert_reads_agree_with_copies,
    kill_together,
    read_through_every_node,
    repair_config,
    repair_stats,
    restart,
    settle,
    start_writers,
    stop_writers,
    wait_for_copies_while_down,
    wait_for_repair,
    wait_for_writes,
)
from tests.test_replication_faults import SOCKET_TIMEOUT, Writer, node_ids, successor_of

pytestmark = pytest.mark.soak

#: Fault rounds, and how long each fault lasts while the writers go on, in seconds.
ROUNDS = 9
FAULT_SECONDS = 6.0
#: Writes between two rounds (and before the first), so that every fault happens under writes to
#: keys that exist.
WRITES_BETWEEN = 1000
#: Operations per second of each churn writer at most, and fresh keys of each of the two plain and
#: ring-aware writers: ~15,000 keys in all over the run. Unbounded, the pipelined writer alone makes
#: 100,000 keys in two minutes, and the hints anti-entropy gives fallbacks for a dead node's arcs then
#: take longer than the rejoin bound to hand back (512 per second per fallback, handoff.py).
CHURN_RATE = 60.0
FRESH_KEYS = 3000
SEED = 10


class ChurnWriter(Writer):
    """Through the ring-aware client, until stopped: a put of a fresh key, and every other operation
    an overwrite or a delete of a random earlier key; every operation recorded in the history."""

    def __init__(self, name: str, history: History, addresses: list[str], seed: int) -> None:
        super().__init__(name, history, [])
        self.addresses = addresses
        self.rng = random.Random(seed)

    def write(self) -> None:
        written: list[bytes] = []
        with Client(self.addresses, timeout=SOCKET_TIMEOUT, connect_timeout=SOCKET_TIMEOUT) as client:
            started = time.monotonic()
            while not self.stop_event.is_set():
                ahead = self.done / CHURN_RATE - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                roll = self.rng.random()
                if roll < 0.5 or not written:
                    key = b"%s-%d" % (self.name.encode(), len(written))
                    written.append(key)
                else:
                    key = self.rng.choice(written)
                value: bytes | None = None
                if roll < 0.8:
                    value = b"%s-%d-%s" % (self.name.encode(), self.done, key)
                    op = self.history.invoke_put(key, value)
                else:
                    op = self.history.invoke_delete(key)
                try:
                    if value is None:
                        client.delete(key)
                    else:
                        client.put(key, value)
                except FunnelKVSError as exc:
                    self.history.unknown(op, repr(exc))
                else:
                    self.history.ok(op)
                self.done += 1


def wait_for_no_hints(nodes: Sequence[NodeProcess], bound: float, since: float) -> float:
    """Poll until no node holds a hint; the seconds from ``since``. AssertionError past ``bound``."""
    while True:
        pending = {node.address: info(node.address)["hints_pending"] for node in nodes}
        took = time.monotonic() - since
        if not any(pending.values()):
            return took
        if took > bound:
            raise AssertionError(f"hints still pending {bound:.0f} s on: {pending}\n{repair_stats(nodes)}")
        time.sleep(0.2)


def test_repeated_kills_and_pauses_under_writes_end_with_exactly_three_copies(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    config = repair_config()
    nodes = start_replicated_ring(tmp_path, node_process_factory, config)
    # In the order of ``nodes``, which keeps it: a restarted node takes its old place (and id).
    member_ids = list(node_ids(nodes))
    rng = random.Random(SEED)
    history = History()
    addresses = [node.address for node in nodes]
    writers: list[Writer] = [
        ChurnWriter("churn-a", history, addresses, SEED),
        ChurnWriter("churn-b", history, addresses, SEED + 1),
        *start_writers(history, addresses, "soak-", max_keys=FRESH_KEYS),
    ]
    for writer in writers[:2]:
        writer.start()
    timings: list[str] = []
    try:
        for round_ in range(ROUNDS):
            wait_for_writes(writers, WRITES_BETWEEN)
            # The seed (nodes[0]) stays up: the restarted nodes join through it.
            fault = ("kill", "kill two", "pause")[round_ % 3]
            current = dict(zip(member_ids, nodes, strict=True))
            # Two adjacent ones: a victim whose successor is not the seed.
            candidates = [
                node
                for node in nodes[1:]
                if fault != "kill two" or successor_of(node, current) is not nodes[0]
            ]
            victim = rng.choice(candidates)
            if fault == "pause":
                victim.process.send_signal(signal.SIGSTOP)
                try:
                    time.sleep(FAULT_SECONDS)
                finally:
                    victim.process.send_signal(signal.SIGCONT)
                back_at = time.monotonic()
                victims = [victim]
            else:
                victims = [victim]
                if fault == "kill two":
                    victims.append(successor_of(victim, current))
                kill_together(victims)
                crashed = time.monotonic()
                print(f"round {round_}: {fault} {[v.address for v in victims]} ({history.counts()})")
                up = [node for node in nodes if node not in victims]
                # Back to 3 copies (hints counted) while they are down, on the keys no writer touches
                # any more: the fresh keys acknowledged before the crash (a key being written may be
                # short of its third copy for a moment, which proves nothing).
                settled_keys = [
                    op.key
                    for op in history.operations()
                    if op.key.startswith(b"soak-")
                    and op.outcome is Outcome.OK
                    and op.completed is not None
                    and op.completed < crashed
                ]
                down_took = wait_for_copies_while_down(
                    settled_keys, up, member_ids, CRASH_REPAIR_BOUND, crashed
                )
                time.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - crashed)))
                for victim_ in victims:
                    index = nodes.index(victim_)
                    nodes[index] = restart(node_process_factory, tmp_path, victim_, config, nodes[0].address)
                back_at = time.monotonic()
            settled = settle(nodes)
            hints = wait_for_no_hints(nodes, REJOIN_REPAIR_BOUND, back_at)
            line = (
                f"round {round_}: {fault} {[v.address for v in victims]}: ring right {settled:.1f} s, "
                f"no hint left {hints:.1f} s after the rejoin"
            )
            if fault != "pause":
                line += f"; 3 copies while down {down_took:.1f} s after the crash"
            print(line, f"({history.counts()})")
            timings.append(line)
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)
        stop_writers(writers)
    print("\n".join(timings))
    print(f"writes: {history.counts()} over {len(history.keys())} keys")
    _, census = wait_for_repair(history.keys(), nodes, REJOIN_REPAIR_BOUND, "after the soak")
    finals = read_through_every_node(history, nodes)
    assert_reads_agree_with_copies(finals, census, nodes)


def start_replicated_ring(
    tmp_path: Path, factory: Callable[..., NodeProcess], config: dict[str, object]
) -> list[NodeProcess]:
    from tests.test_replication_faults import start_replicated_ring as start

    return start(tmp_path, factory, 5, config=config)
