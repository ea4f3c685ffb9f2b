"""The bodies of the v2 node-to-node messages: the Chord RPCs (:mod:`funnelkvs.chord.messages`) as
bytes and back. Pure functions; docs/protocol.md has the layouts with hex examples.

A node is written as ``id (20 bytes) | address length u8 | address (UTF-8)``; a list of nodes as
``count u8 | node...``; an optional node as ``flag u8 (0 absent, 1 present) | [node]``.

======  ===============  ================================  ============================================
op      request          request body                      answer body (status SUCCESS)
======  ===============  ================================  ============================================
0x04    Ping             (empty)                           ``pong`` (the v1 PING answer)
0x10    FindSuccessor    key id (20) | count u8 | ids      ``0`` | node list (Found) or ``1`` | node
                         to avoid (20 each)                (NextHop)
0x11    GetNeighbours    (empty)                           optional predecessor | successor list
0x12    Notify           node                              (empty)
0x13    Leave            node | optional predecessor |     (empty)
                         successor list
======  ===============  ================================  ============================================
"""

from __future__ import annotations

import struct
from typing import Final

from funnelkvs.chord.messages import (
    ACK,
    PONG,
    FindSuccessor,
    Found,
    GetNeighbours,
    Leave,
    Neighbours,
    NextHop,
    Notify,
    Ping,
    Pong,
    Reply,
    Request,
)
from funnelkvs.chord.node_ref import NodeRef
from funnelkvs.errors import LocalProtocolError, RemoteProtocolError

PING_OP: Final = 0x04
FIND_SUCCESSOR: Final = 0x10
GET_NEIGHBOURS: Final = 0x11
NOTIFY: Final = 0x12
LEAVE_NOTICE: Final = 0x13
#: Admin queries (docs/protocol.md): JSON answers.
RING_VIEW: Final = 0x30
LEAVE: Final = 0x31
#: Every member's INFO and the totals, gathered by the node asked (JSON).
CLUSTER_STATS: Final = 0x32
#: Reserved: the first exchange on a node-to-node connection once cluster authentication lands.
HELLO: Final = 0x3F

_ID_BYTES: Final = 20
_OPS: Final[dict[type, int]] = {
    Ping: PING_OP,
    FindSuccessor: FIND_SUCCESSOR,
    GetNeighbours: GET_NEIGHBOURS,
    Notify: NOTIFY,
    Leave: LEAVE_NOTICE,
}
CHORD_OPS: Final = frozenset(_OPS.values())


# --- pieces --------------------------------------------------------------------------------------------


def _node(node: NodeRef) -> bytes:
    address = node.address.encode()
    if len(address) > 255:
        raise LocalProtocolError(f"node address longer than 255 bytes: {node.address!r}")
    return node.node_id.to_bytes(_ID_BYTES, "big") + bytes((len(address),)) + address


def _nodes(nodes: tuple[NodeRef, ...]) -> bytes:
    if len(nodes) > 255:
        raise LocalProtocolError("more than 255 nodes in one list")
    return bytes((len(nodes),)) + b"".join(map(_node, nodes))


def _optional(node: NodeRef | None) -> bytes:
    return b"\x00" if node is None else b"\x01" + _node(node)


class _Reader:
    """Reads the pieces above from a body, raising RemoteProtocolError when it runs short."""

    __slots__ = ("body", "pos")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.body):
            raise RemoteProtocolError("message body too short")
        piece = self.body[self.pos : end]
        self.pos = end
        return piece

    def byte(self) -> int:
        return self.take(1)[0]

    def ident(self) -> int:
        return int.from_bytes(self.take(_ID_BYTES), "big")

    def node(self) -> NodeRef:
        ident = self.ident()
        try:
            address = self.take(self.byte()).decode()
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("node address is not UTF-8") from exc
        return NodeRef(ident, address)

    def nodes(self) -> tuple[NodeRef, ...]:
        return tuple(self.node() for _ in range(self.byte()))

    def optional(self) -> NodeRef | None:
        flag = self.byte()
        if flag > 1:
            raise RemoteProtocolError(f"bad optional-node flag {flag}")
        return self.node() if flag else None

    def end(self) -> None:
        if self.pos != len(self.body):
            raise RemoteProtocolError(f"{len(self.body) - self.pos} stray bytes after the message")


# --- requests --------------------------------------------------------------------------------------


def encode_request(message: Request) -> tuple[int, bytes]:
    """``(op, body)`` of a Chord request."""
    op = _OPS[type(message)]
    if isinstance(message, FindSuccessor):
        if len(message.avoid) > 255:
            raise LocalProtocolError("more than 255 ids to avoid")
        body = message.key.to_bytes(_ID_BYTES, "big") + bytes((len(message.avoid),))
        body += b"".join(ident.to_bytes(_ID_BYTES, "big") for ident in message.avoid)
        return op, body
    if isinstance(message, Notify):
        return op, _node(message.node)
    if isinstance(message, Leave):
        return op, _node(message.node) + _optional(message.predecessor) + _nodes(message.successors)
    return op, b""  # Ping, GetNeighbours


