"""Admin queries for operators' tools (``funnelkvs ring``, ``stats --cluster``, ``leave``): one v2
request, one answer, on a blocking connection of its own, within a timeout.

Not the data path: :class:`funnelkvs.Client` pools connections and retries; this module opens a
connection per call, never retries, and closes it. Socket errors are translated into the error tree
(:mod:`funnelkvs.errors`) here: no connection or a connection lost before the answer is
:class:`NodeUnreachable`, no answer within ``timeout`` :class:`RequestTimeout`, an error status a
:class:`ServerError` (:class:`InvalidRequest` for INVALID_REQUEST) carrying the node's reason.

::

    view = ring_view("127.0.0.1:8001")          # the members as that node sees them
    for member in cluster_view("127.0.0.1:8001").members:
        print(member.address, member.status, member.info and member.info["keys"])
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from funnelkvs.client.address import Address, parse_address
from funnelkvs.errors import (
    FunnelKVSError,
    InvalidRequest,
    NodeUnreachable,
    NotResponsible,
    RemoteProtocolError,
    RequestTimeout,
    ServerError,
)
from funnelkvs.protocol import INFO, NEED_DATA, Status
from funnelkvs.protocol.rpc import LEAVE, RING_VIEW
from funnelkvs.protocol.v2 import V2Response, V2ResponseDecoder, encode_v2_request

DEFAULT_TIMEOUT: Final = 5.0
#: INFO calls in flight at once when a whole ring is asked (``cluster_view``).
MAX_PARALLEL: Final = 32
_RECV_SIZE: Final = 64 * 1024
#: Admin answers are small JSON documents: a larger body is a broken answer, not one to buffer.
_MAX_ANSWER: Final = 16 * 1024 * 1024
_request_ids = itertools.count(1)


def _address(address: str | Address) -> Address:
    """``address`` as an Address; ``ValueError`` (one line) for malformed text."""
    return address if isinstance(address, Address) else parse_address(address)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def admin_call(
    address: str | Address, op: int, body: bytes = b"", *, timeout: float = DEFAULT_TIMEOUT
) -> V2Response:
    """Send one v2 request (``op``, ``body``) to ``address`` and return its answer, whatever its status.

    ``timeout`` bounds the whole call (connecting, sending, the answer). Raises ``ValueError`` for a
    malformed address, :class:`NodeUnreachable`, :class:`RequestTimeout`, or
    :class:`RemoteProtocolError` for an answer that is not a v2 answer to this request.
    """
    target = _address(address)
    request_id = next(_request_ids) & 0xFFFF_FFFF
    frame = encode_v2_request(op, request_id, body)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection(target, timeout=timeout)
    except TimeoutError as exc:
        raise NodeUnreachable(f"cannot connect to {target}: timed out after {timeout} s") from exc
    except OSError as exc:
        raise NodeUnreachable(f"cannot connect to {target}: {_reason(exc)}") from exc
    decoder = V2ResponseDecoder(max_body=_MAX_ANSWER)
    try:
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(frame)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data = sock.recv(_RECV_SIZE)
                if not data:
                    raise NodeUnreachable(f"{target} closed the connection before answering")
                decoder.feed(data)
                event = decoder.next_event()
                if event is NEED_DATA:
                    continue
                assert isinstance(event, V2Response)
                if event.request_id != request_id:
                    raise RemoteProtocolError(
                        f"{target} answered request {event.request_id}, not {request_id}"
                    )
                return event
    except TimeoutError as exc:
        raise RequestTimeout(f"{target} did not answer within {timeout} s") from exc
    except OSError as exc:
        raise NodeUnreachable(f"connection to {target} lost: {_reason(exc)}") from exc


def checked(response: V2Response, address: str | Address, what: str) -> bytes:
    """The body of a SUCCESS answer; any other status raises :class:`ServerError` (InvalidRequest,
    NotResponsible) with the reason the node put in the body."""
    if response.status == Status.SUCCESS:
        return response.body
    try:
        name = Status(response.status).name
    except ValueError:
        raise RemoteProtocolError(
            f"{address} answered {what} with unknown status {response.status}"
        ) from None
    reason = response.body.decode("utf-8", "replace").strip()
    message = f"{address} answered {what} with {name}" + (f": {reason}" if reason else "")
    if response.status == Status.INVALID_REQUEST:
        raise InvalidRequest(message, response.status)
    if response.status == Status.NOT_RESPONSIBLE:
        raise NotResponsible(message, response.status)
    raise ServerError(message, response.status)


def _json_object(body: bytes, address: str | Address, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RemoteProtocolError(f"{address} answered {what} with something that is not JSON") from exc
    if not isinstance(document, dict):
        raise RemoteProtocolError(f"{address} answered {what} with JSON that is not an object")
    return document


def info(address: str | Address, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """A node's INFO (keys, bytes, node_id, address, backend, uptime_s, connections, ring...)."""
    body = checked(admin_call(address, INFO, timeout=timeout), address, "INFO")
    return _json_object(body, address, "INFO")


@dataclass(frozen=True)
class Member:
    """One member of a ring view: ``owns`` is the fraction of the ring between its predecessor in the
    view and itself; ``successor`` the next member's address in the view."""

    id: str
    address: str
    successor: str
    owns: float


