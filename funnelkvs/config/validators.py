"""Validators for single configuration values.

Each validator takes the value as YAML gave it and returns the typed value, or raises
:class:`~funnelkvs.config.problems.Invalid` with a message naming the value and what was expected.
Booleans are never accepted where an integer is (``bool`` is an ``int`` subclass in Python).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from funnelkvs.client.address import parse_address
from funnelkvs.config.problems import Invalid, Problem, kind, show

T = TypeVar("T")
Validator = Callable[[Any], Any]

MAX_PORT = 65535
#: Ports in addresses others connect to (``node.advertise``, ``node.join``); 0 is not one.
PORT_RANGE = f"1-{MAX_PORT}"
#: Ports a node may listen on: 0 as well (the kernel picks a free port; tests start nodes that way).
LISTEN_PORT_RANGE = f"0-{MAX_PORT}"
#: Key and value lengths travel as u32 on the wire.
MAX_WIRE_LENGTH = 2**32 - 1
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z]*)")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def listen_port(value: Any) -> int:
    """A port to listen on, 0 included (the kernel picks a free port)."""
    if not is_int(value) or not 0 <= value <= MAX_PORT:
        raise Invalid(f"{show(value)} is not a valid port ({LISTEN_PORT_RANGE})")
    return int(value)


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return True
    if not text or len(text) > 253:
        return False
    labels = text.removesuffix(".").split(".")
    # All-numeric labels are a mistyped IPv4 address (999.0.0.1), not a hostname.
    return all(_HOST_LABEL.fullmatch(label) for label in labels) and not all(
        label.isdigit() for label in labels
    )


def host(value: Any) -> str:
    if not isinstance(value, str) or not _is_host(value):
        raise Invalid(f"{show(value)} is not a valid host (a hostname or IP address)")
    return value


def split_address(text: str) -> tuple[str, int] | None:
    """``host:port`` or ``[ipv6]:port`` -> (host, port), or None when it is not one.

    The client's parser decides the shape (one parser for both); config is stricter about the host.
    """
    if text != text.strip():
        return None
    try:
        parsed = parse_address(text)
    except ValueError:
        return None
    if text.startswith("[") and ":" not in parsed.host:
        return None  # brackets are for IPv6 literals only
    if not _is_host(parsed.host):
        return None
    return parsed.host, parsed.port


def address(value: Any) -> str:
    if not isinstance(value, str) or split_address(value) is None:
        raise Invalid(f"{show(value)} is not a valid address (host:port, port {PORT_RANGE})")
    return value


def positive_int(value: Any) -> int:
    if not is_int(value) or value < 1:
        raise Invalid(f"{show(value)} is not a positive integer")
    return int(value)


def seconds(value: Any) -> float:
    """A duration in seconds: a positive number, at most a day."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400:
        raise Invalid(f"{show(value)} is not a duration in seconds (a number above 0, at most 86400)")
    return float(value)


def long_seconds(value: Any) -> float:
    """A duration in seconds that may run to years: a positive number, at most 10 years."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 315_360_000:
        raise Invalid(f"{show(value)} is not a duration in seconds (a number above 0, at most 315360000)")
    return float(value)


def ring_id(value: Any) -> str:
    """A ring id: 40 hex digits (160 bits)."""
    if (
        not isinstance(value, str)
        or len(value) != 40
        or any(c not in "0123456789abcdefABCDEF" for c in value)
    ):
        raise Invalid(f"{show(value)} is not a ring id (40 hex digits)")
    return value.lower()


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{show(value)} is not a boolean (true or false)")
    return value


def name(what: str) -> Validator:
    """A registry or plugin name: a non-empty string without spaces."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise Invalid(f"{show(value)} is not a valid {what} name (a non-empty string)")
        return value

    return check


def log_level(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise Invalid(f"{show(value)} is not a log level (one of {', '.join(LOG_LEVELS)})")
    return value.upper()


def parse_size(value: Any) -> int | None:
    """``65536``, ``'64KiB'``, ``'16 MiB'``, ``'1.5GB'`` -> bytes; None when not a size."""
    if is_int(value):
        return int(value)
    if not isinstance(value, str):
        return None
    match = _SIZE.fullmatch(value.strip())
    if match is None or match["unit"].lower() not in _SIZE_UNITS:
        return None
    amount = Fraction(match["number"]) * _SIZE_UNITS[match["unit"].lower()]
    return int(amount) if amount.denominator == 1 else None


def size(maximum: int | None = None) -> Validator:
    """A positive number of bytes, as an integer or a string with a unit (``64KiB``, ``16MiB``)."""
    bound = f"1-{maximum} bytes" if maximum is not None else "at least 1 byte"

    def check(value: Any) -> int:
        number = parse_size(value)
        if number is None:
            raise Invalid(f"{show(value)} is not a valid size (a number of bytes, or a string like '64KiB')")
        if number < 1 or (maximum is not None and number > maximum):
            raise Invalid(f"{show(value)} is not a valid size ({bound})")
        return number

    return check


def path(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{show(value)} is not a valid path (a non-empty string)")
    return Path(value).expanduser()


def optional(check: Callable[[Any], T]) -> Callable[[Any], T | None]:
    def check_optional(value: Any) -> T | None:
        return None if value is None else check(value)

    return check_optional


def list_of(check: Callable[[Any], T], what: str, unique: bool = False) -> Callable[[Any], list[T]]:
    """A list whose every item passes ``check``; every bad item is reported, at ``path[index]``."""

    def check_list(value: Any) -> list[T]:
        if not isinstance(value, list):
            hint = f" (write [{show(value)}])" if isinstance(value, str) else ""
            raise Invalid(f"{show(value)} is not a list of {what}{hint}")
        items: list[T] = []
        problems: list[Problem] = []
        for index, item in enumerate(value):
            try:
                checked = check(item)
            except Invalid as exc:
                problems.extend(Problem((index, *p.path), p.message) for p in exc.problems)
                continue
            if unique and checked in items:
                problems.append(Problem((index,), f"{show(item)} is listed twice"))
            items.append(checked)
        if problems:
            raise Invalid.many(problems)
        return items

    return check_list


def mapping(value: Any) -> dict[str, Any]:
    """Any mapping with string keys (its contents are checked by whoever consumes it)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise Invalid(f"{show(value)} is {kind(value)}, not a mapping")
    if bad := [key for key in value if not isinstance(key, str)]:
        raise Invalid.many(
            [Problem((str(key),), f"{show(key)} is not a valid key (a string)") for key in bad]
        )
    return dict(value)
