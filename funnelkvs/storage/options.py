"""Reading a backend's ``storage.options``: every problem collected, each named by its dotted path.

Backend factories describe their options with this reader instead of repeating the checks, so that
every backend reports mistakes the same way (and all of them at once)::

    reader = OptionsReader("lmdb", options, known=("durability", "scan_batch"))
    durability = reader.choice("durability", DURABILITY_MODES, "sync", "a durability mode")
    data_dir = reader.path(path)
    reader.check()  # raises ConfigError listing every problem
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from funnelkvs.config.validators import is_int
from funnelkvs.errors import ConfigError

#: What ``durability`` may be for the built-in persistent backends (see docs/storage.md).
DURABILITY_MODES: Final = ("sync", "nosync")


class OptionsReader:
    def __init__(self, backend: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
        self.backend = backend
        self._options = options
        self.problems: list[str] = []
        allowed = tuple(known)
        for name in options:
            if name not in allowed:
                self.problems.append(
                    f"storage.options.{name}: unknown option for the {backend} backend "
                    f"(expected one of: {', '.join(allowed)})"
                )

    def _fail(self, name: str, value: object, message: str) -> None:
        self.problems.append(f"storage.options.{name}: {value!r} {message}")

    def path(self, path: Path | None) -> Path:
        """``storage.path``, which a persistent backend requires."""
        if path is None:
            self.problems.append(f"storage.path: required for the {self.backend} backend")
            return Path()
        return path

    def choice(self, name: str, choices: Sequence[str], default: str, what: str) -> str:
        value = self._options.get(name, default)
        if value not in choices:
            self._fail(name, value, f"is not {what} (expected {' or '.join(choices)})")
            return default
        return str(value)

    def integer(self, name: str, default: int, minimum: int, what: str, expected: str | None = None) -> int:
        value = self._options.get(name, default)
        if not is_int(value) or value < minimum:
            self._fail(name, value, f"is not {what} ({expected or f'expected an integer >= {minimum}'})")
            return default
        return int(value)

    def seconds(self, name: str, default: float, maximum: float) -> float:
        value = self._options.get(name, default)
        if not (is_int(value) or isinstance(value, float)) or not 0 < value <= maximum:
            self._fail(name, value, f"is not a timeout (expected seconds, > 0 and <= {maximum:g})")
            return default
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._options.get(name, default)
        if not isinstance(value, bool):
            self._fail(name, value, "is not a boolean (expected true or false)")
            return default
        return value

    def check(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)
