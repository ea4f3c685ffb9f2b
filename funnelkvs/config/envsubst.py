"""``${VAR}`` and ``${VAR:-default}`` substitution in configuration strings.

Secrets (passwords, tokens) stay out of config files this way. ``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# One alternation so that a single left-to-right scan handles escapes and references alike: an escaped
# ``$${`` must not be taken for the start of a reference.
_TOKEN = re.compile(
    r"""
    \$\$\{                                             # escape: a literal "${"
    | \$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}
    | (?P<bad>\$\{[^}]*\}?)                            # anything else starting with "${"
    """,
    re.VERBOSE,
)


class SubstitutionError(ValueError):
    """A reference could not be expanded; the message says why (no path: the caller adds it)."""


def needs_substitution(text: str) -> bool:
    return "${" in text


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Expand every reference in ``text``; raise :class:`SubstitutionError` for the first bad one.

    ``${VAR:-default}`` uses ``default`` when VAR is unset or empty, as the shell does.
    """

    def expand(match: re.Match[str]) -> str:
        if match.group("bad") is not None:
            raise SubstitutionError(
                f"{match.group('bad')!r} is not a valid reference (write ${{NAME}} or ${{NAME:-default}})"
            )
        name = match.group("name")
        if name is None:
            return "${"
        default = match.group("default")
        value = env.get(name)
        if default is not None and not value:
            return default
        if value is None:
            raise SubstitutionError(
                f"environment variable {name} is not set (set it, or give a default: ${{{name}:-default}})"
            )
        return value

    return _TOKEN.sub(expand, text)
