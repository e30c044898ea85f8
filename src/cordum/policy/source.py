"""Reading policy YAML: safely, fast, and with exact positions for every error.

The happy path lets libyaml (PyYAML's C parser) build the node tree and turns nodes into
plain data here, which is faster than PyYAML's own constructor and keeps the tree, so a
validation error found later can be mapped back to its line and column at no extra cost.

Hostile input is stopped before it can hurt: files over the size limit are not read,
binary data and bad encodings are refused, flow nesting deep enough to crash libyaml is
caught by a cheap scan before parsing, and alias expansion ("billion laughs") is bounded.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cordum.policy.errors import PolicyIssue, PolicyLoadError

DEFAULT_MAX_BYTES = 2 * 1024 * 1024
MAX_NESTING = 64
# Levels libyaml's recursive composer can take without risk, even on a small thread stack.
SAFE_COMPOSE_DEPTH = 1_000
MAX_ALIAS_NODES = 100_000

Loc = Sequence[str | int]

_TAG = "tag:yaml.org,2002:"
_BRACKET_DEPTH = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKET_DEPTH)
_SCALAR_BUILDERS: dict[str, Callable[[SafeConstructor, ScalarNode], Any]] = {
    _TAG + "null": SafeConstructor.construct_yaml_null,
    _TAG + "bool": SafeConstructor.construct_yaml_bool,
    _TAG + "int": SafeConstructor.construct_yaml_int,
    _TAG + "float": SafeConstructor.construct_yaml_float,
}
_TEXT_TAGS = {_TAG + "str", _TAG + "timestamp"}


_RESOLVER = yaml.resolver.Resolver()


@functools.lru_cache(maxsize=8192)
def _plain_scalar_tag(value: str) -> str:
    tag: str = _RESOLVER.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    return tag


class _PolicyLoader(yaml.CSafeLoader):
    """libyaml's parser, with the tag of each distinct plain scalar resolved once.

    Tag resolution runs in Python for every scalar; policies repeat the same few
    values (``deny``, ``prod``, ``tenant``) thousands of times, so remembering the
    answer is most of the composer's Python work saved.
    """

    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode and implicit[0]:
            return _plain_scalar_tag(value)
        tag: str = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        return tag


@dataclass(frozen=True)
class ParsedYaml:
    """A parsed policy document: the plain data and the node tree it came from."""

    name: str
    data: Any
    root: Node

    def position(self, loc: Loc) -> tuple[int, int]:
        """1-based (line, column) of ``loc``, or of its deepest ancestor present in the file."""
        node: Node = self.root
        mark = node.start_mark
        for part in loc:
            if isinstance(node, MappingNode) and isinstance(part, str):
                found = _find_key(node, part)
                if found is None:
                    break
                key_node, node = found
                mark = key_node.start_mark
            elif isinstance(node, SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                node = node.value[part]
                mark = node.start_mark
            else:
                break
        return mark.line + 1, mark.column + 1

    def issue_at(self, loc: Loc, code: str, message: str, **extra: Any) -> PolicyIssue:
        """An issue positioned at ``loc`` (or its deepest ancestor present) in this file."""
        line, column = self.position(loc)
        return PolicyIssue(
            code=code, message=message, file=self.name, line=line, column=column, **extra
        )

    def scalar_text(self, loc: Loc) -> str | None:
        """The source text of the scalar at ``loc`` (before YAML typed it), if there is one."""
        node: Node | None = self.root
        for part in loc:
            if isinstance(node, MappingNode) and isinstance(part, str):
                found = _find_key(node, part)
                node = found[1] if found else None
            elif (
                isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value)
            ):
                node = node.value[part]
            else:
                return None
        return node.value if isinstance(node, ScalarNode) else None

    def item_lines(self, key: str) -> list[int]:
        """1-based start lines of the items of the top-level sequence ``key``."""
        found = _find_key(self.root, key) if isinstance(self.root, MappingNode) else None
        if found is None or not isinstance(found[1], SequenceNode):
            return []
        return [item.start_mark.line + 1 for item in found[1].value]

    def node_line(self, loc: Loc) -> int:
        """1-based line where the value at ``loc`` starts (for rule positions)."""
        return self.position(loc)[0]


def read_policy_bytes(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a policy file, never more than ``max_bytes`` (+1, to know it was too large)."""
    name = str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise _too_large(name, size, max_bytes)
        # Bounded even so: special files (/dev/zero, pipes) report no useful size.
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise _fail(name, "file_not_found", "no such file", hint="check the path") from None
    except IsADirectoryError:
        raise _fail(name, "file_unreadable", "this is a directory, not a file") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _fail(name, "file_unreadable", f"cannot read: {reason}") from None
    if len(data) > max_bytes:
        raise _too_large(name, max_bytes + 1, max_bytes, at_least=True)
    return data