@dataclass(frozen=True)
class RingView:
    """RING_VIEW: the members in ring order starting with the answering node (``node``).
    ``complete`` is false when the node's last walk of the ring did not come back around."""

    node: str
    complete: bool
    members: tuple[Member, ...]


def ring_view(address: str | Address, *, timeout: float = DEFAULT_TIMEOUT) -> RingView:
    """The ring as the node at ``address`` sees it (v2 RING_VIEW, op 0x30). Its view is refreshed every
    ``ring.membership_interval`` seconds, so it lags a join or a crash by about that much."""
    document = _json_object(
        checked(admin_call(address, RING_VIEW, timeout=timeout), address, "RING_VIEW"), address, "RING_VIEW"
    )
    try:
        members = tuple(
            Member(
                id=str(row["id"]),
                address=str(row["address"]),
                successor=str(row.get("successor") or row["address"]),
                owns=float(row["owns"]),
            )
            for row in document["members"]
        )
        return RingView(
            node=str(document.get("node") or address),
            complete=bool(document.get("complete", True)),
            members=members,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"{address} answered RING_VIEW with a malformed view ({exc})") from exc


def leave(address: str | Address, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Ask the node to leave the ring (v2 LEAVE, op 0x31): it hands its keys to its successor and
    exits. Returns once the node has accepted (a SUCCESS answer; the connection closing after it does
    not matter); an error answer raises :class:`ServerError`."""
    checked(admin_call(address, LEAVE, timeout=timeout), address, "LEAVE")


def accepts_connections(address: str | Address, *, timeout: float = 1.0) -> bool:
    """Whether something listens at ``address``: a refused connection is False; a connection that
    cannot be made for another reason (no route, a timeout) raises :class:`NodeUnreachable`."""
    target = _address(address)
    try:
        with socket.create_connection(target, timeout=timeout):
            return True
    except ConnectionRefusedError:
        return False
    except OSError as exc:
        raise NodeUnreachable(f"cannot connect to {target}: {_reason(exc)}") from exc


def wait_until_closed(address: str | Address, *, timeout: float, interval: float = 0.1) -> bool:
    """Poll until ``address`` refuses connections (the node has closed its port); False if it still
    accepts them after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if not accepts_connections(address, timeout=max(0.1, min(1.0, remaining))):
            return True
        if remaining <= 0:
            return False
        time.sleep(min(interval, max(0.0, remaining)))


# --- a whole ring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberStatus:
    """A member of the view with what it said about itself: ``info`` is its INFO, or None when it did
    not answer (``error`` then says why); ``status`` is ``up`` or ``down``."""

    member: Member
    info: dict[str, Any] | None
    error: str | None = None

    @property
    def status(self) -> str:
        return "down" if self.info is None else "up"

    @property
    def state(self) -> str | None:
        """``joining``, ``normal`` or ``leaving`` as the member reports it; None when it is down."""
        ring = (self.info or {}).get("ring")
        state = ring.get("state") if isinstance(ring, dict) else None
        return str(state) if state is not None else None

    @property
    def successor(self) -> str:
        """The member's successor as it reports it (its first live successor), else as the view has it."""
        ring = (self.info or {}).get("ring")
        if isinstance(ring, dict):
            successors = ring.get("successors")
            if isinstance(successors, list):
                if not successors:
                    return self.member.address  # alone on its ring
                first = successors[0]
                if isinstance(first, dict) and first.get("address"):
                    return str(first["address"])
        return self.member.successor


@dataclass(frozen=True)
class ClusterView:
    """A ring view plus every member's INFO (asked in parallel)."""

    node: str
    complete: bool
    members: tuple[MemberStatus, ...] = field(default_factory=tuple)

    @property
    def up(self) -> int:
        return sum(1 for member in self.members if member.info is not None)

    @property
    def down(self) -> int:
        return len(self.members) - self.up


def infos(
    addresses: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, Any] | FunnelKVSError]:
    """The INFO of each address, asked in parallel; a failure takes its address's place."""

    def one(address: str) -> dict[str, Any] | FunnelKVSError:
        try:
            return info(address, timeout=timeout)
        except FunnelKVSError as exc:
            return exc
        except ValueError as exc:  # an address the node reported that cannot be parsed
            return RemoteProtocolError(f"bad member address {address!r}: {exc}")

    if not addresses:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(addresses))) as pool:
        return list(pool.map(one, addresses))


def cluster_view(address: str | Address, *, timeout: float = DEFAULT_TIMEOUT) -> ClusterView:
    """The ring view of the node at ``address`` and the INFO of each member; a member that does not
    answer INFO within ``timeout`` is down. Raises as :func:`ring_view` when that node fails."""
    view = ring_view(address, timeout=timeout)
    answers = infos([member.address for member in view.members], timeout=timeout)
    members = tuple(
        MemberStatus(member, answer, None)
        if isinstance(answer, dict)
        else MemberStatus(member, None, str(answer))
        for member, answer in zip(view.members, answers, strict=True)
    )
    return ClusterView(view.node, view.complete, members)


__all__ = [
    "DEFAULT_TIMEOUT",
    "ClusterView",
    "Member",
    "MemberStatus",
    "RingView",
    "accepts_connections",
    "admin_call",
    "checked",
    "cluster_view",
    "info",
    "infos",
    "leave",
    "ring_view",
    "wait_until_closed",
]
