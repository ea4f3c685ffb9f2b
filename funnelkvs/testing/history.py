"""Record what clients did to a store under faults, then check what survived (issue 9's fault tests).

A :class:`History` is a thread-safe log of operations in the style of Jepsen (Kingsbury, "Jepsen:
linearizability checking"): each operation is recorded when invoked and again when its answer comes
back, with one of three outcomes:

- ``ok``: acknowledged. A write with this outcome must survive (or be overwritten by a later write).
- ``failed``: certainly did not happen (e.g. the connection was refused: nothing was sent).
- ``unknown`` (indeterminate): an error answer, a timeout, a dropped connection. The write may or may
  not have happened: a later read may see it, but it need not survive. An operation still pending
  when the history is checked counts as ``unknown``.

:func:`check` compares a final read of every key written against the history. For each key, the final
state may be the effect of any write ``w`` (put or delete, ``ok`` or ``unknown``) that no acknowledged
write *definitely followed*: one invoked after ``w`` completed (an ``unknown`` write never completed,
so only its own invocation bounds it). That is the real-time order of linearizability (Herlihy & Wing
1990) restricted to the last write, which is what last-writer-wins on a clock that follows real time
promises. The key may read NOT_FOUND when such a delete exists, or when no write was acknowledged.

What :func:`check` reports (:class:`CheckResult`):

- ``lost``: the key reads NOT_FOUND or an older value where an acknowledged put must be visible.
- ``phantoms``: a read (final, or a recorded ``get``) returned a value no put of that key wrote
  (``failed`` puts do not count: they never happened).
- ``resurrected``: an acknowledged delete must be visible, yet the key reads a value.
- ``unreadable``: the final read of a key with an acknowledged write failed or was not done (the key
  cannot be shown to survive). A key whose writes all failed or are indeterminate may read as an
  error: nothing of it had to survive.

Usage::

    history = History()
    op = history.invoke_put(b"k", b"v")
    try:
        client.put(b"k", b"v")
    except FunnelKVSError as exc:
        history.unknown(op, repr(exc))
    else:
        history.ok(op)
    result = check(history, read_back(address, history.keys()))
    assert result.ok, result.summary()
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from funnelkvs.protocol import GET, Response, Status, encode_request
from funnelkvs.testing.ring import v1_pipeline


class Kind(Enum):
    PUT = "put"
    DELETE = "delete"
    GET = "get"


class Outcome(Enum):
    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class Operation:
    """One client operation. Times are ``time.monotonic()`` seconds; ``completed`` is None while
    pending. ``value``: what a put wrote; ``read``: what an acknowledged get returned (None for
    NOT_FOUND)."""

    index: int
    kind: Kind
    key: bytes
    value: bytes | None
    invoked: float
    completed: float | None = None
    outcome: Outcome = Outcome.PENDING
    read: bytes | None = None
    note: str = ""

    @property
    def is_write(self) -> bool:
        return self.kind is not Kind.GET

    def settled_by(self) -> float:
        """When this write had certainly taken effect if it ever does: its completion when
        acknowledged; never (infinity) when indeterminate, since it may still land late."""
        if self.outcome is Outcome.OK and self.completed is not None:
            return self.completed
        return math.inf


class History:
    """A thread-safe log of operations (see the module docstring). ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._operations: list[Operation] = []

    # --- invocations ----------------------------------------------------------------------------------

    def _invoke(self, kind: Kind, key: bytes, value: bytes | None) -> Operation:
        with self._lock:
            op = Operation(len(self._operations), kind, bytes(key), value, self._clock())
            self._operations.append(op)
            return op

    def invoke_put(self, key: bytes, value: bytes) -> Operation:
        return self._invoke(Kind.PUT, key, bytes(value))

    def invoke_delete(self, key: bytes) -> Operation:
        return self._invoke(Kind.DELETE, key, None)

    def invoke_get(self, key: bytes) -> Operation:
        return self._invoke(Kind.GET, key, None)

    # --- completions ----------------------------------------------------------------------------------

    def _complete(self, op: Operation, outcome: Outcome, note: str, read: bytes | None = None) -> None:
        with self._lock:
            if op.outcome is not Outcome.PENDING:
                raise ValueError(
                    f"operation {op.index} completed twice ({op.outcome.value}, {outcome.value})"
                )
            op.completed = self._clock()
            op.outcome = outcome
            op.note = note
            op.read = read

    def ok(self, op: Operation, read: bytes | None = None) -> None:
        """Acknowledged; for a get, ``read`` is the value returned (None: NOT_FOUND)."""
        self._complete(op, Outcome.OK, "", read)

    def failed(self, op: Operation, note: str = "") -> None:
        """Certainly not applied (nothing reached a node)."""
        self._complete(op, Outcome.FAILED, note)

    def unknown(self, op: Operation, note: str = "") -> None:
        """Indeterminate: an error answer, a timeout or a dropped connection."""
        self._complete(op, Outcome.UNKNOWN, note)

    # --- views ----------------------------------------------------------------------------------------

    def operations(self) -> list[Operation]:
        """A snapshot of every operation, in invocation order."""
        with self._lock:
            return list(self._operations)

    def keys(self) -> list[bytes]:
        """Every key written (put or delete, whatever the outcome), in first-invocation order."""
        seen: dict[bytes, None] = {}
        for op in self.operations():
            if op.is_write:
                seen.setdefault(op.key, None)
        return list(seen)

    def counts(self) -> dict[str, int]:
        """Writes by outcome: ``{"ok": .., "failed": .., "unknown": .., "pending": ..}``."""
        counts = {outcome.value: 0 for outcome in Outcome}
        for op in self.operations():
            if op.is_write:
                counts[op.outcome.value] += 1
        return counts


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A final read that did not answer SUCCESS or NOT_FOUND (the reason, e.g. ``status 3``)."""

    reason: str


#: The final read of one key: its value, None for NOT_FOUND, or why it could not be read.
FinalRead = bytes | None | Unreadable


@dataclass(frozen=True, slots=True)
class Lost:
    key: bytes
    #: The value the last acknowledged put wrote (what should have been readable).
    expected: bytes | None
    observed: bytes | None


@dataclass(frozen=True, slots=True)
class Phantom:
    key: bytes
    observed: bytes
    #: ``"final read"`` or ``"get #<index>"``.
    where: str


@dataclass(frozen=True, slots=True)
class Resurrected:
    key: bytes
    observed: bytes


@dataclass(slots=True)
class CheckResult:
    """What :func:`check` found; ``ok`` when every list is empty."""

    keys_checked: int = 0
    acknowledged: int = 0
    indeterminate: int = 0
    failed: int = 0
    lost: list[Lost] = field(default_factory=list)
    phantoms: list[Phantom] = field(default_factory=list)
    resurrected: list[Resurrected] = field(default_factory=list)
    unreadable: list[tuple[bytes, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.phantoms or self.resurrected or self.unreadable)

    def summary(self, examples: int = 5) -> str:
        """One line of counts, then up to ``examples`` of each kind of anomaly."""
        lines = [
            f"{self.keys_checked} keys, writes {self.acknowledged} acknowledged / {self.indeterminate} "
            f"indeterminate / {self.failed} failed: {len(self.lost)} lost, {len(self.phantoms)} phantom, "
            f"{len(self.resurrected)} resurrected, {len(self.unreadable)} unreadable"
        ]
        for name, items in (
            ("lost", self.lost),
            ("phantom", self.phantoms),
            ("resurrected", self.resurrected),
            ("unreadable", self.unreadable),
        ):
            lines += [f"  {name}: {item!r}" for item in list(items)[:examples]]
        return "\n".join(lines)


def check(history: History, final: Mapping[bytes, FinalRead]) -> CheckResult:
    """Check ``final`` (key to its final read) against ``history``: see the module docstring.

    Every key the history wrote must be in ``final``; one missing counts as unreadable. Keys in
    ``final`` that no operation wrote are ignored (except by the phantom check when they read a value).
    """
    operations = history.operations()
    result = CheckResult()
    writes: dict[bytes, list[Operation]] = {}
    for op in operations:
        if op.is_write:
            writes.setdefault(op.key, []).append(op)
            if op.outcome is Outcome.OK:
                result.acknowledged += 1
            elif op.outcome is Outcome.FAILED:
                result.failed += 1
            else:
                result.indeterminate += 1
    written_values = {
        key: {op.value for op in ops if op.kind is Kind.PUT and op.outcome is not Outcome.FAILED}
        for key, ops in writes.items()
    }
    # (b) Recorded reads: an acknowledged get may only return a value some put of the key wrote.
    for op in operations:
        if op.kind is Kind.GET and op.outcome is Outcome.OK and op.read is not None:
            if op.read not in written_values.get(op.key, set()):
                result.phantoms.append(Phantom(op.key, op.read, f"get #{op.index}"))
    for key, ops in writes.items():
        result.keys_checked += 1
        observed = final.get(key, Unreadable("not read"))
        if isinstance(observed, Unreadable):
            # Only a key with an acknowledged write has something that must be shown to survive; one
            # whose writes all failed or are indeterminate may be absent, and a store that cannot
            # tell (no copy answered) loses nothing by saying so.
            if any(op.outcome is Outcome.OK for op in ops):
                result.unreadable.append((key, observed.reason))
            continue
        if observed is not None and observed not in written_values[key]:
            result.phantoms.append(Phantom(key, observed, "final read"))
            continue
        _check_final(key, ops, observed, result)
    for key, observed in final.items():
        if key not in writes and isinstance(observed, bytes):
            result.phantoms.append(Phantom(key, observed, "final read"))
    return result


def _check_final(key: bytes, ops: Sequence[Operation], observed: bytes | None, result: CheckResult) -> None:
    """(a) and (c) for one key whose final read returned ``observed`` (a value some put wrote, or
    None). Appends to ``result`` when no write that may be last explains it."""
    acknowledged = [op for op in ops if op.outcome is Outcome.OK]
    candidates = [op for op in ops if op.outcome is not Outcome.FAILED]
    # A write may be the last one unless an acknowledged write was invoked after it had settled.
    may_be_last = [op for op in candidates if not any(ack.invoked > op.settled_by() for ack in acknowledged)]
    if observed is None:
        explained = not acknowledged or any(op.kind is Kind.DELETE for op in may_be_last)
    else:
        explained = any(op.kind is Kind.PUT and op.value == observed for op in may_be_last)
    if explained:
        return
    # The acknowledged write that must show most clearly: the one invoked last.
    required = max(acknowledged, key=lambda op: op.invoked)
    if required.kind is Kind.DELETE and observed is not None:
        result.resurrected.append(Resurrected(key, observed))
    else:
        result.lost.append(Lost(key, required.value, observed))


def read_back(
    address: str, keys: Iterable[bytes], *, batch: int = 1000, timeout: float = 30.0
) -> dict[bytes, FinalRead]:
    """The final read of ``keys`` through the node at ``address`` (v1 GETs, pipelined ``batch`` at a
    time, forwarded by the node to the keys' owners). A batch whose connection fails reads as
    :class:`Unreadable` for each of its keys; answers other than SUCCESS and NOT_FOUND too."""
    keys = list(keys)
    final: dict[bytes, FinalRead] = {}
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        try:
            answers = v1_pipeline(address, [encode_request(GET, key) for key in chunk], timeout=timeout)
        except OSError as exc:
            for key in chunk:
                final[key] = Unreadable(f"{address}: {exc!r}")
            continue
        for key, answer in zip(chunk, answers, strict=True):
            final[key] = _final_of(answer)
    return final


def _final_of(answer: Response) -> FinalRead:
    if answer.status == Status.SUCCESS:
        return answer.value
    if answer.status == Status.NOT_FOUND:
        return None
    return Unreadable(f"status {answer.status}: {answer.value[:200]!r}")
