"""Forwarding a request for a key this node does not own to the node that does (v1 clients).

The owner is taken from the membership view (one hop). The view is a hint: a node that does not own
the key answers NOT_RESPONSIBLE with the owner's address as it sees it, and the request follows that
address (up to :data:`MAX_REDIRECTS` times); failing that, an iterative Chord lookup from this node
names the owner. While the ring is changing (a join, a crash not yet healed) no node may claim the
key for a moment: the request is then tried again from the start after a short pause, for up to
:data:`FORWARD_DEADLINE` seconds, before the client gets SERVER_ERROR. Answers are relayed as they
come (status and value).

Nothing here blocks: each step is a v2 call with a deadline on the node's loop, so the reference's
deadlock (two nodes each waiting, inside a request handler, for the other) cannot happen.
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

#: NOT_RESPONSIBLE answers followed before a lookup decides.
MAX_REDIRECTS = 2
#: How long a request is tried again while no node claims its key, in seconds.
FORWARD_DEADLINE = 5.0
#: How long one forwarded request may wait for the owner's answer, in seconds. Longer than the
#: Chord failure detector's ``ring.rpc_timeout`` on purpose: an owner busy with thousands of
#: pipelined requests is slow, not dead (its control connection says which), and a forwarded write
#: sent twice could land after a later write to the same key.
FORWARD_TIMEOUT = 10.0
#: The first pause before trying again, in seconds; doubled each time up to :data:`RETRY_MAX`.
RETRY_FIRST = 0.05
RETRY_MAX = 0.5

#: Called with (status, body) once the owner has answered (or the forward failed: SERVER_ERROR).
Done = Callable[[int, bytes], None]


class _Forward:
    """One request on its way to its owner."""

    __slots__ = ("body", "done", "give_up_at", "op", "pause", "position")

    def __init__(self, op: int, body: bytes, position: int, done: Done, give_up_at: float) -> None:
        self.op = op
        self.body = body
        self.position = position
        self.done = done
        self.give_up_at = give_up_at
        self.pause = RETRY_FIRST


class Forwarder:
    """Sends GET/PUT/DELETE to the owner of the key and reports the answer."""

    def __init__(self, driver: RingDriver) -> None:
        self.driver = driver
        #: Requests forwarded and not yet answered, and all forwarded so far (INFO, tests).
        self.in_flight = 0
        self.forwarded = 0
        self.retried = 0

    def forward(self, op: int, key: bytes, value: bytes | bytearray, position: int, done: Done) -> None:
        """Forward one request for ``key`` (ring position ``position``); ``done(status, body)`` later."""
        self.in_flight += 1
        self.forwarded += 1
        loop = self.driver.loop
        self._start(
            _Forward(op, key_value_body(op, key, value), position, done, loop.time() + FORWARD_DEADLINE)
        )

    def _start(self, request: _Forward) -> None:
        owner = self.driver.owner_hint(request.position)
        if owner.node_id == self.driver.me.node_id:
            # The view names us but the Chord state does not (a join or a failure in progress).
            self._lookup(request)
        else:
            self._send(owner, request, MAX_REDIRECTS)

    def _send(self, to: NodeRef, request: _Forward, redirects: int) -> None:
        """``redirects``: NOT_RESPONSIBLE answers still to follow; 0: a lookup decides next; -1: the
        lookup has decided."""
        from funnelkvs.ring.driver import split_address

        host, port = split_address(to.address)
        timeout = max(FORWARD_TIMEOUT, self.driver.settings.rpc_timeout)
        future = self.driver.node.peer(host, port).call(request.op, request.body, timeout=timeout)
        future.add_done_callback(lambda answer: self._answered(to, request, redirects, answer))

    def _answered(self, to: NodeRef, request: _Forward, redirects: int, answer: Future[V2Response]) -> None:
        if answer.exception() is not None:
            log.debug("forward to %s failed: %r", to.address, answer.exception())
            if redirects < 0:
                self._again(request)
            else:
                self._lookup(request)
            return
        response = answer.result()
        if response.status != Status.NOT_RESPONSIBLE:
            self._finish(request, response.status, response.body)
            return
        suggested = response.body.decode(errors="replace")
        if redirects > 0 and suggested and suggested != to.address:
            self._send(NodeRef(0, suggested), request, redirects - 1)
        elif redirects >= 0:
            self._lookup(request)
        else:
            self._again(request)

    def _lookup(self, request: _Forward) -> None:
        """Ask Chord itself; the owner it finds gets the request. That owner may be this node (its
        range just grew): the request then comes back in over v2 and is answered like any other."""
        lookup = self.driver.lookup(request.position)

        def found(result: Future[LookupDone]) -> None:
            if result.exception() is not None:
                self._again(request)
            else:
                self._send(result.result().owner, request, -1)

        lookup.add_done_callback(found)

    def _again(self, request: _Forward) -> None:
        """Nobody claimed the key (the ring is changing): start over after a pause, until the deadline."""
        loop = self.driver.loop
        if loop.time() + request.pause > request.give_up_at:
            log.warning(
                "no node answered for key position %040x within %.0f s", request.position, FORWARD_DEADLINE
            )
            self._finish(request, Status.SERVER_ERROR, b"")
            return
        self.retried += 1
        loop.call_later(request.pause, self._start, request)
        request.pause = min(request.pause * 2, RETRY_MAX)

    def _finish(self, request: _Forward, status: int, body: bytes) -> None:
        self.in_flight -= 1
        request.done(status, body)
