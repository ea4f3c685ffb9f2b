"""Before the load: refusing keys or values over the nodes' limits, and populating the key space."""

from __future__ import annotations

from typing import Any, Final

from funnelkvs.bench.spec import _CONNECT_TIMEOUT, BenchSpec, key_name, value_of
from funnelkvs.client.address import Address, parse_addresses
from funnelkvs.errors import LocalProtocolError
from funnelkvs.protocol import DEFAULT_MAX_KEY_SIZE, DEFAULT_MAX_VALUE_SIZE, U32_MAX

#: About this many bytes of PUT frames are pipelined at a time by :func:`populate`.
_POPULATE_BATCH_BYTES: Final = 4 << 20


def populate(spec: BenchSpec) -> int:
    """Store every key of the key space once, pipelined, so GETs hit. Memory stays bounded whatever
    the key space: the keys are generated as they go, in batches of a few MiB of frames."""
    from funnelkvs.client import Client

    value = value_of(spec.value_size)
    batch_size = max(1, min(2000, _POPULATE_BATCH_BYTES // (len(value) + 32)))
    # A batch of large values takes a while to travel; the timeout bounds each wait for progress.
    with Client(
        spec.servers, pool_size=1, timeout=30.0, max_key_size=U32_MAX, max_value_size=U32_MAX
    ) as client:
        return client.put_many(((key_name(i), value) for i in range(spec.keys)), batch_size=batch_size)


def check_node_limits(spec: BenchSpec, addresses: list[Address] | None = None) -> None:
    """Refuse, before any load, keys or values over a node's limits (from INFO; the v1 defaults for a
    node that does not say). Raises :class:`LocalProtocolError`, or :class:`NodeUnreachable`.
    ``addresses``: the nodes to ask (default: ``spec.servers``)."""
    from funnelkvs.client import Client

    key_size = len(key_name(spec.keys - 1))
    for address in addresses or parse_addresses(spec.servers):
        with Client(str(address), pool_size=1, connect_timeout=_CONNECT_TIMEOUT, timeout=10.0) as client:
            info = client.info()
        max_key = _limit(info, "max_key_size", DEFAULT_MAX_KEY_SIZE)
        max_value = _limit(info, "max_value_size", DEFAULT_MAX_VALUE_SIZE)
        if spec.value_size > max_value:
            raise LocalProtocolError(
                f"values of {spec.value_size} bytes are over the limit of {address} "
                f"(max_value_size {max_value} bytes)"
            )
        if key_size > max_key:
            raise LocalProtocolError(
                f"keys of {key_size} bytes are over the limit of {address} (max_key_size {max_key} bytes)"
            )


def _limit(info: dict[str, Any], name: str, default: int) -> int:
    value = info.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else default
