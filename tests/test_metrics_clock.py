"""Durations come from the monotonic clock: a wall clock stepped back never makes them negative."""

from __future__ import annotations

import time

import pytest

from funnelkvs.metrics import NodeMetrics


def test_uptime_follows_the_injected_clock() -> None:
    now = [1000.0]
    metrics = NodeMetrics(clock=lambda: now[0])
    now[0] += 2.5
    assert metrics.uptime_s == pytest.approx(2.5)


def test_uptime_ignores_the_wall_clock_stepping_back(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = NodeMetrics()
    wall = time.time()
    monkeypatch.setattr(time, "time", lambda: wall - 3600)  # NTP or an operator: an hour back
    assert metrics.uptime_s >= 0
    samples = {sample.name: sample.value for sample in metrics.samples()}
    assert samples["funnelkvs_uptime_seconds"] >= 0
