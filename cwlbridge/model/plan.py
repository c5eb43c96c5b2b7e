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


_EDGE_STYLE = {
    "started": 'style=dashed, label="started"',
    "processed": 'label="processed"',
    "failed": 'color=red, fontcolor=red, label="failed"',
}


def to_dot(plan: Plan) -> str:
    """Graphviz DOT: one box per task, edges labelled with the start link."""
    lines = [
        "digraph plan {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    by_name = {t.name: t for t in plan.tasks}
    for task in plan.tasks:
        label = f"{task.id:03d} {task.step}\\n{task.type}"
        if task.condition:
            label += "\\nwhen: " + task.condition.replace('"', "'")
        fill = ', fillcolor="#fdf1e0"' if task.type in ("reana", "junction") else ""
        lines.append(f'  {_dot_id(task)} [label="{label}"{fill}];')
    for task in plan.tasks:
        for parent in task.parents:
            source = by_name.get(parent.task)
            if source is not None:
                lines.append(f"  {_dot_id(source)} -> {_dot_id(task)} [{_EDGE_STYLE[parent.link]}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(plan: Plan) -> str:
    """Mermaid flowchart of the plan."""
    arrows = {"started": "-.->|started|", "processed": "-->|processed|", "failed": "-->|failed|"}
    lines = ["flowchart LR"]
    by_name = {t.name: t for t in plan.tasks}
    for task in plan.tasks:
        label = f"{task.id:03d} {task.step}<br/>{task.type}".replace('"', "'")
        lines.append(f'  {_dot_id(task)}["{label}"]')
    for task in plan.tasks:
        for parent in task.parents:
            source = by_name.get(parent.task)
            if source is not None:
                lines.append(f"  {_dot_id(source)} {arrows[parent.link]} {_dot_id(task)}")
    return "\n".join(lines) + "\n"