def decode_policy_bytes(data: bytes, name: str) -> str:
    """Decode policy bytes as UTF-8 (BOM allowed), with a clear error for anything else."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _fail(name, "bad_encoding", "file is UTF-16 encoded", hint="save the policy as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        line, column = _byte_position(data, nul)
        raise _fail(
            name,
            "binary_file",
            "this is not a text file (it contains NUL bytes)",
            line=line,
            column=column,
            hint="a policy is a YAML text file",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _byte_position(data, exc.start)
        raise _fail(
            name,
            "bad_encoding",
            f"invalid UTF-8 byte 0x{data[exc.start]:02x}",
            line=line,
            column=column,
            hint="save the policy as UTF-8",
        ) from None


def parse_yaml(text: str, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> ParsedYaml:
    """Parse one YAML document into plain data, keeping the node tree for positions."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line, column = _char_position(text, exc.start)
        raise _fail(
            name,
            "bad_encoding",
            f"the text contains an invalid character (U+{ord(text[exc.start]):04X})",
            line=line,
            column=column,
            hint="remove it; policies are UTF-8 text",
        ) from None
    if len(raw) > max_bytes:
        raise _too_large(name, len(raw), max_bytes)
    _check_nesting(raw, text, name)
    try:
        root = yaml.compose(text, Loader=_PolicyLoader)
    except yaml.MarkedYAMLError as exc:
        raise _fail(name, "yaml_syntax", _yaml_problem(exc), *_mark(exc)) from None
    except yaml.reader.ReaderError as exc:
        line, column = _char_position(text, exc.position)
        raise _fail(
            name,
            "yaml_syntax",
            f"character {exc.character!r} is not allowed in YAML ({exc.reason})",
            line=line,
            column=column,
        ) from None
    except yaml.YAMLError as exc:
        raise _fail(name, "yaml_syntax", str(exc)) from None
    if root is None:
        raise _fail(name, "empty_policy", "the policy is empty", hint="a policy needs `rules:`")
    builder = _Builder(name)
    data = builder.build(root, 0)
    if builder.issues:
        raise PolicyLoadError(builder.issues)
    return ParsedYaml(name=name, data=data, root=root)


