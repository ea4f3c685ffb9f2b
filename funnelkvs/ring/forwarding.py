"""Forwarding a request for a key this node does not own to the node that does (v1 clients).

The owner is taken from the membership view (one hop). The view is a hint: a node that does not own
the key answers NOT_RESPONSIBLE with the owner's address as it sees it, and the request follows that
address; failing that, an iterative Chord lookup from this node names the owner. Answers are relayed
as they come (status and value). Nothing here blocks: each step is a v2 call with a deadline on the
node's loop, and the reference's deadlock (two nodes waiting for each other inside their handlers)
cannot happen, because a node never waits for anything while it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from funnelkvs.chord import LookupDone, NodeRef
from funnelkvs.loop import Future
from funnelkvs.protocol import Status
from funnelkvs.protocol.v2 import V2Response, key_value_body

if TYPE_CHECKING:
    from funnelkvs.ring.driver import RingDriver

log = logging.getLogger("funnelkvs.ring.forwarding")

#: Hops a forwarded request may take after NOT_RESPONSIBLE answers before a lookup decides.
MAX_REDIRECTS = 2

#: Called with (status, body) once the owner has answered (or the forward failed: SERVER_ERROR).
Done = Callable[[int, bytes], None]


class Forwarder:
    """Sends GET/PUT/DELETE to the owner of the key and reports the answer."""

    def __init__(self, driver: RingDriver) -> None:
        self.driver = driver
        #: Requests forwarded and not yet answered (for INFO and tests).
        self.in_flight = 0
        self.forwarded = 0

    def forward(self, op: int, key: bytes, value: bytes | bytearray, position: int, done: Done) -> None:
        """Forward one request for ``key`` (ring position ``position``); ``done(status, body)`` later."""
        self.in_flight += 1
        self.forwarded += 1
        body = key_value_body(op, key, value)
        owner = self.driver.membership.owner_of(position)
        if owner.node_id == self.driver.me.node_id:
            # The view names us but the Chord state does not (a join or a failure in progress).
            self._lookup(op, body, position, done)
            return
        self._send(owner, op, body, position, MAX_REDIRECTS, done)

    def _send(self, to: NodeRef, op: int, body: bytes, position: int, redirects: int, done: Done) -> None:
        from funnelkvs.ring.driver import split_address

        host, port = split_address(to.address)
        timeout = self.driver.settings.rpc_timeout
        future = self.driver.node.peer(host, port).call(op, body, timeout=timeout)
        future.add_done_callback(
            lambda answer: self._answered(to, op, body, position, redirects, done, answer)
        )

    def _answered(
        self,
        to: NodeRef,
        op: int,
        body: bytes,
        position: int,
        redirects: int,
        done: Done,
        answer: Future[V2Response],
    ) -> None:
        """``redirects``: NOT_RESPONSIBLE answers still to follow; 0: a lookup decides next; -1: the
        lookup has decided, nothing more is tried."""
        if answer.exception() is not None:
            log.debug("forward to %s failed: %s", to.address, answer.exception())
            if redirects < 0:
                self._finish(done, Status.SERVER_ERROR, b"")
            else:
                self._lookup(op, body, position, done)
            return
        response = answer.result()
        if response.status != Status.NOT_RESPONSIBLE:
            self._finish(done, response.status, response.body)
            return
        suggested = response.body.decode(errors="replace")
        if redirects > 0 and suggested and suggested != to.address:
            self._send(NodeRef(0, suggested), op, body, position, redirects - 1, done)
        elif redirects == 0:
            self._lookup(op, body, position, done)
        else:
            self._finish(done, Status.SERVER_ERROR, b"")

    def _lookup(self, op: int, body: bytes, position: int, done: Done) -> None:
        """Ask Chord itself; the owner it finds gets the request, and its answer is final. That owner
        may be this node (its range just grew): the request then comes back in over v2 and is
        answered like any other."""
        lookup = self.driver.lookup(position)

        def found(result: Future[LookupDone]) -> None:
            if result.exception() is not None:
                self._finish(done, Status.SERVER_ERROR, b"")
            else:
                self._send(result.result().owner, op, body, position, -1, done)

        lookup.add_done_callback(found)

    def _finish(self, done: Done, status: int, body: bytes) -> None:
        self.in_flight -= 1
        done(status, body)
