"""funnelkvs.versions: the hybrid logical clock (Kulkarni et al. 2014) and the stored envelope."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funnelkvs import versions
from funnelkvs.versions import (
    HEADER_SIZE,
    HINT_TARGET_SIZE,
    KIND_HINT_TOMBSTONE,
    KIND_HINT_VALUE,
    KIND_TOMBSTONE,
    KIND_VALUE,
    LOGICAL_BITS,
    MAX_HLC,
    HybridLogicalClock,
    Version,
    as_hint,
    check_envelope,
    from_hint,
    is_hint,
    is_live,
    kind_of,
    logical_of,
    newer,
    origin_of,
    pack_tombstone,
    pack_value,
    physical_ms_of,
    value_of,
    version_of,
)

U64 = st.integers(min_value=0, max_value=2**64 - 1)
versions_st = st.builds(Version, U64, U64)
# Small ranges make equal hlc / origin / value (the tie-breaks) likely.
tight_versions = st.builds(Version, st.integers(0, 3), st.integers(0, 2))
values = st.binary(max_size=64)
targets = st.binary(min_size=HINT_TARGET_SIZE, max_size=HINT_TARGET_SIZE)
MS = 1_000_000


def plain_envelopes(version_strategy: st.SearchStrategy[Version] = versions_st) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(lambda v, value: bytes(pack_value(v, value)), version_strategy, values),
        st.builds(pack_tombstone, version_strategy),
    )


class FakeWall:
    """A wall clock the test moves by hand, in nanoseconds."""

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


# --- the clock -------------------------------------------------------------------------------------


@given(st.lists(st.integers(min_value=-5_000 * MS, max_value=5_000 * MS), min_size=1, max_size=200))
def test_now_is_strictly_monotonic_whatever_the_wall_clock_does(steps: list[int]) -> None:
    wall = FakeWall(1_700_000_000_000 * MS)
    clock = HybridLogicalClock(wall)
    previous = clock.now()
    for step in steps:
        wall.ns += step  # forwards, backwards, or (step 0) standing still
        current = clock.now()
        assert current > previous
        # Never behind the wall clock: a fresh physical reading is at least the wall's millisecond.
        assert physical_ms_of(current) >= wall.ns // MS
        previous = current


def test_now_follows_the_wall_clock_and_counts_while_it_stands_still() -> None:
    wall = FakeWall(1_700_000_000_123 * MS + 999)
    clock = HybridLogicalClock(wall)
    first = clock.now()
    assert (physical_ms_of(first), logical_of(first)) == (1_700_000_000_123, 0)
    second = clock.now()
    assert (physical_ms_of(second), logical_of(second)) == (1_700_000_000_123, 1)
    wall.ns -= 10_000 * MS  # an NTP step back: time keeps going on the logical counter
    third = clock.now()
    assert (physical_ms_of(third), logical_of(third)) == (1_700_000_000_123, 2)
    wall.ns += 20_000 * MS
    fourth = clock.now()
    assert (physical_ms_of(fourth), logical_of(fourth)) == (1_700_000_010_123, 0)
    assert clock.last == fourth


def test_logical_overflow_moves_the_physical_part_on_one_millisecond() -> None:
    wall = FakeWall(1_000 * MS)
    clock = HybridLogicalClock(wall)
    values_seen = [clock.now() for _ in range(1 << LOGICAL_BITS)]
    assert physical_ms_of(values_seen[-1]) == 1_000
    assert logical_of(values_seen[-1]) == (1 << LOGICAL_BITS) - 1
    carried = clock.now()
    assert (physical_ms_of(carried), logical_of(carried)) == (1_001, 0)
    # The wall clock catching up to the carried millisecond does not reuse it.
    wall.ns = 1_001 * MS
    assert clock.now() == carried + 1


@given(
    local_ms=st.integers(0, 2**40),
    remote=st.integers(0, 2**60),
    wall_after=st.integers(-(2**20), 2**20),
)
def test_observe_puts_every_later_now_after_the_remote_value(
    local_ms: int, remote: int, wall_after: int
) -> None:
    wall = FakeWall(local_ms * MS)
    clock = HybridLogicalClock(wall)
    before = clock.now()
    received = clock.observe(remote)
    assert received > remote and received > before
    wall.ns = max(0, wall.ns + wall_after * MS)
    assert clock.now() > received


def test_observe_of_an_older_remote_is_an_ordinary_tick() -> None:
    wall = FakeWall(5_000 * MS)
    clock = HybridLogicalClock(wall)
    first = clock.now()
    assert clock.observe(first - 100) == first + 1


def test_observe_merges_per_the_paper() -> None:
    wall = FakeWall(5_000 * MS)
    clock = HybridLogicalClock(wall)
    remote = (7_000 << LOGICAL_BITS) | 41  # a remote clock 2 s ahead, counter 41
    got = clock.observe(remote)
    assert (physical_ms_of(got), logical_of(got)) == (7_000, 42)


@pytest.mark.parametrize("bad", [-1, MAX_HLC, MAX_HLC + 1])
def test_observe_refuses_values_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError):
        HybridLogicalClock(FakeWall(0)).observe(bad)


def test_the_default_wall_clock_is_the_real_one() -> None:
    import time

    before = time.time_ns() // MS
    value = HybridLogicalClock().now()
    assert before <= physical_ms_of(value) <= time.time_ns() // MS


# --- versions and origins ----------------------------------------------------------------------------


def test_origin_is_the_first_eight_bytes_of_the_node_id() -> None:
    node_id = "0123456789abcdef" + "f" * 24
    assert origin_of(node_id) == 0x0123456789ABCDEF
    assert origin_of(node_id.upper()) == 0x0123456789ABCDEF
    for bad in ["", "0" * 39, "0" * 41, "g" * 40, "_" + "0" * 39, " " + "0" * 39]:
        with pytest.raises(ValueError):
            origin_of(bad)


def test_version_orders_by_hlc_then_origin_and_refuses_out_of_range() -> None:
    assert Version(1, 9) < Version(2, 0) < Version(2, 1)
    assert versions.ZERO == Version(0, 0) < Version(0, 1)
    for hlc, origin in [(-1, 0), (0, -1), (2**64, 0), (0, 2**64)]:
        with pytest.raises(ValueError):
            Version(hlc, origin)


@given(versions_st, versions_st)
def test_envelope_version_bytes_order_like_versions(a: Version, b: Version) -> None:
    env_a, env_b = pack_tombstone(a), bytes(pack_value(b, b"v"))
    assert (env_a[1:17] < env_b[1:17]) == (a < b)
    assert (env_a[1:17] == env_b[1:17]) == (a == b)
    assert a.to_bytes() == env_a[1:17]


# --- envelopes ---------------------------------------------------------------------------------------


@given(versions_st, values)
def test_value_round_trip(version: Version, value: bytes) -> None:
    env = pack_value(version, value)
    assert isinstance(env, bytes) and len(env) == HEADER_SIZE + len(value)
    assert env[:HEADER_SIZE] == struct.pack(">BQQ", KIND_VALUE, version.hlc, version.origin)
    assert kind_of(env) == KIND_VALUE and version_of(env) == version
    assert is_live(env) and not is_hint(env) and value_of(env) == value
    assert check_envelope(env) is None


@given(versions_st, values)
def test_a_bytearray_value_becomes_the_envelope_in_place(version: Version, value: bytes) -> None:
    buffer = bytearray(value)
    env = pack_value(version, buffer)
    assert env is buffer
    assert bytes(env) == bytes(pack_value(version, value))
    assert value_of(env) == value and type(value_of(env)) is bytes


def test_a_bytearray_with_a_live_memoryview_is_copied_and_left_alone() -> None:
    buffer = bytearray(b"payload")
    view = memoryview(buffer)  # e.g. the connection still holds a view of its receive buffer
    env = pack_value(Version(3, 4), buffer)
    assert env is not buffer and bytes(env) == bytes(pack_value(Version(3, 4), b"payload"))
    assert buffer == b"payload" and view.tobytes() == b"payload"
    view.release()


@given(versions_st)
def test_tombstone_round_trip(version: Version) -> None:
    env = pack_tombstone(version)
    assert len(env) == HEADER_SIZE
    assert kind_of(env) == KIND_TOMBSTONE and version_of(env) == version
    assert not is_live(env) and not is_hint(env)
    with pytest.raises(ValueError):
        value_of(env)
    assert check_envelope(env) is None


@given(plain_envelopes(), targets)
def test_hint_round_trip(env: bytes, target: bytes) -> None:
    hint = as_hint(env, target)
    expected_kind = KIND_HINT_VALUE if kind_of(env) == KIND_VALUE else KIND_HINT_TOMBSTONE
    assert kind_of(hint) == expected_kind and is_hint(hint)
    assert len(hint) == len(env) + HINT_TARGET_SIZE
    assert hint[1:17] == env[1:17] and hint[17:37] == target
    assert version_of(hint) == version_of(env)
    assert is_live(hint) == is_live(env)
    if is_live(env):
        assert value_of(hint) == value_of(env)
    assert check_envelope(hint) is None
    assert from_hint(hint) == (env, target)
    assert from_hint(bytearray(hint)) == (env, target)
    # A hint compares as the write it carries.
    assert not newer(hint, env) and not newer(env, hint)


def test_hint_misuse_is_refused() -> None:
    env = pack_tombstone(Version(1, 2))
    with pytest.raises(ValueError):
        as_hint(env, b"short")
    hint = as_hint(env, b"t" * HINT_TARGET_SIZE)
    with pytest.raises(ValueError):
        as_hint(hint, b"t" * HINT_TARGET_SIZE)
    with pytest.raises(ValueError):
        from_hint(env)


@pytest.mark.parametrize(
    "env",
    [
        b"",
        b"\x01" * (HEADER_SIZE - 1),
        bytes([KIND_TOMBSTONE]) + bytes(16) + b"x",
        bytes([KIND_HINT_VALUE]) + bytes(16) + bytes(HINT_TARGET_SIZE - 1),
        bytes([KIND_HINT_TOMBSTONE]) + bytes(16) + bytes(HINT_TARGET_SIZE + 1),
        bytes([0]) + bytes(16),
        bytes([5]) + bytes(16),
    ],
)
def test_check_envelope_names_what_is_wrong(env: bytes) -> None:
    problem = check_envelope(env)
    assert isinstance(problem, str) and problem


# --- newer: the order every replica applies ----------------------------------------------------------


def reference_key(env: bytes) -> tuple[Version, bool, bytes]:
    """The order newer() must implement, spelled the slow way."""
    return (version_of(env), is_live(env), value_of(env) if is_live(env) else b"")


@given(plain_envelopes(tight_versions), plain_envelopes(tight_versions))
def test_newer_agrees_with_version_then_put_over_delete_then_value(a: bytes, b: bytes) -> None:
    assert newer(a, b) == (reference_key(a) > reference_key(b))


@given(plain_envelopes(tight_versions), plain_envelopes(tight_versions))
def test_newer_is_a_strict_total_order_on_plain_envelopes(a: bytes, b: bytes) -> None:
    # Exactly one of: a after b, b after a, the same envelope.
    assert [newer(a, b), newer(b, a), a == b].count(True) == 1


@given(st.lists(plain_envelopes(tight_versions), min_size=3, max_size=3))
def test_newer_is_transitive(triple: list[bytes]) -> None:
    for a, b, c in itertools.permutations(triple):
        if newer(a, b) and newer(b, c):
            assert newer(a, c)


def test_newer_tie_breaks() -> None:
    v = Version(10, 1)
    assert newer(pack_value(Version(11, 0), b"a"), pack_value(v, b"z"))  # hlc first
    assert newer(pack_value(Version(10, 2), b"a"), pack_value(v, b"z"))  # then origin
    assert newer(pack_value(v, b""), pack_tombstone(v))  # then put over delete
    assert not newer(pack_tombstone(v), pack_value(v, b""))
    assert newer(pack_value(v, b"b"), pack_value(v, b"a"))  # then value bytes
    assert not newer(pack_tombstone(v), pack_tombstone(v))
    assert newer(pack_tombstone(Version(10, 2)), pack_value(v, b"z"))  # a later delete wins


# --- the resolver and Versioned agree with the envelope order ----------------------------------------


@given(plain_envelopes(versions_st))
def test_versioned_round_trips_through_an_envelope(env: bytes) -> None:
    from funnelkvs.replication import Versioned

    copy = Versioned.from_envelope(env)
    assert copy.version == version_of(env) and copy.is_tombstone == (not is_live(env))
    assert copy.to_envelope() == env
    assert Versioned.from_envelope(as_hint(env, b"t" * HINT_TARGET_SIZE)) == copy


@given(st.lists(plain_envelopes(tight_versions), min_size=1, max_size=6))
def test_last_writer_wins_picks_the_envelope_newer_puts_last(envs: list[bytes]) -> None:
    from funnelkvs.replication import LastWriterWins, Versioned

    newest = envs[0]
    for env in envs[1:]:
        if newer(env, newest):
            newest = env
    candidates = [Versioned.from_envelope(env) for env in envs]
    assert LastWriterWins().resolve(b"k", candidates) == [Versioned.from_envelope(newest)]
    assert LastWriterWins().resolve(b"k", candidates[::-1]) == [Versioned.from_envelope(newest)]
