"""Issue 10's fault tests: after crashes, pauses, deletes made while a node was away, a node back with an
empty disk, a tombstone purge, and a join plus a leave, repair (hinted handoff, anti-entropy, replica
movement, tombstone purge) leaves exactly N=3 copies of every live key, on the key's preference list,
and nothing else anywhere (docs/replication.md, "Repair fault tests").

Every test runs real lmdb node processes on 127.0.0.1 (ephemeral ports, a data directory each; a node
restarted after a kill gets its old port and data directory back, hence its old ring id), records every
client operation in a :class:`~funnelkvs.testing.history.History`, and ends with the replication
issue's checker through every node. "Wait for repair" polls what every node stores (REPLICA_READ, which
does not repair anything, unlike a GET) until the exact-copies condition holds, bounded by the issue's
figures, and prints how long it took. Only then are keys read with GET: a read repairs what it reads,
so reading first would hide a repair that did not happen.

Processes are stopped at teardown by ``node_process_factory``, also on failure; a paused node is always
resumed in a ``finally``.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from funnelkvs.client import Client
from funnelkvs.client.admin import leave, wait_until_closed
from funnelkvs.errors import FunnelKVSError
from funnelkvs.protocol import Status
from funnelkvs.protocol.replica import REPLICA_READ, decode_read_results, encode_reads
from funnelkvs.settings import ReplicationSettings
from funnelkvs.testing.cluster import NodeProcess
from funnelkvs.testing.history import FinalRead, History, Kind, Outcome, Unreadable, check, read_back
from funnelkvs.testing.ring import info, split, v2_call, wait_until_stable
from funnelkvs.versions import from_hint, is_hint, is_live, kind_of, newer, value_of
from tests.test_replication_faults import (
    PlainWriter,
    SmartWriter,
    Writer,
    node_ids,
    replicas_of,
    start_replicated_ring,
    successor_of,
    wait_until_members_known,
)

#: N: copies of every live key.
N = 3
#: The issue's bounds, in seconds: back to N copies after a crash is detected, and hints delivered plus
#: surplus copies dropped after a rejoin (a restart, a resumed pause, a join or a leave).
CRASH_REPAIR_BOUND = 30.0
REJOIN_REPAIR_BOUND = 60.0
#: How often "wait for repair" looks at every node's copies, in seconds.
POLL_INTERVAL = 1.0
#: Keys per REPLICA_READ message.
READ_CHUNK = 1000
#: Bound on a writer's stop, on a wait for writes, and on a node's exit after LEAVE, in seconds.
WRITES_TIMEOUT = 40.0
LEAVE_TIMEOUT = 30.0
#: How long a key with an acknowledged write whose GET failed is read again (see read_through_every_node).
SETTLE_TIMEOUT = 10.0
#: INFO fields printed with each report (the repair issue's stats; absent ones print as None).
REPAIR_STATS = (
    "keys",
    "tombstones",
    "hints_pending",
    "hints_delivered",
    "anti_entropy_rounds",
    "anti_entropy_keys_repaired",
    "anti_entropy_bytes_sent",
    "transfers_in_progress",
)


def repair_config(**extra: Any) -> dict[str, Any]:
    """The rings' configuration: N=3, W=2, R=2, anti-entropy every second (so that repair is quick),
    plus ``extra`` replication settings. A setting this build does not know yet is left out with a
    printed note, so that the node starts and the test fails on what repair did not do, not on a
    config error."""
    wanted: dict[str, Any] = {
        "factor": N,
        "write_quorum": 2,
        "read_quorum": 2,
        "anti_entropy_interval": 1,
        **extra,
    }
    known = {setting.name for setting in dataclasses.fields(ReplicationSettings)}
    missing = [name for name in wanted if name not in known]
    if missing:
        print(f"this build has no replication.{', replication.'.join(missing)}: left out of the config")
    return {"replication": {name: value for name, value in wanted.items() if name in known}}


def supports(setting: str) -> bool:
    return setting in {field_.name for field_ in dataclasses.fields(ReplicationSettings)}


# --- what every node stores -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One way in which a key's copies are not what repair must leave."""

    key: bytes
    node: str  # the node's address
    what: str  # "missing", "hint", "stale", "surplus", "live copy of a deleted key", "no answer", ...


