"""The in-memory backend (the default): a dict for point lookups plus a sorted index in ring order.

The index holds ``ring_digest(key) + key``: byte order of that string is ring order (ties between
keys with the same digest are broken by the key itself), so a range scan is a bisect plus a walk,
never a sort. Overwriting a key touches only the dict.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sortedcontainers import SortedList

from funnelkvs.contributions import StorageBackendSpec
from funnelkvs.hookspecs import hookimpl
from funnelkvs.keyspace import POSITION_BYTES, KeyRange, ring_digest
from funnelkvs.storage.backend import StorageBackend
from funnelkvs.storage.options import OptionsReader

#: Entries a scan takes from the sorted index at a time.
SCAN_PAGE = 256


class MemoryBackend(StorageBackend):
    name = "memory"
    durable = False

    def __init__(self) -> None:
        self._data: dict[bytes, bytes | bytearray] = {}
        self._index = SortedList()
        self._size = 0
        self._closed = False
        # The node's GET path calls ``backend.get`` once per request: binding the dict's own
        # method here makes that one C call instead of a Python frame plus a C call. (Not when a
        # subclass overrides get: the instance attribute would shadow its method.)
        if type(self).get is MemoryBackend.get:
            self.get = self._data.get  # type: ignore[method-assign,assignment]

    def get(self, key: bytes) -> bytes | bytearray | None:
        return self._data.get(key)

    def put(self, key: bytes, value: bytes | bytearray) -> None:
        old = self._data.get(key)
        if old is None:
            self._index.add(ring_digest(key) + key)
        else:
            self._size -= len(old)
        self._data[key] = value
        self._size += len(value)

    def delete(self, key: bytes) -> bool:
        old = self._data.pop(key, None)
        if old is None:
            return False
        self._index.remove(ring_digest(key) + key)
        self._size -= len(old)
        return True

    def scan(self, key_range: KeyRange) -> Iterator[tuple[bytes, bytes]]:
        index = self._index
        for low, high in key_range.segments():
            # Pages of SCAN_PAGE entries, each found again by bisection after the last one yielded:
            # the caller may write while it iterates (a SortedList must not change under an
            # iterator), and a caller that takes a few entries (a range transfer's batch) must not
            # pay for materialising a whole range of a million keys first.
            start = index.bisect_left(low)
            while True:
                page = list(index.islice(start, start + SCAN_PAGE))
                if high is not None:
                    page = [entry for entry in page if entry < high]
                for entry in page:
                    key = entry[POSITION_BYTES:]
                    value = self._data.get(key)
                    if value is not None:
                        yield key, bytes(value)  # no copy for bytes; a scan yields bytes
                if len(page) < SCAN_PAGE:
                    break
                start = index.bisect_right(page[-1])

    def count(self) -> int:
        return len(self._data)

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self._closed = True


def create_memory_backend(path: Path | None, options: dict[str, Any]) -> MemoryBackend:
    """The plugin factory: no options; ``path`` is unused (the core refuses one for a backend that is
    not persistent)."""
    reader = OptionsReader("memory", options, known=())
    reader.check()
    return MemoryBackend()


@hookimpl
def funnelkvs_register_storage_backends() -> list[StorageBackendSpec]:
    return [
        StorageBackendSpec(
            name="memory",
            factory=create_memory_backend,
            description="In-process dict with a ring-ordered index; fast, volatile (lost on restart)",
            persistent=False,
        )
    ]
