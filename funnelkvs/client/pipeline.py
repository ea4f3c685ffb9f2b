"""Pipelining: queue many requests, send them in one go, read the answers in order."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from funnelkvs.client.answers import result_of
from funnelkvs.errors import FunnelKVSError, NotAnswered
from funnelkvs.protocol import Op, Response, Status, encode_request

if TYPE_CHECKING:
    from funnelkvs.client.address import Address
    from funnelkvs.client.client import Client, KeyLike

_KNOWN_STATUSES = frozenset(Status)


class Pipeline:
    """Requests queued with :meth:`get`, :meth:`put`... and sent by :meth:`execute` on one connection.

    Leaving a ``with`` block normally executes what is still queued (so a bulk load cannot be lost by
    forgetting the call); leaving it with an exception discards it. Not thread-safe: one per thread.
    """

    __slots__ = ("_client", "_frames", "_ops")

    def __init__(self, client: Client) -> None:
        self._client = client
        self._ops: list[int] = []
        self._frames: list[bytes] = []

    def __len__(self) -> int:
        return len(self._ops)

    def _queue(self, op: int, key: bytes = b"", value: bytes = b"") -> Pipeline:
        self._frames.append(encode_request(op, key, value))
        self._ops.append(op)
        return self

    def get(self, key: KeyLike) -> Pipeline:
        return self._queue(Op.GET, self._client.key_bytes(key))

    def put(self, key: KeyLike, value: KeyLike) -> Pipeline:
        return self._queue(Op.PUT, self._client.key_bytes(key), self._client.value_bytes(value))

    def delete(self, key: KeyLike) -> Pipeline:
        return self._queue(Op.DELETE, self._client.key_bytes(key))

    def ping(self) -> Pipeline:
        return self._queue(Op.PING)

    def stats(self) -> Pipeline:
        return self._queue(Op.STATS)

    def reset(self) -> None:
        """Forget what is queued."""
        self._ops = []
        self._frames = []

    def execute(self, *, raise_on_error: bool = True) -> list[Any]:
        """Send everything queued; one result per request, in order (as the matching
        :class:`~funnelkvs.Client` method returns it). The queue is emptied either way.

        An error status does not stop the batch: every answer is read. Then the first error is raised,
        or with ``raise_on_error=False`` each error takes its request's place in the list.

        A node closes the connection after some error answers (a request over its size limit is
        refused from its header): the requests behind such an answer are not carried out, and each
        gets a :class:`~funnelkvs.errors.NotAnswered` in its place. The error answer itself is the one
        raised (when it is the first error).
        """
        ops, frames = self._ops, self._frames
        self.reset()
        if not ops:
            return []
        responses, address = self._client.exchange(ops, frames)
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
