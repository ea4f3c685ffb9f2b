"""``--smart``: the ring members the smart client sees, and each key's owner among them, as
:class:`~funnelkvs.client.routing.RingView` decides."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable

from funnelkvs.bench.spec import _CONNECT_TIMEOUT, BenchSpec


def owner_router(member_ids: list[int]) -> Callable[[bytes], int]:
    """``route(key)``: the index (in ``member_ids``, sorted) of the member owning ``key``, as
    :meth:`funnelkvs.client.routing.RingView.owner_of` decides (first id at or after the key's SHA-1)."""
    ids = sorted(member_ids)
    count = len(ids)
    sha1 = hashlib.sha1
    from_bytes = int.from_bytes
    find = bisect.bisect_left

    def route(key: bytes) -> int:
        index = find(ids, from_bytes(sha1(key).digest(), "big"))
        return index if index < count else 0

    return route


def ring_members(spec: BenchSpec) -> list[list[str]] | None:
    """``[[id hex, address], ...]`` of the ring the smart client sees from ``spec.servers`` (sorted by
    id), or None when there is no ring to route over (one node, or nodes without RING_VIEW)."""
    from funnelkvs.client import Client

    with Client(spec.servers, pool_size=1, connect_timeout=_CONNECT_TIMEOUT, timeout=10.0) as client:
        view = client.refresh_view()
    if view is None or len(view) < 2:
        return None
    return [[f"{member.node_id:040x}", str(member.address)] for member in view.members]