@dataclass
class Census:
    """Every node's copy of every key: ``copies[key][node_id]`` is the stored envelope, or None."""

    copies: dict[bytes, dict[int, bytes | None]]
    addresses: dict[int, str]
    #: Nodes whose REPLICA_READ failed, with the reason.
    silent: dict[int, str] = field(default_factory=dict)

    def winner(self, key: bytes) -> bytes | None:
        """The newest copy of ``key`` on any node, as a plain envelope (a hint compares as its write)."""
        best: bytes | None = None
        for envelope in self.copies[key].values():
            if envelope is not None and (best is None or newer(envelope, best)):
                best = envelope
        if best is not None and is_hint(best):
            best = from_hint(best)[0]
        return best

    def live_keys(self) -> dict[bytes, bytes]:
        """Keys whose newest copy is a value, with that value."""
        live = {}
        for key in self.copies:
            best = self.winner(key)
            if best is not None and is_live(best):
                live[key] = value_of(best)
        return live


def take_census(keys: Sequence[bytes], by_id: Mapping[int, NodeProcess]) -> Census:
    """REPLICA_READ of ``keys`` on every node of ``by_id``, :data:`READ_CHUNK` keys per message."""
    copies: dict[bytes, dict[int, bytes | None]] = {key: {} for key in keys}
    census = Census(copies, {node_id: node.address for node_id, node in by_id.items()})
    for node_id, node in by_id.items():
        try:
            for start in range(0, len(keys), READ_CHUNK):
                chunk = keys[start : start + READ_CHUNK]
                answer = v2_call(node.address, REPLICA_READ, encode_reads(chunk))
                if answer.status != Status.SUCCESS:
                    raise ConnectionError(f"status {answer.status}: {answer.body[:200]!r}")
                for key, envelope in zip(chunk, decode_read_results(answer.body), strict=True):
                    copies[key][node_id] = envelope
        except (OSError, ValueError) as exc:
            census.silent[node_id] = repr(exc)
    return census


def copy_problems(census: Census, deleted: Iterable[bytes] = ()) -> list[Problem]:
    """Everything that keeps the copies from "exactly N": each live key (its newest copy is a value)
    sits as a plain, up-to-date value on each of its N preference-list nodes (over the nodes of the
    census, which must be the ring's final members) and nowhere else, not even as a hint or a
    tombstone; a key whose newest copy is a tombstone, and every key of ``deleted``, has no live copy
    anywhere (tombstones may stay until they are purged)."""
    problems = [
        Problem(b"*", census.addresses[node_id], f"no answer: {why}")
        for node_id, why in census.silent.items()
    ]
    if census.silent:
        return problems
    ids = sorted(census.addresses)
    deleted = set(deleted)
    for key, copies in census.copies.items():
        best = census.winner(key)
        if key in deleted or best is None or not is_live(best):
            for node_id, envelope in copies.items():
                if envelope is not None and is_live(envelope):
                    what = (
                        "live copy of a deleted key" if key in deleted else "live copy older than a tombstone"
                    )
                    problems.append(Problem(key, census.addresses[node_id], what))
            continue
        replicas = set(replicas_of(key, ids, N))
        for node_id, envelope in copies.items():
            address = census.addresses[node_id]
            if node_id not in replicas:
                if envelope is not None:
                    problems.append(Problem(key, address, f"surplus copy (kind {kind_of(envelope)})"))
            elif envelope is None:
                problems.append(Problem(key, address, "missing"))
            elif is_hint(envelope):
                problems.append(Problem(key, address, "hint, not a plain copy"))
            elif envelope != best:
                problems.append(Problem(key, address, f"stale (kind {kind_of(envelope)})"))
    return problems


