"""``host:port`` addresses as users type them (``127.0.0.1:8001``, ``[::1]:8001``, ``a:1,b:2``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, TypeGuard

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


def parse_addresses(spec: str | Address | Iterable[str | Address]) -> list[Address]:
    """One address, a comma-separated list of them, or an iterable of them; at least one.

    An address is ``"host:port"`` text, or an :class:`Address` / ``(host, port)`` pair (what
    ``Client.addresses`` holds). Raises ``ValueError`` for malformed text and ``TypeError``, saying what
    is accepted, for anything else (a bare port number, bytes...).
    """
    if isinstance(spec, str):
        items: list[object] = [spec]
    elif _is_pair(spec):
        items = [spec]
    elif isinstance(spec, bytes | bytearray | memoryview | int | float) or not isinstance(spec, Iterable):
        raise TypeError(_wrong_type(spec))
    else:
        items = list(spec)
    addresses: list[Address] = []
    for item in items:
        if isinstance(item, str):
            addresses.extend(parse_address(p) for p in item.split(",") if p.strip())
        elif _is_pair(item):
            host, port = item
            addresses.append(parse_address(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"))
        else:
            raise TypeError(_wrong_type(item))
    if not addresses:
        raise ValueError("no server address given")
    return addresses


def _is_pair(item: object) -> TypeGuard[tuple[str, int]]:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and not isinstance(item[1], bool)
    )


def _wrong_type(item: object) -> str:
    is_port = isinstance(item, int) and not isinstance(item, bool)
    hint = f" (for a local node: '127.0.0.1:{item}')" if is_port else ""
    return (
        "a server address is 'host:port' text or a (host, port) pair, "
        f"not {type(item).__name__} {item!r}{hint}"
    )
