"""The task-parameter map of one planned task, made by prun's own code.

prun's rules (splitting, outputs and their LFN templates, ``%RNDM``, secondaries, containers,
the log dataset, ``--useSecrets``…) live in panda-client's ``PrunScript``; they are not derived
again here.  ``PrunScript.main(get_taskparams=True, dry_mode=True)`` returns the map prun would
submit for a command line, which is what pchain and PanDA's converter run as well.  The command
line is the one PanDA's converter builds for a step (``pchain.md`` §7): the step's ``opt_args``,
``--exec``, ``--outDS <task name>``, ``--inDS <resolved> --notExpandInDS`` (``--notExpandSecDSs``
with secondaries) except for reana steps, ``--forceStaged`` for a junction with inputs (its
script reads local files; PanDA's ``--forceStagedSecondary`` beside it is gone from prun, README
fix 8), and ``--containerImage`` or ``--noBuild`` (pchain's
tasks never have a build step: they run the uploaded sandbox).  Then what pchain and PanDA add:

- ``taskName`` without prun's trailing ``/`` (as the converter names tasks);
- ``-a <sandbox>`` and ``sourceURL`` of the uploaded sandbox (dry mode leaves ``-a None``);
- ``parentTaskName`` + ``noWaitParent`` for a task with exactly one parent;
- ``noEmail`` for a task that is not a tail: a step whose outputs are not outputs of the
  workflow (or sub-workflow) it is in, as the converter decides it level by level;
- ``runOnInstant`` for junction and reana tasks.

prun reads its environment when panda-client is first imported and when it runs; both happen
inside ``_prun_environment``, which sets what prun needs to work offline (no DNS, no proxy
check, the user's nickname) and restores the caller's environment afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from cwlbridge.errors import CwlbridgeError
from cwlbridge.model.plan import Task
from cwlbridge.model.steps import Workflow

#: Environment prun needs to make a map offline (see the module docstring).
_OFFLINE = {"PANDA_BEHIND_REAL_LB": "1", "PANDA_AUTH": "x509_no_grid"}


class TaskParamsError(CwlbridgeError):
    """prun refused the command line a step makes; the message is prun's."""


@contextlib.contextmanager
def _prun_environment(nickname: str) -> Iterator[None]:
    """prun's settings for a dry run; afterwards the environment exactly as it was (prun sets
    RUCIO_ACCOUNT to "dummy" and RUCIO_APPID for itself, which later Rucio calls would use)."""
    saved = dict(os.environ)
    os.environ.update({**_OFFLINE, "PANDA_NICKNAME": nickname})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def prun_command_line(task: Task) -> list[str]:
    """The prun arguments PanDA's converter builds for ``task`` (see the module docstring)."""
    words = shlex.split(task.args or "")
    words += ["--exec", task.exec or "", "--outDS", task.name]
    if task.type != "reana" and task.in_ds:
        words += ["--inDS", ",".join(task.in_ds), "--notExpandInDS"]
        if task.type == "junction":
            words.append("--forceStaged")  # PanDA stages a junction's inputs to the worker
    if task.secondary_ds:
        words.append("--notExpandSecDSs")
    if task.container:
        words += ["--containerImage", task.container]
    elif "--noBuild" not in words:
        words.append("--noBuild")
    return words


def prun_map(words: list[str], *, nickname: str) -> dict[str, Any]:
    """The map ``PrunScript`` makes for ``words`` in its no-submit (dry) mode."""
    chatter = io.StringIO()
    with _prun_environment(nickname), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        from pandaclient import PrunScript

        try:
            made = PrunScript.main(get_taskparams=True, ext_args=list(words), dry_mode=True)
        except SystemExit:
            made = None
    if not isinstance(made, dict):
        said = [line.strip() for line in chatter.getvalue().splitlines() if "ERROR" in line or "error" in line]
        reason = said[-1] if said else chatter.getvalue().strip()[-300:] or "no message"
        raise TaskParamsError(f"prun refuses `prun {shlex.join(words)}`: {reason}")
    return made


def tail_paths(workflow: Workflow, prefix: str = "") -> set[str]:
    """Paths (``point/select``, scatter indices left out) of the steps that are tails."""
    sources = {source.split("/")[0] for output in workflow.outputs.values() for source in output.sources}
    found: set[str] = set()
    for step in workflow.steps:
        if step.name in sources:
            found.add(prefix + step.name)
        if step.body is not None:
            found |= tail_paths(step.body, f"{prefix}{step.name}/")
    return found


def is_tail(task: Task, tails: Collection[str]) -> bool:
    """True when ``task`` comes from a tail step (see ``tail_paths``)."""
    return re.sub(r"\[\d+\]", "", task.path) in tails


def attach_sandbox(params: dict[str, Any], sandbox: str, source_url: str) -> None:
    """Point a dry-run map at the uploaded sandbox: ``-a <sandbox>`` for ``-a None``, and ``sourceURL``."""
    params["sourceURL"] = source_url
    for item in params.get("jobParameters") or []:
        if isinstance(item, dict) and item.get("type") == "constant" and item.get("value") == "-a None":
            item["value"] = f"-a {sandbox}"


def task_parameters(
    task: Task,
    tails: Collection[str],
    *,
    nickname: str,
    sandbox: str,
    source_url: str,
) -> dict[str, Any]:
    """The map to submit for ``task``: prun's, plus what pchain and PanDA add."""
    params = prun_map(prun_command_line(task), nickname=nickname)
    params["taskName"] = task.name
    attach_sandbox(params, sandbox, source_url)
    if len(task.parents) == 1:
        params["parentTaskName"] = task.parents[0].task
        params["noWaitParent"] = True
    if not is_tail(task, tails):
        params["noEmail"] = True
    if task.type in ("junction", "reana"):
        params["runOnInstant"] = True
    return params


def differing_keys(ours: Mapping[str, Any], prun: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two maps (for the comparison with prun's own dump)."""
    keys = set(ours) | set(prun)
    return {k: (ours.get(k), prun.get(k)) for k in sorted(keys) if ours.get(k) != prun.get(k)}