def degraded_problems(census: Census, member_ids: Sequence[int]) -> list[Problem]:
    """What keeps a ring with members down from "back to N copies": each live key (newest copy on the
    nodes that are up, those of the census) has its newest version on at least N nodes that are up, as
    a plain copy on each live member of its preference list (over ``member_ids``, every member, up or
    down) and as hints on fallbacks for the ones that are down."""
    problems = [
        Problem(b"*", census.addresses[node_id], f"no answer: {why}")
        for node_id, why in census.silent.items()
    ]
    if census.silent:
        return problems
    for key, copies in census.copies.items():
        best = census.winner(key)
        if best is None or not is_live(best):
            continue
        current = 0
        for envelope in copies.values():
            if envelope is None:
                continue
            plain = from_hint(envelope)[0] if is_hint(envelope) else envelope
            current += plain == best
        for node_id in replicas_of(key, member_ids, N):
            if node_id in copies and copies[node_id] != best:
                problems.append(
                    Problem(key, census.addresses[node_id], "replica without the plain newest copy")
                )
        if current < N:
            holders = ", ".join(
                census.addresses[node_id]
                + (" (hint)" if envelope is not None and is_hint(envelope) else "")
                + (
                    ""
                    if envelope is None or (from_hint(envelope)[0] if is_hint(envelope) else envelope) == best
                    else " (stale)"
                )
                for node_id, envelope in copies.items()
                if envelope is not None
            )
            problems.append(
                Problem(key, "(up)", f"{current} copies of the newest version, not {N}: on {holders}")
            )
    return problems


def wait_for_copies_while_down(
    keys: Sequence[bytes], up: Sequence[NodeProcess], member_ids: Sequence[int], bound: float, since: float
) -> float:
    """Poll the nodes that are up until :func:`degraded_problems` finds none; returns the seconds from
    ``since`` (the crash) and prints them; AssertionError past ``bound`` with what is wrong."""
    assert keys, "no keys to check: nothing was written before the crash"
    by_id = node_ids(up)
    polls = 0
    while True:
        census = take_census(keys, by_id)
        problems = degraded_problems(census, member_ids)
        polls += 1
        took = time.monotonic() - since
        if not problems:
            hints = sum(
                1 for copies in census.copies.values() for env in copies.values() if env and is_hint(env)
            )
            print(
                f"while down: {N} copies of every live key {took:.1f} s after the crash "
                f"({polls} polls, {hints} copies as hints)"
            )
            return took
        if took > bound:
            raise AssertionError(
                f"while down: copies still short {bound:.0f} s after the crash ({polls} polls)\n"
                f"{describe(problems)}\nrepair stats:\n{repair_stats(up)}"
            )
        time.sleep(POLL_INTERVAL)


def describe(problems: Sequence[Problem], examples: int = 12) -> str:
    """Counts per (node, what) and the first ``examples`` problems, one per line."""
    counts = Counter((problem.node, problem.what.split(":")[0]) for problem in problems)
    lines = [f"{len(problems)} problems over {len({p.key for p in problems})} keys:"]
    lines += [f"  {node}: {count} x {what}" for (node, what), count in sorted(counts.items())]
    lines += [f"  e.g. {p.key!r} on {p.node}: {p.what}" for p in problems[:examples]]
    return "\n".join(lines)


def repair_stats(nodes: Sequence[NodeProcess]) -> str:
    """The repair stats of every node, one line each."""
    lines = []
    for node in nodes:
        try:
            node_info = info(node.address)
        except (OSError, ValueError) as exc:
            lines.append(f"  {node.address}: no INFO ({exc!r})")
            continue
        lines.append(
            f"  {node.address}: " + ", ".join(f"{name}={node_info.get(name)}" for name in REPAIR_STATS)
        )
    return "\n".join(lines)


