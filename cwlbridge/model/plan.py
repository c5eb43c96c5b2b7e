"""The plan: a DAG of PanDA-named tasks, and its exports (JSON, table, DOT, Mermaid).

The JSON form is a contract documented in the README:
``{"outds": str, "tasks": [task…], "warnings": [str…]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cwlbridge.errors import SourcePos
from cwlbridge.model.conditions import Cond

LINKS = ("started", "processed", "failed")


@dataclass(frozen=True)
class Parent:
    """A parent task and the state of it that lets the child start."""

    task: str
    link: str  # one of LINKS


@dataclass
class Task:
    """One PanDA task (a leaf step, or one scatter element of it)."""

    id: int
    name: str
    step: str
    path: str
    type: str
    in_ds: list[str]
    secondary_ds: list[str]
    exec: str | None
    args: str | None
    container: str | None
    use_secrets: bool
    output_datasets: list[str]
    parents: list[Parent]
    condition: str | None
    in_loop: bool
    # Not part of the JSON contract: what the engine and the checks need.
    output_types: list[str] = field(default_factory=list)
    pos: SourcePos | None = None
    condition_tree: Cond | None = None
    condition_inputs: dict[str, list[list[str]]] = field(default_factory=dict)
    loop: str | None = None  # path of the enclosing loop element, if any

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "step": self.step,
            "path": self.path,
            "type": self.type,
            "in_ds": list(self.in_ds),
            "secondary_ds": list(self.secondary_ds),
            "exec": self.exec,
            "args": self.args,
            "container": self.container,
            "use_secrets": self.use_secrets,
            "output_datasets": list(self.output_datasets),
            "parents": [{"task": p.task, "link": p.link} for p in self.parents],
            "condition": self.condition,
            "in_loop": self.in_loop,
        }


@dataclass(frozen=True)
class Deviation:
    """A place where PanDA's server would build something other than this plan.

    ``fix`` is the number of the deliberate fix in the README; ``breaks`` is true where PanDA
    rejects the chain or makes a task that cannot work (``cwlbridge submit`` refuses those).
    Not part of the plan's JSON contract.
    """

    fix: int
    pos: SourcePos
    step: str
    message: str
    breaks: bool = False


@dataclass
class Loop:
    """A loop element: its tasks, the junction(s) deciding it, and its variables."""

    path: str
    tasks: list[str]
    junctions: list[str]
    variables: dict[str, Any]


@dataclass
class Plan:
    """Every task of a chain in PanDA's id order, plus warnings and loops."""

    outds: str
    tasks: list[Task]
    warnings: list[str] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)  # from PanDA's server: see Deviation

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "outds": self.outds,
            "tasks": [t.to_json() for t in self.tasks],
            "warnings": list(self.warnings),
        }

    def json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


def short_name(name: str, outds: str) -> str:
    """A task or dataset name without the ``{outDS}_`` prefix."""
    return name[len(outds) + 1 :] if outds and name.startswith(outds + "_") else name


def to_table_rows(plan: Plan) -> list[list[str]]:
    """One row per task: id, name, type, inputs, outputs, parents."""
    rows = []
    for task in plan.tasks:
        inputs = task.in_ds + [f"{s} (2nd)" for s in task.secondary_ds]
        parents = [f"{short_name(p.task, plan.outds)} ({p.link})" for p in task.parents]
        rows.append(
            [
                f"{task.id:03d}",
                short_name(task.name, plan.outds),
                task.type + (" ⟳" if task.in_loop else ""),
                "\n".join(inputs) or "-",
                "\n".join(short_name(d, plan.outds) for d in task.output_datasets) or "-",
                "\n".join(parents) or "-",
            ]
        )
    return rows


def _dot_id(task: Task) -> str:
    return f"t{task.id:03d}"


# Start links: "started" (the child may start once the parent has started) is dotted,
# so that dashed stays free for secondary inputs.
_EDGE_STYLE = {
    "started": 'style=dotted, label="started"',
    "processed": 'label="processed"',
    "failed": 'color=red, fontcolor=red, label="failed"',
}
_SECONDARY_STYLE = 'style=dashed, arrowhead=empty, color="#555555", label="secondary"'


@dataclass
class Group:
    """A box around tasks in a picture: one scatter element, sub-workflow or loop body."""

    path: str  # e.g. "point[1]" or "outer[0]/inner"
    label: str
    tasks: list[Task] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)


def task_groups(plan: Plan) -> Group:
    """The tasks nested by the sub-workflow part of their path, loop bodies marked.

    ``point[1]/select`` sits in the group ``point[1]`` (scatter element 1 of ``point``).
    A group whose tasks all run in a loop, below one that is not, is the loop's body.
    """
    root = Group("", "")
    for task in plan.tasks:
        group = root
        parts = task.path.split("/")[:-1]
        for depth, part in enumerate(parts):
            path = "/".join(parts[: depth + 1])
            if part not in group.groups:
                kind = "scatter element" if part.endswith("]") else "sub-workflow"
                group.groups[part] = Group(path, f"{part} ({kind})")
            group = group.groups[part]
        group.tasks.append(task)

    def every_task(group: Group) -> list[Task]:
        return group.tasks + [t for g in group.groups.values() for t in every_task(g)]

    def mark_loops(group: Group, inside: bool) -> None:
        for child in group.groups.values():
            looped = all(t.in_loop for t in every_task(child))
            if looped and not inside:
                child.label = f"{child.path} ⟳ loop body (one copy per iteration)"
            mark_loops(child, inside or looped)

    mark_loops(root, False)
    return root


