"""Safe YAML loading that remembers where every value came from (private to :mod:`dsrt.topology`).

The file is composed with PyYAML's *safe* pure-Python composer (no tags that build objects, no
code), then converted to plain data by this module, which records the 1-based ``(line, column)`` of
every value and every mapping key by its path (``("nodes", 0, "devices", 1)``). Aliases are expanded
here under a bound, so a "billion laughs" file is refused after :data:`MAX_VALUES` values instead
of exhausting memory; merge keys (``<<``) are supported. Every failure is a ``TopologyError``
carrying the file, line and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import TopologyError

__all__ = ["Doc", "Path_", "parse_yaml", "doc_from_mapping", "MAX_VALUES", "MAX_BYTES", "MAX_DEPTH"]

#: A location path inside a document: mapping keys and sequence indices.
Path_ = tuple[Any, ...]

#: Most values (scalars, mappings, sequences) one document may expand to, aliases included.
MAX_VALUES = 100_000
#: Largest topology file accepted, in bytes.
MAX_BYTES = 4 << 20
#: Deepest nesting of mappings and sequences accepted.
MAX_DEPTH = 64

_MERGE_TAG = "tag:yaml.org,2002:merge"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


@dataclass
class Doc:
    """One parsed document: its plain ``data`` and the marks of every value and key.

    ``marks[path]`` and ``key_marks[path]`` are 1-based ``(line, column)``; ``base_dir`` resolves
    relative includes. A document built from a Python mapping has no marks.
    """

    file: str
    data: Any
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)
    has_marks: bool = True

    def at(self, path: Path_) -> Any:
        """The value at ``path`` (the path must exist)."""
        value = self.data
        for part in path:
            value = value[part]
        return value

    def where(self, path: Path_, *, key: bool = False) -> tuple[int | None, int | None]:
        """``(line, column)`` of the value (or, with ``key``, the key) at ``path`` or its nearest parent."""
        if not self.has_marks:
            return None, None
        if key and path in self.key_marks:
            return self.key_marks[path]
        p = tuple(path)
        while True:
            if p in self.marks:
                return self.marks[p]
            if not p:
                return 1, 1
            p = p[:-1]

    def error(self, path: Path_, message: str, *, key: bool = False) -> TopologyError:
        """A ``TopologyError`` located at ``path`` in this document."""
        line, column = self.where(path, key=key)
        return TopologyError(message, file=self.file, line=line, column=column)

    def loc_text(self, path: Path_) -> str:
        """``file:line:col`` of ``path``, for messages that point at a second place."""
        line, column = self.where(path)
        return ":".join(str(p) for p in (self.file, line, column) if p is not None)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Converter:
    """Turns a composed node graph into plain data, recording marks and bounding expansion."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.count = 0
        self.marks: dict[Path_, tuple[int, int]] = {}
        self.key_marks: dict[Path_, tuple[int, int]] = {}
        self.active: set[int] = set()
        self.scalars = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, message: str) -> TopologyError:
        line, column = _mark(node)
        return TopologyError(message, file=self.file, line=line, column=column)

    def check_size(self, node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
        """Values ``node`` expands to, counted without expanding (memoised per node); refuse past the bound."""
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise self.fail(node, "an alias refers to a value that contains it (recursive alias)")
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            active.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [v for kv in node.value for v in kv]
            for child in children:
                total += self.check_size(child, memo, active)
            active.discard(key)
        if total > MAX_VALUES:
            raise self.fail(node, f"this value expands to more than {MAX_VALUES} values through aliases;"
                                  " refusing to load it")
        memo[key] = total
        return total

    def convert(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.fail(node, f"document expands to more than {MAX_VALUES} values (aliases nested too deeply?);"
                                  " refusing to load it")
        if len(path) > MAX_DEPTH:
            raise self.fail(node, f"values nested more than {MAX_DEPTH} levels deep")
        self.marks[path] = _mark(node)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if id(node) in self.active:
            raise self.fail(node, "an alias refers to a value that contains it (recursive alias)")
        expected = _SEQ_TAG if isinstance(node, yaml.SequenceNode) else _MAP_TAG
        if node.tag != expected:
            raise self.fail(node, f"tag '{node.tag}' is not allowed in a topology (only plain YAML values)")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(child, (*path, i)) for i, child in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            raise self.fail(node, f"unsupported YAML node {type(node).__name__}")
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode) -> Any:
        try:
            value = self.scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(node, f"cannot read this value: {getattr(exc, 'problem', None) or exc}") from None
        except (ValueError, OverflowError, TypeError) as exc:  # e.g. a malformed timestamp
            raise self.fail(node, f"cannot read this value: {exc}") from None
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise self.fail(node, f"a {type(value).__name__} value is not allowed in a topology"
                                  " (use a string, number, boolean or null)")
        return value

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        own: set[str] = set()
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, "mapping keys must be plain strings, not collections")
            key = self.scalar(key_node)
            if not isinstance(key, str):
                raise self.fail(key_node, f"mapping keys must be strings, got {type(key).__name__} {key!r}")
            if key in own:
                raise self.fail(key_node, f"duplicate key '{key}'")
            own.add(key)
            self.key_marks[(*path, key)] = _mark(key_node)
            out[key] = self.convert(value_node, (*path, key))
        # Merge keys: explicit keys win; earlier merge sources win over later ones (YAML 1.1 rule).
        for source in merged:
            sources = source.value if isinstance(source, yaml.SequenceNode) else [source]
            for item in sources:
                if not isinstance(item, yaml.MappingNode):
                    raise self.fail(item, "'<<' merges only mappings (or a list of mappings)")
                for key_node, value_node in item.value:
                    if key_node.tag == _MERGE_TAG:
                        raise self.fail(key_node, "nested '<<' inside a merged mapping is not supported")
                    key = self.scalar(key_node)
                    if not isinstance(key, str):
                        raise self.fail(key_node, f"mapping keys must be strings, got {type(key).__name__}")
                    if key in out:
                        continue
                    self.key_marks[(*path, key)] = _mark(key_node)
                    out[key] = self.convert(value_node, (*path, key))
        return out


