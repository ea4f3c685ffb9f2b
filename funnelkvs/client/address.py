"""``host:port`` addresses as users type them (``127.0.0.1:8001``, ``[::1]:8001``, ``a:1,b:2``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

DEFAULT_PORT = 8001


class Address(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse one ``host:port``. Raises ``ValueError`` with a one-line message when it is not one."""
    raw = text.strip()
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"invalid address {text!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"invalid address {text!r}: expected HOST:PORT")
    if not host:
        raise ValueError(f"invalid address {text!r}: the host is empty")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid address {text!r}: the port must be a number from 1 to 65535")
    return Address(host, int(port_text))


def parse_addresses(spec: str | Iterable[str]) -> list[Address]:
    """One address, a comma-separated list of them, or an iterable of them; at least one."""
    parts = spec.split(",") if isinstance(spec, str) else [p for item in spec for p in item.split(",")]
    addresses = [parse_address(p) for p in parts if p.strip()]
    if not addresses:
        raise ValueError("no server address given")
    return addresses
