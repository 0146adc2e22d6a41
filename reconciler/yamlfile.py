"""The one YAML loader: safe, bounded, and keeping the line and column of every key and value.

PyYAML's own constructors silently keep the last of two duplicate keys and expand aliases without
limit, so we compose the node graph with the (C, where available) safe loader and build the values
ourselves, checking each node as we go.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, ValidationFailed

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_FILE_BYTES = 64 * 1024
# Every value built counts, aliases included: a real profile has a dozen, "billion laughs" has billions.
MAX_NODES = 2_000
# reconciler.yaml legitimately grows with the number of accounts (about 7 values each).
MAX_CONFIG_NODES = 100_000
# Profiles are flat; deep nesting is either a mistake or an attack (and a recursive alias is endless).
MAX_DEPTH = 20

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_PLAIN_SCALARS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}
_constructor = yaml.constructor.SafeConstructor()
# The safe loader's implicit resolvers (`yes` is a bool...) by first character, as Resolver.resolve
# looks them up, with the ones for any first character appended once here rather than per value.
_RESOLVERS_ANYWHERE = tuple(SafeLoader.yaml_implicit_resolvers.get(None, []))
_RESOLVERS_BY_FIRST = {
    first: (*found, *_RESOLVERS_ANYWHERE)
    for first, found in SafeLoader.yaml_implicit_resolvers.items()
    if first is not None
}
_DEFAULT_TAG = {yaml.ScalarNode: _STR, yaml.SequenceNode: _SEQ, yaml.MappingNode: _MAP}


class _Composer(SafeLoader):  # type: ignore[misc, valid-type]
    """The safe loader, resolving tags exactly as PyYAML's Resolver does, in fewer steps.

    The composer asks Python for every node's tag, and tells it of every step in and out of a
    collection for path resolvers, which the safe loader never has. Doing that in fewer steps takes
    about a seventh off composing bench/plan.py's profiles (280 ms to 241 ms for 10,000, best of 12).
    tests/test_yamlfile.py holds `resolve` to PyYAML's Resolver.resolve.
    """

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            for tag, regexp in _RESOLVERS_BY_FIRST.get(value[:1], _RESOLVERS_ANYWHERE):
                if regexp.match(value):
                    return tag
        return _DEFAULT_TAG[kind]


@dataclass
class Document:
    """A YAML mapping loaded from one file, with the position of each key and value."""

    path: str
    data: dict[str, Any]
    # PyYAML marks, turned into (line, column) only when a problem needs one: most files have none.
    value_at: dict[Path_, Any] = field(default_factory=dict)
    key_at: dict[Path_, Any] = field(default_factory=dict)
    # The source text of scalars that YAML turned into something other than a string (yes -> True).
    raw_text: dict[Path_, str] = field(default_factory=dict)

    def position(self, path: Path_, *, of_key: bool = False) -> tuple[int, int]:
        """Line and column of the value (or key) at `path`, else of its nearest enclosing value."""
        if of_key and path in self.key_at:
            return _mark(self.key_at[path])
        while path:
            if path in self.value_at:
                return _mark(self.value_at[path])
            path = path[:-1]
        return _mark(self.value_at[()]) if () in self.value_at else (1, 1)

    def problem(self, path: Path_, message: str, *, of_key: bool = False) -> Problem:
        line, column = self.position(path, of_key=of_key)
        return Problem(self.path, line, column, message)


def load_mapping(file: Path | str, display: str, max_nodes: int = MAX_NODES) -> Document:
    """Load `file` as one YAML mapping, or raise ValidationFailed naming `display` and the line."""
    return parse_mapping(read_source(file, display)[1], display, max_nodes)


def read_source(file: Path | str, display: str) -> tuple[bytes, str]:
    """The bytes of `file` and their text (UTF-8, a byte-order mark dropped), within the size limit."""
    try:
        raw, size = _read_at_most(file, MAX_FILE_BYTES)
    except NotARegularFile as error:
        raise _fail(display, 0, 0, str(error)) from None
    except OSError as error:
        raise _fail(display, 0, 0, f"cannot be read ({error.strerror or error})") from None
    if size > MAX_FILE_BYTES:
        raise _fail(display, 0, 0, f"is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} (64 KiB)")
    try:
        return raw, raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        byte = raw[error.start]
        raise _fail(display, line, 0, f"is not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8") from None


def _read_at_most(file: Path | str, limit: int) -> tuple[bytes, int]:
    """Up to `limit` bytes of `file`, and its size when it holds more (never reading all of a huge file).

    os.read on a descriptor, not open(): the buffered file object costs about as much again as the
    read itself, which counts over 10,000 profiles (bench/plan.py).
    """
    # Non-blocking, then checked: reading a FIFO (or a terminal) named *.yaml would wait forever.
    descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    try:
        refuse_unless_regular(os.fstat(descriptor).st_mode)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(descriptor, limit + 1 - size)
            if not chunk:
                return b"".join(chunks), size
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), max(size, os.fstat(descriptor).st_size)
    finally:
        os.close(descriptor)


class NotARegularFile(OSError):
    """A FIFO, socket, device or folder where a file is read: reading it could block or never end."""

    kind = "not a regular file"  # "a FIFO (named pipe)", "a folder"...

    def __str__(self) -> str:
        return str(self.strerror)


def refuse_unless_regular(mode: int, doing: str = "read") -> None:
    """Raise NotARegularFile, naming what the file is, unless `mode` (st_mode) is a regular file's."""
    if stat.S_ISREG(mode):
        return
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "a device")
    error = NotARegularFile(errno.EINVAL, f"is {kind}, not a regular file; it is not {doing}")
    error.kind = kind
    raise error


