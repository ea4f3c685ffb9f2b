"""The FunnelKVS client library: :class:`Client`, its :class:`Pipeline`, and address parsing."""

from __future__ import annotations

from funnelkvs.client.address import Address, parse_address, parse_addresses
from funnelkvs.client.client import DEFAULT_SERVER, IDEMPOTENT_OPS, Client
from funnelkvs.client.pipeline import Pipeline

__all__ = [
    "DEFAULT_SERVER",
    "IDEMPOTENT_OPS",
    "Address",
    "Client",
    "Pipeline",
    "parse_address",
    "parse_addresses",
]