def wait_for_repair(
    keys: Sequence[bytes],
    nodes: Sequence[NodeProcess],
    bound: float,
    what: str,
    deleted: Iterable[bytes] = (),
    since: float | None = None,
) -> tuple[float, Census]:
    """Poll every node's copies of ``keys`` until :func:`copy_problems` finds none; ``nodes`` are the
    ring's final members. Returns the seconds it took from ``since`` (default: now) and the last
    census; prints them. AssertionError past ``bound`` seconds from ``since``, showing what is wrong
    (which keys, on which nodes) and every node's repair stats."""
    by_id = node_ids(nodes)
    started = time.monotonic() if since is None else since
    deleted = list(deleted)
    polls = 0
    while True:
        census = take_census(keys, by_id)
        problems = copy_problems(census, deleted)
        polls += 1
        took = time.monotonic() - started
        if not problems:
            print(f"{what}: exactly {N} copies of every live key after {took:.1f} s ({polls} polls)")
            print(repair_stats(nodes))
            return took, census
        if took > bound:
            raise AssertionError(
                f"{what}: copies still wrong {bound:.0f} s on ({took:.1f} s, {polls} polls)\n"
                f"{describe(problems)}\nrepair stats:\n{repair_stats(nodes)}"
            )
        time.sleep(POLL_INTERVAL)


def wait_for_hints(nodes: Sequence[NodeProcess], bound: float, since: float, delivered_before: int) -> float:
    """Poll until ``hints_pending`` is 0 on every node and ``hints_delivered`` (summed) grew; returns
    the seconds from ``since``. AssertionError past ``bound`` with every node's stats."""
    while True:
        infos = [info(node.address) for node in nodes]
        pending = sum(node_info["hints_pending"] for node_info in infos)
        delivered = sum(node_info["hints_delivered"] for node_info in infos)
        took = time.monotonic() - since
        if pending == 0 and delivered > delivered_before:
            print(
                f"hints: all delivered {took:.1f} s after the rejoin "
                f"({delivered - delivered_before} delivered)"
            )
            return took
        if took > bound:
            raise AssertionError(
                f"hints not delivered {bound:.0f} s after the rejoin: {pending} pending, "
                f"{delivered - delivered_before} delivered since\n{repair_stats(nodes)}"
            )
        time.sleep(0.2)


# --- reads and the checker --------------------------------------------------------------------------------


def read_through_every_node(
    history: History, nodes: Sequence[NodeProcess]
) -> dict[str, dict[bytes, FinalRead]]:
    """GET every key written through each node, check each read with the history's checker (printing
    a summary per node) and raise on the first node whose reads fail it. A key with an acknowledged
    write whose GET fails is read again for up to :data:`SETTLE_TIMEOUT` (the claim is no lost write,
    not that every first read answers; how many needed it is printed)."""
    keys = history.keys()
    must_survive = {op.key for op in history.operations() if op.is_write and op.outcome is Outcome.OK}
    settle_by = time.monotonic() + SETTLE_TIMEOUT
    finals = {}
    for node in nodes:
        final = read_back(node.address, keys)
        unreadable = [
            key for key, read in final.items() if isinstance(read, Unreadable) and key in must_survive
        ]
        first_pass = len(unreadable)
        while unreadable and time.monotonic() < settle_by:
            time.sleep(0.5)
            final.update(read_back(node.address, unreadable))
            unreadable = [key for key in unreadable if isinstance(final[key], Unreadable)]
        result = check(history, final)
        print(f"through {node.address} ({first_pass} read again): {result.summary()}")
        assert result.ok, f"through {node.address}: {result.summary()}"
        finals[node.address] = final
    return finals


