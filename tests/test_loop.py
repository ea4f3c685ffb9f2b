"""The event loop on its own: timers, periodic timers that survive a failing round, thread-safe
wake-ups, futures, and non-blocking outbound connections with deadlines."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from funnelkvs.errors import InvalidStateError, NodeUnreachable, RequestTimeout
from funnelkvs.loop import EventLoop, Future
from funnelkvs.testing.cluster import closed_port


@pytest.fixture
def loop() -> EventLoop:
    lp = EventLoop()
    yield lp
    lp.close()


def test_timers_fire_in_order_and_cancel(loop: EventLoop) -> None:
    fired: list[str] = []
    loop.call_later(0.03, fired.append, "late")
    loop.call_later(0.01, fired.append, "early")
    cancelled = loop.call_later(0.02, fired.append, "cancelled")
    cancelled.cancel()
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert fired == ["early", "late"]


def test_periodic_timer_survives_a_failing_round(loop: EventLoop, caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []

    def tick() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 2:
            raise RuntimeError("round two fails")
        if len(rounds) == 4:
            timer.cancel()
            loop.stop()

    timer = loop.call_every(0.005, tick)
    with caplog.at_level(logging.ERROR):
        loop.run_forever()
    assert rounds == [0, 1, 2, 3]
    assert "round two fails" in caplog.text  # logged with its traceback, not swallowed


def test_failing_callback_is_contained(loop: EventLoop, caplog: pytest.LogCaptureFixture) -> None:
    after: list[bool] = []
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(after.append, True)
    loop.call_later(0.01, loop.stop)
    with caplog.at_level(logging.ERROR):
        loop.run_forever()
    assert after == [True]
    assert "ZeroDivisionError" in caplog.text


def test_call_soon_threadsafe_wakes_a_sleeping_loop(loop: EventLoop) -> None:
    woke: list[float] = []
    started = time.monotonic()

    def from_thread() -> None:
        time.sleep(0.05)
        loop.call_soon_threadsafe(lambda: (woke.append(time.monotonic()), loop.stop()))

    threading.Thread(target=from_thread).start()
    loop.call_later(10, loop.stop)  # the loop would sleep 10 s without the wake-up
    loop.run_forever()
    assert woke and woke[0] - started < 2.0


def test_future_callbacks_and_states() -> None:
    future: Future[int] = Future()
    seen: list[int] = []
    future.add_done_callback(lambda f: seen.append(f.result()))
    with pytest.raises(InvalidStateError):
        future.result()
    future.set_result(7)
    future.add_done_callback(lambda f: seen.append(f.result() * 2))
    assert seen == [7, 14]
    with pytest.raises(InvalidStateError):
        future.set_result(8)
    failed: Future[int] = Future()
    failed.set_exception(NodeUnreachable("x"))
    with pytest.raises(NodeUnreachable):
        failed.result()


def test_open_connection_succeeds(loop: EventLoop) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        future = loop.open_connection(server.getsockname(), timeout=2)
        loop.run_until(future, 5)
        sock = future.result()
        assert sock.getpeername() == server.getsockname()
        sock.close()
    finally:
        server.close()


def test_open_connection_refused(loop: EventLoop) -> None:
    future = loop.open_connection(("127.0.0.1", closed_port()), timeout=2)
    loop.run_until(future, 5)
    with pytest.raises(NodeUnreachable):
        future.result()


def test_run_until_times_out(loop: EventLoop) -> None:
    never: Future[None] = Future()
    started = time.monotonic()
    loop.run_until(never, 0.1)
    assert time.monotonic() - started < 2
    with pytest.raises(RequestTimeout):
        never.result()
