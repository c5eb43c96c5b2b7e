"""reana.yaml templates: round-trip loading, YAML-safe injection, checks and packing.

A template is loaded with ruamel.yaml in round-trip mode, so comments, key order and
block scalars survive.  Values are injected into the loaded document, never into the
text: ``set_value`` writes one value at a dotted path, ``replace_token`` swaps a token
inside string scalars (the ``sed s/VAR_INPUT/$ds/`` style of script_reana.sh
templates).  Whatever the value holds (``: ``, ``#``, quotes, newlines), it stays one
string scalar: every injected string is checked by dumping and reloading it, and
falls back to double-quoted style when another style would change it.

``check_spec`` finds what would make REANA fail later (missing files, bad paths,
leftover tokens) before anything is created; ``build_submission`` turns the document
into the JSON body a REANA 0.9 server expects from ``POST /api/workflows``.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from cwlbridge.errors import InputFileError, SourcePos, UsageError
from cwlbridge.model.yamlpos import check_yaml_limits
from cwlbridge.reana import schema

log = logging.getLogger("cwlbridge.reana")

WORKFLOW_TYPES = schema.WORKFLOW_TYPES
TOP_LEVEL_KEYS = schema.TOP_LEVEL_KEYS
#: Workflow types the local engine runs (yadage and snakemake need a REANA server).
LOCAL_WORKFLOW_TYPES: tuple[str, ...] = ("serial", "cwl")
#: cwlbridge's own placeholder tokens, e.g. ``__CWLB_DS1__``.
CWLB_TOKEN = re.compile(r"__CWLB_[A-Za-z0-9_]+__")
#: pchain placeholders that should have been resolved before the spec is used.
PCHAIN_PLACEHOLDER = re.compile(r"%\{[A-Za-z_][A-Za-z0-9_]*\}")
#: script_reana.sh-style tokens (``VAR_INPUT``) meant for ``--var``; ``$VAR_X`` and
#: ``${VAR_X}`` are shell variables and are left alone.
VAR_TOKEN = re.compile(r"(?<![\w$])(?<!\$\{)VAR_[A-Z0-9][A-Z0-9_]*\b")

_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")
_VAR_NAME = re.compile(r"[^\s=]+")

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem found in a spec; ``str()`` gives ``file:line:col: severity: message``."""

    pos: SourcePos
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.pos}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class CredentialUsage:
    """Whether any step of a workflow asks REANA for a VOMS proxy or a Rucio config."""

    voms_proxy: bool = False
    rucio: bool = False


class SpecError(InputFileError):
    """A reana.yaml (or a file it names) cannot be loaded, edited or packed."""


# --------------------------------------------------------------------------- YAML I/O


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    # Long command lines must not be folded across lines on dump.
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def loads_spec(text: str, source: str = "<string>") -> CommentedMap:
    """Parse reana.yaml text in round-trip mode; the top level must be a mapping.

    ``source`` only names the text in error messages.
    """
    check_yaml_limits(text, source, SpecError)
    try:
        doc = _yaml().load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = SourcePos(source, mark.line + 1, mark.column + 1) if mark else SourcePos(source)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"not valid YAML: {problem}", pos=pos) from None
    if not isinstance(doc, CommentedMap):
        raise SpecError("a reana.yaml must be a mapping at the top level", pos=SourcePos(source, 1))
    return doc


