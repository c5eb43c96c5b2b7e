"""Resolve a loaded chain into a Plan with PanDA's names, placeholders and start links.

Follows panda-server's ``workflow_utils`` (the production resolver): per file,
steps are topologically sorted keeping file order among steps that are ready
together; leaves take serial ids as they are resolved, a sub-workflow node
takes the id after all its children, and every scatter element takes its own
ids.  Deliberate fixes of PanDA defects are marked ``FIX`` and listed in the
README.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from cwlbridge.errors import SourcePos
from cwlbridge.model.conditions import (
    BinOp,
    Cond,
    ConditionError,
    Not,
    Ref,
    parse_condition,
    references,
    suppressed_inputs,
)
from cwlbridge.model.names import ALLOWED, DID_NAME_LENGTH, bad_name_char
from cwlbridge.model.plan import Deviation, Loop, Parent, Plan, Task
from cwlbridge.model.prunopts import PrunOptionError, parse_prun_args, unknown_option_hint
from cwlbridge.model.steps import Finding, Findings, Step, StepInput, Workflow

LOOP_SUFFIX = ".___idds___num_run___"
_LEFTOVER = re.compile(r"%\{[^{}]*\}")
_DS_PLACEHOLDER = re.compile(r"%\{(SEC)?DS(\d+|\*)\}")


@dataclass(frozen=True)
class TaskRef:
    """A value that names a parent task's output (resolved to ``{task}_{type}/`` on use)."""

    task: Task


@dataclass
class _Context:
    """Where a body is being resolved: its variables, loop state and inherited parents."""

    path: str
    inherited: list[Parent]
    in_loop: bool
    loop_vars: dict[str, Any] = field(default_factory=dict)
    workflow_vars: dict[str, Any] = field(default_factory=dict)
    in_sub: bool = False
    loop_path: str | None = None
    inputs: frozenset[str] = frozenset()


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            out.extend(_flatten(item))
        return out
    return [value]


def _text(value: Any) -> str:
    if isinstance(value, TaskRef):
        return value.task.name
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _type_name(ds_type: str) -> str:
    return ds_type.replace("*", "XYZ") + ".tgz" if "*" in ds_type else ds_type


def _task_refs(value: Any) -> list[Task]:
    return [v.task for v in _flatten(value) if isinstance(v, TaskRef)]


class _ElementFindings:
    """Findings made while resolving, each reported once, with the scatter element it is in.

    A scattered step or sub-workflow is resolved once per element, and a problem in its
    body would otherwise be reported as many times, identically.
    """

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.element = ""  # the scatter element being resolved, e.g. point[1]; "" outside
        self._seen: dict[tuple[Any, ...], tuple[Finding, str, int]] = {}

    def error(self, pos: SourcePos, message: str, *, step: str | None = None, hint: str | None = None) -> None:
        self._add("error", pos, message, step, hint)

    def warning(self, pos: SourcePos, message: str, *, step: str | None = None, hint: str | None = None) -> None:
        self._add("warning", pos, message, step, hint)

    def _add(self, severity: str, pos: SourcePos, message: str, step: str | None, hint: str | None) -> None:
        key = (severity, pos, message, step, hint)
        seen = self._seen.get(key)
        if seen is None:
            finding = Finding(severity, pos, message, step, hint, self.element or None)
            self.findings.items.append(finding)
            self._seen[key] = (finding, self.element, 0)
            return
        finding, first, more = seen
        if first and self.element:
            more += 1
            finding.element = f"{first} and {more} more element{'s' if more > 1 else ''}"
            self._seen[key] = (finding, first, more)


def _element_of(path: str) -> str:
    """The scatter element a task path is in: ``point[1]`` for ``point[1]/fit``; "" if none."""
    return path[: path.rfind("]") + 1]


