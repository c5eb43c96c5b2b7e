"""Fast YAML loading that keeps the source position of every mapping key and value.

The round-trip loader of ruamel.yaml keeps positions but is pure Python and
takes over a second for a 1000-step chain.  Here libyaml (through
ruamel.yaml.clib) composes the node tree, which carries positions, and we
build ruamel's ``CommentedMap``/``CommentedSeq`` from it with their ``.lc``
position records filled in.  The result is what schema-salad and cwl-utils
expect, and what the pchain rules use to point at ``file:line:col``.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.cyaml import CSafeLoader
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cwlbridge.errors import InputFileError, SourcePos

_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULL = {"", "~", "null", "Null", "NULL"}


_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOATS = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}


#: How many nodes aliases may add to a document.  Aliases that expand to more are an "alias
#: bomb" (a few hundred bytes that grow to billions of nodes for whoever walks the tree).
MAX_ALIAS_NODES = 100_000
#: Text that may hold an anchor (``&name`` starting a node, also right after a flow mapping's
#: ``"key":``; not a shell's ``&&`` or `` & ``).  More matches only cost a check.
_ANCHOR = re.compile(r"(?:^|[\s\[\]{},:])&[^\s&,\[\]{}]")


def _needs_check(text: str) -> bool:
    """Whether ``text`` may hold an anchor or a long integer; checking costs a third of a load."""
    limit = sys.get_int_max_str_digits()
    return bool(_ANCHOR.search(text)) or bool(limit and re.search(f"[0-9]{{{limit + 1}}}", text))


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _mark_pos(node: Node, path: str) -> SourcePos:
    return SourcePos(path, node.start_mark.line + 1, node.start_mark.column + 1)


def check_nodes(root: Node, path: str) -> None:
    """Refuse a composed document that aliases blow up, or with integers Python cannot read.

    Counts each distinct node once (linear in the text), so the check itself is safe: the
    expanded size of a node is worked out from its children's, not by walking the copies.
    """
    limit = sys.get_int_max_str_digits()
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # expanded but not finished: the current node's ancestors
    shared: dict[int, Node] = {}  # nodes reached through more than one parent (aliases)
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            continue
        if key in sizes:
            shared[key] = node
            continue
        if key in open_nodes:
            raise InputFileError("a YAML alias refers to a node that contains it", pos=_mark_pos(node, path))
        if isinstance(node, ScalarNode):
            value: str = node.value
            digits = len(value.lstrip("+-"))
            if not node.style and limit and digits > limit and _INT.fullmatch(value):
                raise InputFileError(
                    f"an integer of {digits} digits is longer than Python reads ({limit} digits)",
                    pos=_mark_pos(node, path),
                    hint="quote it to keep it as a string",
                )
        open_nodes.add(key)
        stack.append((node, True))
        for child in reversed(_children(node)):
            if id(child) in sizes:
                shared[id(child)] = child
            else:
                stack.append((child, False))
    added = sizes[id(root)] - len(sizes)
    if added > MAX_ALIAS_NODES:
        biggest = max(shared.values(), key=lambda n: sizes[id(n)], default=root)
        raise InputFileError(
            f"YAML aliases expand this document by {added:.3g} nodes (at most {MAX_ALIAS_NODES} are allowed)",
            pos=_mark_pos(biggest, path),
            hint="an anchor (&name) used through many aliases (*name) inside other aliased nodes"
            " grows exponentially; write the values out instead",
        )


def check_yaml_limits(text: str, source: str, error: type[InputFileError] = InputFileError) -> None:
    """Refuse an alias bomb or an unreadable integer before another YAML loader sees ``text``.

    For loaders other than ``load_yaml`` (ruamel's round trip, cwl-utils): they expand
    aliases as they go and fail on long integers with no position.  Syntax errors are left
    to the caller's loader, which reports them its own way.
    """
    if not _needs_check(text):
        return
    loader = CSafeLoader(text)
    try:
        node = loader.get_single_node()
    except (YAMLError, RecursionError):
        return
    finally:
        loader.dispose()
    if node is not None:
        try:
            check_nodes(node, source)
        except InputFileError as err:
            if error is InputFileError:
                raise
            raise error(err.message, pos=err.pos, hint=err.hint) from None


def _scalar(node: ScalarNode) -> Any:
    """Plain scalars resolved with the YAML 1.2 core schema; quoted ones stay strings."""
    value: str = node.value
    if node.style:
        return value
    if value in _NULL:
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT.fullmatch(value):
        return int(value)
    if value[:2] in ("0x", "0o"):
        try:
            return int(value, 0)
        except ValueError:
            return value
    if _FLOAT.fullmatch(value):
        return float(value)
    if value.lower() in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value.lower()]
    return value


def _build(node: Node, path: str, depth: int = 0) -> Any:
    if depth > 200:
        raise InputFileError(
            "YAML nesting is too deep", pos=SourcePos(path, node.start_mark.line + 1, node.start_mark.column + 1)
        )
    if isinstance(node, ScalarNode):
        return _scalar(node)
    if isinstance(node, SequenceNode):
        seq = CommentedSeq()
        lc = seq.lc
        lc.line, lc.col = node.start_mark.line, node.start_mark.column
        for index, item in enumerate(node.value):
            seq.append(_build(item, path, depth + 1))
            lc.add_kv_line_col(index, [item.start_mark.line, item.start_mark.column])
        return seq
    if isinstance(node, MappingNode):
        mapping = CommentedMap()
        lc = mapping.lc
        lc.line, lc.col = node.start_mark.line, node.start_mark.column
        for key_node, value_node in node.value:
            key = _build(key_node, path, depth + 1)
            if isinstance(key, (list, dict)):
                raise InputFileError(
                    "a mapping key must be a plain value",
                    pos=SourcePos(path, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                )
            if key in mapping:
                raise InputFileError(
                    f"duplicate key '{key}'",
                    pos=SourcePos(path, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                )
            mapping[key] = _build(value_node, path, depth + 1)
            lc.add_kv_line_col(
                key,
                [
                    key_node.start_mark.line,
                    key_node.start_mark.column,
                    value_node.start_mark.line,
                    value_node.start_mark.column,
                ],
            )
        return mapping
    raise InputFileError(f"unsupported YAML node {type(node).__name__}", pos=SourcePos(path))


def read_text(path: str) -> str:
    """Read a UTF-8 text file, turning every OS or decoding problem into an InputFileError."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a directory, not a file") from None
    except PermissionError:
        raise InputFileError(f"{path}: permission denied") from None
    except OSError as err:
        raise InputFileError(f"{path}: cannot read: {err.strerror or err}") from None
    if b"\x00" in raw:
        raise InputFileError("not a text file (it contains NUL bytes)", pos=SourcePos(path, 1, 1))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputFileError("not valid UTF-8 text", pos=SourcePos(path, line, 1)) from None


