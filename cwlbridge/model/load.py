"""Load a pchain chain: YAML with positions, CWL checks by cwl-utils, sub-workflows recursively.

PanDA's parser creates empty ``prun``, ``reana``… files next to the user's
CWL so that cwl-utils finds something to point at.  We resolve the five
builtin types to the typed CommandLineTools in ``cwlbridge/tools/`` instead,
in memory, and never write into the user's directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import json
import os
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from ruamel.yaml.comments import CommentedMap

from cwlbridge.errors import InputFileError, SourcePos
from cwlbridge.model.steps import (
    BUILTIN_TYPES,
    Findings,
    Step,
    StepInput,
    Workflow,
    WorkflowInput,
    WorkflowOutput,
)
from cwlbridge.model.yamlpos import key_pos, load_yaml, node_pos, read_text, value_pos

TOOLS_DIR = Path(__file__).resolve().parent.parent / "tools"
CWL_VERSIONS = ("v1.0", "v1.1", "v1.2")
STEP_KEYS = {
    "id", "in", "out", "run", "requirements", "hints", "label", "doc",
    "scatter", "scatterMethod", "when",
}  # fmt: skip
SCATTER_METHODS = ("dotproduct", "flat_crossproduct", "nested_crossproduct")


def builtin_type(run: str) -> str | None:
    """The builtin step type a ``run:`` value names, or None (``prun`` or ``prun.cwl``)."""
    base = os.path.basename(run.strip())
    name = base[:-4] if base.endswith(".cwl") else base
    return name if name in BUILTIN_TYPES else None


def tool_path(step_type: str) -> Path:
    """The CommandLineTool file describing a builtin step type."""
    return TOOLS_DIR / f"{step_type}.cwl"


def _short(ref: str) -> str:
    """A source as written, without any ``file#`` prefix."""
    return ref.split("#", 1)[-1]


def _as_entries(
    section: Any, path: str, what: str, findings: Findings, key_field: str = "id"
) -> list[tuple[str, Any, SourcePos]]:
    """CWL idmap forms (mapping keyed by id, or list of objects with ``id``) as a list."""
    entries: list[tuple[str, Any, SourcePos]] = []
    if section is None:
        return entries
    if isinstance(section, dict):
        for key, value in section.items():
            entries.append((str(key), value, key_pos(section, key, path)))
    elif isinstance(section, list):
        for index, item in enumerate(section):
            pos = key_pos(section, index, path)
            if isinstance(item, dict) and isinstance(item.get(key_field), str):
                entries.append((_short(item[key_field]), item, pos))
            elif isinstance(item, str) and what == "out":
                entries.append((_short(item), None, pos))
            else:
                findings.error(pos, f"each entry of '{what}' needs an '{key_field}'")
    else:
        findings.error(node_pos(section, path), f"'{what}' must be a mapping or a list")
    return entries


def _sources(value: Any) -> tuple[list[str], bool] | None:
    if isinstance(value, str):
        return [_short(value)], False
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [_short(v) for v in value], True
    return None


def _step_input(
    name: str, value: Any, pos: SourcePos, path: str, findings: Findings, step: str, value_at: SourcePos
) -> StepInput:
    item = StepInput(name, [], False, None, False, pos, value_pos=value_at)
    if isinstance(value, (str, list)) and not isinstance(value, dict):
        found = _sources(value)
        if found is None:
            findings.error(pos, f"input '{name}': a source must be a name or a list of names", step=step)
        else:
            item.sources, item.source_is_list = found
        return item
    if not isinstance(value, dict):
        findings.error(
            pos,
            f"input '{name}' must be a source name or a mapping with 'source' or 'default'",
            step=step,
        )
        return item
    if "source" in value:
        item.value_pos = value_pos(value, "source", path)
        found = _sources(value["source"])
        if found is None:
            findings.error(
                value_pos(value, "source", path), f"input '{name}': bad 'source'", step=step
            )
        else:
            item.sources, item.source_is_list = found
    if "default" in value:
        item.default, item.has_default = value["default"], True
        item.value_pos = value_pos(value, "default", path)
    if "valueFrom" in value:
        findings.warning(
            value_pos(value, "valueFrom", path),
            f"input '{name}': valueFrom is ignored by PanDA",
            step=step,
        )
    if not item.sources and not item.has_default:
        findings.error(pos, f"input '{name}' has neither a source nor a default", step=step)
    return item


