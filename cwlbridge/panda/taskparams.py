"""The task-parameter map of one planned task, made by prun's own code.

prun's rules (splitting, outputs and their LFN templates, ``%RNDM``, secondaries, containers,
the log dataset, ``--useSecrets``…) live in panda-client's ``PrunScript``; they are not derived
again here.  ``PrunScript.main(get_taskparams=True, dry_mode=True)`` returns the map prun would
submit for a command line, which is what pchain and PanDA's converter run as well.  The command
line is the one PanDA's converter builds for a step (``pchain.md`` §7), in its order: the step's
``opt_args``; ``--inDS <resolved> --notExpandInDS --notExpandSecDSs`` when it has inputs (not for
reana steps), and ``--forceStaged`` for a junction (its script reads staged files; PanDA's
``--forceStagedSecondary`` beside it is gone from prun, README fix 8); ``--exec``, ``--outDS
<task name>``; ``--containerImage``, or ``--noBuild`` for prun's parse only (pchain's tasks never
have a build step: they run the uploaded sandbox).  Then what pchain and PanDA add:

- ``taskName`` without prun's trailing ``/`` and ``cliParams`` (the command line, as the
  monitor shows it);
- ``-a <sandbox>`` and ``sourceURL`` of the uploaded sandbox (dry mode leaves ``-a None``);
- ``architecture`` ``…@<base platform>`` for a task without a container (pchain's
  ``$ALRB_USER_PLATFORM``, default centos7: the worker runs the job in that OS);
- ``parentTaskName`` + ``noWaitParent`` for a task with exactly one parent;
- ``noEmail`` for a task another task waits for (``emailed_paths``);
- ``runOnInstant`` for junction and reana tasks.

tests/test_oracle.py compares these maps with those PanDA's own converter makes.

prun reads its environment when panda-client is first imported and when it runs; both happen
inside ``_prun_environment``, which sets what prun needs to work offline (no DNS, no proxy
check, the user's nickname) and restores the caller's environment afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from cwlbridge.errors import CwlbridgeError
from cwlbridge.model.plan import Task

#: pchain's base platform when ``$ALRB_USER_PLATFORM`` is not set.
DEFAULT_BASE_PLATFORM = "centos7"
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


def panda_command_line(task: Task) -> list[str]:
    """The prun arguments PanDA's converter gives ``task``, in its order (its ``cliParams``)."""
    words = shlex.split(task.args or "")
    if task.in_ds and task.type != "reana":
        words += ["--inDS", ",".join(task.in_ds), "--notExpandInDS", "--notExpandSecDSs"]
        if task.type == "junction":
            words.append("--forceStaged")  # PanDA stages a junction's inputs to the worker
    words += ["--exec", task.exec or "", "--outDS", task.name]
    if task.container:
        words += ["--containerImage", task.container]
    return words


def prun_command_line(task: Task) -> list[str]:
    """The arguments prun makes ``task``'s map from: PanDA's, and ``--noBuild`` without a
    container (PanDA's converter gets the same effect from a dummy container image)."""
    words = panda_command_line(task)
    if not task.container and "--noBuild" not in words:
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


def emailed_paths(tasks: Iterable[Task]) -> set[str]:
    """Paths of the tasks PanDA e-mails the user about when they end: those no task waits for.

    PanDA's converter gives ``noEmail`` to every task that is another's parent, and a step
    downstream of a sub-workflow or scatter has every task inside it for parents; so a scatter
    of 1000 elements feeding a merge sends one mail, not 1000.  (cwlbridge passes such a step
    only the body's declared outputs, README fix 3; the mails stay as on PanDA.)
    """
    tasks = list(tasks)
    by_name = {t.name: t for t in tasks}
    waited: set[str] = set()  # paths whose task, or every task under them, is waited for
    for task in tasks:
        mine = task.path.split("/")
        for parent in task.parents:
            if parent.task not in by_name:
                continue
            theirs = by_name[parent.task].path.split("/")
            shared = 0
            while shared < min(len(mine), len(theirs)) - 1 and mine[shared] == theirs[shared]:
                shared += 1
            waited.add("/".join(theirs[: shared + 1]))  # the parent, or the sub-workflow holding it

    def is_waited_for(path: str) -> bool:
        parts = path.split("/")
        return any("/".join(parts[:end]) in waited for end in range(1, len(parts) + 1))

    return {t.path for t in tasks if not is_waited_for(t.path)}


def base_platform(environ: Mapping[str, str]) -> str:
    """The platform PanDA runs container-less tasks on: pchain sends ``$ALRB_USER_PLATFORM``."""
    return environ.get("ALRB_USER_PLATFORM", DEFAULT_BASE_PLATFORM)


def attach_sandbox(params: dict[str, Any], sandbox: str, source_url: str) -> None:
    """Point a dry-run map at the uploaded sandbox: ``-a <sandbox>`` for ``-a None``, and ``sourceURL``."""
    params["sourceURL"] = source_url
    for item in params.get("jobParameters") or []:
        if isinstance(item, dict) and item.get("type") == "constant" and item.get("value") == "-a None":
            item["value"] = f"-a {sandbox}"


def task_parameters(
    task: Task,
    emailed: Collection[str],
    *,
    nickname: str,
    sandbox: str,
    source_url: str,
    platform: str = DEFAULT_BASE_PLATFORM,
) -> dict[str, Any]:
    """The map to submit for ``task``: prun's, plus what pchain and PanDA add.

    ``emailed``: the paths ``emailed_paths`` gives for the run's plan; ``platform``: the base
    platform (``base_platform``) for a task without a container.
    """
    params = prun_map(prun_command_line(task), nickname=nickname)
    params["taskName"] = task.name
    params["cliParams"] = shlex.join(["prun", *panda_command_line(task)])
    attach_sandbox(params, sandbox, source_url)
    architecture = params.get("architecture") or ""
    if not task.container and platform and "@" not in architecture:
        params["architecture"] = f"{architecture}@{platform}"
    if len(task.parents) == 1:
        params["parentTaskName"] = task.parents[0].task
        params["noWaitParent"] = True
    if task.path not in emailed:
        params["noEmail"] = True
    if task.type in ("junction", "reana"):
        params["runOnInstant"] = True
    return params


def differing_keys(ours: Mapping[str, Any], prun: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two maps (for the comparison with prun's own dump)."""
    keys = set(ours) | set(prun)
    return {k: (ours.get(k), prun.get(k)) for k in sorted(keys) if ours.get(k) != prun.get(k)}
