"""The emulator's JEDI half: a task's jobs made from its parameters and run for real.

``JobRunner.run(task, emulator)`` reads the task parameters as JEDI and runGen read them:

* the sandbox is the ``-a`` constant (a file in the emulator's cache);
* the exec is the URL-quoted constants between ``-p "`` and ``"``, with the ``${SEQNUMBER}``
  pseudo input (prun's ``%RNDM:n``) set to ``offset + serial``;
* outputs are the ``-o`` map, each LFN template (``$JEDITASKID``, ``${SN/P}``, the serial in
  six digits) bound to the output template's dataset;
* the primary input is the ``-i "${IN/T}"`` template: its dataset's files, sorted by name,
  without those the ``exclude`` pattern matches, cut by ``nFilesPerJob``, else ``nGBPerJob``,
  else at most ``nMaxFilesPerJob``; ``noInput`` makes ``nEvents / nEventsPerJob`` jobs;
* a secondary (``${IN2}`` …) gives job ``k`` its ``k``-th block of ``nFilesPerJob`` files,
  from the start again when they run out (``reuseSecOnDemand``), or all its files;
* a child with ``noWaitParent`` reads its input once its parent has ended (PanDA would feed
  it while the parent runs; the files it gets are the same), and fails if the parent failed.

Each job runs in its own process (``tests/servers/panda_pilot.py``), which stages in from and
out to the real Rucio test server.  A retried task runs only the jobs that failed.  Log
tarballs are not made.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from tests.servers.panda_emulator import EmulatedTask, PandaEmulator

REPO = Path(__file__).resolve().parents[2]
PARENT_FAILED = ("failed", "aborted", "broken")
PARENT_ENDED = ("done", "finished", *PARENT_FAILED)


@dataclass
class Job:
    serial: int  # 1-based
    inputs: list[dict[str, Any]]
    secondaries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class TaskPlan:
    sandbox: str | None
    exec_parts: list[tuple[str, Any]]  # ("text", str) or ("seq", offset)
    outputs: list[dict[str, str]]  # local, lfn template, dataset
    jobs: list[Job]
    error: str | None = None


def _exec_parts(params: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    parts: list[tuple[str, Any]] = []
    inside = False
    for item in params:
        value = str(item.get("value", ""))
        if not inside:
            inside = item.get("type") == "constant" and value == '-p "'
            continue
        if item.get("type") == "constant" and value == '"':
            break
        if item.get("param_type") == "pseudo_input":
            parts.append(("seq", int(item.get("offset") or 0)))
        else:
            parts.append(("text", unquote(value)))
    return parts


def _outputs(params: list[dict[str, Any]]) -> list[dict[str, str]]:
    datasets = {p["value"]: p["dataset"] for p in params if p.get("param_type") == "output"}
    for item in params:
        value = str(item.get("value", ""))
        if item.get("type") == "constant" and value.startswith('-o "'):
            mapping = ast.literal_eval(value[len('-o "') : -1])
            return [{"local": k, "lfn": v, "dataset": datasets[v]} for k, v in mapping.items()]
    return []


def _blocks(files: list[dict[str, Any]], task: dict[str, Any], per_job: Any = None) -> list[list[dict[str, Any]]]:
    n_files = per_job if per_job is not None else task.get("nFilesPerJob")
    if n_files:
        return [files[i : i + int(n_files)] for i in range(0, len(files), int(n_files))]
    if task.get("nGBPerJob") and per_job is None:
        limit, blocks, current, size = float(task["nGBPerJob"]) * 1e9, [], [], 0
        for f in files:
            if current and size + f["bytes"] > limit:
                blocks.append(current)
                current, size = [], 0
            current.append(f)
            size += f["bytes"]
        return [*blocks, current] if current else blocks
    most = int(task.get("nMaxFilesPerJob") or 200)
    return [files[i : i + most] for i in range(0, len(files), most)]


class JobRunner:
    """Runs emulated tasks' jobs: Rucio as ``rucio_config`` says, outputs onto ``rse``."""

    def __init__(
        self,
        rucio_config: Path,
        rse: str,
        work_dir: Path,
        *,
        parallel: int = 4,
        timeout: float = 300,
        fail_job: Callable[[EmulatedTask, int], bool] | None = None,
    ) -> None:
        self.rucio_config = Path(rucio_config)
        self.rse = rse
        self.work_dir = Path(work_dir)
        self.parallel = parallel
        self.timeout = timeout
        self.fail_job = fail_job
        self.hold = False  # while true, no task starts its jobs
        self.done: dict[int, set[int]] = {}  # task id -> serials that succeeded
        self.errors: dict[int, list[str]] = {}  # task id -> why jobs failed
        self.runs: list[tuple[int, int]] = []  # (task id, serial) of every job run
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- processes

    def _pilot(self, mode: str, spec: dict[str, Any]) -> Any:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUCIO_", "PANDA_", "REANA_"))}
        env |= {"RUCIO_CONFIG": str(self.rucio_config), "PYTHONPATH": str(REPO)}
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=self.work_dir, delete=False) as stream:
            json.dump(spec, stream)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "tests.servers.panda_pilot", mode, stream.name],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=self.timeout, check=False,
            )
        finally:
            os.unlink(stream.name)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            return {"ok": False, "error": f"pilot exited {done.returncode}: {done.stderr[-1500:]}"}
        return json.loads(lines[-1])

    # ---------------------------------------------------------------- JEDI's splitting

    def plan(self, task: EmulatedTask) -> TaskPlan:
        params = task.params
        job_params = list(params.get("jobParameters") or [])
        constants = [str(p.get("value")) for p in job_params if p.get("type") == "constant"]
        sandbox = next((value[3:] for value in constants if value.startswith("-a ")), None)
        plan = TaskPlan(sandbox, _exec_parts(job_params), _outputs(job_params), [])
        inputs = [p for p in job_params if p.get("param_type") == "input"]
        primary = [p for p in inputs if str(p.get("value", "")).startswith("-i ")]
        secondary = [p for p in inputs if p not in primary]
        wanted = [d for p in inputs for d in str(p["dataset"]).split(",")]
        listed = self._pilot("list", {"datasets": wanted}) if wanted else {}
        if "ok" in listed:
            plan.error = listed["error"]
            return plan
        missing = [d for d in wanted if listed.get(d) is None]
        if missing:
            plan.error = f"input dataset(s) not found in Rucio: {missing}"
            return plan

        def files_of(template: dict[str, Any]) -> list[dict[str, Any]]:
            found = [f for d in str(template["dataset"]).split(",") for f in listed[d]]
            exclude = template.get("exclude")
            return [f for f in found if not (exclude and re.search(exclude, f["name"]))]

        if primary:
            blocks = _blocks(files_of(primary[0]), params)
        elif params.get("noInput"):
            per_job = int(params.get("nEventsPerJob") or 1)
            blocks = [[] for _ in range(max(1, -(-int(params.get("nEvents") or 1) // per_job)))]
        else:
            blocks = [[]]
        plan.jobs = [Job(i + 1, block) for i, block in enumerate(blocks)]
        for template in secondary:
            key = str(template["value"]).strip("${}")
            sec_files = files_of(template)
            sec_blocks = _blocks(sec_files, params, template.get("nFilesPerJob") or max(1, len(sec_files)))
            for job in plan.jobs:
                job.secondaries[key] = sec_blocks[(job.serial - 1) % len(sec_blocks)] if sec_blocks else []
        return plan

    # ---------------------------------------------------------------- running

    def run(self, task: EmulatedTask, emulator: PandaEmulator) -> tuple[str, int, int, int]:
        """Run the task's jobs (those not done before); ``(final status, files, done, failed)``."""
        while self.hold and not emulator.stopping():  # a test holds the jobs back (to kill running tasks)
            time.sleep(0.02)
        if task.params.get("noWaitParent") and task.parent_id is not None:
            while True:
                with emulator.lock:
                    parent = emulator.tasks.get(task.parent_id)
                    status = parent.status if parent else "done"
                if status in PARENT_ENDED:
                    break
                if emulator.stopping():
                    return "failed", 0, 0, 0
                time.sleep(emulator.tick_s)
            if status in PARENT_FAILED:
                self._note(task, f"parent task {task.parent_id} {status}")
                return "failed", 0, 0, 0
        plan = self.plan(task)
        if plan.error:
            self._note(task, plan.error)
            return "failed", 0, 0, 0
        done = self.done.setdefault(task.task_id, set())
        todo = [job for job in plan.jobs if job.serial not in done]

        def one(job: Job) -> bool:
            with emulator.lock:
                if task.status != "running":
                    return False
            return self._run_job(task, plan, job, emulator)

        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            results = list(pool.map(one, todo))
        for job, ok in zip(todo, results, strict=True):
            if ok:
                done.add(job.serial)
        n_files = sum(max(1, len(job.inputs)) for job in plan.jobs)
        finished = sum(max(1, len(job.inputs)) for job in plan.jobs if job.serial in done)
        failed = n_files - finished
        final = "done" if not failed else ("finished" if finished else "failed")
        return final, n_files, finished, failed

    def _note(self, task: EmulatedTask, why: str) -> None:
        with self._lock:
            self.errors.setdefault(task.task_id, []).append(why)

    def _run_job(self, task: EmulatedTask, plan: TaskPlan, job: Job, emulator: PandaEmulator) -> bool:
        with self._lock:
            self.runs.append((task.task_id, job.serial))
        if self.fail_job is not None and self.fail_job(task, job.serial):
            self._note(task, f"job {job.serial}: failed on purpose (fault injection)")
            return False
        command = "".join(
            str(value) if kind == "text" else str(int(value) + job.serial) for kind, value in plan.exec_parts
        )
        for key, files in job.secondaries.items():
            command = command.replace(f"%{key}", ",".join(f["name"] for f in files))
        attempt = len([r for r in self.runs if r == (task.task_id, job.serial)])
        # A job run again writes new file names (JEDI gives a retried file a new serial).
        serial = f"{job.serial + len(plan.jobs) * (attempt - 1):06d}"
        outputs = [
            {**o, "lfn": o["lfn"].replace("$JEDITASKID", str(task.task_id)).replace("${SN/P}", serial)}
            for o in plan.outputs
        ]
        with emulator.lock:
            secrets = dict(emulator.secrets.get(task.user, {})) if task.params.get("useSecrets") else None
        spec = {
            "workdir": str(self.work_dir / str(task.task_id) / f"{serial}.{attempt}"),
            "sandbox": str(emulator.cache_dir / plan.sandbox) if plan.sandbox and plan.sandbox != "None" else None,
            "inputs": job.inputs + [f for files in job.secondaries.values() for f in files],
            "in_names": [f["name"] for f in job.inputs],
            "exec": command,
            "outputs": outputs,
            "secrets": secrets,
            "rse": self.rse,
            "path": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
            "panda_id": emulator.new_panda_id(task),
            "task_id": task.task_id,
            "timeout": self.timeout,
        }
        result = self._pilot("job", spec)
        if not result.get("ok"):
            self._note(task, f"job {job.serial}: {result.get('error')} {result.get('log', '')}".strip())
            return False
        return True