def read_regular(path: Path | str) -> bytes:
    """The whole of a regular file; a FIFO, socket, device or folder is refused without waiting on it."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as file:
        refuse_unless_regular(os.fstat(descriptor).st_mode)
        return file.read()


def parse_mapping(text: str, display: str, max_nodes: int = MAX_NODES) -> Document:
    """Parse YAML text that must hold exactly one mapping."""
    try:
        root = yaml.compose(text, Loader=_Composer)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = _yaml_message(error)
        if mark is not None and text[mark.index : mark.index + 1] == "\t":
            message += " (a tab: indent with spaces, not tabs)"
        raise _fail(display, *_mark(mark), message) from None
    except yaml.YAMLError as error:  # ReaderError (bad characters) carries a position of its own
        line = text.count("\n", 0, getattr(error, "position", 0)) + 1
        raise _fail(display, line, 0, _yaml_message(error)) from None
    if root is None:
        raise _fail(display, 0, 0, "is empty; a profile needs at least phone_number")
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        raise _fail(display, *_mark(root.start_mark), f"must be a mapping of key: value lines, not {kind}")
    builder = _Builder(Document(display, {}), max_nodes)
    builder.document.data = builder.build(root, ())
    if builder.problems:
        raise ValidationFailed(builder.problems)
    return builder.document


class _Builder:
    def __init__(self, document: Document, max_nodes: int):
        self.document = document
        self.max_nodes = max_nodes
        self.problems: list[Problem] = []
        self.nodes = 0

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise _fail(
                self.document.path,
                *_mark(node.start_mark),
                f"expands to more than {self.max_nodes:,} values (YAML aliases); write them out instead",
            )
        if len(path) > MAX_DEPTH:
            raise _fail(self.document.path, *_mark(node.start_mark), f"nests deeper than {MAX_DEPTH} levels")
        self.document.value_at[path] = node.start_mark
        if isinstance(node, yaml.ScalarNode):  # most nodes: tested first, and text returned at once
            return node.value if node.tag == _STR else self._scalar(node, path)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if node.tag != _SEQ:
            return self._bad_tag(node, path)
        return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        if node.tag != _MAP:
            return self._bad_tag(node, path)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._add(_mark(key_node.start_mark), "merge keys (<<) are not supported; write the keys out")
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self._add(
                    _mark(key_node.start_mark), f"keys must be plain text, not {_describe_node(key_node)}"
                )
                continue
            key = key_node.value
            child = (*path, key)
            if child in self.document.key_at:
                first_line = _mark(self.document.key_at[child])[0]
                self._add(
                    _mark(key_node.start_mark), f"duplicate key '{key}' (first set on line {first_line})"
                )
                continue
            self.document.key_at[child] = key_node.start_mark
            result[key] = self.build(value_node, child)
        return result

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        """A scalar that YAML did not read as text (text is returned as it is: line breaks and control
        characters are the schemas' to refuse, so editors, check-jsonschema and `validate` agree)."""
        if node.tag not in _PLAIN_SCALARS:
            return self._bad_tag(node, path)
        self.document.raw_text[path] = node.value
        try:
            return _constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError):
            self._add(_mark(node.start_mark), f"'{node.value}' is not a valid {node.tag.rsplit(':', 1)[-1]}")
            return node.value

    def _bad_tag(self, node: yaml.Node, path: Path_) -> None:
        self._add(_mark(node.start_mark), f"the tag {node.tag} is not allowed; only plain YAML values")
        return None

    def _add(self, where: tuple[int, int], message: str) -> None:
        self.problems.append(Problem(self.document.path, *where, message))


def _describe_node(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"'{node.value}'"


def _mark(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


def _yaml_message(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.composer.ComposerError) and "single document" in str(error):
        return "holds more than one YAML document (---); keep one profile per file"
    if isinstance(error, yaml.MarkedYAMLError):
        text = error.problem or ""
        if error.context:
            text = f"{error.context}: {text}" if text else error.context
        return f"YAML syntax error: {text}"
    return f"YAML syntax error: {getattr(error, 'reason', None) or error}"


def _fail(path: str, line: int, column: int, message: str) -> ValidationFailed:
    return ValidationFailed([Problem(path, line, column, message)])
