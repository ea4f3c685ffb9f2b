"""The coordinator: a key's owner sends each write to the key's copies and acknowledges after W of them
stored it durably; it reads from the copies and answers after R, with what the conflict resolver
picks (Dynamo 4.5, "Execution of get() and put() operations").

- **Versions.** The coordinator stamps every put and delete with its hybrid logical clock and its own
  id (:mod:`funnelkvs.versions`); a delete is a tombstone, so that a copy that missed it cannot bring
  the value back at the next read repair.
- **Sloppy quorum** (Dynamo 4.6). A copy meant for a member that is down, or whose call fails, goes to
  a fallback (:mod:`funnelkvs.replication.placement`) as a hint, and counts toward W. Reads ask the
  same fallbacks; a fallback's answer counts toward R only when it holds something for the key (a
  bare "nothing here" from a node that is not a replica proves nothing). When every copy asked has
  answered and fewer than R counted, a read that found a value still returns the newest it found
  (with two of three replicas down, the third's copy is the best there is); one that found nothing
  fails rather than claim the key is absent.
- **Outcome.** The client gets SUCCESS once W (R) counted, else TIMEOUT when a copy timed out, else
  SERVER_ERROR, each with a message (v2 carries it; v1 error answers have an empty body, as the
  reference's clients expect). Never a silent success.
- **Read repair** (Dynamo 4.7). Once every copy asked has answered (after the client has its answer),
  copies older than the resolved version, or missing it, are sent the winner. When the resolver picks
  something other than the newest version (a third-party resolver may), the pick is written anew with
  a fresh version, so that every replica keeps it from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from funnelkvs.local_store import LocalStore
from funnelkvs.protocol import Status
from funnelkvs.replication.channels import ReplicaChannels
from funnelkvs.replication.members import Members
from funnelkvs.replication.placement import Placement, Target
from funnelkvs.replication.resolver import ConflictResolver
from funnelkvs.replication.ringview import NodeRef
from funnelkvs.replication.versioned import Versioned
from funnelkvs.versions import (
    HEADER_SIZE,
    KIND_TOMBSTONE,
    KIND_VALUE,
    HybridLogicalClock,
    Version,
    as_hint,
    from_hint,
    is_hint,
    is_live,
    newer,
    pack_tombstone,
    pack_value,
    value_of,
)

if TYPE_CHECKING:
    from funnelkvs.loop import EventLoop

log = logging.getLogger("funnelkvs.replication")

#: ``done(status, body)``: the client's answer (body: the value, or an error message).
Done = Callable[[int, bytes], None]

_SUCCESS = int(Status.SUCCESS)
_NOT_FOUND = int(Status.NOT_FOUND)
_TIMEOUT = int(Status.TIMEOUT)
_SERVER_ERROR = int(Status.SERVER_ERROR)


class Coordinator:
    """Quorum reads and writes for the keys this node owns (see the module docstring)."""

    def __init__(
        self,
        loop: EventLoop,
        me: NodeRef,
        store: LocalStore,
        members: Members,
        placement: Placement,
        channels: ReplicaChannels,
        resolver: ConflictResolver,
        hlc: HybridLogicalClock,
        origin: int,
        write_quorum: int,
        read_quorum: int,
    ) -> None:
        self.loop = loop
        self.me = me
        self.store = store
        self.members = members
        self.placement = placement
        self.channels = channels
        self.resolver = resolver
        self.hlc = hlc
        self.origin = origin
        self.write_quorum = write_quorum
        self.read_quorum = read_quorum
        self.read_repairs = 0
        self.degraded_reads = 0
        self.quorum_failures = 0

    # --- quorums -------------------------------------------------------------------------------------

    def quorums(self, w: int, r: int) -> tuple[int, int]:
        """The W and R a request gets: its own (0: the configured ones), capped at the copies a key
        has (a ring with fewer members than the factor)."""
        copies = self.placement.copies
        return min(w or self.write_quorum, copies), min(r or self.read_quorum, copies)

    def stamp(self) -> Version:
        return Version(self.hlc.now(), self.origin)

    # --- writes --------------------------------------------------------------------------------------

    def write(self, key: bytes, position: int, value: bytes | bytearray | None, w: int, done: Done) -> None:
        """Put ``value`` (None: delete) under ``key`` at ``position``; ``done`` once W copies have it
        durably or it cannot get there."""
        version = self.stamp()
        envelope = pack_tombstone(version) if value is None else pack_value(version, value)
        WriteRound(self, key, position, envelope, self.quorums(w, 0)[0], done).start()

    def send_copy(
        self,
        target: Target,
        key: bytes,
        envelope: bytes | bytearray,
        on_written: Callable[[bool, bool], None],
    ) -> None:
        """One copy of a write to one target (this node, a replica, or a fallback as a hint)."""
        if target.hint_for is not None:
            envelope = as_hint(envelope, target.hint_for.node_id.to_bytes(20, "big"))
        if target.node.node_id == self.me.node_id:
            # Always a callback of its own: a volatile store is durable at once, and a round must not
            # finish (and fill a client's answer slot) while the node is still decoding requests.
            call_soon = self.loop.call_soon
            self.store.write(key, envelope, lambda error: call_soon(on_written, error is None, False))
        else:
            self.channels.write(target.node, key, envelope, on_written)

    # --- reads ---------------------------------------------------------------------------------------

    def read(self, key: bytes, position: int, r: int, done: Done) -> None:
        """Get ``key``: ``done(SUCCESS, value)``, ``done(NOT_FOUND, b"")`` or an error."""
        ReadRound(self, key, position, self.quorums(0, r)[1], done).start()

    def ask_copy(
        self, target: Target, key: bytes, on_read: Callable[[bytes | None, bool, bool], None]
    ) -> None:
        if target.node.node_id != self.me.node_id:
            self.channels.read(target.node, key, on_read)
            return
        from funnelkvs.errors import StorageBusy

        try:
            envelope = self.store.read(key)
        except StorageBusy:
            self.store.read_waiting(
                key,
                lambda found, error: on_read(
                    None if found is None else bytes(found), error is not None, False
                ),
            )
            return
        except Exception:
            log.exception("local read of a replica failed")
            on_read(None, True, False)
            return
        # A callback of its own: rounds count answers after they have sent every request.
        self.loop.call_soon(on_read, None if envelope is None else bytes(envelope), False, False)

    def resolve(self, key: bytes, envelopes: list[bytes]) -> bytes:
        """The envelope that wins among ``envelopes`` (plain, non-empty), by the conflict resolver.

        Identical copies need no resolver (a resolver returns one of its candidates). When the pick is
        not the newest version, it is re-stamped: written anew, it then wins everywhere."""
        first = envelopes[0]
        if all(envelope == first for envelope in envelopes):
            return first
        candidates = [Versioned.from_envelope(envelope) for envelope in envelopes]
        picked = self.resolver.resolve(key, candidates)
        if not picked:
            raise AssertionError("the conflict resolver returned nothing for non-empty candidates")
        # Siblings are not kept (the resolver contract allows them for a future multi-value read):
        # the first one stands for the key.
        winner = picked[0]
        newest = max(envelopes, key=_order_key)
        if Versioned.from_envelope(newest) == winner:
            return newest
        version = self.stamp()
        return pack_tombstone(version) if winner.value is None else bytes(pack_value(version, winner.value))


def _order_key(envelope: bytes) -> tuple[bytes, bool, bytes]:
    live = is_live(envelope)
    return (envelope[1:HEADER_SIZE], live, value_of(envelope) if live else b"")


def _plain(envelope: bytes) -> bytes:
    return from_hint(envelope)[0] if is_hint(envelope) else envelope


class _Round:
    """What a write's and a read's rounds share: the copies in flight, and a fallback for each copy
    that fails (sloppy quorum, also once the client has its answer: the key should still reach N
    copies, and a read repair should still reach them)."""

    __slots__ = (
        "coordinator",
        "done",
        "failed",
        "finished",
        "key",
        "needed",
        "outstanding",
        "position",
        "timed_out",
        "used",
    )

    def __init__(self, coordinator: Coordinator, key: bytes, position: int, needed: int, done: Done) -> None:
        self.coordinator = coordinator
        self.key = key
        self.position = position
        self.needed = needed
        self.done = done
        self.outstanding = 0
        self.failed: list[str] = []
        self.timed_out = False
        self.finished = False
        #: Node ids already asked: a fallback is never one of them.
        self.used: set[int] = set()

    def start(self) -> None:
        coordinator = self.coordinator
        targets = coordinator.placement.targets(self.position, coordinator.loop.time())
        self.outstanding = len(targets)
        self.used.update(target.node.node_id for target in targets)
        for target in targets:
            self._go(target)
        if not targets:
            self._settle()

    def _go(self, target: Target) -> None:
        raise NotImplementedError

    def _settle(self) -> None:
        """Decide the client's answer if it is due (called after every answer)."""
        raise NotImplementedError

    def _fail_over(self, target: Target, timed_out: bool) -> None:
        """``target`` failed: suspect it, and send its copy to the next live node as a hint."""
        self.failed.append(target.node.address)
        self.timed_out |= timed_out
        coordinator = self.coordinator
        now = coordinator.loop.time()
        coordinator.members.suspect(target.node.node_id, now)
        missing = target.hint_for or target.node
        for fallback in coordinator.placement.fallbacks(self.position, [missing], now, self.used):
            self.outstanding += 1
            self._go(fallback)

    def _failure(self, what: str, got: int, unit: str) -> None:
        self.finished = True
        self.coordinator.quorum_failures += 1
        status = _TIMEOUT if self.timed_out else _SERVER_ERROR
        message = f"{what} quorum not reached: {got} of {self.needed} {unit}"
        if self.failed:
            message += f" ({', '.join(self.failed)} failed)"
        self.done(status, message.encode())


