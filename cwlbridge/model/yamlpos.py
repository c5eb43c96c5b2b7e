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