def assert_reads_agree_with_copies(
    finals: Mapping[str, Mapping[bytes, FinalRead]], census: Census, nodes: Sequence[NodeProcess]
) -> dict[bytes, bytes]:
    """Every node's GETs answer what the copies hold (a value for each live key, NOT_FOUND for the
    others), and INFO ``keys`` summed over the nodes is exactly N x the live keys. Returns the live
    keys (the keys that read back) with their values."""
    stored = census.live_keys()
    for address, final in finals.items():
        read = {key: value for key, value in final.items() if isinstance(value, bytes)}
        if read != stored:
            differ = sorted(key for key in set(read) | set(stored) if read.get(key) != stored.get(key))
            raise AssertionError(
                f"through {address}, {len(differ)} keys read otherwise than the copies hold, e.g. "
                + ", ".join(
                    f"{key!r}: read {read.get(key)!r}, stored {stored.get(key)!r}" for key in differ[:5]
                )
            )
    per_node = {node.address: info(node.address)["keys"] for node in nodes}
    print(f"live keys {len(stored)}; INFO keys per node {per_node}, sum {sum(per_node.values())}")
    assert sum(per_node.values()) == N * len(stored), (
        f"INFO keys sum to {sum(per_node.values())}, not {N} x {len(stored)} live keys: {per_node}"
    )
    return stored


# --- writers and faults -----------------------------------------------------------------------------------


def start_writers(
    history: History, addresses: list[str], prefix: str, max_keys: int = 20_000
) -> list[Writer]:
    """A ring-aware writer and a plain v1 writer of fresh keys, running until :func:`stop_writers`
    (or ``max_keys`` each)."""
    writers: list[Writer] = [
        SmartWriter(
            f"{prefix}smart",
            history,
            [b"%ssmart-%d" % (prefix.encode(), i) for i in range(max_keys)],
            addresses,
        ),
        PlainWriter(
            f"{prefix}plain",
            history,
            [b"%splain-%d" % (prefix.encode(), i) for i in range(max_keys)],
            addresses,
        ),
    ]
    for writer in writers:
        writer.start()
    return writers


def wait_for_writes(writers: Sequence[Writer], count: int) -> None:
    """Block until the writers together did ``count`` more writes than now (bounded)."""
    target = sum(writer.done for writer in writers) + count
    deadline = time.monotonic() + WRITES_TIMEOUT
    while sum(writer.done for writer in writers) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"writers did {sum(w.done for w in writers)} of {target} in {WRITES_TIMEOUT} s"
            )
        if not any(writer.is_alive() for writer in writers):
            raise AssertionError(f"writers stopped early: {[writer.error for writer in writers]}")
        time.sleep(0.01)


def stop_writers(writers: Sequence[Writer]) -> None:
    """Stop the writers (each finishes the write or batch in hand, bounded by its socket timeouts) and
    raise what one of them raised."""
    for writer in writers:
        writer.stop_event.set()
    deadline = time.monotonic() + WRITES_TIMEOUT
    for writer in writers:
        writer.join(max(0.0, deadline - time.monotonic()))
    alive = [writer.name for writer in writers if writer.is_alive()]
    if alive:
        raise TimeoutError(f"writers {alive} did not stop within {WRITES_TIMEOUT} s")
    for writer in writers:
        if writer.error is not None:
            raise writer.error


def kill_together(victims: Sequence[NodeProcess]) -> None:
    """SIGKILL every victim at the same moment (signals first, then reap each)."""
    for victim in victims:
        victim.process.send_signal(signal.SIGKILL)
    for victim in victims:
        victim.kill()


def restart(
    factory: Callable[..., NodeProcess],
    tmp_path: Path,
    old: NodeProcess,
    config: dict[str, Any],
    join: str,
    empty: bool = False,
) -> NodeProcess:
    """Start a node again on ``old``'s port and data directory (so with its ring id), joining ``join``;
    with ``empty``, on a new empty data directory instead (a replaced disk). start_replicated_ring names
    nodes ring0, ring1, ... and their data directories ring<i>-data."""
    name = old.log_path.stem.split("-")[0]  # ring<i>, also after an earlier restart (ring<i>-again-<n>)
    again = len(list(tmp_path.glob(f"{name}-again-*.log")))
    _, port = split(old.address)
    return factory(
        config=config,
        backend="lmdb",
        data_dir=tmp_path / (f"{name}-empty-data" if empty else f"{name}-data"),
        port=port,
        args=["--join", join],
        name=f"{name}-again-{again}",
    )