class Resolver:
    """Turns a Workflow and input values into a Plan; problems go to ``findings``."""

    def __init__(self, outds: str, findings: Findings, top_values: dict[str, Any]):
        self.outds = outds
        self.findings = _ElementFindings(findings)
        self.top_values = top_values
        self.serial = 0
        self.tasks: list[Task] = []
        self.loops: list[Loop] = []
        self.deviations: dict[tuple[int, SourcePos], Deviation] = {}
        self.narrowed: set[str] = set()  # paths of sub-workflow elements whose outputs are not all leaves
        self._names_reported: set[tuple[SourcePos, str]] = set()

    def deviate(self, fix: int, pos: SourcePos, step: str, message: str, *, breaks: bool = False) -> None:
        """Note where PanDA's server builds something else (README fix ``fix``), once per place."""
        self.deviations.setdefault((fix, pos), Deviation(fix, pos, step, message, breaks))

    # -- bodies -------------------------------------------------------------------------------

    def body(self, wf: Workflow, env: dict[str, Any], ctx: _Context) -> dict[str, list[Task]]:
        """Resolve every step of ``wf``; returns each step's tail tasks by step name."""
        produced: dict[str, list[Task]] = {}
        by_name = {s.name: s for s in wf.steps}
        for step in self.order(wf):
            values = self.input_values(step, env, produced)
            self.downstream_deviations(step, by_name, ctx)
            produced[step.name] = []
            for suffix, element in self.scatter_elements(step, values):
                path = f"{ctx.path}{step.name}{suffix}"
                outer, self.findings.element = self.findings.element, _element_of(path)
                try:
                    if step.type == "workflow":
                        produced[step.name] += self.sub_workflow(step, element, path, ctx)
                    elif step.type != "unknown":
                        task = self.leaf(step, element, path, ctx)
                        if task is not None:
                            produced[step.name].append(task)
                finally:
                    self.findings.element = outer
        return produced

    def downstream_deviations(self, step: Step, siblings: dict[str, Step], ctx: _Context) -> None:
        """Fixes 3 and 4: what a step reads from a sub-workflow or a scattered step."""
        for item in step.inputs.values():
            for source in item.sources:
                parent = siblings.get(source.split("/")[0]) if "/" in source else None
                if parent is None:
                    continue
                prefix = f"{ctx.path}{parent.name}"
                if parent.type == "workflow" and any(
                    p == prefix or p.startswith(prefix + "[") for p in self.narrowed
                ):
                    self.deviate(
                        3, item.where, step.name,
                        f"'{parent.name}' declares its outputs: this step reads those; PanDA's server"
                        " would give it every task inside it",
                    )
                elif parent.scatter and parent.type != "workflow":
                    self.deviate(
                        4, item.where, step.name,
                        f"'{parent.name}' is scattered: this step reads every element's dataset; PanDA's"
                        " server would give it the first element's only",
                    )

    def order(self, wf: Workflow) -> list[Step]:
        """PanDA's topological order: file order among the steps that are ready together."""
        names = {s.name for s in wf.steps}
        parents = {s.name: {src.split("/")[0] for i in s.inputs.values() for src in i.sources
                            if "/" in src and src.split("/")[0] in names} for s in wf.steps}  # fmt: skip
        visited: set[str] = set()
        ordered: list[Step] = []
        remaining = list(wf.steps)
        while remaining:
            batch, rest = [], []
            for step in remaining:
                if parents[step.name] <= visited:
                    batch.append(step)
                    visited.add(step.name)
                else:
                    rest.append(step)
            if not batch:
                break  # a cycle: reported by the rules, its steps are left out
            ordered += batch
            remaining = rest
        return ordered

    def input_values(self, step: Step, env: dict[str, Any], produced: dict[str, list[Task]]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, item in step.inputs.items():
            if not item.sources:
                values[name] = item.default
                continue
            resolved = [self.source_value(src, env, produced) for src in item.sources]
            if item.source_is_list:
                values[name] = _flatten(resolved)  # FIX: PanDA nests lists here
                if any(isinstance(r, list) for r in resolved):
                    self.deviate(
                        12, item.where, step.name,
                        f"{name}: a source gives several datasets; cwlbridge flattens the list, PanDA's"
                        " server would nest it",
                    )
            else:
                values[name] = resolved[0]
            if values[name] is None and item.has_default:
                values[name] = item.default
        return values

    @staticmethod
    def source_value(source: str, env: dict[str, Any], produced: dict[str, list[Task]]) -> Any:
        if "/" in source:
            tasks = produced.get(source.split("/")[0], [])
            if not tasks:
                return None
            refs = [TaskRef(t) for t in tasks]
            return refs[0] if len(refs) == 1 else refs
        return env.get(source)

    def scatter_elements(self, step: Step, values: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        if not step.scatter:
            return [("", values)]
        lists: list[list[Any]] = []
        for name in step.scatter:
            value = values.get(name)
            if value is None or name not in step.inputs:
                return []  # missing values and unknown names are reported elsewhere
            if not isinstance(value, list):
                self.findings.error(
                    self._pos(step, name),
                    f"scatter input '{name}' must be a list, not {type(value).__name__}",
                    step=step.name,
                )
                return []
            lists.append(value)
        if step.scatter_is_name:
            self.deviate(
                16, step.scatter_pos or step.pos, step.name,
                "scatter is one name, not a list: PanDA's server reads it letter by letter and fails",
                breaks=True,
            )
        method = step.scatter_method or "dotproduct"
        if method != "dotproduct":
            self.deviate(
                4, step.scatter_pos or step.pos, step.name,
                f"scatterMethod {method}: cwlbridge runs every combination"
                + (" (pchain has no nested outputs)" if method == "nested_crossproduct" else "")
                + "; PanDA's server pairs the lists element by element",
            )
        if method == "dotproduct":
            if len({len(v) for v in lists}) > 1:
                detail = ", ".join(f"{k} has {len(v)}" for k, v in zip(step.scatter, lists))
                # FIX: PanDA cuts unequal lists to the shortest without a word.
                self.findings.error(
                    step.scatter_pos or step.pos,
                    f"scatter inputs have unequal lengths ({detail}); PanDA would silently cut"
                    " them to the shortest",
                    step=step.name,
                    hint="give lists of equal length, or use scatterMethod: flat_crossproduct",
                )
                return []
            combos = list(zip(*lists))
        else:
            combos = list(itertools.product(*lists))
        elements = []
        for index, combo in enumerate(combos):
            element = dict(values)
            element.update(zip(step.scatter, combo))
            elements.append((f"[{index}]", element))
        return elements

    # -- sub-workflows ------------------------------------------------------------------------

    def node_parents(self, step: Step, values: dict[str, Any], ctx: _Context) -> tuple[list[Task], list[Parent]]:
        """Sibling parent tasks, and the default start links PanDA gives a node without ``when``.

        A head (a node fed by its body's inputs) also inherits the enclosing
        sub-workflow's parents, which count towards "more than one parent".
        """
        own = [t for t in _unique(_task_refs(list(values.values()))) if t.path.startswith(ctx.path)]
        is_head = any(src in ctx.inputs for i in step.inputs.values() for src in i.sources)
        inherited = list(ctx.inherited) if is_head else []
        count = len(own) + len(inherited)
        links: list[Parent] = []
        for parent in own:
            from_sub = "/" in parent.path[len(ctx.path) :]
            if count > 1 or from_sub or step.type in ("junction", "reana", "gitlab"):
                links.append(Parent(parent.name, "processed"))
            else:
                links.append(Parent(parent.name, "started"))
        return own, links + [p for p in inherited if p not in links]

    def sub_workflow(self, step: Step, values: dict[str, Any], path: str, ctx: _Context) -> list[Task]:
        body = step.body
        if body is None:
            return []
        _, inherited = self.node_parents(step, values, ctx)
        env: dict[str, Any] = {}
        loop_vars: dict[str, Any] = {}
        workflow_vars: dict[str, Any] = {}
        for name, spec in body.inputs.items():
            value = values.get(name)
            if value is None and spec.has_default:
                value = spec.default
            env[name] = value
            if name.startswith("param_"):
                loop_vars[name[len("param_"):]] = value
            else:
                workflow_vars[name] = value
        in_loop = ctx.in_loop or step.loop
        sub_ctx = _Context(
            path=path + "/",
            inherited=inherited,
            in_loop=in_loop,
            loop_vars=loop_vars,
            workflow_vars=workflow_vars,
            in_sub=True,
            loop_path=path if step.loop else ctx.loop_path,
            inputs=frozenset(body.inputs),
        )
        first = len(self.tasks)
        produced = self.body(body, env, sub_ctx)
        self.serial += 1  # the sub-workflow node takes the id after its children
        members = self.tasks[first:]
        if step.loop:
            self.loops.append(
                Loop(
                    path=path,
                    tasks=[t.name for t in members],
                    junctions=[t.name for t in members if t.type == "junction"],
                    variables=dict(loop_vars),
                )
            )
        # FIX: only the body's declared outputs feed downstream steps, not every leaf.
        tails: list[Task] = []
        for output in body.outputs.values():
            for source in output.sources:
                tails += produced.get(source.split("/")[0], [])
                inner = body.step(source.split("/")[0])
                if inner is not None and inner.type == "workflow":
                    self.deviate(
                        3, output.pos, step.name,
                        f"the output of '{step.name}' comes from the sub-workflow '{inner.name}' inside it:"
                        " PanDA's server fails on it",
                        breaks=True,
                    )
        if not body.outputs:
            tails = members
        tails = _unique(tails)
        if len(tails) < len(members):
            self.narrowed.add(path)
        return tails

    # -- leaves -------------------------------------------------------------------------------

    def leaf(self, step: Step, values: dict[str, Any], path: str, ctx: _Context) -> Task | None:
        task_id = self.serial
        self.serial += 1
        name = f"{self.outds}_{task_id:03d}_{step.name}" + (LOOP_SUFFIX if ctx.in_loop else "")
        cond: Cond | None = None
        suppressed: set[str] = set()
        if step.when is not None:
            try:
                cond = parse_condition(step.when)
                suppressed = suppressed_inputs(cond)
                if len(references(cond)) >= 3:
                    self.deviate(
                        15, step.when_pos or step.pos, step.name,
                        "a condition of three or more terms: PanDA's server fails to convert it",
                        breaks=True,
                    )
            except ConditionError:
                cond = None  # reported by the rules
        task = Task(
            id=task_id, name=name, step=step.name, path=path, type=step.type, in_ds=[],
            secondary_ds=[], exec=None, args=None, container=None, use_secrets=False,
            output_datasets=[], parents=[], condition=None, in_loop=ctx.in_loop,
            pos=step.pos, loop=ctx.loop_path,
        )  # fmt: skip
        self.tasks.append(task)
        self.fill_parents(task, step, values, ctx, cond)
        if step.type == "phpo":
            self.fill_phpo(task, step, values)
        elif step.type == "gitlab":
            self.fill_gitlab(task, step, values, suppressed)
        else:
            self.fill_prun(task, step, values, suppressed, ctx)
        self.check_names(task, step)
        return task

    def check_names(self, task: Task, step: Step) -> None:
        """Task and container names Rucio would refuse, once per step (not per scatter element).

        The --outDS part was checked on the command line; what is left comes from the step's
        name and its output types.
        """
        bad = bad_name_char(step.name)
        if bad is not None:
            message = f"the step name has {bad}, which task and dataset names cannot have ({ALLOWED})"
            self._name_error(step, "step", step.pos, message)
        for ds_type in task.output_types:
            bad = bad_name_char(ds_type)
            if bad is not None and ds_type != "dummy":
                self._name_error(
                    step, f"type {ds_type}", self._pos(step, "opt_args"),
                    f"the output type '{ds_type}' (from --outputs) has {bad}, which dataset names cannot have"
                    f" ({ALLOWED})",
                )  # fmt: skip
        containers = [name.rstrip("/") for name in task.output_datasets] + [f"{task.name}.log"]
        longest = max(containers, key=len)
        if len(longest) > DID_NAME_LENGTH:
            self._name_error(
                step, "length", step.pos,
                f"the container name {longest} has {len(longest)} characters; Rucio allows at most"
                f" {DID_NAME_LENGTH}",
                hint="use a shorter --outds, step name or output type",
            )  # fmt: skip

    def _name_error(self, step: Step, kind: str, pos: SourcePos, message: str, hint: str | None = None) -> None:
        key = (pos, kind)
        if key not in self._names_reported:
            self._names_reported.add(key)
            # About the step itself, whichever element showed it: no element label.
            self.findings.findings.error(pos, message, step=step.name, hint=hint)

    def fill_parents(
        self, task: Task, step: Step, values: dict[str, Any], ctx: _Context, cond: Cond | None
    ) -> None:
        own, default_links = self.node_parents(step, values, ctx)
        if cond is None:
            task.parents = default_links
            return
        inherited = [p for p in default_links if p.task not in {t.name for t in own}]
        task.condition_tree = cond
        parents: list[Parent] = []
        named: list[Task] = []
        for ref in references(cond):
            for parent in self._ref_parents(step, values, ref):
                parents.append(Parent(parent.name, "failed" if ref.negated else "processed"))
                named.append(parent)
            # Every element of the input, so that self.x[k] picks the k-th one at run time.
            whole = Ref(ref.name)
            task.condition_inputs[ref.name] = [
                [t.name for t in _task_refs(v)] for v in self._ref_values(step, values, whole)
            ]
        rendered = self._render(cond, step, values)
        # FIX: PanDA does not wait for parents the condition does not name; we do.
        unnamed = [p for p in own if p not in named]
        for parent in unnamed:
            parents.append(Parent(parent.name, "processed"))
        if unnamed:
            self.deviate(
                10, step.when_pos or step.pos, step.name,
                "the condition does not name every parent; cwlbridge waits for the others to be"
                " processed, PanDA would start the step without them",
            )
            rendered = " && ".join([rendered] + [f"processed({p.name})" for p in unnamed])
            self.findings.warning(
                step.when_pos or step.pos,
                "the condition does not name parent(s) "
                + ", ".join(sorted({p.step for p in unnamed}))
                + "; PanDA would not wait for them, cwlbridge waits until they are processed",
                step=step.name,
            )
        task.condition = rendered
        task.parents = _unique(parents + inherited)

    def _ref_values(self, step: Step, values: dict[str, Any], ref: Ref) -> list[Any]:
        value = values.get(ref.name)
        item = step.inputs.get(ref.name)
        if item is not None and item.source_is_list and isinstance(value, list):
            if ref.index is not None:
                return [value[ref.index]] if 0 <= ref.index < len(value) else []
            return list(value)
        return [value]

    def _ref_parents(self, step: Step, values: dict[str, Any], ref: Ref) -> list[Task]:
        return _unique(_task_refs(self._ref_values(step, values, ref)))

    def _render(self, cond: Cond, step: Step, values: dict[str, Any]) -> str:
        if isinstance(cond, Ref):
            word = "failed" if cond.negated else "processed"
            parts = [f"{word}({t.name})" for t in self._ref_parents(step, values, cond)]
            if not parts:
                return f"{word}(self.{cond.name})"
            return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"
        if isinstance(cond, Not):
            return f"!({self._render(cond.operand, step, values)})"
        assert isinstance(cond, BinOp)
        left = self._render(cond.left, step, values)
        right = self._render(cond.right, step, values)
        if isinstance(cond.left, BinOp):
            left = f"({left})"
        if isinstance(cond.right, BinOp):
            right = f"({right})"
        return f"{left} {cond.op} {right}"

    def dataset_list(
        self, step: Step, key: str, type_key: str, values: dict[str, Any]
    ) -> list[str]:
        """``opt_inDS``-style values as dataset names, with types from ``type_key`` or the parent."""
        raw = values.get(key)
        if raw is None or raw == "" or raw == []:
            return []
        items = _flatten(raw)
        types = values.get(type_key)
        if isinstance(types, list):
            type_list: list[Any] = list(types)
            if len(type_list) != len(items):
                self.findings.error(
                    self._pos(step, type_key),
                    f"{type_key} has {len(type_list)} entries but {key} has {len(items)}",
                    step=step.name,
                )
                type_list = (type_list + [None] * len(items))[: len(items)]
        else:
            # FIX: a scalar type applies to every dataset (PanDA pairs it character by character).
            type_list = [types] * len(items)
            if types not in (None, "") and len(items) > 1:
                self.deviate(
                    5, self._pos(step, type_key), step.name,
                    f"{type_key} is one type for {len(items)} datasets: cwlbridge applies it to each;"
                    " PanDA's server would pair each dataset with one character of it",
                )
        names = []
        for item, ds_type in zip(items, type_list):
            if isinstance(item, TaskRef):
                chosen = ds_type or (item.task.output_types[0] if item.task.output_types else None)
                if chosen is None:
                    self.findings.error(
                        self._pos(step, key),
                        f"{key}: parent '{item.task.step}' declares no outputs to consume",
                        step=step.name,
                        hint=f"set {type_key} or give the parent --outputs",
                    )
                    chosen = "dummy"
                names.append(f"{item.task.name}_{_type_name(str(chosen))}/")
            elif item is not None:
                names.append(f"{item}_{_type_name(str(ds_type))}/" if ds_type else str(item))
        return names

    def fill_prun(
        self, task: Task, step: Step, values: dict[str, Any], suppressed: set[str], ctx: _Context
    ) -> None:
        exec_text = values.get("opt_exec")
        args_text = _text(values.get("opt_args")) if values.get("opt_args") is not None else ""
        if exec_text is None and step.type != "reana":
            self.findings.error(step.pos, f"a {step.type} step needs opt_exec", step=step.name)
        exec_text = "" if exec_text is None else _text(exec_text)
        secondaries = self.dataset_list(step, "opt_secondaryDSs", "opt_secondaryDsTypes", values)
        if step.type == "junction":
            args_text = _add_results_json(args_text)
            self.deviate(
                8, step.pos, step.name,
                "PanDA's server gives a junction --forceStagedSecondary, which prun (panda-client"
                " >= 1.6.17) rejects: the chain fails on the server",
                breaks=True,
            )
        self.raw_deviations(step, {"opt_exec": exec_text, "opt_args": args_text}, bool(secondaries), ctx)
        in_ds = [] if "opt_inDS" in suppressed else self.dataset_list(step, "opt_inDS", "opt_inDsType", values)
        subs: list[tuple[str, str]] = []
        for index, name in enumerate(secondaries, start=1):
            subs.append((f"%{{SECDS{index}}}", name))
        if secondaries:
            subs.append(("%{SECDS*}", ",".join(secondaries)))  # FIX: PanDA leaves it unresolved
        for index, name in enumerate(in_ds, start=1):
            subs.append((f"%{{DS{index}}}", name))
        if in_ds:
            subs.append(("%{DS*}", ",".join(in_ds)))
        subs += self.variable_subs(ctx)
        exec_text = _substitute(exec_text, subs)
        args_text = _substitute(args_text, subs)
        self.check_leftovers(step, {"opt_exec": exec_text, "opt_args": args_text}, in_ds, secondaries, ctx)
        task.in_ds = in_ds
        task.secondary_ds = secondaries
        task.exec = exec_text if values.get("opt_exec") is not None else None
        task.args = args_text
        container = values.get("opt_containerImage")
        task.container = str(container) if container else None
        try:
            options = parse_prun_args(args_text)
        except PrunOptionError as err:
            word, hint = unknown_option_hint(str(err))
            self.findings.error(
                self._pos(step, "opt_args", word), f"opt_args: prun rejects it: {err}", step=step.name, hint=hint
            )
            task.output_types = ["dummy"]
            return
        task.use_secrets = options.use_secrets
        task.output_types = [o.type for o in options.outputs] or ["dummy"]
        task.output_datasets = [f"{task.name}_{o.type}/" for o in options.outputs]

    def raw_deviations(self, step: Step, fields: dict[str, str], has_secondaries: bool, ctx: _Context) -> None:
        """Fixes 1 and 2, found in opt_exec and opt_args as written."""
        own = {*ctx.loop_vars, *ctx.workflow_vars} if ctx.in_sub else set()
        for token in dict.fromkeys(m.group(0) for m in _DS_PLACEHOLDER.finditer(fields.get("opt_args", ""))):
            self.deviate(
                14, self._pos(step, "opt_args", token), step.name,
                f"{token} in opt_args: cwlbridge fills it in; PanDA's server splits opt_args into prun's"
                " words first, and the task gets the placeholder as written",
                breaks=True,
            )
        for key, text in fields.items():
            if has_secondaries and "%{SECDS*}" in text:
                self.deviate(
                    1, self._pos(step, key, "%{SECDS*}"), step.name,
                    "%{SECDS*}: PanDA's server leaves it unresolved and then refuses the chain",
                    breaks=True,
                )
            for name, value in self.top_values.items():
                token = f"%{{{name}}}"
                if value is not None and name not in own and token in text:
                    self.deviate(
                        2, self._pos(step, key, token), step.name,
                        f"{token}: cwlbridge fills in the chain's input; PanDA's server would leave it"
                        " as written",
                    )

    def fill_phpo(self, task: Task, step: Step, values: dict[str, Any]) -> None:
        # FIX: PanDA reads opt_inDsType here and raises KeyError; the right key is used.
        if "opt_trainingDsType" in step.inputs:
            self.deviate(
                9, self._pos(step, "opt_trainingDsType"), step.name,
                "PanDA's server reads opt_inDsType for a phpo step and fails on opt_trainingDsType",
                breaks=True,
            )
        task.in_ds = self.dataset_list(step, "opt_trainingDS", "opt_trainingDsType", values)
        args = values.get("opt_args")
        task.args = _text(args) if args is not None else ""
        self.check_leftovers(step, {"opt_args": task.args}, task.in_ds, [], None)
        task.output_types = ["dummy"]

    def fill_gitlab(self, task: Task, step: Step, values: dict[str, Any], suppressed: set[str]) -> None:
        for key in ("opt_api", "opt_projectID", "opt_ref", "opt_triggerToken", "opt_accessToken", "opt_site"):
            if values.get(key) in (None, ""):
                self.findings.error(step.pos, f"a gitlab step needs {key}", step=step.name)
        project = values.get("opt_projectID")
        if project not in (None, "") and not str(project).isdigit():
            self.findings.error(
                self._pos(step, "opt_projectID"), "opt_projectID must be a number", step=step.name
            )
        task.in_ds = [] if "opt_inDS" in suppressed else self.dataset_list(step, "opt_inDS", "", values)
        args = values.get("opt_args")
        task.args = _text(args) if args is not None else ""
        task.use_secrets = True
        task.output_types = ["dummy"]

    def variable_subs(self, ctx: _Context) -> list[tuple[str, str]]:
        subs: list[tuple[str, str]] = []
        if ctx.in_sub:
            subs += [(f"%{{{k}}}", f"___idds___user_{k}___") for k in ctx.loop_vars]
            subs += [(f"%{{{k}}}", _text(v)) for k, v in ctx.workflow_vars.items()]
            subs.append(("%{i}", "___idds___num_run___"))
        # FIX: top-level inputs are usable as %{name} (PanDA leaves them as they are).
        subs += [(f"%{{{k}}}", _text(v)) for k, v in self.top_values.items() if v is not None]
        return subs

    def check_leftovers(
        self, step: Step, fields: dict[str, str], in_ds: list[str], secondaries: list[str], ctx: _Context | None
    ) -> None:
        known = [k for k, v in self.top_values.items() if v is not None]
        # An input without a value is reported once, at its declaration, not at each use.
        no_value = {f"%{{{k}}}" for k, v in self.top_values.items() if v is None}
        if ctx is not None and ctx.in_sub:
            known += [*ctx.loop_vars, *ctx.workflow_vars, "i"]
        for key, text in fields.items():
            for token in dict.fromkeys(m.group(0) for m in _LEFTOVER.finditer(text)):
                if token in no_value:
                    continue
                ds = _DS_PLACEHOLDER.fullmatch(token)
                hint = None
                if ds and ds.group(2) == "0":
                    hint = "dataset placeholders are 1-based; the first input is %{DS1}"
                elif ds and ds.group(1):
                    hint = f"this step has {len(secondaries)} secondary dataset(s) in opt_secondaryDSs"
                elif ds:
                    hint = f"this step has {len(in_ds)} input dataset(s) in opt_inDS"
                else:
                    hint = "only %{DSn}, %{SECDSn}, workflow inputs and sub-workflow inputs are replaced"
                    close = difflib.get_close_matches(token[2:-1], sorted(set(known)), n=1)
                    if close:
                        hint = f"did you mean '%{{{close[0]}}}'? ({hint})"
                where = self._pos(step, key, token)
                self.findings.error(where, f"{token} is unresolved in {key}", step=step.name, hint=hint)

    @staticmethod
    def _pos(step: Step, key: str, token: str | None = None) -> SourcePos:
        """Where input ``key`` is written, or ``token`` in it when the token is found there."""
        item: StepInput | None = step.inputs.get(key)
        if item is None:
            return step.pos
        return item.marks.get(token, item.where) if token is not None else item.where


def _unique(items: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _substitute(text: str, subs: list[tuple[str, str]]) -> str:
    for source, target in subs:
        if source in text:
            text = text.replace(source, target)
    return text


def _add_results_json(args: str) -> str:
    """Junctions always output results.json (PanDA adds it to --outputs)."""
    match = re.search(r"--outputs(?:\s+|=)(\S+)", args)
    if match is None:
        return (args + " --outputs results.json").strip()
    if "results.json" in match.group(1).split(","):
        return args
    return args[: match.start()] + f"--outputs={match.group(1)},results.json" + args[match.end() :]


def resolve(workflow: Workflow, values: dict[str, Any], outds: str, findings: Findings) -> Plan:
    """Build the plan for ``workflow`` with top-level input ``values`` under ``outds``."""
    resolver = Resolver(outds, findings, values)
    ctx = _Context(path="", inherited=[], in_loop=False, inputs=frozenset(workflow.inputs))
    resolver.body(workflow, values, ctx)
    return Plan(outds=outds, tasks=resolver.tasks, loops=resolver.loops, deviations=list(resolver.deviations.values()))
