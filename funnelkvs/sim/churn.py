"""Phase 3 of ``funnelkvs sim``: lookups while hosts join and fail (Stoica et al. 2001,
section 6.5, "Lookups during stabilization").

Time runs in stabilization periods: each period ends with one maintenance round
(:meth:`Network.round`). ``events_per_period`` events happen per period on average, each a join of a
new host or the failure of a random host with equal chance; the period's lookups are interleaved with
its events in an order drawn from the seed, so a lookup may meet an event's effect before
stabilization repaired it. Every key is looked up once over the whole phase, from a random member.

Each lookup is walked twice from the same start node and the same state:

- **without retries** (the paper's measure): the walk ends at the first dead node it meets, and it
  fails unless its answer is the key's true owner among the current members.
- **with retries**: the walk routes around dead nodes (:meth:`Network.trace`), the answer's owner is
  the first live entry of the successor list it returned (the client tries the next entry after a
  timeout), and an owner that says the key is not its own (its :meth:`ChordNode.owns`, what the node
  checks before serving a key) sends the client back to look up again a period later, up to
  :data:`RETRY_PERIODS` times. It fails when the final owner is not the true owner.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from funnelkvs.chord.invariants import true_successor
from funnelkvs.chord.node_ref import NodeRef
from funnelkvs.chord.node_state import Status
from funnelkvs.sim.hosts import Hosts
from funnelkvs.sim.network import Network

#: Periods a client keeps looking a key up again while the owner found says it is not its own.
RETRY_PERIODS = 3

_EVENT = 0
_LOOKUP = 1


@dataclass
class ChurnResults:
    """What the churn phase measured (the ``during_churn`` object of the JSON)."""

    events: int = 0
    joins: int = 0
    failures: int = 0
    periods: int = 0
    lookups: int = 0
    #: Lookups whose final answer (after retries) was not the key's owner.
    lookup_failures: int = 0
    #: Lookups that met a dead node or answered a wrong owner on their first walk (the paper's).
    lookup_failures_without_retries: int = 0
    #: Lookups looked up again a period later because the owner found disowned the key.
    retried_later: int = 0
    #: Hops of the successful first walks with retries.
    hops: list[int] = field(default_factory=list)


class _Churn:
    def __init__(self, net: Network, hosts: Hosts, rng: random.Random) -> None:
        self.net = net
        self.hosts = hosts
        self.rng = rng
        self.results = ChurnResults()
        self.members: list[int] = []
        #: Keys to look up again after the next round, with the attempts left.
        self.pending: list[tuple[int, int]] = []
        self.refresh()

    def refresh(self) -> None:
        """The members (nodes on the ring) after a change: start nodes and possible owners."""
        self.members = sorted(i for i, n in self.net.live.items() if n.status is Status.NORMAL)

    def event(self) -> None:
        results = self.results
        results.events += 1
        if self.rng.random() < 0.5 or len(self.hosts) <= 1:
            results.joins += 1
            _, ids = self.hosts.add(self.rng)
            for ident in ids:
                self.net.join(ident, self.rng.choice(self.members))
        else:
            results.failures += 1
            host = self.rng.choice(self.hosts.numbers())
            for ident in self.hosts.remove(host):
                self.net.fail(ident)
        self.refresh()

    def lookup(self, key: int) -> None:
        results = self.results
        results.lookups += 1
        start = self.rng.choice(self.members)
        owner = true_successor(self.members, key)
        bare = self.net.trace(start, key, retries=False)
        if bare.successors is None or bare.successors[0].node_id != owner:
            results.lookup_failures_without_retries += 1
        self.attempt(key, start, owner, RETRY_PERIODS, first=True)

    def attempt(self, key: int, start: int, owner: int, retries_left: int, *, first: bool) -> None:
        walk = self.net.trace(start, key)
        found = self.first_live(walk.successors)
        node = self.net.live.get(found) if found is not None else None
        if node is None or not node.owns(key):
            if retries_left > 0:
                if first:
                    self.results.retried_later += 1
                self.pending.append((key, retries_left - 1))
                return
        if found != owner:
            self.results.lookup_failures += 1
        elif first:
            self.results.hops.append(walk.hops)

    def first_live(self, successors: Sequence[NodeRef] | None) -> int | None:
        for s in successors or ():
            if s.node_id in self.net.live:
                return s.node_id
        return None

    def retry_pending(self) -> None:
        pending, self.pending = self.pending, []
        for key, retries_left in pending:
            start = self.rng.choice(self.members)
            owner = true_successor(self.members, key)
            self.attempt(key, start, owner, retries_left, first=False)

    def end_period(self) -> None:
        self.results.periods += 1
        self.net.round()
        self.refresh()
        self.retry_pending()


def run_churn(
    net: Network,
    hosts: Hosts,
    keys: Sequence[int],
    rng: random.Random,
    events: int,
    *,
    events_per_period: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> ChurnResults:
    """``events`` joins or failures at ``events_per_period`` per stabilization period, with every
    key of ``keys`` looked up once meanwhile (see the module docstring). Leaves ``net`` unsettled:
    the caller stabilizes it afterwards."""
    if events < 1:
        raise ValueError(f"churn needs at least one event, got {events}")
    if events_per_period <= 0:
        raise ValueError(f"events per period must be positive, got {events_per_period}")
    churn = _Churn(net, hosts, rng)
    periods = math.ceil(events / events_per_period)
    for period in range(periods):
        # Event i falls in period ⌊i / rate⌋: the same count in every period up to rounding.
        first_event = math.ceil(period * events_per_period)
        last_event = min(events, math.ceil((period + 1) * events_per_period))
        period_keys = keys[period * len(keys) // periods : (period + 1) * len(keys) // periods]
        items = [_EVENT] * (last_event - first_event) + [_LOOKUP] * len(period_keys)
        rng.shuffle(items)
        next_key = iter(period_keys)
        for item in items:
            if item == _EVENT:
                churn.event()
            else:
                churn.lookup(next(next_key))
        churn.end_period()
        if progress is not None:
            progress(f"churn: period {period + 1}/{periods}, {len(net.live)} nodes")
    # Rounds without events until every retry has been answered.
    for _ in range(RETRY_PERIODS):
        if not churn.pending:
            break
        churn.end_period()
    return churn.results