def producers(plan: Plan) -> dict[str, Task]:
    """Each output dataset (without a trailing ``/``) and the task that makes it."""
    return {d.rstrip("/"): t for t in plan.tasks for d in t.output_datasets}


def edges(plan: Plan, task: Task) -> list[tuple[Task | str, str, bool]]:
    """The edges into ``task``: (parent task or outside dataset, start link or "", secondary?).

    A parent that also makes one of the task's secondary inputs gives one edge, marked both.
    """
    by_name = {t.name: t for t in plan.tasks}
    made = producers(plan)
    secondary_from: dict[str, Task | str] = {}
    for dataset in task.secondary_ds:
        source = made.get(dataset.rstrip("/"))
        secondary_from[source.name if source else dataset] = source or dataset
    found: list[tuple[Task | str, str, bool]] = []
    for parent in task.parents:
        if parent.task in by_name:
            found.append((by_name[parent.task], parent.link, secondary_from.pop(parent.task, None) is not None))
    found += [(source, "", True) for source in secondary_from.values()]
    return found


def _depth_and_width(plan: Plan) -> tuple[int, int]:
    """The longest chain of parents and the most tasks at one such depth."""
    by_name = {t.name: t for t in plan.tasks}
    depth: dict[str, int] = {}
    for task in plan.tasks:  # PanDA's id order puts parents before children
        depth[task.name] = 1 + max((depth.get(p.task, 0) for p in task.parents if p.task in by_name), default=0)
    counts: dict[int, int] = {}
    for level in depth.values():
        counts[level] = counts.get(level, 0) + 1
    return max(counts, default=0), max(counts.values(), default=0)


def to_dot(plan: Plan) -> str:
    """Graphviz DOT: a box per task, sub-workflows, scatter elements and loop bodies as clusters.

    Edges carry the start link; a secondary input is a dashed edge from the task that makes
    it (or from a note for a dataset from outside the chain).  A deep chain is drawn top to
    bottom and a wide one left to right, and the width is capped at 1000 px (10.4 in at 96 dpi),
    so the boxes stay legible in a picture of that width.
    """
    depth, width = _depth_and_width(plan)
    rankdir = "TB" if depth > max(5, width) else "LR"
    lines = [
        "digraph plan {",
        f'  graph [rankdir={rankdir}, size="10.4,1000", dpi=96, nodesep=0.25, ranksep=0.45,'
        ' fontname="Helvetica", fontsize=11];',
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]

    def node(task: Task, indent: str) -> str:
        label = f"{task.id:03d} {task.step}\\n{task.type}"
        if task.condition:
            label += "\\nwhen: " + task.condition.replace('"', "'")
        fill = ', fillcolor="#fdf1e0"' if task.type in ("reana", "junction") else ""
        return f'{indent}{_dot_id(task)} [label="{label}"{fill}];'

    def emit(group: Group, indent: str) -> None:
        for index, child in enumerate(group.groups.values()):
            cluster = "cluster_" + "".join(c if c.isalnum() else "_" for c in child.path) + f"_{index}"
            lines.append(f"{indent}subgraph {cluster} {{")
            style = "rounded,dashed" if "loop body" in child.label else "rounded"
            lines.append(f'{indent}  label="{child.label}"; style="{style}"; color="#8899aa";')
            emit(child, indent + "  ")
            lines.append(f"{indent}}}")
        lines.extend(node(task, indent) for task in group.tasks)

    emit(task_groups(plan), "  ")
    outside: dict[str, str] = {}
    for task in plan.tasks:
        for source, link, secondary in edges(plan, task):
            if secondary and link:
                style = _SECONDARY_STYLE.replace('label="secondary"', f'label="{link}, secondary"')
            else:
                style = _SECONDARY_STYLE if secondary else _EDGE_STYLE[link]
            if isinstance(source, str):  # a secondary dataset from outside the chain
                if source not in outside:
                    outside[source] = f"d{len(outside):03d}"
                    shown = short_name(source, plan.outds).replace('"', "'")
                    lines.append(f'  {outside[source]} [label="{shown}", shape=note, style=filled, fillcolor=white];')
                lines.append(f"  {outside[source]} -> {_dot_id(task)} [{style}];")
            else:
                lines.append(f"  {_dot_id(source)} -> {_dot_id(task)} [{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(plan: Plan) -> str:
    """Mermaid flowchart of the plan, with the same groups and secondary edges as ``to_dot``."""
    arrows = {"started": "-.->|started|", "processed": "-->|processed|", "failed": "-->|failed|"}
    lines = ["flowchart LR"]

    def emit(group: Group, indent: str) -> None:
        for index, child in enumerate(group.groups.values()):
            ident = "g_" + "".join(c if c.isalnum() else "_" for c in child.path) + f"_{index}"
            label = child.label.replace('"', "'")
            lines.append(f'{indent}subgraph {ident}["{label}"]')
            emit(child, indent + "  ")
            lines.append(f"{indent}end")
        for task in group.tasks:
            label = f"{task.id:03d} {task.step}<br/>{task.type}".replace('"', "'")
            lines.append(f'{indent}{_dot_id(task)}["{label}"]')

    emit(task_groups(plan), "  ")
    for task in plan.tasks:
        for source, link, secondary in edges(plan, task):
            if isinstance(source, str):
                continue  # outside datasets are listed by the table and the JSON, not drawn here
            arrow = (f"-.->|{link}, secondary|" if link else "-.->|secondary|") if secondary else arrows[link]
            lines.append(f"  {_dot_id(source)} {arrow} {_dot_id(task)}")
    return "\n".join(lines) + "\n"
