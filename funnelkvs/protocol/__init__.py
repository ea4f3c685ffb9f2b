"""The FunnelKVS wire protocol, sans-I/O (in the style of h11): bytes in, events out, no sockets and
no clocks. ``docs/protocol.md`` has the byte layouts with hex examples.

- :mod:`funnelkvs.protocol.frames`: v1 (the reference's protocol, answers in request order) and v2
  (a request id per frame, answers in any order) frames, the incremental decoders and the encoders.
- :mod:`funnelkvs.protocol.receiver`: the buffering the decoders share (memory follows what a
  connection needs now; large values are gathered without copies).
- :mod:`funnelkvs.protocol.rpc`: the bodies of the v2 node-to-node and admin messages.

Everything public is re-exported here: ``from funnelkvs.protocol import RequestDecoder``.
"""

from __future__ import annotations

from funnelkvs.protocol.frames import (
    DEFAULT_MAX_KEY_SIZE,
    DEFAULT_MAX_VALUE_SIZE,
    DELETE,
    GET,
    HEADER_V1,
    INFO,
    MAGIC,
    PING,
    PUT,
    RESERVED_OP_RANGES,
    RESPONSE_HEAD,
    RESPONSE_HEADER_SIZE,
    RESPONSE_INVALID,
    RESPONSE_NOT_FOUND,
    RESPONSE_OK,
    RESPONSE_PONG,
    RESPONSE_SERVER_ERROR,
    STATS,
    U32_MAX,
    VERSION_1,
    VERSION_2,
    FrameError,
    Op,
    Request,
    RequestDecoder,
    Response,
    ResponseDecoder,
    Status,
    encode_request,
    encode_response,
    parse_stats_text,
    stats_text,
)
from funnelkvs.protocol.receiver import KEEP_DECODED, LARGE_VALUE, NEED_DATA

__all__ = [
    "DEFAULT_MAX_KEY_SIZE",
    "DEFAULT_MAX_VALUE_SIZE",
    "DELETE",
    "GET",
    "HEADER_V1",
    "INFO",
    "KEEP_DECODED",
    "LARGE_VALUE",
    "MAGIC",
    "NEED_DATA",
    "PING",
    "PUT",
    "RESERVED_OP_RANGES",
    "RESPONSE_HEAD",
    "RESPONSE_HEADER_SIZE",
    "RESPONSE_INVALID",
    "RESPONSE_NOT_FOUND",
    "RESPONSE_OK",
    "RESPONSE_PONG",
    "RESPONSE_SERVER_ERROR",
    "STATS",
    "U32_MAX",
    "VERSION_1",
    "VERSION_2",
    "FrameError",
    "Op",
    "Request",
    "RequestDecoder",
    "Response",
    "ResponseDecoder",
    "Status",
    "encode_request",
    "encode_response",
    "parse_stats_text",
    "stats_text",
]
