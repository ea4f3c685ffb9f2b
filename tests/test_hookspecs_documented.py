"""Every hook is prefixed, documented in docs/plugins.md and exercised by some test (datasette's rule)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from funnelkvs import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
THIS_FILE = Path(__file__).resolve()


def _hookspec_names() -> list[str]:
    return sorted(
        name
        for name, value in vars(hookspecs).items()
        if getattr(value, f"{hookspecs.PROJECT}_spec", None) is not None
    )


HOOKS = _hookspec_names()


def _documented_hooks() -> set[str]:
    """Hook names appearing in a Markdown heading of docs/plugins.md (not in a code block's comments)."""
    found: set[str] = set()
    in_code = False
    for line in DOCS.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.update(re.findall(r"\bfunnelkvs_\w+", line))
    return found


def test_there_are_hooks_and_all_are_prefixed() -> None:
    assert len(HOOKS) >= 6
    assert all(name.startswith("funnelkvs_") for name in HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook: str) -> None:
    assert hook in _documented_hooks(), f"{hook} has no heading in docs/plugins.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_tested(hook: str) -> None:
    tests = [path for path in sorted(THIS_FILE.parent.glob("test_*.py")) if path.resolve() != THIS_FILE]
    assert any(hook in path.read_text() for path in tests), f"no test mentions {hook}"


def test_docs_name_no_hook_that_does_not_exist() -> None:
    assert _documented_hooks() <= set(HOOKS)
