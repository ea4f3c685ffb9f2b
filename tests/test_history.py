"""The history checker (funnelkvs.testing.history) on hand-made histories: each anomaly it must report,
and the histories it must pass (indeterminate writes, concurrent writes, deletes)."""

from __future__ import annotations

import threading

import pytest

from funnelkvs.testing.history import (
    CheckResult,
    History,
    Lost,
    Outcome,
    Phantom,
    Resurrected,
    Unreadable,
    check,
)


class Clock:
    """A clock the test moves by hand (so that "after" and "concurrent" are exact)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += 1.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def history(clock: Clock) -> History:
    return History(clock)


def put(history: History, clock: Clock, key: bytes, value: bytes, outcome: str = "ok") -> None:
    """A put invoked now and completed one tick later with ``outcome``."""
    op = history.invoke_put(key, value)
    clock.tick()
    getattr(history, outcome)(op)
    clock.tick()


def delete(history: History, clock: Clock, key: bytes, outcome: str = "ok") -> None:
    op = history.invoke_delete(key)
    clock.tick()
    getattr(history, outcome)(op)
    clock.tick()


def assert_only(result: CheckResult, **expected: object) -> None:
    found = {
        "lost": result.lost,
        "phantoms": result.phantoms,
        "resurrected": result.resurrected,
        "unreadable": result.unreadable,
    }
    for name, items in found.items():
        assert items == expected.get(name, []), f"{name}: {result.summary()}"
    assert result.ok == (not any(expected.values()))


# --- histories that must pass ---------------------------------------------------------------------------


def test_every_acknowledged_write_read_back_passes(history: History, clock: Clock) -> None:
    for i in range(10):
        put(history, clock, b"k%d" % i, b"v%d" % i)
    result = check(history, {b"k%d" % i: b"v%d" % i for i in range(10)})
    assert_only(result)
    assert (result.keys_checked, result.acknowledged, result.indeterminate) == (10, 10, 0)


def test_an_overwritten_key_reads_its_last_acknowledged_value(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"old")
    put(history, clock, b"k", b"new")
    assert_only(check(history, {b"k": b"new"}))


def test_an_indeterminate_write_may_or_may_not_survive(history: History, clock: Clock) -> None:
    put(history, clock, b"a", b"1", "unknown")
    put(history, clock, b"b", b"1", "unknown")
    assert_only(check(history, {b"a": b"1", b"b": None}))


def test_an_indeterminate_write_after_the_acknowledged_one_may_win(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"acked")
    put(history, clock, b"k", b"maybe", "unknown")
    assert_only(check(history, {b"k": b"maybe"}))
    assert_only(check(history, {b"k": b"acked"}))


def test_an_indeterminate_write_before_the_acknowledged_one_may_still_land_late(
    history: History, clock: Clock
) -> None:
    # A timed-out put may be applied (and stamped) after the later put was acknowledged.
    put(history, clock, b"k", b"timed-out", "unknown")
    put(history, clock, b"k", b"acked")
    assert_only(check(history, {b"k": b"timed-out"}))


def test_concurrent_acknowledged_writes_may_end_either_way(history: History, clock: Clock) -> None:
    first = history.invoke_put(b"k", b"one")
    second = history.invoke_put(b"k", b"two")
    clock.tick()
    history.ok(first)
    history.ok(second)
    assert_only(check(history, {b"k": b"one"}))
    assert_only(check(history, {b"k": b"two"}))


def test_an_acknowledged_delete_reads_not_found(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"v")
    delete(history, clock, b"k")
    assert_only(check(history, {b"k": None}))


def test_a_put_after_a_delete_brings_the_key_back(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"v1")
    delete(history, clock, b"k")
    put(history, clock, b"k", b"v2")
    assert_only(check(history, {b"k": b"v2"}))


def test_a_failed_write_need_not_show(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"v")
    put(history, clock, b"k", b"refused", "failed")
    result = check(history, {b"k": b"v"})
    assert_only(result)
    assert (result.acknowledged, result.failed) == (1, 1)


def test_pending_operations_count_as_indeterminate(history: History, clock: Clock) -> None:
    history.invoke_put(b"k", b"v")
    result = check(history, {b"k": None})
    assert_only(result)
    assert result.indeterminate == 1
    assert check(history, {b"k": b"v"}).ok


# --- histories that must fail -----------------------------------------------------------------------------


def test_an_acknowledged_key_reading_not_found_is_lost(history: History, clock: Clock) -> None:
    put(history, clock, b"kept", b"v")
    put(history, clock, b"gone", b"v")
    result = check(history, {b"kept": b"v", b"gone": None})
    assert_only(result, lost=[Lost(b"gone", b"v", None)])
    assert "1 lost" in result.summary()


def test_an_older_value_where_a_later_one_was_acknowledged_is_lost(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"old")
    put(history, clock, b"k", b"new")
    assert_only(check(history, {b"k": b"old"}), lost=[Lost(b"k", b"new", b"old")])


def test_an_indeterminate_value_older_than_the_acknowledged_one_does_not_excuse_a_loss(
    history: History, clock: Clock
) -> None:
    # The indeterminate put was invoked before the acknowledged one and could win, but reading
    # NOT_FOUND cannot be explained by any write.
    put(history, clock, b"k", b"maybe", "unknown")
    put(history, clock, b"k", b"acked")
    assert_only(check(history, {b"k": None}), lost=[Lost(b"k", b"acked", None)])


def test_a_value_never_written_is_a_phantom(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"v")
    put(history, clock, b"other", b"x")
    result = check(history, {b"k": b"garbage", b"other": b"v"})  # v belongs to another key
    assert_only(
        result, phantoms=[Phantom(b"k", b"garbage", "final read"), Phantom(b"other", b"v", "final read")]
    )


def test_a_failed_put_showing_up_is_a_phantom(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"refused", "failed")
    assert_only(check(history, {b"k": b"refused"}), phantoms=[Phantom(b"k", b"refused", "final read")])


def test_a_recorded_get_returning_a_value_never_written_is_a_phantom(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"v")
    good = history.invoke_get(b"k")
    history.ok(good, b"v")
    bad = history.invoke_get(b"k")
    history.ok(bad, b"made-up")
    assert_only(check(history, {b"k": b"v"}), phantoms=[Phantom(b"k", b"made-up", f"get #{bad.index}")])


def test_a_key_no_one_wrote_reading_a_value_is_a_phantom(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"v")
    assert_only(
        check(history, {b"k": b"v", b"stray": b"v", b"absent": None}),
        phantoms=[Phantom(b"stray", b"v", "final read")],
    )


def test_a_deleted_key_reading_its_old_value_is_resurrected(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"v")
    delete(history, clock, b"k")
    assert_only(check(history, {b"k": b"v"}), resurrected=[Resurrected(b"k", b"v")])


def test_a_delete_that_was_not_acknowledged_may_be_undone(history: History, clock: Clock) -> None:
    put(history, clock, b"k", b"v")
    delete(history, clock, b"k", "unknown")
    assert_only(check(history, {b"k": b"v"}))
    assert_only(check(history, {b"k": None}))


def test_keys_not_read_or_unreadable_are_reported(history: History, clock: Clock) -> None:
    put(history, clock, b"a", b"v")
    put(history, clock, b"b", b"v")
    result = check(history, {b"a": Unreadable("status 3")})
    assert_only(result, unreadable=[(b"a", "status 3"), (b"b", "not read")])


def test_a_key_without_an_acknowledged_write_may_be_unreadable(history: History, clock: Clock) -> None:
    put(history, clock, b"refused", b"v", "failed")
    put(history, clock, b"timed-out", b"v", "unknown")
    result = check(history, {b"refused": Unreadable("status 3"), b"timed-out": Unreadable("status 3")})
    assert_only(result)
    assert result.keys_checked == 2


def test_every_kind_at_once_is_counted_in_the_summary(history: History, clock: Clock) -> None:
    put(history, clock, b"lost", b"v")
    put(history, clock, b"phantom", b"v")
    put(history, clock, b"deleted", b"v")
    delete(history, clock, b"deleted")
    result = check(history, {b"lost": None, b"phantom": b"w", b"deleted": b"v"})
    assert not result.ok
    assert "3 keys, writes 4 acknowledged / 0 indeterminate / 0 failed: 1 lost, 1 phantom, 1 resurrected" in (
        result.summary()
    )


# --- the recorder -------------------------------------------------------------------------------------------


def test_an_operation_completes_once(history: History) -> None:
    op = history.invoke_put(b"k", b"v")
    history.ok(op)
    with pytest.raises(ValueError, match="completed twice"):
        history.unknown(op)
    assert op.outcome is Outcome.OK


def test_threads_record_concurrently_without_losing_operations() -> None:
    history = History()

    def writer(n: int) -> None:
        for i in range(500):
            op = history.invoke_put(b"%d-%d" % (n, i), b"v")
            history.ok(op)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    operations = history.operations()
    assert [op.index for op in operations] == list(range(2000))
    assert history.counts()["ok"] == 2000 and len(history.keys()) == 2000