#: What a message may point at inside a string value: a ``%{name}`` placeholder, an option.
_MARK = re.compile(r"%\{[^{}]*\}|(?<![^\s'\"])--?[A-Za-z][\w-]*")


class _SourceText:
    """A file's text, with where its lines start worked out once, when first needed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts: list[int] | None = None

    def offset(self, pos: SourcePos) -> int:
        if self._starts is None:
            self._starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        return self._starts[pos.line - 1] + pos.col - 1


def _marks(source: _SourceText, value: Any, at: SourcePos) -> dict[str, SourcePos]:
    """Where each placeholder and option word of a string literal (or list of them) is written.

    Found in the file's text from where the value starts, so the column is the token's own
    whatever the quoting; a token not found there (escaped, folded) keeps the value's position.
    """
    strings = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    tokens = {m.group() for string in strings for m in _MARK.finditer(string)}
    if not tokens or at.line <= 0:
        return {}
    text = source.text
    start = source.offset(at)
    end = start + 4 * sum(len(string) for string in strings) + 256  # the value's text, and its quoting
    marks: dict[str, SourcePos] = {}
    for token in tokens:
        found = text.find(token, start, end)
        # An option is a whole word, not the tail of a longer one (-n in --nJobs).
        while found >= 0 and token[0] == "-" and not _whole_word(text, found, len(token)):
            found = text.find(token, found + 1, end)
        if found >= 0:
            line = at.line + text.count("\n", start, found)
            col = found - text.rfind("\n", 0, found)
            marks[token] = SourcePos(at.path, line, col)
    return marks


def _whole_word(text: str, at: int, length: int) -> bool:
    before = text[at - 1] if at > 0 else " "
    after = text[at + length] if at + length < len(text) else " "
    return (before.isspace() or before in "'\"") and not (after.isalnum() or after in "_-")


def _has_loop_hint(hints: Any) -> bool:
    if isinstance(hints, list):
        return any(h == "loop" or (isinstance(h, dict) and h.get("class") == "loop") for h in hints)
    if isinstance(hints, dict):
        return "loop" in hints
    return False


class ChainLoader:
    """Loads one chain file and its sub-workflows, collecting findings instead of raising."""

    def __init__(
        self,
        findings: Findings,
        *,
        schema_check: bool = True,
        verdicts: Verdicts | None = None,
        chains: Memo | None = None,
    ):
        self.findings = findings
        self.schema_check = schema_check
        self.verdicts = verdicts
        # Clean loads with the schema check are kept (``cwlbridge.cache.LoadedChains``).
        self.chains = chains if schema_check else None
        self._stack: list[str] = []
        self._texts: list[_SourceText] = []  # the text of each file in the stack
        # Files that failed to load, and those that use them: never handed to cwl-utils, which
        # would read them (and their alias bombs) again itself.
        self._unsafe: set[str] = set()
        self._cache: dict[str, Workflow | None] = {}
        self._digests: dict[str, str] = {}  # of the text each file was parsed from

    def load(self, path: str) -> Workflow | None:
        """The workflow in ``path``, or None when it cannot be read as one."""
        real = os.path.realpath(path)
        if real in self._cache:
            return self._cache[real]
        try:
            text = read_text(path)
        except InputFileError as err:
            self._unreadable(real, path, err)
            return None
        key = None
        if self.chains is not None and not self._stack:  # the chain itself, not a sub-workflow
            key = _chain_key(path, text)
            kept = self._kept(key)
            if kept is not None:
                if kept.path != path:
                    _move(kept, path)
                self._cache[real] = kept
                return kept
        found = len(self.findings.items)
        try:
            doc = load_yaml(path, text)
        except InputFileError as err:
            self._unreadable(real, path, err)
            return None
        self._digests[real] = _digest(text)
        self._stack.append(real)
        self._texts.append(_SourceText(text))
        try:
            workflow = self._workflow(doc, path)
            if workflow is not None and self.schema_check:
                self._schema_check(doc, path)
        finally:
            self._stack.pop()
            self._texts.pop()
        self._cache[real] = workflow
        if key is not None and self.chains is not None and workflow is not None and len(self.findings.items) == found:
            subs = sorted((p, d) for p, d in self._digests.items() if p != real)
            self.chains.put(key, (subs, workflow))
        return workflow

    def _unreadable(self, real: str, path: str, err: InputFileError) -> None:
        """Report a file that cannot be read as YAML, and remember it as not a workflow."""
        self.findings.error(err.pos or SourcePos(path), err.message, hint=err.hint)
        self._cache[real] = None
        self._unsafe.add(real)

    def _kept(self, key: str) -> Workflow | None:
        """The chain kept under ``key``, if the sub-workflow files it read are unchanged."""
        assert self.chains is not None
        entry = self.chains.get(key)
        try:
            subs, workflow = entry
            if not isinstance(workflow, Workflow):
                return None
            for sub, digest in subs:
                if _digest(read_text(sub)) != digest:
                    return None
        except (InputFileError, TypeError, ValueError):
            return None
        return workflow

    def _workflow(self, doc: Any, path: str) -> Workflow | None:
        findings = self.findings
        if doc is None:
            findings.error(SourcePos(path, 1, 1), "the file is empty; expected a CWL Workflow")
            return None
        if not isinstance(doc, dict):
            findings.error(
                SourcePos(path, 1, 1),
                f"the top level is a {'list' if isinstance(doc, list) else 'plain value'};"
                " expected a mapping with 'class: Workflow'",
            )
            return None
        if "$graph" in doc:
            findings.error(
                key_pos(doc, "$graph", path),
                "packed ($graph) documents are not supported by pchain; give the Workflow file",
            )
            return None
        cls = doc.get("class")
        if cls != "Workflow":
            where = value_pos(doc, "class", path) if "class" in doc else node_pos(doc, path)
            findings.error(
                where,
                f"class is {cls!r}; a pchain chain must be 'class: Workflow'",
                hint="steps run builtin tools with run: prun (or junction, reana, phpo, gitlab)",
            )
            return None
        version = doc.get("cwlVersion")
        if version not in CWL_VERSIONS:
            where = value_pos(doc, "cwlVersion", path) if "cwlVersion" in doc else node_pos(doc, path)
            findings.error(where, f"cwlVersion {version!r} is not one of {', '.join(CWL_VERSIONS)}")
            version = "v1.2"
        workflow = Workflow(path, str(version), {}, {}, [], node_pos(doc, path))
        workflow.requirements = self._requirement_names(doc.get("requirements"))
        for name, value, pos in _as_entries(doc.get("inputs"), path, "inputs", findings):
            if isinstance(value, dict):
                workflow.inputs[name] = WorkflowInput(
                    name, value.get("type"), value.get("default"), "default" in value, pos
                )
            else:
                workflow.inputs[name] = WorkflowInput(name, value, None, False, pos)
        for name, value, pos in _as_entries(doc.get("outputs"), path, "outputs", findings):
            sources: list[str] = []
            if isinstance(value, dict) and "outputSource" in value:
                found = _sources(value["outputSource"])
                if found is None:
                    findings.error(pos, f"output '{name}': bad outputSource")
                else:
                    sources = found[0]
            workflow.outputs[name] = WorkflowOutput(name, sources, pos)
        steps = doc.get("steps")
        seen_steps: set[str] = set()
        if steps is None:
            findings.error(node_pos(doc, path), "the workflow has no 'steps'")
        for name, value, pos in _as_entries(steps, path, "steps", findings):
            if not isinstance(value, dict):
                findings.error(pos, "a step must be a mapping with run, in and out", step=name)
                continue
            step = self._step(name, value, pos, path)
            if name in seen_steps:
                findings.error(pos, "duplicate step name", step=name)
            seen_steps.add(name)
            workflow.steps.append(step)
        return workflow

    @staticmethod
    def _requirement_names(section: Any) -> set[str]:
        if isinstance(section, dict):
            return {str(k) for k in section}
        if isinstance(section, list):
            return {str(r.get("class")) for r in section if isinstance(r, dict)}
        return set()

    def _step(self, name: str, doc: dict[str, Any], pos: SourcePos, path: str) -> Step:
        findings = self.findings
        run = doc.get("run")
        run_pos = value_pos(doc, "run", path) if "run" in doc else pos
        step = Step(name, str(run) if isinstance(run, str) else "", "unknown", {}, [], pos, run_pos)
        for key in doc:
            if key not in STEP_KEYS:
                close = difflib.get_close_matches(str(key), sorted(STEP_KEYS), n=1)
                findings.error(
                    key_pos(doc, key, path),
                    f"unknown step field '{key}'",
                    step=name,
                    hint=f"did you mean '{close[0]}'?" if close else None,
                )
        if run is None:
            findings.error(pos, "the step has no 'run'", step=name)
        elif not isinstance(run, str):
            findings.error(
                run_pos,
                "run must name a builtin type (prun, junction, reana, phpo, gitlab) or a .cwl file;"
                " inline processes are not supported by pchain",
                step=name,
            )
        else:
            self._resolve_run(step, path)
        in_section = doc.get("in")
        for in_name, value, in_pos in _as_entries(in_section, path, "in", findings):
            at = value_pos(in_section, in_name, path) if isinstance(in_section, dict) else in_pos
            item = _step_input(in_name, value, in_pos, path, findings, name, at)
            if item.has_default and item.value_pos is not None:
                item.marks = _marks(self._texts[-1], item.default, item.value_pos)
            step.inputs[in_name] = item
        outs = _as_entries(doc.get("out"), path, "out", findings)
        step.outputs = [out_name for out_name, _, _ in outs] or ["outDS"]
        if "scatter" in doc:
            step.scatter_pos = value_pos(doc, "scatter", path)
            found = _sources(doc["scatter"])
            if found is None:
                findings.error(step.scatter_pos, "scatter must name step inputs", step=name)
            else:
                step.scatter = found[0]
                step.scatter_is_name = isinstance(doc["scatter"], str)
        method = doc.get("scatterMethod")
        if method is not None:
            if method not in SCATTER_METHODS:
                findings.error(
                    value_pos(doc, "scatterMethod", path),
                    f"unknown scatterMethod '{method}'",
                    step=name,
                    hint=f"use one of {', '.join(SCATTER_METHODS)}",
                )
            else:
                step.scatter_method = str(method)
        if "when" in doc:
            step.when_pos = value_pos(doc, "when", path)
            if not isinstance(doc["when"], str):
                findings.error(step.when_pos, "when must be a string like $(self.x)", step=name)
            else:
                step.when = doc["when"]
        step.loop = _has_loop_hint(doc.get("hints"))
        return step

    def _resolve_run(self, step: Step, path: str) -> None:
        builtin = builtin_type(step.run)
        if builtin is not None:
            step.type = builtin
            return
        if step.run.endswith(".cwl"):
            target = step.run[7:] if step.run.startswith("file://") else step.run
            sub_path = os.path.normpath(os.path.join(os.path.dirname(path), target))
            if os.path.realpath(sub_path) in self._stack:
                self.findings.error(
                    step.run_pos, f"sub-workflow '{step.run}' includes itself (a cycle)", step=step.name
                )
                return
            if not os.path.isfile(sub_path):
                self.findings.error(
                    step.run_pos, f"sub-workflow file '{step.run}' does not exist", step=step.name
                )
                return
            step.type = "workflow"
            step.body = self.load(sub_path)
            if os.path.realpath(sub_path) in self._unsafe:
                self._unsafe.add(self._stack[-1])
            return
        close = difflib.get_close_matches(step.run, BUILTIN_TYPES, n=1)
        self.findings.error(
            step.run_pos,
            f"unknown run type '{step.run}'",
            step=step.name,
            hint=(f"did you mean '{close[0]}'? " if close else "")
            + "run: takes prun, junction, reana, phpo, gitlab or a sub-workflow .cwl file",
        )

    def _schema_check(self, doc: dict[str, Any], path: str) -> None:
        """Check the document against the CWL schema with cwl-utils (the loader PanDA uses).

        The schema judges each step by its structure (fields, value types, the
        ``run`` target), never by its names or string contents, so steps of the
        same shape are checked once, through the first of them; a 1000-step
        chain of a few shapes costs what a small one does.
        """
        steps = doc.get("steps")
        saved: list[tuple[dict[str, Any], Any]] = []
        subs: list[str] = []
        for entry in (steps.values() if isinstance(steps, dict) else steps or []):
            if not isinstance(entry, dict) or not isinstance(entry.get("run"), str):
                continue
            run = entry["run"]
            builtin = builtin_type(run)
            sub = os.path.join(os.path.dirname(path), run)
            # A sub-workflow that failed to load (an alias bomb, say) is not handed to cwl-utils.
            known_sub = (
                builtin is None
                and run.endswith(".cwl")
                and os.path.isfile(sub)
                and self._cache.get(os.path.realpath(sub)) is not None
                and os.path.realpath(sub) not in self._unsafe
            )
            if known_sub:
                subs.append(sub)
            else:
                # Problems with run: were reported above; point cwl-utils at a real tool.
                saved.append((entry, run))
                entry["run"] = tool_path(builtin or "prun").as_uri()
        checked = doc
        if isinstance(steps, dict) and len(steps) > 1:
            checked = CommentedMap(doc)
            source_lc: Any = getattr(doc, "lc", None)
            if source_lc is not None:
                checked.lc.line, checked.lc.col = source_lc.line, source_lc.col
                for key in doc:
                    if key in source_lc.data:
                        checked.lc.add_kv_line_col(key, source_lc.data[key])
            checked["steps"] = _one_step_per_shape(steps)
        try:
            verdict = _verdict_key(checked, path, subs) if self.verdicts is not None else None
            if verdict is not None and self.verdicts is not None and self.verdicts.passed(verdict):
                return
            from cwl_utils.parser import load_document_by_yaml
            from schema_salad.exceptions import ValidationException

            errors = len(self.findings.errors)
            try:
                load_document_by_yaml(checked, Path(os.path.abspath(path)).as_uri())
            except ValidationException as err:
                self._report_schema(err, path)
            except Exception as err:  # schema-salad raises many types on odd input
                self.findings.error(SourcePos(path, 1, 1), f"not a valid CWL document: {err}")
            if verdict is not None and self.verdicts is not None and len(self.findings.errors) == errors:
                self.verdicts.remember(verdict)
        finally:
            for entry, run in saved:
                entry["run"] = run

    def _report_schema(self, err: Any, path: str) -> None:
        seen: set[tuple[int, int, str]] = set()
        for leaf in err.leaves() or [err]:
            message = " ".join(str(leaf.message).split())
            if not message or "undefined reference" in message:
                continue
            line, col = (leaf.start or (0, 0))[:2]
            if (line, col, message) in seen:
                continue
            seen.add((line, col, message))
            self.findings.error(SourcePos(path, int(line), int(col)), f"CWL: {message}")


def _move(workflow: Workflow, path: str) -> None:
    """Make a kept chain's positions name the path typed this time, not the one it was kept under.

    A kept chain says where it was first loaded from (``../wf/chain.cwl`` from another
    directory); its sub-workflows are found again from ``path`` as the loader finds them.
    Changes ``workflow`` in place: every ``Memo.get`` gives a fresh copy.
    """
    moves: dict[str, str] = {}

    def plan(wf: Workflow, new: str) -> None:
        if wf.path in moves:
            return
        moves[wf.path] = new
        for step in wf.steps:
            if step.body is not None:
                target = step.run[7:] if step.run.startswith("file://") else step.run
                plan(step.body, os.path.normpath(os.path.join(os.path.dirname(new), target)))

    plan(workflow, path)
    seen: set[int] = set()

    def moved(value: Any) -> Any:
        if isinstance(value, SourcePos):
            target = moves.get(value.path)
            return value if target is None else dataclasses.replace(value, path=target)
        # Exactly dict and list: the model's own containers, not YAML values (CommentedMap).
        if type(value) is dict:
            for key, item in value.items():
                value[key] = moved(item)
        elif type(value) is list:
            value[:] = [moved(item) for item in value]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type) and id(value) not in seen:
            seen.add(id(value))
            for spec in dataclasses.fields(value):
                setattr(value, spec.name, moved(getattr(value, spec.name)))
            if isinstance(value, Workflow):
                value.path = moves.get(value.path, value.path)
        return value

    moved(workflow)


class Memo(Protocol):
    """Where cleanly loaded chains are kept (``cwlbridge.cache.LoadedChains``)."""

    def get(self, key: str) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _chain_key(path: str, text: str) -> str:
    """The key of a chain as loaded: its text, where it lives, the loader and model code."""
    digest = hashlib.sha256(_loader_identity().encode())
    digest.update(os.path.abspath(path).encode())
    digest.update(b"\0")
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


@cache
def _loader_identity() -> str:
    """What a loaded chain depends on besides its files: the checkers and this package's model."""
    here = Path(__file__).resolve().parent
    code = sorted([*here.glob("*.py"), here.parent / "errors.py"])
    return "\n".join([_checker_identity(), *(f"{p.name}:{_stamp(str(p))}" for p in code)])


