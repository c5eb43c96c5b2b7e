"""Offline checks of a ``run: reana`` step whose ``opt_exec`` is the REANA submitter.

On the grid the step's command, ``cwlbridge reana job …``, runs hours after submission in a job
container.  Everything it would refuse at start-up is found here instead, by ``validate``,
``plan`` and ``run``: the command is parsed by the very argument parser ``reana job`` uses, its
``--spec`` template must be a file of the sandbox (the chain's directory) that loads, every
``--set`` path must exist in the template, every ``--var`` token must occur in it (or in its CWL
job file), and the filled-in template must pass the same ``check_spec`` as the submitter.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from cwlbridge.errors import CwlbridgeError, SourcePos
from cwlbridge.model.plan import Plan
from cwlbridge.model.steps import Findings, Step, Workflow
from cwlbridge.reana import spec as spec_mod

#: The neutral value a placeholder left in a ``--set``/``--var`` value gets here (the
#: placeholder itself is reported by the resolver, once).
_UNRESOLVED = "PLACEHOLDER"


def submitter_words(command: str | None) -> list[str] | None:
    """The arguments after ``cwlbridge reana job`` in ``command``, or None for another command."""
    if not command:
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if len(words) >= 3 and Path(words[0]).name == "cwlbridge" and words[1:3] == ["reana", "job"]:
        return words[3:]
    return None


class _Refused(Exception):
    """The ``reana job`` parser refused the arguments (its message is the reason)."""


def _job_parser() -> argparse.ArgumentParser:
    """The ``cwlbridge reana job`` parser itself, taken from the full command line."""
    from cwlbridge.cli import build_parser

    parser: argparse.ArgumentParser = build_parser()
    for name in ("reana", "job"):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]

    def refuse(message: str) -> NoReturn:
        raise _Refused(message)

    parser.error = refuse  # type: ignore[method-assign]
    return parser


def _reana_steps(workflow: Workflow) -> Iterator[Step]:
    for step in workflow.steps:
        if step.type == "reana":
            yield step
        if step.body is not None:
            yield from _reana_steps(step.body)


class _StepChecker:
    """Checks one ``reana job`` command of one step, reporting into ``findings``."""

    def __init__(self, step: Step, sandbox: Path, findings: Findings, parser: argparse.ArgumentParser):
        self.step = step
        self.sandbox = sandbox
        self.findings = findings
        self.parser = parser
        item = step.inputs.get("opt_exec")
        self.item = item
        self.where = item.where if item is not None else step.pos
        self.reported: set[str] = set()

    def error(self, message: str, *, token: str | None = None, pos: SourcePos | None = None, hint: str = "") -> None:
        if message in self.reported:
            return  # the same problem in another scatter element or loop iteration
        self.reported.add(message)
        if pos is None:
            marks = self.item.marks if self.item is not None else {}
            pos = marks.get(token, self.where) if token else self.where
        self.findings.error(pos, message, step=self.step.name, hint=hint or None)

    def check(self, words: list[str]) -> None:
        try:
            args = self.parser.parse_args(words)
        except _Refused as refused:
            text = str(refused)
            option = next((w for w in words if w.startswith("-") and w.split("=")[0] in text), None)
            self.error(
                f"`cwlbridge reana job` would refuse this opt_exec: {text}",
                token=option.split("=")[0] if option else None,
                hint="see `cwlbridge reana job --help` for its options",
            )
            return
        except SystemExit:
            self.error("opt_exec asks `cwlbridge reana job` for --help, so the step would run nothing", token="--help")
            return
        template = self.template(str(args.spec))
        if template is None:
            return
        try:
            sets = [spec_mod.parse_set_option(_neutral(a)) for a in args.set]
            variables = [spec_mod.parse_var_option(_neutral(a)) for a in args.var]
        except CwlbridgeError as exc:
            self.error(exc.message, hint=exc.hint or "")
            return
        try:
            doc = spec_mod.load_spec(template)
        except CwlbridgeError as exc:
            self.error(f"the --spec template does not load: {exc}", token="--spec")
            return
        problems = [self.missing_path(doc, path, template) for path, _ in sets]
        problems += [self.missing_token(doc, token, template) for token, _ in variables]
        if any(problems):
            return
        try:
            spec_mod.apply_options(doc, sets, variables)
        except CwlbridgeError as exc:
            self.error(f"--set/--var cannot be applied to {self.rel(template)}: {exc.message}", token="--set")
            return
        for finding in spec_mod.errors_only(
            spec_mod.check_spec(doc, template, template.parent, tokens=[t for t, _ in variables])
        ):
            self.error(f"template {self.rel(template)}: {finding.message}", pos=finding.pos)

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.sandbox).as_posix()
        except ValueError:
            return str(path)

    def template(self, name: str) -> Path | None:
        """The ``--spec`` file inside the sandbox, or None after reporting why not."""
        posix = PurePosixPath(name)
        if posix.is_absolute() or ".." in posix.parts:
            self.error(
                f"--spec {name} is outside the sandbox; on the grid the job sees only the files beside the chain",
                token="--spec",
                hint="put the template beside the chain and name it by a relative path",
            )
            return None
        path = self.sandbox / posix
        if not path.is_file():
            self.error(f"--spec {name}: no such file beside the chain (in {self.sandbox})", token="--spec")
            return None
        return path

    def missing_path(self, doc: Any, dotted: str, template: Path) -> bool:
        """True (after reporting it) when ``dotted`` does not exist in the template."""
        node = doc
        walked: list[str] = []
        for part in spec_mod.parse_dotted_path(dotted):
            here = ".".join(walked) or "the top level"
            if isinstance(part, int):
                ok = isinstance(node, list) and part < len(node)
                known = f"a list of {len(node)}" if isinstance(node, list) else "not a list"
            else:
                ok = isinstance(node, dict) and part in node
                known = ("keys: " + ", ".join(map(str, node))) if isinstance(node, dict) else "not a mapping"
            if not ok:
                self.error(
                    f"--set {dotted}: {self.rel(template)} has no {part!r} under {here} ({known})",
                    token="--set",
                    hint="a --set path must name a value the template already has (a typo would add a new key)",
                )
                return True
            node = node[part]
            walked.append(f"[{part}]" if isinstance(part, int) else str(part))
        return False

    def missing_token(self, doc: Any, token: str, template: Path) -> bool:
        """True (after reporting it) when ``token`` occurs neither in the template nor its job file."""
        if _occurs(doc, token):
            return False
        job = spec_mod.job_file_name(doc)
        if job is not None and (template.parent / job).is_file():
            try:
                if _occurs(spec_mod.load_spec(template.parent / job), token):
                    return False
            except CwlbridgeError:
                pass  # check_spec reports a job file that does not load
        self.error(
            f"--var {token}: the token occurs nowhere in {self.rel(template)}, so the value would be dropped",
            token="--var",
        )
        return True


def _occurs(doc: Any, token: str) -> bool:
    """Whether ``token`` is in any string key or value of ``doc`` (where ``--var`` replaces)."""
    return any(token in text for _, _, text, _ in spec_mod.walk_strings(doc))


def _neutral(option: str) -> str:
    return spec_mod.PCHAIN_PLACEHOLDER.sub(_UNRESOLVED, option)


def check_reana_steps(workflow: Workflow, plan: Plan, findings: Findings) -> None:
    """Check the submitter command of every ``run: reana`` task of ``plan``."""
    steps = {step.pos: step for step in _reana_steps(workflow)}
    if not steps:
        return
    sandbox = Path(workflow.path).resolve().parent
    parser: argparse.ArgumentParser | None = None
    checkers: dict[SourcePos, _StepChecker] = {}
    for task in plan.tasks:
        step = steps.get(task.pos) if task.type == "reana" and task.pos is not None else None
        words = submitter_words(task.exec) if step is not None else None
        if step is None or words is None:
            continue
        if parser is None:
            parser = _job_parser()
        checker = checkers.setdefault(step.pos, _StepChecker(step, sandbox, findings, parser))
        checker.check(words)