class _DepthLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting past :data:`MAX_DEPTH` where it starts.

    The composer recurses once per level; bounding it here turns a ``[[[[...`` file into a located
    error in microseconds instead of a ``RecursionError`` after the interpreter's whole stack.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.file = "<topology>"

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise TopologyError(f"values nested more than {MAX_DEPTH} levels deep", file=self.file,
                                    line=mark.line + 1, column=mark.column + 1)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self.depth -= 1


def _compose(text: str, file: str) -> yaml.Node | None:
    loader = _DepthLoader(text)
    loader.file = file
    try:
        return loader.get_single_node()  # type: ignore[no-any-return]
    finally:
        loader.dispose()


def _decode(raw: bytes, file: str) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise TopologyError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", file=file, line=line,
                            column=column) from None


def _line_col(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def parse_yaml(source: str | bytes, *, file: str, base_dir: Path | None = None, max_bytes: int = MAX_BYTES) -> Doc:
    """Parse YAML text (one document) into a :class:`Doc`; raise ``TopologyError`` on any problem.

    ``max_bytes`` bounds the document (bytes, or characters for text).
    """
    if isinstance(source, bytes):
        if len(source) > max_bytes:
            raise TopologyError(f"file is {len(source)} bytes; the limit is {max_bytes}", file=file, line=1, column=1)
        text = _decode(source, file)
    else:
        text = source
        if len(text) > max_bytes:
            raise TopologyError(f"text is {len(text)} characters; the limit is {max_bytes}", file=file, line=1,
                                column=1)
    try:
        node = _compose(text, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise TopologyError(f"YAML syntax error: {problem}{context}", file=file, line=line, column=column) from None
    except yaml.reader.ReaderError as exc:
        line, column = _line_col(text, exc.position)
        raise TopologyError(f"YAML syntax error: {exc.reason} (character {exc.character!r})", file=file, line=line,
                            column=column) from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"YAML syntax error: {exc}", file=file, line=1, column=1) from None
    except RecursionError:
        raise TopologyError(f"values nested too deeply (more than {MAX_DEPTH} levels)", file=file, line=1,
                            column=1) from None
    if node is None:
        raise TopologyError("the file is empty; expected a mapping with 'nodes'", file=file, line=1, column=1)
    conv = _Converter(file)
    try:
        conv.check_size(node, {}, set())
        data = conv.convert(node, ())
    except RecursionError:
        raise TopologyError(f"values nested too deeply (more than {MAX_DEPTH} levels)", file=file, line=1,
                            column=1) from None
    return Doc(file=file, data=data, marks=conv.marks, key_marks=conv.key_marks,
               base_dir=base_dir if base_dir is not None else Path.cwd())


def doc_from_mapping(data: Mapping[str, Any], *, file: str) -> Doc:
    """A :class:`Doc` for data given as a Python mapping (no marks: errors carry no line)."""
    return Doc(file=file, data=_plain(data), base_dir=Path.cwd(), has_marks=False)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
