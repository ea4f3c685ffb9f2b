"""How configuration problems are named: a dotted path, the offending value, what was expected.

Every problem becomes one line: ``LOCATION: dotted.path: message``, where LOCATION is ``file:line``
(or just the source name when the line is unknown, or ``command line`` for an override).
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: A position in the configuration tree: mapping keys and list indexes, outermost first.
ConfigPath = tuple[str | int, ...]

#: Where overrides are said to come from in messages.
COMMAND_LINE = "command line"

_MAX_SHOWN = 60
_MAX_ITEMS = 20


@dataclass(frozen=True, slots=True)
class Problem:
    path: ConfigPath
    message: str
    #: Set when the problem is at a line other than where ``path`` was first given (a duplicate key).
    line: int | None = None


class Invalid(Exception):
    """Raised by a validator: one or more problems, with paths relative to the value checked."""

    def __init__(self, message: str, at: ConfigPath = ()) -> None:
        super().__init__(message)
        self.problems = [Problem(at, message)]

    @classmethod
    def many(cls, problems: Sequence[Problem]) -> Invalid:
        error = cls(problems[0].message, problems[0].path)
        error.problems = list(problems)
        return error


def dotted(path: ConfigPath) -> str:
    """``("node", "join", 1)`` -> ``node.join[1]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def show(value: Any) -> str:
    """The value as the user wrote it, in YAML flow spelling, shortened when long."""
    text = _spell(value, depth=0)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return text


def _spell(value: Any, depth: int) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    # The depth cap also stops a self-referencing structure (YAML aliases can build one).
    if depth > 3:
        return "..."
    # Only the first few items: the text is cut to _MAX_SHOWN anyway.
    if isinstance(value, Mapping):
        pairs = itertools.islice(value.items(), _MAX_ITEMS)
        parts = [f"{_spell(k, depth + 1)}: {_spell(v, depth + 1)}" for k, v in pairs]
        opening, closing = "{", "}"
    elif isinstance(value, list | tuple):
        parts = [_spell(item, depth + 1) for item in value[:_MAX_ITEMS]]
        opening, closing = "[", "]"
    else:
        return f"<{type(value).__name__}>"
    if len(value) > _MAX_ITEMS:
        parts.append("...")
    return opening + ", ".join(parts) + closing


def kind(value: Any) -> str:
    """A YAML-flavoured name for the type of ``value``, for "X is a list, not a mapping" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def closest(key: str, known: Collection[str]) -> str | None:
    matches = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_key(key: str, known: Collection[str]) -> str:
    suggestion = closest(key, known)
    if suggestion is not None:
        return f"unknown key (did you mean {suggestion!r}?)"
    return f"unknown key (expected one of: {', '.join(sorted(known))})"


def format_problem(location: str, problem: Problem) -> str:
    if problem.path:
        return f"{location}: {dotted(problem.path)}: {problem.message}"
    return f"{location}: {problem.message}"
