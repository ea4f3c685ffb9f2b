"""Request frames for the load: built from key indexes as they are sent, never per key up front."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from funnelkvs.bench.spec import MIX_GET_RATIO, BenchSpec, key_name, value_of
from funnelkvs.protocol import GET, HEADER_V1, PUT

if TYPE_CHECKING:
    from funnelkvs.bench.worker import _Conn

_U32 = struct.Struct(">I")


class _Requests:
    """Request frames for key indexes, built as they are sent into a connection's output buffer.

    Nothing is built per key up front, so memory does not grow with the key space (nor with the value
    size times the key count): the one value, and each connection's unsent requests, are all there is.
    A frame is one ``bytes % index`` (its key is ``key:%010d`` inside a fixed header): about as cheap
    as looking it up in a table of prebuilt frames."""

    __slots__ = ("_get", "_put", "get_ratio", "keys", "put_tail")

    def __init__(self, spec: BenchSpec) -> None:
        self.keys = spec.keys
        self.get_ratio = 1.0 if spec.workload == "get" else 0.0 if spec.workload == "put" else MIX_GET_RATIO
        value = value_of(spec.value_size)
        self.put_tail = _U32.pack(len(value)) + value
        # Every key has the same length while the indexes fit in ten digits; past that, key_name's.
        fixed = spec.keys <= 10**10
        self._get = _frame_format(GET) if fixed else None
        self._put = _frame_format(PUT) if fixed else None

    def get(self, index: int) -> bytes:
        return self._get % index if self._get is not None else _frame_head(GET, key_name(index))

    def put_head(self, index: int) -> bytes:
        """A PUT frame without its value part (``put_tail``)."""
        return self._put % index if self._put is not None else _frame_head(PUT, key_name(index))

    def append_routed(
        self,
        conns: list[_Conn],
        route: Callable[[bytes], int],
        count: int,
        rand: Callable[[], float],
        at: int,
    ) -> None:
        """Append ``count`` requests with random keys, each to ``conns[route(key)]`` (its owner's
        socket), with its send time."""
        keys, get_ratio, put_tail = self.keys, self.get_ratio, self.put_tail
        get, put_head = self.get, self.put_head
        for _ in range(count):
            index = int(rand() * keys)
            conn = conns[route(key_name(index))]
            if get_ratio == 1.0 or (get_ratio and rand() < get_ratio):
                conn.out += get(index)
            else:
                conn.out += put_head(index)
                conn.out += put_tail
            conn.sent_at.append(at)

    def append(self, out: bytearray, count: int, rand: Callable[[], float]) -> None:
        """Append ``count`` requests with random keys (a GET with probability ``get_ratio``)."""
        keys, get_ratio, put_tail = self.keys, self.get_ratio, self.put_tail
        get, put_head = self.get, self.put_head
        for _ in range(count):
            index = int(rand() * keys)
            if get_ratio == 1.0 or (get_ratio and rand() < get_ratio):
                out += get(index)
            else:
                out += put_head(index)
                out += put_tail


def _frame_head(op: int, key: bytes) -> bytes:
    return HEADER_V1 + bytes((op,)) + _U32.pack(len(key)) + key


def _frame_format(op: int) -> bytes:
    """``_frame_head(op, key_name(i))`` as a format: ``format % i`` is the frame of key ``i``."""
    head = _frame_head(op, key_name(0))
    prefix = head[: -len(key_name(0))].replace(b"%", b"%%")
    return prefix + b"key:%010d"
