"""A client connection's state on the node, and its output queue.

v1 answers leave in request order. Most are ready the moment their request is decoded and go
straight into ``out`` as bytes. An answer that another node gives (a forwarded request) is an
:class:`AnswerSlot` in ``out``, filled when the peer replies; answers decoded after it wait behind it,
and the connection writes up to the first slot still empty (:meth:`ClientConnection.ready_prefix`). A
connection with no slot keeps the single-node fast path: ``out`` is only bytes, joined and sent.
"""

from __future__ import annotations

import socket
from typing import Any

from funnelkvs.loop import EVENT_READ
from funnelkvs.protocol import RequestDecoder

#: Forwarded requests one connection may have waiting for their answers; past it, the connection's
#: requests stay undecoded until some come back (as with the output cap).
MAX_SLOTS = 1024


class AnswerSlot:
    """A place in a connection's output for an answer that arrives later."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None


class ClientConnection:
    __slots__ = (
        "address",
        "closing",
        "decoder",
        "events",
        "failed",
        "handler",
        "out",
        "out_size",
        "paused",
        "slots",
        "sock",
        "sync_mark",
        "waiting",
        "wants_sync",
    )

    def __init__(self, sock: socket.socket, address: str, decoder: RequestDecoder) -> None:
        self.sock = sock
        self.address = address
        self.decoder = decoder
        #: Answers in request order: bytes, or AnswerSlot for an answer still to come.
        self.out: list[Any] = []
        #: Bytes of the answers in ``out`` (an empty slot counts 0).
        self.out_size = 0
        #: AnswerSlots in ``out`` (filled or not); 0 keeps the fast path.
        self.slots = 0
        #: The selector events currently registered (to avoid redundant epoll_ctl calls).
        self.events = EVENT_READ
        #: Close once the output has drained (fatal frame error, EOF from the client, shutdown).
        self.closing = False
        #: Output holds answers to writes that the pass-end sync has not covered yet.
        self.wants_sync = False
        #: Decoding stopped because the output reached the cap; resume once it has drained.
        self.paused = False
        #: Index in ``out`` of the first answer the pending sync must cover.
        self.sync_mark = 0
        #: Storage-thread jobs (a batch commit, a read) whose answers this connection waits for; while
        #: non-zero the connection is held: unregistered from the loop, neither read nor written.
        self.waiting = 0
        #: A sync failed: the output ends in SERVER_ERROR and nothing more may be appended.
        self.failed = False
        #: The loop callback for this connection's socket (kept to register it again after a hold).
        self.handler: Any = None

    def add_slot(self) -> AnswerSlot:
        """Reserve the next place in the output for an answer that comes later."""
        slot = AnswerSlot()
        self.out.append(slot)
        self.slots += 1
        return slot

    def fill(self, slot: AnswerSlot, answer: bytes) -> None:
        """The answer for ``slot`` has come."""
        slot.data = answer
        self.out_size += len(answer)

    def ready_prefix(self) -> int:
        """How many leading entries of ``out`` can be sent now: every answer up to the first slot still
        empty. Filled slots on the way are replaced by their bytes."""
        out = self.out
        if not self.slots:
            return len(out)
        for index, item in enumerate(out):
            if type(item) is AnswerSlot:
                if item.data is None:
                    return index
                out[index] = item.data
                self.slots -= 1
        return len(out)
