"""pchain rules: the checks PanDA's server applies, and the ones it misses.

``analyse`` runs everything in one pass (loading, structural rules, input
values, then a full resolution that surfaces placeholder and prun-option
problems) and returns every finding, never raising for bad input.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cwlbridge.errors import InputFileError, SourcePos, UsageError
from cwlbridge.model.conditions import ConditionError, Not, parse_condition, references
from cwlbridge.model.load import Memo, Verdicts, load_chain, tool_input_types
from cwlbridge.model.names import ALLOWED, bad_name_char
from cwlbridge.model.plan import Plan
from cwlbridge.model.resolve import resolve
from cwlbridge.model.steps import ALLOWED_KEYS, Findings, Step, Workflow
from cwlbridge.model.yamlpos import key_pos, load_yaml, value_pos

VALIDATE_OUTDS = "user.validate.chain"
_OUTDS = re.compile(r"user\.[A-Za-z0-9_-]+\.[A-Za-z0-9._-]+")
_OFFICIAL_OUTDS = re.compile(r"group[0-9]{0,2}\.[A-Za-z0-9_-]+\.[A-Za-z0-9._-]+")


@dataclass
class Analysis:
    """What ``analyse`` found: the loaded chain, input values, the plan, and findings."""

    workflow: Workflow | None
    values: dict[str, Any]
    plan: Plan | None
    findings: Findings


def check_outds(outds: str) -> str | None:
    """Why ``outds`` is not a usable pchain --outDS, or None (``group.`` names are allowed here).

    A trailing ``/`` (prun's container habit) is taken off before, by ``normalize_outds``.
    """
    bad = bad_name_char(outds)
    if bad is not None:
        return f"--outds {outds} has {bad} ({ALLOWED})"
    if not _OUTDS.fullmatch(outds) and not _OFFICIAL_OUTDS.fullmatch(outds):
        return "--outds must look like user.NICKNAME.NAME (panda-client requires the user.<nick>. prefix)"
    if len(outds) > 120:
        return "--outds is too long: task names add _NNN_step and PanDA caps containers at 132 characters"
    return None


def normalize_outds(outds: str, *, official: bool = False) -> str:
    """The --outDS as given on a command line, checked, without prun's trailing ``/``.

    Raises UsageError naming what is wrong; ``group.<name>.`` needs ``official``, as in pchain.
    """
    name = outds[:-1] if outds.endswith("/") else outds
    problem = check_outds(name)
    if problem is None and _OFFICIAL_OUTDS.fullmatch(name) and not official:
        problem = f"--outds {outds}: a group.<name>. dataset is official; add --official (needs a production role)"
    if problem is not None:
        raise UsageError(problem)
    return name


# -- static rules on the loaded model -----------------------------------------------------------


def check_workflow(wf: Workflow, findings: Findings) -> None:
    """Every rule that needs no input values, for ``wf`` and its sub-workflows."""
    steps = wf.step_map()
    uses = {"scatter": False, "sub": False, "multi": False}
    for step in wf.steps:
        _check_keys(step, findings)
        _check_sources(wf, step, steps, findings)
        _check_literal_types(step, findings)
        _check_when(step, findings)
        _check_scatter(step, findings)
        uses["scatter"] |= bool(step.scatter)
        uses["sub"] |= step.type == "workflow"
        uses["multi"] |= any(i.source_is_list and len(i.sources) > 1 for i in step.inputs.values())
        if step.loop:
            _check_loop(step, findings)
        if step.body is not None:
            check_workflow(step.body, findings)
    for output in wf.outputs.values():
        for source in output.sources:
            step_name, _, port = source.partition("/")
            target = steps.get(step_name)
            if target is None or (port and port not in target.outputs):
                findings.error(output.pos, f"output '{output.name}' refers to unknown '{source}'")
    _check_cycles(wf, findings)
    needs = {
        "scatter": "ScatterFeatureRequirement",
        "sub": "SubworkflowFeatureRequirement",
        "multi": "MultipleInputFeatureRequirement",
    }
    for use, requirement in needs.items():
        if uses[use] and requirement not in wf.requirements:
            findings.warning(
                wf.pos,
                f"the workflow uses a feature that CWL gates behind {requirement}; add it to requirements",
            )


def _check_keys(step: Step, findings: Findings) -> None:
    allowed = ALLOWED_KEYS.get(step.type)
    if allowed is None:
        return
    for name, item in step.inputs.items():
        if name not in allowed:
            close = difflib.get_close_matches(name, allowed, n=1)
            findings.error(
                item.pos,
                f"unknown input parameter {name} for {step.type}",
                step=step.name,
                hint=f"did you mean '{close[0]}'?" if close else f"{step.type} takes {', '.join(allowed)}",
            )


def _check_sources(wf: Workflow, step: Step, steps: dict[str, Step], findings: Findings) -> None:
    for name, item in step.inputs.items():
        for source in item.sources:
            if "/" in source:
                step_name, _, port = source.partition("/")
                target = steps.get(step_name)
                if target is None:
                    close = difflib.get_close_matches(step_name, sorted(steps), n=1)
                    findings.error(
                        item.where,
                        f"input '{name}': unknown source step '{step_name}'",
                        step=step.name,
                        hint=f"did you mean '{close[0]}/{port}'?" if close else None,
                    )
                elif port not in target.outputs:
                    findings.error(
                        item.where,
                        f"input '{name}': step '{step_name}' has no output '{port}'",
                        step=step.name,
                        hint=f"its outputs are {', '.join(target.outputs)}",
                    )
                elif step_name == step.name:
                    findings.error(item.pos, f"input '{name}' feeds the step from itself", step=step.name)
            elif source not in wf.inputs:
                close = difflib.get_close_matches(source, sorted(wf.inputs), n=1)
                findings.error(
                    item.where,
                    f"input '{name}': unknown source '{source}' (not a workflow input)",
                    step=step.name,
                    hint=f"did you mean '{close[0]}'?" if close else "a step output is written step/outDS",
                )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# CWL's scalar type names and how a YAML literal is checked against each; other names pass.
_SCALAR_CHECKS: dict[str, Callable[[Any], bool]] = {
    "null": lambda value: value is None,
    "string": lambda value: isinstance(value, str),
    "int": _is_int,
    "long": _is_int,
    "float": _is_number,
    "double": _is_number,
    "boolean": lambda value: isinstance(value, bool),
    "Any": lambda value: value is not None,
}


def _type_matches(declared: Any, value: Any) -> bool:
    """Whether a literal fits a CWL type (string, int, float, boolean, null, arrays, unions)."""
    if isinstance(declared, list):
        return any(_type_matches(t, value) for t in declared)
    if isinstance(declared, dict):
        if declared.get("type") == "array":
            return isinstance(value, list) and all(_type_matches(declared.get("items"), v) for v in value)
        if declared.get("type") == "enum":
            return value in [str(s).split("/")[-1] for s in declared.get("symbols", [])]
        return True
    if not isinstance(declared, str):
        return True
    if declared.endswith("?"):
        return value is None or _type_matches(declared[:-1], value)
    if declared.endswith("[]"):
        return isinstance(value, list) and all(_type_matches(declared[:-2], v) for v in value)
    check = _SCALAR_CHECKS.get(declared)
    return True if check is None else check(value)


def _type_text(declared: Any) -> str:
    if isinstance(declared, list):
        return " or ".join(_type_text(t) for t in declared)
    if isinstance(declared, dict) and declared.get("type") == "array":
        return f"{_type_text(declared.get('items'))}[]"
    return str(declared)


def _value_kind(value: Any) -> str:
    """A user's word for a YAML value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "a string"


def _check_literal_types(step: Step, findings: Findings) -> None:
    if step.type not in ALLOWED_KEYS:
        return
    types = tool_input_types(step.type)
    for name, item in step.inputs.items():
        if not item.has_default or name not in types or item.sources:
            continue
        if not _type_matches(types[name], item.default):
            findings.error(
                item.where,
                f"{name} must be {_type_text(types[name])}, not {_value_kind(item.default)}",
                step=step.name,
            )


def _check_when(step: Step, findings: Findings) -> None:
    if step.when is None:
        return
    pos = step.when_pos or step.pos
    try:
        cond = parse_condition(step.when)
    except ConditionError as err:
        findings.error(pos, f"when: {err.message}", step=step.name, hint=err.hint)
        return
    if _has_group_negation(cond):
        findings.error(
            pos,
            "when: PanDA cannot negate a parenthesised group",
            step=step.name,
            hint="negate each term instead: !(self.a && self.b) is !self.a || !self.b",
        )
    for ref in references(cond):
        item = step.inputs.get(ref.name)
        if item is None:
            findings.error(
                pos, f"when: unresolved parameter {ref.name} in the condition string", step=step.name
            )
            continue
        fed = [s for s in item.sources if "/" in s]
        if not fed:
            findings.error(
                pos,
                f"when: input '{ref.name}' is not fed by another step, so it has no state to test",
                step=step.name,
            )
        elif ref.index is not None and (not item.source_is_list or ref.index >= len(item.sources)):
            findings.error(
                pos,
                f"when: self.{ref.name}[{ref.index}] is out of range: '{ref.name}' has"
                f" {len(item.sources) if item.source_is_list else 'a single'} source(s)",
                step=step.name,
            )
    if step.type == "workflow":
        findings.warning(pos, "a when on a sub-workflow step is ignored by PanDA", step=step.name)


def _has_group_negation(cond: Any) -> bool:
    if isinstance(cond, Not):
        return True
    return any(_has_group_negation(getattr(cond, k)) for k in ("left", "right") if hasattr(cond, k))


def _check_scatter(step: Step, findings: Findings) -> None:
    for name in step.scatter:
        if name not in step.inputs:
            findings.error(
                step.scatter_pos or step.pos,
                f"scatter names '{name}', which is not an input of this step",
                step=step.name,
            )
    if step.scatter_method == "nested_crossproduct":
        findings.warning(
            step.scatter_pos or step.pos,
            "nested_crossproduct runs the same elements as flat_crossproduct in pchain",
            step=step.name,
        )


def _check_loop(step: Step, findings: Findings) -> None:
    if step.type != "workflow":
        findings.error(step.pos, "hints: [loop] needs a sub-workflow step (run: body.cwl)", step=step.name)
        return
    body = step.body
    if body is None:
        return
    for name, spec in body.inputs.items():
        if name == "param_i":
            findings.error(
                spec.pos,
                "parameter i cannot be used since it is reserved by the system",
                step=step.name,
                hint="%{i} is the iteration number; name the variable differently",
            )
    if not any(s.type == "junction" for s in body.steps):
        findings.warning(
            step.pos,
            "the loop body has no junction step, so nothing decides to continue: it runs once",
            step=step.name,
        )


def _check_cycles(wf: Workflow, findings: Findings) -> None:
    edges = {
        s.name: {src.split("/")[0] for i in s.inputs.values() for src in i.sources if "/" in src}
        for s in wf.steps
    }
    state: dict[str, int] = {}
    reported: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for parent in sorted(edges.get(name, ())):
            if parent not in edges or parent == name:
                continue
            if state.get(parent) == 1:
                cycle = trail[trail.index(parent) :] + [name] if parent in trail else [parent, name]
                key = min(cycle)
                if key not in reported:
                    reported.add(key)
                    step = wf.step(name)
                    findings.error(
                        step.pos if step else wf.pos,
                        "the steps form a cycle: " + " -> ".join(cycle + [cycle[0]]),
                        step=name,
                        hint="a chain is a DAG; use hints: [loop] on a sub-workflow to repeat steps",
                    )
            elif state.get(parent) is None:
                visit(parent, trail + [name])
        state[name] = 2

    for step in wf.steps:
        if step.name not in state:
            visit(step.name, [])


# -- input values -------------------------------------------------------------------------------


def read_inputs(
    wf: Workflow, inputs_path: str | None, findings: Findings, *, need_values: bool = False
) -> dict[str, Any]:
    """Top-level input values: the inputs file over declared defaults, type-checked.

    Without an inputs file a required input is a warning (``validate`` checks the chain
    alone), unless ``need_values``: ``plan`` and ``run`` cannot name tasks without it.
    """
    given: dict[str, Any] = {}
    doc: Any = None
    if inputs_path is not None:
        try:
            doc = load_yaml(inputs_path)
        except InputFileError as err:
            findings.error(err.pos or SourcePos(inputs_path), err.message, hint=err.hint)
            doc = None
        else:
            if doc is None:
                doc = {}
            if not isinstance(doc, dict):
                findings.error(
                    SourcePos(inputs_path, 1, 1),
                    f"the inputs file must be a mapping of input names to values, not a {type(doc).__name__}",
                )
                doc = None
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key not in wf.inputs:
                close = difflib.get_close_matches(str(key), sorted(wf.inputs), n=1)
                findings.warning(
                    key_pos(doc, key, inputs_path or ""),
                    f"'{key}' is not an input of the workflow; it is ignored",
                    hint=f"did you mean '{close[0]}'?" if close else None,
                )
                continue
            given[str(key)] = value
    values: dict[str, Any] = {}
    for name, spec in wf.inputs.items():
        if name in given:
            value = given[name]
            if not _type_matches(spec.type, value):
                where = value_pos(doc, name, inputs_path or "")
                findings.error(
                    where,
                    f"input '{name}' must be {_type_text(spec.type)}, not {_value_kind(value)}",
                )
            values[name] = value
        elif spec.has_default:
            values[name] = spec.default
        elif _type_matches(spec.type, None):
            values[name] = None
        else:
            message = f"required input '{name}' has no value"
            hint = f"give it in the inputs file, e.g.  {name}: ..."
            if inputs_path is None and not need_values:
                findings.warning(spec.pos, message + " (no inputs file given)", hint=hint)
            elif inputs_path is None:
                findings.error(spec.pos, message + " (no inputs file given)", hint=hint)
            else:
                findings.error(spec.pos, message, hint=hint)
            values[name] = None
    return values


# -- everything ---------------------------------------------------------------------------------


def analyse(
    chain_path: str,
    inputs_path: str | None,
    outds: str | None = None,
    *,
    schema_check: bool = True,
    verdicts: Verdicts | None = None,
    chains: Memo | None = None,
    need_values: bool = False,
) -> Analysis:
    """Load, check and resolve a chain in one pass, collecting every finding.

    ``need_values``: a required input without a value is an error even when no inputs
    file is given (``plan``), not the warning ``validate`` gives.
    """
    findings = Findings()
    workflow = load_chain(chain_path, findings, schema_check=schema_check, verdicts=verdicts, chains=chains)
    if workflow is None:
        return Analysis(None, {}, None, findings)
    check_workflow(workflow, findings)
    values = read_inputs(workflow, inputs_path, findings, need_values=need_values)
    plan = resolve(workflow, values, outds or VALIDATE_OUTDS, findings)
    if any(task.type == "reana" for task in plan.tasks):
        from cwlbridge.reana.stepcheck import check_reana_steps

        check_reana_steps(workflow, plan, findings)
    plan.warnings = [f.text() for f in findings.warnings]
    return Analysis(workflow, values, plan, findings)