def load_spec(path: Path) -> CommentedMap:
    """Read and parse a reana.yaml template, keeping comments and key order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {path}: {exc}") from None
    return loads_spec(text, str(path))


def dump(doc: Any) -> str:
    """Serialise a (round-trip) document back to YAML text."""
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def _survives_round_trip(candidate: str, expected: str) -> bool:
    probe = CommentedMap()
    probe["k"] = candidate
    try:
        reloaded = _yaml().load(dump(probe))
    except YAMLError:
        return False
    return isinstance(reloaded, Mapping) and list(reloaded) == ["k"] and reloaded["k"] == expected


def _yaml_safe_string(value: str, like: object = None) -> str:
    """Return ``value`` as a string scalar that dumps and reloads to exactly ``value``.

    The style of ``like`` (a literal block, a quoted string) is kept when it can
    represent the value; otherwise double quotes, which escape everything, are used.
    """
    preferred: str = value
    style: type[str] = type(like) if isinstance(like, str) else str
    if style is not str:
        try:
            preferred = style(value)
        except TypeError:
            preferred = value
    if _survives_round_trip(preferred, value):
        return preferred
    quoted: str = DoubleQuotedScalarString(value)
    if not _survives_round_trip(quoted, value):
        raise SpecError(f"value {value[:40]!r}... cannot be represented as one YAML string")
    return quoted


# --------------------------------------------------------------------------- injection


def parse_dotted_path(path: str) -> list[str | int]:
    """Split ``inputs.parameters.did`` / ``workflow.specification.steps[0].commands[1]``.

    Mapping keys are separated by dots; ``[N]`` after a key indexes a list.  Keys may
    hold any character except ``.``, ``[`` and ``]``.
    """
    if not path:
        raise UsageError("empty path: expected something like inputs.parameters.name")
    parts: list[str | int] = []
    for segment in path.split("."):
        match = _SEGMENT.fullmatch(segment)
        if not match:
            raise UsageError(
                f"bad path {path!r}: segment {segment!r} is not KEY or KEY[N]",
                hint="use dots between keys and [N] for list items, e.g. steps[0].commands",
            )
        parts.append(match.group(1))
        parts.extend(int(i) for i in _INDEX.findall(match.group(2)))
    return parts


def _describe(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "<top>"


def set_value(doc: CommentedMap, path: str, value: Any) -> None:
    """Set the value at a dotted path, creating missing mapping keys on the way.

    A string value is stored so that it stays one string scalar whatever it holds;
    an existing scalar's style (quoted, literal block) is kept when it can hold it.
    Raises ``UsageError`` when the path runs through a scalar, indexes a mapping,
    names a key of a list, or indexes past the end of a list.
    """
    parts = parse_dotted_path(path)
    node: Any = doc
    for depth, part in enumerate(parts[:-1]):
        here = _describe(parts[: depth + 1])
        child_is_index = isinstance(parts[depth + 1], int)
        node = _step_into(node, part, here, create=not child_is_index)
    last = parts[-1]
    target = _describe(parts)
    if isinstance(last, int):
        if not isinstance(node, list):
            raise UsageError(f"cannot set {path!r}: {_describe(parts[:-1])} is not a list")
        if last >= len(node):
            raise UsageError(f"cannot set {path!r}: {target} is past the end of the list")
        old = node[last]
        node[last] = _yaml_safe_string(value, old) if isinstance(value, str) else value
        return
    if not isinstance(node, Mapping):
        raise UsageError(f"cannot set {path!r}: {_describe(parts[:-1])} is not a mapping")
    old = node.get(last)
    node[last] = _yaml_safe_string(value, old) if isinstance(value, str) else value  # type: ignore[index]


def _step_into(node: Any, part: str | int, here: str, *, create: bool) -> Any:
    if isinstance(part, int):
        if not isinstance(node, list):
            raise UsageError(f"{here}: the value before [{part}] is not a list")
        if part >= len(node):
            raise UsageError(f"{here}: index {part} is past the end of a list of {len(node)}")
        return node[part]
    if not isinstance(node, Mapping):
        raise UsageError(f"{here}: cannot look up key {part!r} in a {type(node).__name__}")
    if part not in node:
        if not create:
            raise UsageError(f"{here}: no such key, and a list cannot be created by a path")
        node[part] = CommentedMap()  # type: ignore[index]
    child = node[part]
    if child is None and create:
        child = node[part] = CommentedMap()  # type: ignore[index]
    return child


def replace_token(doc: Any, token: str, value: str) -> int:
    """Replace ``token`` inside every string scalar value of ``doc``; return the count.

    Mapping keys are left alone (a token there is reported by ``check_spec``).
    Non-string scalars are never touched, and the result is always a string.
    """
    if not token:
        raise UsageError("an empty token cannot be replaced")
    count = 0

    def visit(node: Any) -> None:
        nonlocal count
        if isinstance(node, Mapping):
            for key in list(node):
                count += _replace_in_slot(node, key, token, value)
                visit(node[key])
        elif isinstance(node, list):
            for index in range(len(node)):
                count += _replace_in_slot(node, index, token, value)
                visit(node[index])

    visit(doc)
    return count


def _replace_in_slot(container: Any, key: Any, token: str, value: str) -> int:
    old = container[key]
    if not isinstance(old, str) or token not in old:
        return 0
    hits = old.count(token)
    container[key] = _yaml_safe_string(old.replace(token, value), old)
    return hits


def parse_set_option(arg: str) -> tuple[str, str]:
    """Parse a ``--set a.b=VALUE`` argument into ``(path, value)``; VALUE may be empty."""
    path, sep, value = arg.partition("=")
    if not sep or not path:
        raise UsageError(f"--set {arg!r}: expected PATH=VALUE, e.g. inputs.parameters.did=mc20:ds")
    parse_dotted_path(path)
    return path, value


def parse_var_option(arg: str) -> tuple[str, str]:
    """Parse a ``--var NAME=VALUE`` argument into ``(token, value)``."""
    name, sep, value = arg.partition("=")
    if not sep or not name:
        raise UsageError(f"--var {arg!r}: expected NAME=VALUE, e.g. VAR_INPUT=mc20:ds")
    if not _VAR_NAME.fullmatch(name):
        raise UsageError(f"--var {arg!r}: NAME must not contain spaces")
    return name, value


def apply_options(doc: CommentedMap, sets: Iterable[tuple[str, str]], variables: Iterable[tuple[str, str]]) -> None:
    """Apply parsed ``--var`` replacements, then ``--set`` values, to ``doc``.

    A ``--var`` token that occurs nowhere in the document is not an error here:
    it may live in the CWL job file, which ``build_submission`` substitutes.
    """
    for token, value in variables:
        hits = replace_token(doc, token, value)
        log.debug("--var %s replaced %d time(s) in the spec", token, hits)
    for path, value in sets:
        set_value(doc, path, value)


# --------------------------------------------------------------------------- checks


position = schema.position
_pos = position


def walk_strings(node: Any) -> Iterator[tuple[Any, Any, str, bool]]:
    """Yield ``(container, key, text, is_key)`` for every string key and value."""
    if isinstance(node, Mapping):
        for key, child in node.items():
            if isinstance(key, str):
                yield node, key, key, True
            if isinstance(child, str):
                yield node, key, child, False
            else:
                yield from walk_strings(child)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            if isinstance(child, str):
                yield node, index, child, False
            else:
                yield from walk_strings(child)


def find_leftover_tokens(doc: Any, source: str, tokens: Iterable[str] = ()) -> list[Finding]:
    """Report ``__CWLB_*__`` and ``VAR_*`` tokens, unresolved ``%{X}`` placeholders and given tokens."""
    wanted = [t for t in tokens if t]
    findings: list[Finding] = []
    for container, key, text, is_key in walk_strings(doc):
        left = set(CWLB_TOKEN.findall(text)) | set(PCHAIN_PLACEHOLDER.findall(text)) | set(VAR_TOKEN.findall(text))
        left |= {t for t in wanted if t in text}
        for token in sorted(left):
            where = "key" if is_key else "value"
            findings.append(
                Finding(
                    _pos(container, key, source),
                    f"placeholder {token} is still in this {where}; pass --var {token}=VALUE "
                    "or --set PATH=VALUE for it",
                )
            )
    return findings


def _bad_relative_path(text: str, what: str = "input") -> str | None:
    if not text.strip():
        return "is empty"
    posix = PurePosixPath(text)
    if posix.is_absolute() or text.startswith("\\") or re.match(r"[A-Za-z]:[\\/]", text):
        return f"is absolute; REANA {what} paths are relative to the workspace"
    if ".." in posix.parts or ".." in text.split("\\"):
        return f"contains '..'; REANA {what} paths must stay inside the workspace"
    if what == "output" and "\\" in text:
        # It would name another file on the server (one name) than in the tar (a path).
        return "contains a backslash; write output paths with '/'"
    return None


def _check_outputs(doc: Mapping[str, Any], source: str) -> list[Finding]:
    """Declared outputs must be relative paths inside the workspace: they become paths in
    the tarball and on this machine, so one that could leave either is refused before the
    workflow is created (not when its outputs arrive)."""
    outputs = doc.get("outputs")
    if not isinstance(outputs, Mapping):
        return []  # a wrong type is reported by the schema checks
    findings: list[Finding] = []
    for kind in ("files", "directories"):
        entries = outputs.get(kind)
        if not isinstance(entries, list):
            continue
        for index, entry in enumerate(entries):
            pos = _pos(entries, index, source)
            if not isinstance(entry, str):
                continue
            problem = _bad_relative_path(entry, "output")
            if problem:
                findings.append(Finding(pos, f"output path {entry!r} {problem}"))
    return findings


def _check_paths(
    section: Any, kind: Literal["files", "directories"], base: Path, source: str
) -> tuple[list[Finding], list[PurePosixPath]]:
    findings: list[Finding] = []
    accepted: list[PurePosixPath] = []
    entries = section.get(kind) if isinstance(section, Mapping) else None
    if not isinstance(entries, list):
        return findings, accepted  # a wrong type is reported by the schema checks
    for index, entry in enumerate(entries):
        pos = _pos(entries, index, source)
        if not isinstance(entry, str):
            continue
        problem = _bad_relative_path(entry)
        if problem:
            findings.append(Finding(pos, f"input path {entry!r} {problem}"))
            continue
        local = base / entry
        if kind == "files" and not local.is_file():
            findings.append(Finding(pos, f"input file {entry!r} does not exist under {base}"))
        elif kind == "directories" and not local.is_dir():
            findings.append(Finding(pos, f"input directory {entry!r} does not exist under {base}"))
        norm = PurePosixPath(*[p for p in PurePosixPath(entry).parts if p != "."])
        if norm in accepted:
            findings.append(Finding(pos, f"input path {entry!r} is listed twice"))
        accepted.append(norm)
    return findings, accepted


def check_spec(
    doc: Any,
    path: str | Path,
    base_dir: Path,
    *,
    tokens: Iterable[str] = (),
) -> list[Finding]:
    """Check a (filled-in) spec before anything is created on the server.

    ``path`` names the spec in messages; ``base_dir`` is where its relative input
    paths live.  ``tokens`` are the ``--var`` names: any occurrence left in the spec
    (or in the CWL job file after the same substitution) is an error.  Returns every
    finding; errors block submission, warnings do not.
    """
    source = str(path)
    base = Path(base_dir)
    token_list = [t for t in tokens if t]
    if not isinstance(doc, Mapping):
        return [Finding(SourcePos(source, 1), "a reana.yaml must be a mapping at the top level")]
    findings = [Finding(_pos(c, k, source), m) for c, k, m in schema.schema_problems(doc)]
    findings.extend(_check_workflow(doc, base, source))
    findings.extend(_check_inputs(doc, base, source))
    findings.extend(_check_outputs(doc, source))
    findings.extend(find_leftover_tokens(doc, source, token_list))
    findings.extend(_check_job_file(doc, base, source, token_list))
    return findings


def _check_workflow(doc: Mapping[str, Any], base: Path, source: str) -> list[Finding]:
    """What the schema cannot see: the workflow file exists, is safe, and (serial) is well formed."""
    workflow = doc.get("workflow")
    if not isinstance(workflow, Mapping):
        return []
    if not isinstance(workflow.get("file"), str):
        return []
    path, findings = _named_file(workflow, "file", base, source, key="workflow.file", what="workflow file")
    if path is None:
        return findings
    if workflow.get("type") != "serial" or "specification" in workflow:
        return []
    # reana-client loads a serial file into 'specification' before the schema sees it.
    try:
        loaded = load_spec(path)
    except SpecError as exc:
        return [Finding(exc.pos or SourcePos(str(path)), exc.message)]
    return [Finding(_pos(c, k, str(path)), m) for c, k, m in schema.serial_problems(loaded)]


def _named_file(
    container: Mapping[str, Any], field: str, base: Path, source: str, *, key: str, what: str
) -> tuple[Path | None, list[Finding]]:
    """The file ``container[field]`` names under ``base``, or why it cannot be used there."""
    name = str(container[field])
    pos = _pos(container, field, source)
    problem = _bad_relative_path(name)
    if problem:
        return None, [Finding(pos, f"{key} {problem}")]
    path = base / name
    if not path.is_file():
        return None, [Finding(pos, f"{what} {name!r} does not exist under {base}")]
    return path, []


def _check_inputs(doc: Mapping[str, Any], base: Path, source: str) -> list[Finding]:
    inputs = doc.get("inputs")
    if not isinstance(inputs, Mapping):
        return []  # a wrong type is reported by the schema checks
    file_findings, files = _check_paths(inputs, "files", base, source)
    dir_findings, dirs = _check_paths(inputs, "directories", base, source)
    findings = file_findings + dir_findings
    for entry in files + dirs:
        for directory in dirs:
            if entry != directory and directory in entry.parents:
                findings.append(
                    Finding(
                        _pos(doc, "inputs", source),
                        f"input path '{entry}' lies inside input directory '{directory}'; list it once",
                    )
                )
    return findings


def job_file_name(doc: Mapping[str, Any]) -> str | None:
    """The CWL/snakemake parameter file a spec names in ``inputs.parameters.input``, if any."""
    workflow = doc.get("workflow")
    inputs = doc.get("inputs")
    if not isinstance(workflow, Mapping) or workflow.get("type") not in ("cwl", "snakemake"):
        return None
    params = inputs.get("parameters") if isinstance(inputs, Mapping) else None
    if isinstance(params, Mapping) and isinstance(params.get("input"), str):
        return str(params["input"])
    return None


def _check_job_file(doc: Mapping[str, Any], base: Path, source: str, tokens: list[str]) -> list[Finding]:
    if job_file_name(doc) is None:
        return []
    params = doc["inputs"]["parameters"]
    job_path, findings = _named_file(
        params, "input", base, source, key="inputs.parameters.input", what="parameter file"
    )
    if job_path is None:
        return findings
    try:
        job = load_spec(job_path)
    except SpecError as exc:
        return [Finding(exc.pos or SourcePos(str(job_path)), exc.message)]
    # The job file gets the same --var substitution at submission time.
    for token in tokens:
        replace_token(job, token, "")
    return find_leftover_tokens(job, str(job_path), ())


def errors_only(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that block submission."""
    return [f for f in findings if f.severity == "error"]