def decode_request(op: int, body: bytes) -> Request:
    """The Chord request of a v2 frame with op ``op``; RemoteProtocolError when malformed."""
    reader = _Reader(body)
    message: Request
    if op == FIND_SUCCESSOR:
        key = reader.ident()
        message = FindSuccessor(key, tuple(reader.ident() for _ in range(reader.byte())))
    elif op == GET_NEIGHBOURS:
        message = GetNeighbours()
    elif op == NOTIFY:
        message = Notify(reader.node())
    elif op == LEAVE_NOTICE:
        message = Leave(reader.node(), reader.optional(), reader.nodes())
    elif op == PING_OP:
        message = Ping()
    else:
        raise RemoteProtocolError(f"op {op:#04x} is not a Chord request")
    reader.end()
    return message


# --- replies ---------------------------------------------------------------------------------------


def encode_reply(reply: Reply) -> bytes:
    """The answer body of a Chord reply (status SUCCESS)."""
    if isinstance(reply, Found):
        return b"\x00" + _nodes(reply.successors)
    if isinstance(reply, NextHop):
        return b"\x01" + _node(reply.node)
    if isinstance(reply, Neighbours):
        return _optional(reply.predecessor) + _nodes(reply.successors)
    if isinstance(reply, Pong):
        return b"pong"
    return b""  # Ack


def decode_reply(request: Request, body: bytes) -> Reply:
    """The reply to ``request`` carried by an answer body; RemoteProtocolError when malformed."""
    if isinstance(request, Ping):
        if body != b"pong":
            raise RemoteProtocolError("a PING was not answered pong")
        return PONG
    if isinstance(request, Notify | Leave):
        if body:
            raise RemoteProtocolError("an acknowledgement carries no body")
        return ACK
    reader = _Reader(body)
    reply: Reply
    if isinstance(request, FindSuccessor):
        kind = reader.byte()
        if kind == 0:
            successors = reader.nodes()
            if not successors:
                raise RemoteProtocolError("FindSuccessor answered with no owner")
            reply = Found(successors)
        elif kind == 1:
            reply = NextHop(reader.node())
        else:
            raise RemoteProtocolError(f"bad FindSuccessor answer kind {kind}")
    else:
        reply = Neighbours(reader.optional(), reader.nodes())
    reader.end()
    return reply


# --- range transfer (docs/protocol.md, "Range transfer") ----------------------------------------------

#: The new owner of a range asks its old owner for the next batch of entries (pull: one batch in
#: flight per transfer is the flow control).
TRANSFER_PULL: Final = 0x14
#: The new owner reads one key from the old owner's store while the range is still on its way.
TRANSFER_READ: Final = 0x15
#: The new owner has every entry of the range: the old owner may drop it.
TRANSFER_DONE: Final = 0x16
#: The old owner cannot serve the pull yet (it still owns the range): try again shortly.
NOT_YET: Final = 0x04  # Status.TIMEOUT

_U32 = struct.Struct(">I")


def _position(value: int) -> bytes:
    return value.to_bytes(_ID_BYTES, "big")


def encode_pull(start: int, end: int, after: int | None, limit: int) -> bytes:
    """TRANSFER_PULL body: the range ``(start, end]``, the position the last batch ended at (None:
    from the start) and the most entries wanted."""
    cursor = b"\x00" if after is None else b"\x01" + _position(after)
    return _position(start) + _position(end) + cursor + _U32.pack(limit)


def decode_pull(body: bytes) -> tuple[int, int, int | None, int]:
    reader = _Reader(body)
    start, end = reader.ident(), reader.ident()
    flag = reader.byte()
    if flag > 1:
        raise RemoteProtocolError(f"bad cursor flag {flag}")
    after = reader.ident() if flag else None
    limit = _U32.unpack(reader.take(4))[0]
    reader.end()
    return start, end, after, limit


def encode_batch(entries: list[tuple[bytes, bytes | bytearray | None]], more: bool, last: int) -> bytes:
    """TRANSFER_PULL answer: ``count u32 | (key_len u32 | key | flag u8 | [value_len u32 | value])...
    | more u8 | last position (20)``; flag 0 is a deletion the old owner had not committed yet."""
    pieces: list[bytes | bytearray] = [_U32.pack(len(entries))]
    for key, value in entries:
        pieces += [_U32.pack(len(key)), key]
        if value is None:
            pieces.append(b"\x00")
        else:
            pieces += [b"\x01", _U32.pack(len(value)), value]
    pieces += [b"\x01" if more else b"\x00", _position(last)]
    return b"".join(pieces)


def decode_batch(body: bytes) -> tuple[list[tuple[bytes, bytes | None]], bool, int]:
    reader = _Reader(body)
    entries: list[tuple[bytes, bytes | None]] = []
    for _ in range(_U32.unpack(reader.take(4))[0]):
        key = reader.take(_U32.unpack(reader.take(4))[0])
        flag = reader.byte()
        if flag > 1:
            raise RemoteProtocolError(f"bad entry flag {flag}")
        entries.append((key, reader.take(_U32.unpack(reader.take(4))[0]) if flag else None))
    more = reader.byte()
    if more > 1:
        raise RemoteProtocolError(f"bad 'more' flag {more}")
    last = reader.ident()
    reader.end()
    return entries, bool(more), last


def encode_range(start: int, end: int) -> bytes:
    """TRANSFER_DONE body: the range ``(start, end]``."""
    return _position(start) + _position(end)


def decode_range(body: bytes) -> tuple[int, int]:
    reader = _Reader(body)
    start, end = reader.ident(), reader.ident()
    reader.end()
    return start, end