def load_yaml(path: str, text: str | None = None) -> Any:
    """Parse one YAML document with positions; an empty file gives None."""
    if text is None:
        text = read_text(path)
    loader = CSafeLoader(text)
    try:
        node = loader.get_single_node()
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        pos = SourcePos(path, mark.line + 1, mark.column + 1) if mark else SourcePos(path)
        problem = err.problem or err.context or "invalid YAML"
        raise InputFileError(f"YAML syntax error: {problem}", pos=pos) from None
    except YAMLError as err:
        raise InputFileError(f"YAML syntax error: {err}", pos=SourcePos(path)) from None
    except RecursionError:
        raise InputFileError("YAML nesting is too deep", pos=SourcePos(path)) from None
    finally:
        loader.dispose()
    if node is None:
        return None
    if _needs_check(text):
        check_nodes(node, path)
    return _build(node, path)


def key_pos(container: Any, key: Any, path: str) -> SourcePos:
    """Position of ``key`` in a loaded mapping (or of item ``key`` in a sequence)."""
    lc = getattr(container, "lc", None)
    if lc is None:
        return SourcePos(path)
    data = lc.data.get(key) if hasattr(lc, "data") else None
    if data:
        return SourcePos(path, data[0] + 1, data[1] + 1)
    return node_pos(container, path)


def value_pos(container: Any, key: Any, path: str) -> SourcePos:
    """Position of the value stored under ``key`` in a loaded mapping."""
    lc = getattr(container, "lc", None)
    data = lc.data.get(key) if lc is not None and hasattr(lc, "data") else None
    if data and len(data) >= 4:
        return SourcePos(path, data[2] + 1, data[3] + 1)
    return key_pos(container, key, path)


def node_pos(node: Any, path: str) -> SourcePos:
    """Position where a loaded mapping or sequence starts."""
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return SourcePos(path)
    return SourcePos(path, lc.line + 1, (lc.col or 0) + 1)