# --------------------------------------------------------------------------- submission


def to_plain(node: Any) -> Any:
    """Convert a round-trip YAML tree into plain JSON-able dicts, lists and scalars."""
    if isinstance(node, Mapping):
        return {str(key): to_plain(value) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return [to_plain(value) for value in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, str):
        return str(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, (datetime, date)):
        return node.isoformat()
    return str(node)


def pack_cwl(workflow_file: Path) -> dict[str, Any]:
    """Pack a CWL workflow and the tools it runs into one ``$graph`` document.

    This is what ``cwltool --pack`` produces, done in-process; the result always
    keeps the ``{"$graph": [...], "cwlVersion": ...}`` form, with ``#main`` as the
    entry point, which a REANA 0.9 CWL engine runs.  The document is validated
    first, so a broken CWL file fails here rather than on the server.
    """
    from cwltool.context import LoadingContext
    from cwltool.load_tool import fetch_document, resolve_and_validate_document
    from cwltool.pack import pack
    from schema_salad.exceptions import ValidationException

    path = Path(workflow_file).resolve()
    if not path.is_file():
        raise SpecError(f"CWL workflow file {workflow_file} does not exist")
    check_yaml_limits(path.read_text(encoding="utf-8", errors="replace"), str(workflow_file), SpecError)
    # cwltool's own stderr handler would print "Resolved ..." chatter on every pack.
    cwltool_log = logging.getLogger("cwltool")
    saved_level = cwltool_log.level
    cwltool_log.setLevel(logging.WARNING)
    try:
        context = LoadingContext()
        context, workflowobj, uri = fetch_document(str(path), context)
        context, uri = resolve_and_validate_document(context, workflowobj, uri)
        packed = pack(context, uri)
    except ValidationException as exc:
        raise SpecError(f"CWL file {workflow_file} is not valid:\n{exc}") from None
    except Exception as exc:  # cwltool raises many unrelated types for bad input
        raise SpecError(f"cannot pack CWL file {workflow_file}: {exc}") from None
    finally:
        cwltool_log.setLevel(saved_level)
    plain = json.loads(json.dumps(packed, default=str))
    if not isinstance(plain, dict) or "$graph" not in plain:
        raise SpecError(f"packing {workflow_file} did not give a $graph document")
    return plain


def _load_plain_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {what} {path}: {exc}") from None
    return to_plain(loads_any(text, str(path)))


def loads_any(text: str, source: str) -> Any:
    """Parse YAML text (any top-level type) in round-trip mode."""
    check_yaml_limits(text, source, SpecError)
    try:
        return _yaml().load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = SourcePos(source, mark.line + 1, mark.column + 1) if mark else SourcePos(source)
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", pos=pos) from None


def build_submission(
    doc: Any,
    base_dir: Path,
    *,
    replacements: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build the JSON body of ``POST /api/workflows`` for a REANA 0.9 server.

    Does what reana-client does before creating a workflow (reana.md §7):

    - ``cwl``: packs ``workflow.file`` into ``workflow.specification`` and replaces
      ``inputs.parameters`` with the job object from the file named by
      ``inputs.parameters.input``.  Deliberate extension: the other keys of
      ``inputs.parameters`` (e.g. from ``--set inputs.parameters.ds=...``) override
      the job file's keys, and ``replacements`` (the ``--var`` tokens) are applied
      to the job file's strings as well.
    - ``serial``: a ``workflow.file`` is loaded into ``workflow.specification``.
    - ``yadage``: the specification is sent as null; the server loads the file.
    - ``snakemake``: needs snakemake on the client to build the specification, which
      cwlbridge does not ship; only a spec with an inline ``specification`` passes.

    Run ``check_spec`` first; this function assumes the checked structure.
    """
    base = Path(base_dir)
    body = to_plain(doc)
    if not isinstance(body, dict) or not isinstance(body.get("workflow"), dict):
        raise SpecError("the spec has no 'workflow' mapping")
    workflow: dict[str, Any] = body["workflow"]
    kind = workflow.get("type")
    wf_file = workflow.get("file")
    if kind == "cwl":
        if not isinstance(wf_file, str):
            inline = workflow.get("specification")
            if isinstance(inline, dict) and "$graph" in inline:
                return body
            raise SpecError("a cwl spec needs workflow.file (or an already packed specification)")
        workflow["specification"] = pack_cwl(base / wf_file)
        _load_cwl_job(body, base, replacements or {})
    elif kind == "serial":
        if "specification" not in workflow:
            if not isinstance(wf_file, str):
                raise SpecError("a serial spec needs workflow.file or workflow.specification")
            spec = _load_plain_yaml(base / wf_file, "serial workflow file")
            if not isinstance(spec, dict):
                raise SpecError(f"serial workflow file {wf_file} must hold a mapping with 'steps'")
            workflow["specification"] = spec
    elif kind == "yadage":
        workflow.setdefault("specification", None)
    elif kind == "snakemake":
        if not isinstance(workflow.get("specification"), dict):
            raise SpecError(
                "snakemake specs must be loaded by snakemake on the client for a REANA 0.9 "
                "server; cwlbridge does not do that yet",
                hint="use reana-client for snakemake workflows, or give workflow.specification",
            )
    else:
        raise SpecError(f"workflow.type {kind!r} is not one of " + ", ".join(WORKFLOW_TYPES))
    return body


def _load_cwl_job(body: dict[str, Any], base: Path, replacements: Mapping[str, str]) -> None:
    inputs = body.setdefault("inputs", {})
    params = inputs.get("parameters") or {}
    job_name = params.get("input")
    if not isinstance(job_name, str):
        return
    problem = _bad_relative_path(job_name)
    if problem:
        raise SpecError(f"inputs.parameters.input {problem}")
    job_path = base / job_name
    if not job_path.is_file():
        raise SpecError(f"parameter file {job_name!r} does not exist under {base}")
    try:
        job_doc = loads_any(job_path.read_text(encoding="utf-8"), str(job_path))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read parameter file {job_path}: {exc}") from None
    if job_doc is None:
        job_doc = CommentedMap()
    if not isinstance(job_doc, Mapping):
        raise SpecError(f"parameter file {job_name} must hold a YAML mapping")
    for token, value in replacements.items():
        replace_token(job_doc, token, value)
    job = to_plain(job_doc)
    job.update({k: v for k, v in params.items() if k != "input"})
    inputs["parameters"] = job


# --------------------------------------------------------------------------- credentials


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "on")
    return bool(value)


def _merge(a: CredentialUsage, b: CredentialUsage) -> CredentialUsage:
    return CredentialUsage(a.voms_proxy or b.voms_proxy, a.rucio or b.rucio)


def _flag_keys(node: Any) -> CredentialUsage:
    """Any mapping anywhere with a true ``voms_proxy`` / ``rucio`` key."""
    usage = CredentialUsage()
    if isinstance(node, Mapping):
        usage = CredentialUsage(_truthy(node.get("voms_proxy", False)), _truthy(node.get("rucio", False)))
        for child in node.values():
            usage = _merge(usage, _flag_keys(child))
    elif isinstance(node, list):
        for child in node:
            usage = _merge(usage, _flag_keys(child))
    return usage


def _is_reana_class(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    tail = re.split(r"[#/:]", name.rstrip("/#"))[-1]
    return tail == "reana" or name.rstrip("/#") in ("http://reana.io", "https://reana.io")


def _cwl_reana_hints(node: Any) -> CredentialUsage:
    usage = CredentialUsage()
    if isinstance(node, Mapping):
        for key in ("hints", "requirements"):
            block = node.get(key)
            if isinstance(block, Mapping):
                for cls, body in block.items():
                    if _is_reana_class(cls):
                        usage = _merge(usage, _flag_keys(body))
            elif isinstance(block, list):
                for item in block:
                    if isinstance(item, Mapping) and _is_reana_class(item.get("class")):
                        usage = _merge(usage, _flag_keys(item))
        for child in node.values():
            usage = _merge(usage, _cwl_reana_hints(child))
    elif isinstance(node, list):
        for child in node:
            usage = _merge(usage, _cwl_reana_hints(child))
    return usage


def credential_usage(submission: Mapping[str, Any], base_dir: Path) -> CredentialUsage:
    """Find whether any step needs a VOMS proxy or Rucio (REANA 0.9: per step only).

    ``submission`` is the body from ``build_submission`` (so CWL is already packed
    and a serial file already loaded).  Looks at serial step keys, CWL ``reana``
    hints/requirements, yadage step ``resources`` (the workflow file and the local
    files it ``$ref``s) and snakemake ``resources: voms_proxy=True`` in the Snakefile.
    Best effort for yadage and snakemake, whose files are only read as text/YAML.
    """
    workflow = submission.get("workflow") or {}
    kind = workflow.get("type")
    spec = workflow.get("specification")
    base = Path(base_dir)
    if kind == "serial":
        steps = spec.get("steps", []) if isinstance(spec, Mapping) else []
        usage = CredentialUsage()
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, Mapping):
                usage = _merge(
                    usage,
                    CredentialUsage(_truthy(step.get("voms_proxy", False)), _truthy(step.get("rucio", False))),
                )
        return usage
    if kind == "cwl":
        return _cwl_reana_hints(spec)
    wf_file = workflow.get("file")
    if kind == "yadage":
        usage = _flag_keys(spec) if spec else CredentialUsage()
        if isinstance(wf_file, str):
            usage = _merge(usage, _yadage_usage(base / wf_file, set()))
        return usage
    if kind == "snakemake":
        usage = _flag_keys(spec) if spec else CredentialUsage()
        if isinstance(wf_file, str) and (base / wf_file).is_file():
            text = (base / wf_file).read_text(encoding="utf-8", errors="replace")
            usage = _merge(
                usage,
                CredentialUsage(
                    bool(re.search(r"\bvoms_proxy\s*=\s*True\b", text)),
                    bool(re.search(r"\brucio\s*=\s*True\b", text)),
                ),
            )
        return usage
    return CredentialUsage()


def _yadage_usage(path: Path, seen: set[Path]) -> CredentialUsage:
    path = path.resolve()
    if path in seen or not path.is_file():
        return CredentialUsage()
    seen.add(path)
    try:
        data = _load_plain_yaml(path, "yadage file")
    except SpecError:
        return CredentialUsage()
    usage = _flag_keys(data)
    for ref in _refs(data):
        target = ref.split("#", 1)[0]
        if target and "://" not in target:
            usage = _merge(usage, _yadage_usage(path.parent / target, seen))
    return usage


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for child in node:
            yield from _refs(child)
