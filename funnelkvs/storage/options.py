"""Reading a backend's ``storage.options``: every problem collected, each named by its dotted path.

Backend factories describe their options with this reader instead of repeating the checks, so that
every backend reports mistakes the same way (and all of them at once)::

    reader = OptionsReader("lmdb", options, known=("durability", "scan_batch"))
    durability = reader.choice("durability", DURABILITY_MODES, "sync", "a durability mode")
    data_dir = reader.path(path)
    reader.check()  # raises ConfigError listing every problem
    return LmdbBackend(data_dir, durability=durability)  # open only after check()

``funnelkvs config check`` runs the factory under :func:`check_only`: there :meth:`OptionsReader.check`
raises :class:`OptionsChecked` when the options are valid, so the factory stops before it opens
anything and the options are checked by the very code the node runs at start.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Final

from funnelkvs.config.validators import is_int
from funnelkvs.errors import ConfigError

#: What ``durability`` may be for the built-in persistent backends (see docs/storage.md).
DURABILITY_MODES: Final = ("sync", "nosync")

_check_only: ContextVar[bool] = ContextVar("funnelkvs_storage_check_only", default=False)


class OptionsChecked(Exception):
    """Raised by :meth:`OptionsReader.check` under :func:`check_only` when every option is valid."""


@contextmanager
def check_only() -> Iterator[None]:
    """Within this block, a factory's :meth:`OptionsReader.check` stops it once its options pass."""
    token = _check_only.set(True)
    try:
        yield
    finally:
        _check_only.reset(token)


def path_required(backend: str) -> str:
    """The problem of a persistent backend given no ``storage.path``."""
    return f"storage.path: required for the {backend} backend"


def path_unused(backend: str, path: Path) -> str:
    """The problem of a backend that keeps no files (not ``persistent``) given a ``storage.path``."""
    return (
        f"storage.path: {str(path)!r} is not used by the {backend} backend (it keeps no files); "
        "remove it, or choose a persistent backend"
    )


class OptionsReader:
    def __init__(self, backend: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
        self.backend = backend
        self._options = options
        self.problems: list[str] = []
        allowed = tuple(known)
        expected = f"expected one of: {', '.join(allowed)}" if allowed else "it takes none"
        for name in options:
            if name not in allowed:
                self.problems.append(
                    f"storage.options.{name}: unknown option for the {backend} backend ({expected})"
                )

    def _fail(self, name: str, value: object, message: str) -> None:
        self.problems.append(f"storage.options.{name}: {value!r} {message}")

    def path(self, path: Path | None) -> Path:
        """``storage.path``, which a persistent backend requires."""
        if path is None:
            self.problems.append(path_required(self.backend))
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
        """Raise :class:`ConfigError` listing every problem; call it before opening anything.

        :raises OptionsChecked: no problem, under :func:`check_only`.
        """
        if self.problems:
            raise ConfigError(self.problems)
        if _check_only.get():
            raise OptionsChecked
