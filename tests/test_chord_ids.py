"""Identifier-circle arithmetic and node identifiers (Stoica et al. 2001, sections 4.1-4.2)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnelkvs.chord import NodeRef, distance, in_half_open, in_open, node_id, node_ref
from funnelkvs.keyspace import RING_SIZE

TOP = RING_SIZE - 1
ids = st.integers(min_value=0, max_value=TOP)


def test_open_interval_without_wrap() -> None:
    assert in_open(5, 3, 8)
    assert not in_open(3, 3, 8)
    assert not in_open(8, 3, 8)
    assert not in_open(9, 3, 8)


def test_open_interval_wraps_past_zero() -> None:
    assert in_open(TOP, TOP - 2, 3)
    assert in_open(0, TOP - 2, 3)
    assert in_open(2, TOP - 2, 3)
    assert not in_open(3, TOP - 2, 3)
    assert not in_open(TOP - 2, TOP - 2, 3)
    assert not in_open(100, TOP - 2, 3)


def test_open_interval_from_a_point_to_itself_is_everything_but_the_point() -> None:
    assert in_open(0, 7, 7) and in_open(TOP, 7, 7) and in_open(8, 7, 7)
    assert not in_open(7, 7, 7)


def test_half_open_interval_wraps_and_includes_its_end() -> None:
    assert in_half_open(3, TOP - 2, 3)
    assert in_half_open(0, TOP - 2, 3)
    assert not in_half_open(TOP - 2, TOP - 2, 3)
    assert in_half_open(7, 7, 7)  # a node alone owns the whole circle


def test_distance_is_clockwise() -> None:
    assert distance(3, 8) == 5
    assert distance(8, 3) == RING_SIZE - 5
    assert distance(TOP, 0) == 1
    assert distance(4, 4) == 0


@settings(max_examples=300, deadline=None)
@given(ids, ids, ids)
def test_intervals_agree_with_distances(x: int, a: int, b: int) -> None:
    d_x, d_b = distance(a, x), distance(a, b) or RING_SIZE
    assert in_open(x, a, b) == (0 < d_x < d_b)
    assert in_half_open(x, a, b) == (0 < d_x <= d_b or (a == b))


def test_node_id_is_sha1_of_the_advertised_address() -> None:
    expected = int.from_bytes(hashlib.sha1(b"10.0.0.7:7000").digest(), "big")
    assert node_id("10.0.0.7:7000") == expected
    assert node_ref("10.0.0.7:7000") == NodeRef(expected, "10.0.0.7:7000")
    assert node_id("10.0.0.7:7000") != node_id("10.0.0.8:7000")


def test_an_explicit_node_id_wins_and_must_be_40_hex_digits() -> None:
    assert node_id("h:1", "00" * 19 + "ff") == 255
    assert node_id("h:1", "F" * 40) == TOP
    for bad in ("ff", "g" * 40, "0" * 41, ""):
        with pytest.raises(ValueError, match="40 hex digits"):
            node_id("h:1", bad)
