"""The model-based test: a hypothesis state machine running random operations (put, delete, get, scan,
sync, reopen) against a backend and a dict side by side."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from funnelkvs.keyspace import RING_SIZE, KeyRange, ring_position
from funnelkvs.testing.conformance.expected import expected_scan

if TYPE_CHECKING:
    from funnelkvs.testing.conformance.suite import BackendConformance


def _model_machine(suite: BackendConformance, tmp_path: Path) -> type[RuleBasedStateMachine]:
    paths = (tmp_path / f"model-{number}" for number in itertools.count())

    class BackendModel(RuleBasedStateMachine):
        keys = Bundle("keys")

        def __init__(self) -> None:
            super().__init__()
            self.path = next(paths)
            self.backend = suite.make_backend(self.path)
            self.model: dict[bytes, bytes] = {}

        @rule(target=keys, key=st.binary(max_size=6))
        def new_key(self, key: bytes) -> bytes:
            return key

        @rule(key=keys, value=st.binary(max_size=40))
        def put(self, key: bytes, value: bytes) -> None:
            self.backend.put(key, value)
            self.model[key] = value

        @rule(key=keys)
        def delete(self, key: bytes) -> None:
            assert self.backend.delete(key) is (key in self.model)
            self.model.pop(key, None)

        @rule(key=st.one_of(keys, st.binary(max_size=6)))
        def get(self, key: bytes) -> None:
            assert self.backend.get(key) == self.model.get(key)

        @rule(
            start=st.one_of(
                st.integers(0, RING_SIZE - 1),
                keys.map(ring_position),
                keys.map(lambda key: (ring_position(key) - 1) % RING_SIZE),
            ),
            end=st.one_of(
                st.integers(0, RING_SIZE - 1),
                keys.map(ring_position),
                keys.map(lambda key: (ring_position(key) - 1) % RING_SIZE),
            ),
        )
        def scan(self, start: int, end: int) -> None:
            key_range = KeyRange(start, end)
            assert list(self.backend.scan(key_range)) == expected_scan(self.model, key_range)

        @rule()
        def sync(self) -> None:
            self.backend.sync()

        @precondition(lambda self: suite.persistent)
        @rule()
        def reopen(self) -> None:
            self.backend = suite.reopen(self.backend, self.path)

        @invariant()
        def counts_match(self) -> None:
            assert self.backend.count() == len(self.model)
            assert self.backend.size() == sum(map(len, self.model.values()))

        def teardown(self) -> None:
            self.backend.close()

    return BackendModel
