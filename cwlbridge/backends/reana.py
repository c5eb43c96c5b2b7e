"""The reana backend: a ``run: reana`` step whose opt_exec is ``cwlbridge reana job …``.

The submitter runs as a child process of ``cwlbridge run`` (through the local backend's job
runner), with the ``%{DSn}`` names already filled in by the plan.  A child process rather
than a thread: it can be killed with its whole process tree, it keeps going (and is adopted
again) if the engine crashes, and it is byte for byte the code a PanDA job container runs.

What this backend adds to a plain one-job task:

* the REANA workflow is named after the task attempt's idempotency key (``--name``), so a
  re-submission after a crash finds the same workflow instead of creating a second one;
* cancelling also stops the workflow on the REANA server, not only the local process;
* the tarball named by ``--outputs`` becomes the step's dataset ``{task}_{type}/`` in the
  dataset store (the local store, or Rucio through the idempotent stage-out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from cwlbridge.backends.base import Backend, TaskSpec, TaskStatus
from cwlbridge.errors import CwlbridgeError

log = logging.getLogger(__name__)


def workflow_label(spec: TaskSpec) -> str:
    """A readable, stable REANA label for one task attempt: ``<step>-a<attempt>-<hash>``."""
    digest = hashlib.sha256(spec.key.encode()).hexdigest()[:10]
    return f"{spec.task.step}-a{spec.attempt}-{digest}"


def with_name(command: str, label: str) -> str:
    """The submitter command with ``--name label`` added, unless the user named it already,
    and its ``cwlbridge`` run by this very interpreter (``python -m cwlbridge``).

    A job's PATH is the user's, as on the grid, where cwlbridge's virtualenv need not be.
    """
    words = shlex.split(command)
    if words and words[0] == "cwlbridge":
        command = f"{shlex.quote(sys.executable)} -m cwlbridge" + command.lstrip()[len("cwlbridge") :]
    if any(w == "--name" or w.startswith("--name=") for w in words):
        return command
    return command + " --name " + shlex.quote(label)


class ReanaBackend(Backend):
    """Runs ``cwlbridge reana job`` steps through ``runner`` (the local backend's job runner)."""

    name = "reana"

    def __init__(self, store: Any, *, runner: Backend, say: Callable[[str], None] = print) -> None:
        self.store = store
        self.runner = runner
        self.say = say

    def submit(self, spec: TaskSpec) -> str:
        if spec.task.exec is None:
            raise CwlbridgeError(f"task {spec.task.name} has no opt_exec to run")
        # The submitter runs natively here; its image is what PanDA would run it in.
        task = dataclasses.replace(spec.task, exec=with_name(spec.task.exec, workflow_label(spec)), container=None)
        return self.runner.submit(dataclasses.replace(spec, task=task))

    def poll(self, handles: Sequence[str]) -> dict[str, TaskStatus]:
        return self.runner.poll(handles)

    def cancel(self, handle: str) -> None:
        try:
            self._stop_remote(Path(handle))
        finally:
            self.runner.cancel(handle)

    def outputs(self, handle: str) -> list[str]:
        return self.runner.outputs(handle)

    def inputs_closed(self, handle: str) -> None:
        self.runner.inputs_closed(handle)

    def changed(self) -> Collection[str] | None:
        return self.runner.changed()

    def wait(self, timeout: float) -> None:
        self.runner.wait(timeout)

    def workflows(self, handle: str) -> list[dict[str, Any]]:
        """The submitter state files under a task attempt: REANA workflow ids and names."""
        found = []
        for path in sorted(Path(handle).glob("**/.cwlbridge/reana/*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                found.append(data)
        return found

    def _stop_remote(self, workdir: Path) -> None:
        if not os.environ.get("REANA_SERVER_URL"):
            return
        from cwlbridge.reana.client import ReanaClient

        for record in self.workflows(str(workdir)):
            wf_id = record.get("workflow_id")
            if not wf_id:
                continue
            try:
                client = ReanaClient.from_env(os.environ)
                if client.stop(str(wf_id)):
                    self.say(f"stopped REANA workflow {record.get('workflow_name') or wf_id}")
            except CwlbridgeError as err:
                log.warning("could not stop REANA workflow %s: %s", wf_id, err.message)
