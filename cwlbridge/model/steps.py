"""The loaded chain as plain data: workflows, steps, inputs, with source positions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cwlbridge.errors import SourcePos

#: The ``run:`` names PanDA reserves, each realised by a CommandLineTool in tools/.
BUILTIN_TYPES = ("prun", "junction", "reana", "phpo", "gitlab")

#: The ``in:`` keys PanDA's ``Node.verify`` allows per step type.
ALLOWED_KEYS: dict[str, tuple[str, ...]] = {
    "prun": (
        "opt_inDS",
        "opt_inDsType",
        "opt_secondaryDSs",
        "opt_secondaryDsTypes",
        "opt_exec",
        "opt_args",
        "opt_useAthenaPackages",
        "opt_containerImage",
    ),
    "junction": ("opt_inDS", "opt_inDsType", "opt_exec", "opt_args", "opt_containerImage"),
    "reana": ("opt_inDS", "opt_inDsType", "opt_exec", "opt_args", "opt_containerImage"),
    "phpo": ("opt_trainingDS", "opt_trainingDsType", "opt_args"),
    "gitlab": (
        "opt_inDS",
        "opt_args",
        "opt_api",
        "opt_projectID",
        "opt_ref",
        "opt_triggerToken",
        "opt_accessToken",
        "opt_site",
        "opt_input_location",
    ),
}


@dataclass
class Finding:
    """One validation problem, reported as ``path:line:col: severity: step 'x': message``."""

    severity: str  # "error" | "warning"
    pos: SourcePos
    message: str
    step: str | None = None
    hint: str | None = None
    element: str | None = None  # the scatter element(s) it was found in, e.g. point[1]

    def text(self) -> str:
        where = f"step '{self.step}'" if self.step else ""
        if self.element:
            where += f" in {self.element}" if where else f"in {self.element}"
        where += ": " if where else ""
        line = f"{self.pos}: {self.severity}: {where}{self.message}"
        if self.hint:
            line += f"\n  hint: {self.hint}"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "file": self.pos.path,
            "line": self.pos.line,
            "col": self.pos.col,
            "step": self.step,
            "message": self.message,
            "hint": self.hint,
            "element": self.element,
        }


@dataclass
class Findings:
    """Every problem found in one pass, in the order found."""

    items: list[Finding] = field(default_factory=list)

    def error(
        self, pos: SourcePos, message: str, *, step: str | None = None, hint: str | None = None
    ) -> None:
        self.items.append(Finding("error", pos, message, step, hint))

    def warning(
        self, pos: SourcePos, message: str, *, step: str | None = None, hint: str | None = None
    ) -> None:
        self.items.append(Finding("warning", pos, message, step, hint))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.items if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.items if f.severity == "warning"]


@dataclass
class WorkflowInput:
    """A workflow-level input: its declared type, default and position."""

    name: str
    type: Any
    default: Any
    has_default: bool
    pos: SourcePos


@dataclass
class WorkflowOutput:
    """A workflow-level output; ``sources`` are ``step/port`` names as written."""

    name: str
    sources: list[str]
    pos: SourcePos


@dataclass
class StepInput:
    """One ``in:`` entry of a step: a source (or list of sources) or a default literal."""

    name: str
    sources: list[str]
    source_is_list: bool
    default: Any
    has_default: bool
    pos: SourcePos  # the key
    value_pos: SourcePos | None = None  # the default literal or the source
    #: Where each ``%{name}`` placeholder and option word of a string default is written.
    marks: dict[str, SourcePos] = field(default_factory=dict)

    @property
    def where(self) -> SourcePos:
        """Where the value is written (falls back to the key)."""
        return self.value_pos or self.pos


@dataclass
class Step:
    """One step; ``type`` is a builtin type, ``workflow`` or ``unknown``."""

    name: str
    run: str
    type: str
    inputs: dict[str, StepInput]
    outputs: list[str]
    pos: SourcePos
    run_pos: SourcePos
    body: Workflow | None = None
    scatter: list[str] = field(default_factory=list)
    scatter_method: str | None = None
    scatter_pos: SourcePos | None = None
    scatter_is_name: bool = False  # `scatter: x` rather than `scatter: [x]` (PanDA fails on it)
    when: str | None = None
    when_pos: SourcePos | None = None
    loop: bool = False


@dataclass
class Workflow:
    """One CWL Workflow file in the pchain dialect."""

    path: str
    cwl_version: str
    inputs: dict[str, WorkflowInput]
    outputs: dict[str, WorkflowOutput]
    steps: list[Step]
    pos: SourcePos
    requirements: set[str] = field(default_factory=set)

    def step(self, name: str) -> Step | None:
        """The first step called ``name`` (duplicates are reported by the loader)."""
        for step in self.steps:
            if step.name == name:
                return step
        return None

    def step_map(self) -> dict[str, Step]:
        """Steps by name, first one winning, for lookups in loops over all steps."""
        found: dict[str, Step] = {}
        for step in self.steps:
            found.setdefault(step.name, step)
        return found
