"""A running node keeps its ring in mind for a restart: the members it knows and when it was last up to
date, written to its data directory (:class:`funnelkvs.replication.rejoin.RejoinMemory`).

Every :data:`REMEMBER_INTERVAL` seconds, once the node is on the ring, the file is rewritten when the
members changed or :data:`REMEMBER_EVERY` seconds have passed, on the storage thread (it is an
fsync), and once more at a clean stop. The time written is the node's last time *up to date*: the
remembered one until anti-entropy has run once since the start, so that a node that crashes again
before catching up does not reset its absence (``replication.tombstone_grace``).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

from funnelkvs.loop import PeriodicTimer
from funnelkvs.replication.rejoin import RejoinMemory

if TYPE_CHECKING:
    from funnelkvs.node import Node

log = logging.getLogger("funnelkvs.node")

#: How often the node looks whether to write its peers, in seconds, and the longest it goes without
#: writing them (then its last time alive moves on).
REMEMBER_INTERVAL = 2.0
REMEMBER_EVERY = 60.0


class Remembering:
    """Writes ``memory`` for ``node`` (see the module docstring); ``last_alive`` is what was loaded."""

    def __init__(self, node: Node, memory: RejoinMemory, last_alive: float | None) -> None:
        self.node = node
        self.memory = memory
        self.last_alive = last_alive
        self._timer: PeriodicTimer | None = None
        self._epoch = -1
        self._at = 0.0

    def start(self) -> None:
        self._timer = self.node.loop.call_every(REMEMBER_INTERVAL, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def now(self) -> tuple[list[tuple[str, str]], float] | None:
        """``(peers, last time up to date)`` to write, or None before the node is on the ring (the
        members would be this node alone)."""
        ring, replication = self.node.ring, self.node.replication
        if ring is None or replication is None or ring.state != "normal":
            return None
        caught_up = not replication.active or replication.anti_entropy.rounds > 0 or self.last_alive is None
        stamp = time.time() if caught_up else float(self.last_alive or 0.0)
        peers = [(f"{node.node_id:040x}", node.address) for node in replication.members.view.nodes]
        return peers, stamp

    def save_now(self) -> None:
        """Write at once, on the calling thread (a clean stop); a failure is logged."""
        what = self.now()
        if what is not None:
            try:
                self.memory.save(*what)
            except (OSError, ValueError) as exc:
                log.warning("could not remember the ring's members: %s", exc)

    def _tick(self) -> None:
        replication, commit = self.node.replication, self.node.group_commit
        if replication is None or commit is None:
            return
        now = self.node.loop.time()
        if replication.members.epoch == self._epoch and now - self._at < REMEMBER_EVERY:
            return
        what = self.now()
        if what is None:
            return
        self._epoch, self._at = replication.members.epoch, now

        def saved(result: object, error: BaseException | None) -> None:
            if error is not None:
                log.warning("could not remember the ring's members in the data directory: %s", error)

        # An fsync: on the storage thread, never on the loop.
        commit.run(functools.partial(self.memory.save, *what), saved)