class Verdicts(Protocol):
    """Where passed schema checks are remembered (``cwlbridge.cache.SchemaVerdicts``)."""

    def passed(self, key: str) -> bool: ...

    def remember(self, key: str) -> None: ...


#: Directives that make schema-salad read other files or URLs: documents using them are
#: checked every time, since what they pull in is not part of the key.
_FETCHING = ('"$import"', '"$include"', '"$mixin"', '"$schemas"')


def _verdict_key(checked: Any, path: str, subs: list[str]) -> str | None:
    """A digest of everything the schema check of ``checked`` depends on, or None.

    That is the document as checked (every value, not only its shape), where it lives
    (relative references resolve against it), the bytes of the sub-workflow files it names,
    and the installed checkers and this loader (their files' sizes and times).
    """
    try:
        text = json.dumps(checked, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return None
    if any(directive in text for directive in _FETCHING):
        return None
    digest = hashlib.sha256(_checker_identity().encode())
    digest.update(os.path.abspath(path).encode())
    digest.update(text.encode())
    for sub in subs:
        try:
            digest.update(Path(sub).read_bytes())
        except OSError:
            return None
    return digest.hexdigest()


@cache
def _checker_identity() -> str:
    """The installed cwl-utils and schema-salad, this loader and its tool files, Python."""
    parts = [sys.version]
    for name in ("cwl_utils", "schema_salad"):
        spec = importlib.util.find_spec(name)
        parts.append(f"{name}:{spec.origin if spec else None}:{_stamp(spec.origin if spec else None)}")
    parts.append(f"{__file__}:{_stamp(__file__)}")
    parts += [f"{t}:{_stamp(str(tool_path(t)))}" for t in BUILTIN_TYPES]
    return "\n".join(parts)


def _stamp(path: str | None) -> str:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return "-"
    return f"{st.st_size}:{st.st_mtime_ns}" if st else "-"


#: Keys whose literal value the CWL schema checks (enums, references, requirement classes).
_LITERAL_KEYS = {"run", "scatterMethod", "linkMerge", "pickValue", "class", "requirements", "hints"}


def _shape(value: Any, literal: bool = False) -> Any:
    """A step's structure for the schema: field names and value types, not names or strings."""
    if isinstance(value, dict):
        items = tuple(sorted((str(k), _shape(v, literal or k in _LITERAL_KEYS)) for k, v in value.items()))
        return ("map", items)
    if isinstance(value, list):
        return ("seq", tuple(_shape(v, literal) for v in value))
    if literal:
        return ("lit", repr(value))
    return ("type", type(value).__name__)


def _shape_with_anonymous_inputs(step: Any) -> Any:
    if isinstance(step, dict) and isinstance(step.get("in"), dict):
        rest = {k: v for k, v in step.items() if k != "in"}
        return (_shape(rest), tuple(sorted(_shape(v) for v in step["in"].values())), len(step["in"]))
    return _shape(step)


def _one_step_per_shape(steps: Any) -> Any:
    """The steps mapping with only the first step of each distinct shape, positions kept."""
    kept = CommentedMap()
    seen: set[Any] = set()
    for name, step in steps.items():
        shape = _shape_with_anonymous_inputs(step)
        if shape in seen:
            continue
        seen.add(shape)
        kept[name] = step
        position = getattr(steps, "lc", None)
        if position is not None and name in position.data:
            kept.lc.add_kv_line_col(name, position.data[name])
    return kept


@cache
def tool_input_types(step_type: str) -> dict[str, Any]:
    """The declared CWL type of each ``opt_*`` input of a builtin tool."""
    doc = load_yaml(str(tool_path(step_type)))
    return {name: spec.get("type") for name, spec in doc["inputs"].items()}


def load_chain(
    path: str,
    findings: Findings,
    *,
    schema_check: bool = True,
    verdicts: Verdicts | None = None,
    chains: Memo | None = None,
) -> Workflow | None:
    """Load ``path`` and every sub-workflow it uses; problems go to ``findings``.

    ``verdicts`` remembers documents that passed the CWL schema check, so that an unchanged
    one is not checked (nor the schema loaded) again; ``chains`` keeps chains that loaded
    without any finding, so that an unchanged one is not read again.
    """
    return ChainLoader(findings, schema_check=schema_check, verdicts=verdicts, chains=chains).load(path)
