"""Reading a config file: safe YAML, no duplicate keys, line numbers, environment substitution.

:class:`ConfigLoader` is a :class:`yaml.SafeLoader` (no tags that build arbitrary objects) that
composes the node tree first, walks it once to reject duplicate keys, record the line of every key
and list item, and expand ``${VAR}`` references, and only then constructs plain Python values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from funnelkvs.config.envsubst import SubstitutionError, needs_substitution, substitute
from funnelkvs.config.problems import ConfigPath, Problem
from funnelkvs.errors import ConfigError

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(slots=True)
class ConfigDocument:
    """What a config file holds, before validation."""

    data: Any
    #: 1-based line of every mapping key and list item, by path.
    lines: dict[ConfigPath, int] = field(default_factory=dict)
    #: Paths whose value came from ``${...}`` substitution, with the text as written.
    substituted: dict[ConfigPath, str] = field(default_factory=dict)
    #: Duplicate keys and failed substitutions.
    problems: list[Problem] = field(default_factory=list)


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and expands environment references."""

    def __init__(self, stream: str, env: Mapping[str, str]) -> None:
        super().__init__(stream)
        self.env = env
        self.document = ConfigDocument(data=None)
        # Plain (unquoted, untagged) scalars are re-typed after substitution, so that
        # `port: ${PORT:-8001}` is an integer like `port: 8001`; quoted ones stay strings.
        self._plain_scalars: set[int] = set()
        self._walked: set[int] = set()

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        node = super().compose_scalar_node(anchor)
        if event.implicit[0]:
            self._plain_scalars.add(id(node))
        return node

    def load_document(self) -> ConfigDocument:
        """Parse the single document; raises :class:`yaml.YAMLError` on a syntax error."""
        try:
            node = self.get_single_node()
            if node is not None:
                self._walk(node, ())
                self.document.data = self.construct_document(node)
        finally:
            self.dispose()
        return self.document

    def _walk(self, node: Node, path: ConfigPath) -> None:
        # An aliased node is walked once: walking it again under every alias would let a
        # "billion laughs" document take exponential time here.
        if id(node) in self._walked:
            return
        self._walked.add(id(node))
        if isinstance(node, MappingNode):
            self._walk_mapping(node, path)
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self.document.lines.setdefault((*path, index), item.start_mark.line + 1)
                self._walk(item, (*path, index))
        elif isinstance(node, ScalarNode):
            self._substitute(node, path)

    def _walk_mapping(self, node: MappingNode, path: ConfigPath) -> None:
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *base` merges keys that later keys may override
                self._walk(value_node, path)
                continue
            if not isinstance(key_node, ScalarNode):
                self._walk(value_node, path)  # the constructor rejects unhashable keys itself
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            child = (*path, key if isinstance(key, str) else str(key))
            if key in first_line:
                self.document.problems.append(
                    Problem(child, f"duplicate key (first given on line {first_line[key]})", line)
                )
            else:
                first_line[key] = line
            # The last occurrence is the value the constructor keeps, so its line is the one to report.
            self.document.lines[child] = line
            self._walk(value_node, child)

    def _substitute(self, node: ScalarNode, path: ConfigPath) -> None:
        if node.tag != _STR_TAG or not needs_substitution(node.value):
            return
        try:
            value = substitute(node.value, self.env)
        except SubstitutionError as exc:
            self.document.problems.append(Problem(path, str(exc)))
            return
        self.document.substituted[path] = node.value
        node.value = value
        if id(node) in self._plain_scalars:
            node.tag = self.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]


def parse_config_text(text: str, source: str, env: Mapping[str, str]) -> ConfigDocument:
    """Parse YAML text; a syntax error raises :class:`ConfigError` as ``source:line:column: ...``."""
    loader = ConfigLoader(text, env)
    try:
        return loader.load_document()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_describe_yaml_error(exc, source)) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {_one_line(str(exc))}") from exc


def _describe_yaml_error(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    message = exc.problem or exc.context or "syntax error"
    if exc.context and exc.problem:
        message = f"{exc.problem} ({exc.context})"
    return f"{where}: invalid YAML: {_one_line(message)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