def _find_key(node: MappingNode, key: str) -> tuple[Node, Node] | None:
    merges: list[Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == _TAG + "merge":
            merges.append(value_node)
        elif isinstance(key_node, ScalarNode) and key_node.value == key:
            return key_node, value_node
    for source in merges:
        candidates = source.value if isinstance(source, SequenceNode) else [source]
        for candidate in candidates:
            if isinstance(candidate, MappingNode):
                found = _find_key(candidate, key)
                if found is not None:
                    return found
    return None


class _StopBuildingError(Exception):
    """Stops building when continuing would be unsafe (bombs, cycles, nesting)."""


class _Builder:
    """Turns a composed node tree into dicts, lists and scalars, checking as it goes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.issues: list[PolicyIssue] = []
        self.alias_budget = MAX_ALIAS_NODES
        self.built: dict[int, Any] = {}
        self.active: set[int] = set()
        self.sizes: dict[int, int] = {}
        self.constructor = SafeConstructor()

    def build(self, node: Node, depth: int) -> Any:
        try:
            return self._build(node, depth)
        except _StopBuildingError:
            return None

    def _build(self, node: Node, depth: int) -> Any:
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if depth >= MAX_NESTING:
            self._abort(node, "too_deep", f"nested more than {MAX_NESTING} levels deep")
        key = id(node)
        if key in self.active:
            self._abort(node, "recursive_alias", "an alias refers to the node that contains it")
        if key in self.built:
            self._charge_alias(node)
            return self.built[key]
        self.active.add(key)
        if isinstance(node, MappingNode):
            result: Any = self._mapping(node, depth)
        elif isinstance(node, SequenceNode):
            self._check_tag(node, _TAG + "seq")
            result = [self._build(item, depth + 1) for item in node.value]
        else:  # pragma: no cover - the composer only yields the three node kinds
            self._abort(node, "yaml_syntax", f"unexpected YAML node {type(node).__name__}")
        self.active.discard(key)
        self.built[key] = result
        return result

    def _mapping(self, node: MappingNode, depth: int) -> dict[str, Any]:
        self._check_tag(node, _TAG + "map")
        result: dict[str, Any] = {}
        seen: dict[str, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                self._issue(key_node, "bad_key", "mapping keys must be plain text")
                continue
            key = key_node.value
            if key in seen:
                self._issue(
                    key_node,
                    "duplicate_key",
                    f"key `{key}` appears twice in this mapping (first on line {seen[key]})",
                    hint="YAML would silently keep only the last one; remove one of them",
                )
            seen[key] = key_node.start_mark.line + 1
            result[key] = self._build(value_node, depth + 1)
        for source in merges:
            self._merge_into(result, source, depth)
        return result

    def _merge_into(self, result: dict[str, Any], source: Node, depth: int) -> None:
        sources = source.value if isinstance(source, SequenceNode) else [source]
        for item in sources:
            merged = self._build(item, depth + 1)
            if not isinstance(merged, dict):
                self._issue(item, "bad_merge", "`<<` merges only mappings")
                continue
            for key, value in merged.items():
                result.setdefault(key, value)

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag in _TEXT_TAGS:
            return node.value
        builder = _SCALAR_BUILDERS.get(node.tag)
        if builder is None:
            self._issue(
                node,
                "yaml_tag",
                f"unsupported YAML tag `{node.tag}`",
                hint="a policy is plain YAML data: text, numbers, booleans, lists and mappings",
            )
            return None
        return builder(self.constructor, node)

    def _check_tag(self, node: Node, expected: str) -> None:
        if node.tag != expected:
            self._issue(
                node,
                "yaml_tag",
                f"unsupported YAML tag `{node.tag}`",
                hint="a policy is plain YAML data: text, numbers, booleans, lists and mappings",
            )

    def _charge_alias(self, node: Node) -> None:
        self.alias_budget -= self._size(node)
        if self.alias_budget < 0:
            self._abort(
                node,
                "alias_bomb",
                f"YAML aliases expand to more than {MAX_ALIAS_NODES:,} nodes",
                hint="this looks like a 'billion laughs' document; use fewer nested aliases",
            )

    def _size(self, node: Node) -> int:
        key = id(node)
        cached = self.sizes.get(key)
        if cached is not None:
            return cached
        if isinstance(node, MappingNode):
            size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
        elif isinstance(node, SequenceNode):
            size = 1 + sum(self._size(item) for item in node.value)
        else:
            size = 1
        self.sizes[key] = size
        return size

    def _issue(self, node: Node, code: str, message: str, hint: str | None = None) -> None:
        self.issues.append(
            PolicyIssue(
                code=code,
                message=message,
                file=self.name,
                line=node.start_mark.line + 1,
                column=node.start_mark.column + 1,
                hint=hint,
            )
        )

    def _abort(self, node: Node, code: str, message: str, hint: str | None = None) -> None:
        self._issue(node, code, message, hint)
        raise _StopBuildingError


def _check_nesting(raw: bytes, text: str, name: str) -> None:
    """Refuse nesting deep enough to overflow libyaml's recursive composer.

    A cheap bound decides whether a document could be deep at all. In block style a
    nested node always starts further right than its parent (give or take the one
    sequence that may share its mapping's column), so block depth is at most about twice
    the longest line; flow style adds at most one level per open bracket. Documents
    under the bound (every real policy) skip the exact check; the others are checked on
    libyaml's event stream, which keeps its own stack and cannot overflow.
    """
    if not _could_be_deep(raw):
        return
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_NESTING:
                    mark = event.start_mark
                    raise _fail(
                        name,
                        "too_deep",
                        f"nested more than {MAX_NESTING} levels deep",
                        line=mark.line + 1 if mark else None,
                        column=mark.column + 1 if mark else None,
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        raise _fail(name, "yaml_syntax", _yaml_problem(exc), *_mark(exc)) from None


def _could_be_deep(raw: bytes) -> bool:
    longest_line = max(map(len, raw.split(b"\n")))
    bound = 2 * longest_line + 2
    brackets = raw.translate(None, _NOT_BRACKETS)
    if len(brackets) > MAX_NESTING:
        bound += max(accumulate(_BRACKET_DEPTH[b] for b in brackets))
    return bound > SAFE_COMPOSE_DEPTH


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or "invalid YAML"
    if exc.context:
        return f"{problem} ({exc.context})"
    return problem


def _mark(exc: yaml.MarkedYAMLError) -> tuple[int | None, int | None]:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return None, None
    return mark.line + 1, mark.column + 1


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def _char_position(text: str, offset: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def _too_large(name: str, size: int, max_bytes: int, at_least: bool = False) -> PolicyLoadError:
    amount = f"more than {max_bytes:,}" if at_least else f"{size:,}"
    return _fail(
        name,
        "too_large",
        f"the policy is {amount} bytes; the limit is {max_bytes:,} bytes",
        hint="split the policy into bundles, or raise the limit with --max-bytes",
    )


def _fail(
    name: str,
    code: str,
    message: str,
    line: int | None = None,
    column: int | None = None,
    hint: str | None = None,
) -> PolicyLoadError:
    return PolicyLoadError(
        [PolicyIssue(code=code, message=message, file=name, line=line, column=column, hint=hint)]
    )