def settle(nodes: Sequence[NodeProcess]) -> float:
    """Wait until the ring over ``nodes`` is right and every node's replication knows exactly these
    members; returns the seconds it took."""
    started = time.monotonic()
    wait_until_stable(nodes)
    wait_until_members_known(nodes)
    return time.monotonic() - started


# --- the tests --------------------------------------------------------------------------------------------


def test_two_adjacent_nodes_killed_then_restarted_end_with_exactly_three_copies(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    config = repair_config()
    nodes = start_replicated_ring(tmp_path, node_process_factory, 5, config=config)
    by_id = node_ids(nodes)
    first = nodes[2]
    second = successor_of(first, by_id)
    victims = [first, second]
    survivors = [node for node in nodes if node not in victims]
    history = History()
    # Writers talk to survivors only: a refused connection to a dead node would prove nothing.
    writers = start_writers(history, [node.address for node in survivors], "a-")
    try:
        wait_for_writes(writers, 1000)
        kill_together(victims)
        crashed = time.monotonic()
        killed_at = sum(writer.done for writer in writers)
        wait_for_writes(writers, 1500)
    finally:
        stop_writers(writers)
    print(f"killed {first.address} and {second.address} at {killed_at} writes; {history.counts()}")
    counts = history.counts()
    assert counts["ok"] >= 0.9 * sum(counts.values()), f"only {counts} acknowledged"
    wait_for_copies_while_down(history.keys(), survivors, list(by_id), CRASH_REPAIR_BOUND, crashed)

    back = [
        restart(node_process_factory, tmp_path, victim, config, survivors[0].address) for victim in victims
    ]
    rejoined = time.monotonic()
    everyone = [*survivors, *back]
    print(f"restarted; ring right and members known {settle(everyone):.1f} s later")
    _, census = wait_for_repair(
        history.keys(), everyone, REJOIN_REPAIR_BOUND, "after the restart", since=rejoined
    )
    finals = read_through_every_node(history, everyone)
    assert_reads_agree_with_copies(finals, census, everyone)


def test_paused_node_gets_its_hints_and_every_key_ends_with_exactly_three_copies(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    nodes = start_replicated_ring(tmp_path, node_process_factory, 5, config=repair_config())
    paused = nodes[2]
    others = [node for node in nodes if node is not paused]
    history = History()
    writers = start_writers(history, [node.address for node in others], "p-")
    delivered_before = sum(info(node.address)["hints_delivered"] for node in others)
    try:
        wait_for_writes(writers, 1000)
        paused.process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            # Paused long enough that the others take it for down and keep hints for it (3 s replica
            # timeout, then fallbacks); the test is only worth something if hints were made.
            deadline = stopped + 20.0
            while (
                sum(info(node.address)["hints_pending"] for node in others) < 50
                or time.monotonic() < stopped + 5
            ):
                assert time.monotonic() < deadline, (
                    f"no hints kept for the paused node:\n{repair_stats(others)}"
                )
                time.sleep(0.2)
            pending = sum(info(node.address)["hints_pending"] for node in others)
        finally:
            paused.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        print(f"paused {paused.address} for {resumed - stopped:.1f} s; {pending} hints kept for it by then")
        wait_for_writes(writers, 500)
    finally:
        stop_writers(writers)
    print(f"writes: {history.counts()}")
    print(f"ring right and members known {settle(nodes):.1f} s after the writes")
    wait_for_hints(nodes, REJOIN_REPAIR_BOUND, resumed, delivered_before)
    _, census = wait_for_repair(history.keys(), nodes, REJOIN_REPAIR_BOUND, "after the pause", since=resumed)
    finals = read_through_every_node(history, nodes)
    assert_reads_agree_with_copies(finals, census, nodes)


def test_a_node_back_with_an_empty_disk_gets_every_copy_back(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    """No hint covers writes made before a node lost its disk: only anti-entropy can bring its copies
    back (the test read-repairs nothing before the copies are right)."""
    config = repair_config()
    nodes = start_replicated_ring(tmp_path, node_process_factory, 5, config=config)
    history = History()
    writers = start_writers(history, [node.address for node in nodes], "e-")
    try:
        wait_for_writes(writers, 2000)
    finally:
        stop_writers(writers)
    lost_disk = nodes[2]
    lost_disk.kill()
    back = restart(node_process_factory, tmp_path, lost_disk, config, nodes[0].address, empty=True)
    rejoined = time.monotonic()
    everyone = [back if node is lost_disk else node for node in nodes]
    print(f"{lost_disk.address} back with an empty disk; ring right {settle(everyone):.1f} s later")
    _, census = wait_for_repair(
        history.keys(), everyone, REJOIN_REPAIR_BOUND, "after the empty restart", since=rejoined
    )
    finals = read_through_every_node(history, everyone)
    assert_reads_agree_with_copies(finals, census, everyone)


def write_then_delete_half_while_one_is_down(
    tmp_path: Path,
    factory: Callable[..., NodeProcess],
    config: dict[str, Any],
    count: int,
    keys_count: int,
) -> tuple[History, list[NodeProcess], list[bytes], float]:
    """``count`` nodes; ``keys_count`` keys written, one node killed, every other key deleted through
    the others, the node restarted on its data directory. Returns the history, the nodes (the restarted
    one in its place), the deleted keys whose delete was acknowledged, and when the node came back."""
    nodes = start_replicated_ring(tmp_path, factory, count, config=config)
    keys = [b"d-%d" % i for i in range(keys_count)]
    history = History()
    with Client([node.address for node in nodes]) as client:
        for key in keys:
            op = history.invoke_put(key, b"v-" + key)
            try:
                client.put(key, b"v-" + key)
            except FunnelKVSError as exc:
                history.unknown(op, repr(exc))
            else:
                history.ok(op)
    assert history.counts()["ok"] == len(keys), f"no fault yet, but {history.counts()}"
    away = nodes[2]
    away.kill()
    down_at = time.monotonic()
    others = [node for node in nodes if node is not away]
    doomed = keys[::2]
    with Client([node.address for node in others]) as client:
        for key in doomed:
            op = history.invoke_delete(key)
            try:
                client.delete(key)
            except FunnelKVSError as exc:
                history.unknown(op, repr(exc))
            else:
                history.ok(op)
    deleted = [op.key for op in history.operations() if op.kind is Kind.DELETE and op.outcome is Outcome.OK]
    print(
        f"{len(deleted)} of {len(doomed)} deletes acknowledged while {away.address} was down; "
        f"{history.counts()}"
    )
    back = restart(factory, tmp_path, away, config, others[0].address)
    rejoined = time.monotonic()
    print(f"{away.address} was down {rejoined - down_at:.1f} s")
    everyone = [back if node is away else node for node in nodes]
    print(f"ring right and members known {settle(everyone):.1f} s after the restart")
    return history, everyone, deleted, rejoined


def assert_deleted_everywhere(
    deleted: Sequence[bytes], finals: Mapping[str, Mapping[bytes, FinalRead]]
) -> None:
    for address, final in finals.items():
        back = [key for key in deleted if final[key] is not None]
        assert not back, f"through {address}, {len(back)} deleted keys read a value, e.g. {back[:5]}"


def test_deletes_made_while_a_node_was_down_stay_deleted_after_it_returns(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    history, nodes, deleted, rejoined = write_then_delete_half_while_one_is_down(
        tmp_path, node_process_factory, repair_config(), 5, 2000
    )
    _, census = wait_for_repair(
        history.keys(), nodes, REJOIN_REPAIR_BOUND, "after the return", deleted=deleted, since=rejoined
    )
    finals = read_through_every_node(history, nodes)
    assert_deleted_everywhere(deleted, finals)
    assert_reads_agree_with_copies(finals, census, nodes)


#: Tombstone grace of the purge test, in seconds: longer than the node is down (a few seconds, checked),
#: short enough for the test to see the purge.
GRACE = 15.0


def test_purged_tombstones_leave_deleted_keys_deleted(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    assert supports("tombstone_grace"), (
        "this build has no replication.tombstone_grace (no tombstone purge yet)"
    )
    config = repair_config(tombstone_grace=GRACE)
    history, nodes, deleted, rejoined = write_then_delete_half_while_one_is_down(
        tmp_path, node_process_factory, config, 4, 600
    )
    wait_for_repair(
        history.keys(), nodes, REJOIN_REPAIR_BOUND, "after the return", deleted=deleted, since=rejoined
    )
    deadline = rejoined + GRACE + REJOIN_REPAIR_BOUND
    while (left := {node.address: info(node.address)["tombstones"] for node in nodes}) and any(left.values()):
        assert time.monotonic() < deadline, (
            f"tombstones still there {GRACE + REJOIN_REPAIR_BOUND:.0f} s on: {left}"
        )
        time.sleep(POLL_INTERVAL)
    print(f"tombstones purged {time.monotonic() - rejoined:.1f} s after the return (grace {GRACE:.0f} s)")
    # Purged means gone from every node: no tombstone, and above all no value come back.
    census = take_census(history.keys(), node_ids(nodes))
    problems = copy_problems(census, deleted)
    kept = [
        Problem(key, census.addresses[node_id], "still stored")
        for key in deleted
        for node_id, env in census.copies[key].items()
        if env is not None
    ]
    assert not problems and not kept, describe([*problems, *kept])
    finals = read_through_every_node(history, nodes)
    assert_deleted_everywhere(deleted, finals)
    assert_reads_agree_with_copies(finals, census, nodes)


def test_a_join_and_a_leave_under_writes_end_with_three_copies_on_the_final_preference_lists(
    tmp_path: Path, node_process_factory: Callable[..., NodeProcess]
) -> None:
    config = repair_config()
    nodes = start_replicated_ring(tmp_path, node_process_factory, 4, config=config)
    leaver = nodes[2]
    history = History()
    writers = start_writers(history, [node.address for node in nodes if node is not leaver], "j-")
    try:
        wait_for_writes(writers, 800)
        joiner = node_process_factory(
            config=config,
            backend="lmdb",
            data_dir=tmp_path / "joiner-data",
            args=["--join", nodes[0].address],
            name="joiner",
        )
        print(f"{joiner.address} joined at {sum(w.done for w in writers)} writes")
        wait_until_stable([*nodes, joiner])
        wait_for_writes(writers, 800)
        leave(leaver.address)
        left_at = time.monotonic()
        print(f"{leaver.address} asked to leave at {sum(w.done for w in writers)} writes")
        assert wait_until_closed(leaver.address, timeout=LEAVE_TIMEOUT), f"{leaver.address} did not leave"
        print(f"{leaver.address} gone {time.monotonic() - left_at:.1f} s after LEAVE")
        wait_for_writes(writers, 500)
    finally:
        stop_writers(writers)
    print(f"writes: {history.counts()}")
    final = [node for node in nodes if node is not leaver] + [joiner]
    print(f"ring right and members known {settle(final):.1f} s after the writes")
    _, census = wait_for_repair(
        history.keys(), final, REJOIN_REPAIR_BOUND, "after the join and the leave", since=left_at
    )
    finals = read_through_every_node(history, final)
    assert_reads_agree_with_copies(finals, census, final)
