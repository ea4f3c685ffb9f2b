"""What a node's answer means for each op: a result, or the typed error its status stands for."""

from __future__ import annotations

from typing import Any

from funnelkvs.client.address import Address
from funnelkvs.errors import (
    FunnelKVSError,
    InvalidRequest,
    NotResponsible,
    RemoteProtocolError,
    RequestTimeout,
    ServerError,
)
from funnelkvs.protocol import Op, Response, Status, parse_stats_text

_SUCCESS = Status.SUCCESS
_NOT_FOUND = Status.NOT_FOUND
_SIZE_HINTS: dict[int, str] = {
    Op.PUT: "is the key or value over the node's size limit?",
    Op.GET: "is the key over the node's size limit?",
    Op.DELETE: "is the key over the node's size limit?",
}


def error_for(op: int, response: Response, address: Address | str) -> FunnelKVSError:
    """The exception for an answer whose status is not a success for ``op``; its text is
    ``"<address> answered <STATUS> to <OP>: <the node's message>"`` (a v2 error answer's body is a
    message; a v1 one is empty). INVALID_REQUEST is :class:`InvalidRequest`, NOT_RESPONSIBLE
    :class:`NotResponsible`, TIMEOUT :class:`RequestTimeout`, anything else :class:`ServerError`."""
    try:
        status = Status(response.status)
    except ValueError:
        return RemoteProtocolError(f"{address} answered with unknown status {response.status:#04x}")
    detail = response.value.decode("utf-8", "replace").strip()
    if not detail and status is Status.INVALID_REQUEST and op in _SIZE_HINTS:
        # This client only sends well-formed frames: the node's own size limits are what is left.
        detail = _SIZE_HINTS[op]
    message = f"{address} answered {status.name} to {Op(op).name}" + (f": {detail}" if detail else "")
    if status is Status.INVALID_REQUEST:
        return InvalidRequest(message, status)
    if status is Status.NOT_RESPONSIBLE:
        return NotResponsible(message, status)
    if status is Status.TIMEOUT:
        # The node gave up waiting for others (a write or read quorum not reached in time): a timeout
        # to the caller, never replayed, like its own deadline. The node's message says which quorum.
        return RequestTimeout(message)
    # SERVER_ERROR and a NOT_FOUND where the op cannot miss: the node answered, so it is the node's
    # error, not a transport one.
    return ServerError(message, status)


def result_of(op: int, response: Response, address: Address | str) -> Any:
    """The value a call returns for this answer, or raise the error its status means.

    GET: ``bytes``, or ``None`` when not found. PUT, DELETE: ``None`` (a DELETE of a missing key is a
    success in v1). PING: the text (``"pong"``). STATS: the parsed ``{"keys": N, "size": N, ...}``.
    """
    status = response.status
    if status == _SUCCESS:
        if op == Op.GET:
            return response.value
        if op == Op.PING:
            return response.value.decode("utf-8", "replace")
        if op == Op.STATS:
            return parse_stats_text(response.value)
        return None
    if status == _NOT_FOUND and (op == Op.GET or op == Op.DELETE):
        return None
    raise error_for(op, response, address)