class WriteRound(_Round):
    """One write's copies in flight, counted toward W."""

    __slots__ = ("acks", "envelope")

    def __init__(
        self,
        coordinator: Coordinator,
        key: bytes,
        position: int,
        envelope: bytes | bytearray,
        needed: int,
        done: Done,
    ) -> None:
        super().__init__(coordinator, key, position, needed, done)
        self.envelope = envelope
        self.acks = 0

    def _go(self, target: Target) -> None:
        self.coordinator.send_copy(
            target, self.key, self.envelope, lambda ok, timed_out: self._written(target, ok, timed_out)
        )

    def _written(self, target: Target, ok: bool, timed_out: bool) -> None:
        self.outstanding -= 1
        if ok:
            self.acks += 1
        else:
            self._fail_over(target, timed_out)
        self._settle()

    def _settle(self) -> None:
        if self.finished:
            return
        if self.acks >= self.needed:
            self.finished = True
            self.done(_SUCCESS, b"")
        elif self.outstanding == 0:
            self._failure("write", self.acks, "acknowledgements")


class ReadRound(_Round):
    """One read's copies in flight, counted toward R; read repair once all have answered."""

    __slots__ = ("answers", "counted")

    def __init__(self, coordinator: Coordinator, key: bytes, position: int, needed: int, done: Done) -> None:
        super().__init__(coordinator, key, position, needed, done)
        self.counted = 0
        #: (target, plain envelope or None) of every copy that answered.
        self.answers: list[tuple[Target, bytes | None]] = []

    def _go(self, target: Target) -> None:
        self.coordinator.ask_copy(
            target,
            self.key,
            lambda envelope, failed, timed_out: self._answered(target, envelope, failed, timed_out),
        )

    def _answered(self, target: Target, envelope: bytes | None, failed: bool, timed_out: bool) -> None:
        self.outstanding -= 1
        if failed:
            self._fail_over(target, timed_out)
        else:
            plain = None if envelope is None else _plain(envelope)
            self.answers.append((target, plain))
            if target.hint_for is None or plain is not None:
                self.counted += 1
        if not self.finished and self.counted >= self.needed:
            self._answer()
        self._settle()

    def _found(self) -> list[bytes]:
        return [envelope for _, envelope in self.answers if envelope is not None]

    def _answer(self) -> None:
        self.finished = True
        found = self._found()
        if not found:
            self.done(_NOT_FOUND, b"")
            return
        winner = self.coordinator.resolve(self.key, found)
        if winner[0] == KIND_VALUE:
            self.done(_SUCCESS, value_of(winner))
        else:
            self.done(_NOT_FOUND, b"")

    def _settle(self) -> None:
        if self.outstanding:
            return
        if not self.finished:
            if self._found():
                self.coordinator.degraded_reads += 1
                self._answer()
            else:
                self._failure("read", self.counted, "answers")
                return
        self._repair()

    def _repair(self) -> None:
        found = self._found()
        if not found:
            return
        coordinator = self.coordinator
        winner = coordinator.resolve(self.key, found)
        for target, envelope in self.answers:
            if envelope is not None and (envelope == winner or not newer(winner, envelope)):
                continue
            if envelope is None and winner[0] == KIND_TOMBSTONE and target.hint_for is not None:
                continue  # a fallback need not learn of a delete it never held
            coordinator.read_repairs += 1
            coordinator.send_copy(target, self.key, winner, _ignore)


def _ignore(ok: bool, timed_out: bool) -> None:
    pass
