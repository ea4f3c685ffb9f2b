"""Pipelining: queue many requests, send them in one go, read the answers in order.

Against a ring (routing on), :meth:`Pipeline.execute` splits the keyed requests per owner, sends each
share as v2 frames to its owner, and merges the answers back in the order they were queued.

Off the routed path (``routing=False``, a ring of one node) a pipeline goes as v1, unless one of its
requests has ``w``/``r``: then the whole pipeline goes as v2 frames on the one connection (the
quorums travel only in v2; all requests in one version keep their order on that connection)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from funnelkvs.client.answers import result_of
from funnelkvs.client.quorums import NO_QUORUM, quorum_count
from funnelkvs.errors import FunnelKVSError, NotAnswered
from funnelkvs.protocol import Op, Response, Status, encode_request
from funnelkvs.protocol.v2 import encode_v2_request, key_value_body

if TYPE_CHECKING:
    from funnelkvs.client.address import Address
    from funnelkvs.client.client import Client, KeyLike
    from funnelkvs.client.routing import RingView

_KNOWN_STATUSES = frozenset(Status)


class Pipeline:
    """Requests queued with :meth:`get`, :meth:`put`... and sent by :meth:`execute` on one connection.

    Leaving a ``with`` block normally executes what is still queued (so a bulk load cannot be lost by
    forgetting the call); leaving it with an exception discards it. Not thread-safe: one per thread.
    """

    __slots__ = ("_client", "_keys", "_ops", "_quorums", "_values")

    def __init__(self, client: Client) -> None:
        self._client = client
        # Frames are encoded at execute(), once it is known whether they go as v1 or per owner as v2.
        self._ops: list[int] = []
        self._keys: list[bytes] = []
        self._values: list[bytes] = []
        #: (w, r) per request; NO_QUORUM where neither was asked for.
        self._quorums: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self._ops)

    def _queue(
        self, op: int, key: bytes = b"", value: bytes = b"", quorum: tuple[int, int] = NO_QUORUM
    ) -> Pipeline:
        self._ops.append(op)
        self._keys.append(key)
        self._values.append(value)
        self._quorums.append(quorum)
        return self

    def get(self, key: KeyLike, *, r: int | None = None) -> Pipeline:
        """Queue a GET; ``r`` as in :meth:`Client.get <funnelkvs.Client.get>`."""
        return self._queue(Op.GET, self._client.key_bytes(key), b"", (0, quorum_count("r", r)))

    def put(self, key: KeyLike, value: KeyLike, *, w: int | None = None) -> Pipeline:
        """Queue a PUT; ``w`` as in :meth:`Client.put <funnelkvs.Client.put>`."""
        quorum = (quorum_count("w", w), 0)
        return self._queue(Op.PUT, self._client.key_bytes(key), self._client.value_bytes(value), quorum)

    def delete(self, key: KeyLike, *, w: int | None = None) -> Pipeline:
        """Queue a DELETE; ``w`` as in :meth:`Client.delete <funnelkvs.Client.delete>`."""
        return self._queue(Op.DELETE, self._client.key_bytes(key), b"", (quorum_count("w", w), 0))

    def ping(self) -> Pipeline:
        return self._queue(Op.PING)

    def stats(self) -> Pipeline:
        return self._queue(Op.STATS)

    def reset(self) -> None:
        """Forget what is queued."""
        self._ops = []
        self._keys = []
        self._values = []
        self._quorums = []

    def execute(self, *, raise_on_error: bool = True) -> list[Any]:
        """Send everything queued; one result per request, in order (as the matching
        :class:`~funnelkvs.Client` method returns it). The queue is emptied either way.

        An error status does not stop the batch: every answer is read. Then the first error is raised,
        or with ``raise_on_error=False`` each error takes its request's place in the list.

        A node closes the connection after some error answers (a request over its size limit is
        refused from its header): the requests behind such an answer are not carried out, and each
        gets a :class:`~funnelkvs.errors.NotAnswered` in its place. The error answer itself is the one
        raised (when it is the first error).

        Routed (a ring, routing on): the requests for each owner go on a connection to it, all owners
        at once; results come back in queued order all the same.
        """
        ops, keys, values, quorums = self._ops, self._keys, self._values, self._quorums
        self.reset()
        if not ops:
            return []
        client = self._client
        view = client.routed_view()
        if view is not None:
            return _routed_results(client, view, ops, keys, values, quorums, raise_on_error)
        if any(quorum != NO_QUORUM for quorum in quorums):
            return _v2_results(client, ops, keys, values, quorums, raise_on_error)
        frames = [encode_request(op, key, value) for op, key, value in zip(ops, keys, values, strict=True)]
        responses, address = client.exchange(ops, frames)
        results: list[Any] = []
        first_error: FunnelKVSError | None = None
        for op, response in zip(ops, responses, strict=False):
            try:
                results.append(result_of(op, response, address))
            except FunnelKVSError as exc:
                first_error = first_error or exc
                results.append(exc)
        if len(responses) < len(ops):
            results.extend(_not_answered(ops, responses, address))
            first_error = first_error or results[-1]
        if first_error is not None and raise_on_error:
            raise first_error
        return results

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.execute()
        else:
            self.reset()


def _routed_results(
    client: Client,
    view: RingView,
    ops: list[int],
    keys: list[bytes],
    values: list[bytes],
    quorums: list[tuple[int, int]],
    raise_on_error: bool,
) -> list[Any]:
    outcomes = client._router.exchange(view, ops, keys, values, quorums)  # type: ignore[union-attr]
    results: list[Any] = []
    first_error: FunnelKVSError | None = None
    for op, outcome in zip(ops, outcomes, strict=True):
        if isinstance(outcome, FunnelKVSError):
            first_error = first_error or outcome
            results.append(outcome)
            continue
        response, address = outcome
        try:
            results.append(result_of(op, response, address))
        except FunnelKVSError as exc:
            first_error = first_error or exc
            results.append(exc)
    if first_error is not None and raise_on_error:
        raise first_error
    return results


def _v2_results(
    client: Client,
    ops: list[int],
    keys: list[bytes],
    values: list[bytes],
    quorums: list[tuple[int, int]],
    raise_on_error: bool,
) -> list[Any]:
    """The plain path for a pipeline with w/r: every request as a v2 frame (request id = its index) on
    one pooled connection; answers matched by id. A NOT_RESPONSIBLE answer (``routing=False`` against
    a ring) is followed to the owner as a single call (:meth:`Client.settle_v2`)."""
    frames = [
        encode_v2_request(op, i, key_value_body(op, key, value, *quorum))
        for i, (op, key, value, quorum) in enumerate(zip(ops, keys, values, quorums, strict=True))
    ]
    answers, address = client.exchange_v2(ops, frames)
    by_id = {answer.request_id: answer for answer in answers}
    results: list[Any] = []
    first_error: FunnelKVSError | None = None
    for i, op in enumerate(ops):
        answer = by_id.get(i)
        try:
            if answer is None:
                raise NotAnswered(
                    f"{address} closed the connection without answering {Op(op).name} (request "
                    f"{i + 1} of {len(ops)}) after an error answer; whether it was carried out is unknown"
                )
            if answer.status == Status.NOT_RESPONSIBLE:
                # settle_v2 resends with request id 1, as a single call does.
                single = encode_v2_request(op, 1, key_value_body(op, keys[i], values[i], *quorums[i]))
                results.append(client.settle_v2(op, single, answer, address))
            else:
                results.append(result_of(op, Response(answer.status, answer.body), address))
        except FunnelKVSError as exc:
            first_error = first_error or exc
            results.append(exc)
    if first_error is not None and raise_on_error:
        raise first_error
    return results


def _not_answered(ops: list[int], responses: list[Response], address: Address) -> list[NotAnswered]:
    """One error for each request behind the answer after which the node closed the connection."""
    answered = len(responses)
    status = responses[-1].status
    closing = Status(status).name if status in _KNOWN_STATUSES else f"status {status:#04x}"
    # After refusing a frame the node reads nothing more from the connection; after a failed sync
    # (SERVER_ERROR) it may have applied later writes whose answers it cut.
    outcome = (
        "it was not carried out"
        if status == Status.INVALID_REQUEST
        else "whether it was carried out is unknown"
    )
    return [
        NotAnswered(
            f"{address} closed the connection without answering {Op(op).name} (request {index + 1} "
            f"of {len(ops)}) after answering {closing} to request {answered}; {outcome}"
        )
        for index, op in enumerate(ops[answered:], start=answered)
    ]
