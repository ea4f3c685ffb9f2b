"""Building a ring through the protocol: node ids from the seeded generator, joins in batches.

Every node joins with :meth:`ChordNode.join <funnelkvs.chord.ChordNode.join>` through a member
(the ring is never computed from outside). Joining one node per maintenance round costs N rounds of
N nodes each; here each round starts a batch of joins at once, each through a different member chosen
at random, the batch as large as half the current members, so the ring doubles in about two rounds
and N nodes need O(log N) batches. After each batch, maintenance rounds run until no node's successor
changed in a round: a node that joined with a successor too far ahead (its join was answered by a
node that did not know the batch's other joiners yet) walks back one node per stabilize round, and
joins through it inherit its gap, so without waiting the gaps compound from batch to batch (at 4096
nodes successors ended up to 45 nodes too far and the final settling took 125 rounds instead of 36).
Then stabilization runs until nothing changes for a full pass of fix_fingers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from funnelkvs.chord.node_state import Status
from funnelkvs.keyspace import RING_BITS
from funnelkvs.sim.network import Network, NotQuiescent

#: Maintenance rounds at least after each batch of joins, before the next batch picks its seeds.
ROUNDS_PER_BATCH = 2
#: A batch whose successors still change after this many rounds is a ring that does not settle.
MAX_ROUNDS_PER_BATCH = 500


def random_ids(rng: random.Random, n: int) -> list[int]:
    """``n`` distinct node ids drawn from ``rng``."""
    seen: set[int] = set()
    ids: list[int] = []
    while len(ids) < n:
        ident = rng.getrandbits(RING_BITS)
        if ident not in seen:
            seen.add(ident)
            ids.append(ident)
    return ids


def quiet_rounds_for(n: int) -> int:
    """Rounds without change that mean the ring is settled: one pass of fix_fingers (about
    log2 N distinct fingers, one lookup per round) and a margin."""
    return max(2, math.ceil(math.log2(max(n, 2)))) + 2


def grow_in_batches(
    net: Network, ids: list[int], rng: random.Random, progress: Callable[[str], None] | None = None
) -> None:
    """Every id joins ``net`` through the protocol (the first creates the ring when it is empty)."""
    pending = list(ids)
    if not net.live:
        net.create(pending.pop(0))
    while pending:
        members = sorted(i for i, node in net.live.items() if node.status is Status.NORMAL)
        batch = max(1, len(members) // 2)
        seeds = rng.sample(members, min(batch, len(members)))
        for seed in seeds:
            if not pending:
                break
            net.join(pending.pop(0), seed, run=False)
        settle_successors(net)
        if progress is not None:
            progress(f"joining: {len(ids) - len(pending)}/{len(ids)} nodes")


def settle_successors(net: Network, min_rounds: int = ROUNDS_PER_BATCH) -> int:
    """Rounds (at least ``min_rounds``) until one changes no live node's successor and no join waits
    to be retried; the rounds run. Observes the nodes only, never sets them.

    :raises NotQuiescent: successors still change after :data:`MAX_ROUNDS_PER_BATCH` rounds.
    """
    for done in range(1, MAX_ROUNDS_PER_BATCH + 1):
        before = net.successor_ids()
        net.round()
        if done >= min_rounds and not net.joins_waiting and net.successor_ids() == before:
            return done
    raise NotQuiescent(f"successors still changing after {MAX_ROUNDS_PER_BATCH} rounds")


def build_ring(n: int, successors: int, rng: random.Random) -> Network:
    """A stabilized ring of ``n`` nodes with successor lists of length ``successors``."""
    return build_from_ids(random_ids(rng, n), successors, rng)


def build_from_ids(
    ids: list[int], successors: int, rng: random.Random, progress: Callable[[str], None] | None = None
) -> Network:
    """A stabilized ring of the nodes ``ids`` (joining in that order) with successor lists of length
    ``successors``; ``progress`` is told how far the build is, as text."""
    net = Network(successors=successors)
    grow_in_batches(net, ids, rng, progress)
    if progress is not None:
        progress(f"stabilizing {len(ids)} nodes")
    net.stabilize_until_quiescent(quiet_rounds=quiet_rounds_for(len(ids)))
    return net
