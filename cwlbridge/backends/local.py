"""The local backend: runs prun-type tasks as jobs on this machine, as PanDA would run them.

A task is split into jobs the way prun and JEDI split it (``splitting``); each job attempt
gets its own directory with a copy of the chain's sandbox and its inputs staged from the
dataset store, runs ``opt_exec`` (placeholders filled in) through a shell, and on exit code
0 its ``--outputs`` files go into the task's output datasets under PanDA-style names.

Everything lives under the task attempt's ``TaskSpec.workdir``, which is also the handle::

    task.json               what to run: the task, its outputs, and the jobs cut so far
    inputs-closed           growing inputs are complete (``inputs_closed`` was called)
    cancelled               the task was cancelled
    000001.1/               job 1, attempt 1: its working directory (sandbox copy, inputs,
                            outputs), and the name of its ``jobs.JobRunner`` job, whose
                            files sit beside it:
    000001.1.jsonl          the job's log (``jobs``): its record and exit code, then a note
                            that its outputs are stored (the attempt is finished), or why
                            it failed when the exit code does not say it
    000001.1.stdout/.stderr the command's output

so a later cwlbridge process (a resumed run, or ``cwlbridge kill``) picks up where this one
stopped: it adopts running jobs, starts those not started, and never reruns an attempt
that has an exit code.  Files and directories are few on purpose: creating them is the
dearest part of starting a job on a disk-backed file system, so what the backend learns
about a job is appended to the job's log rather than written to files of its own.

"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import json
import os
import re
import shlex
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwlbridge.backends.base import Backend, JobInfo, Phase, TaskSpec, TaskStatus
from cwlbridge.backends.containers import PAYLOAD_SUFFIX, container_command, find_container_engine
from cwlbridge.backends.jobs import (
    MARK_ENV,
    JobRunner,
    JobState,
    append_note,
    job_mark,
    observe,
    stderr_path,
)
from cwlbridge.backends.sandbox import SANDBOX_MANY_FILES, Sandbox
from cwlbridge.backends.splitting import (
    InputFile,
    JobSlice,
    SplitError,
    SplitRules,
    chunk_events,
    chunk_files,
    job_command,
    no_input_jobs,
    secondary_files,
    select_files,
    split_rules,
)
from cwlbridge.data.datasets import DatasetStore, LocalStore, RucioStore
from cwlbridge.errors import CwlbridgeError
from cwlbridge.model.plan import Task
from cwlbridge.model.prunopts import OutputSpec, PrunOptionError, parse_prun_args
from cwlbridge.osutil import open_empty

CONTAINER_CHOICES: tuple[str, ...] = ("never", "auto", "docker", "apptainer")

TASK_FILE = "task.json"
CLOSED_FILE = "inputs-closed"
CANCELLED_FILE = "cancelled"
#: The layout of a task attempt's directory; 2: job files beside the job's working directory.
_FORMAT = 2
#: Step types this backend runs as jobs.
_RUNNABLE_TYPES = ("prun", "junction", "reana")
_UNSUPPORTED = {"phpo": "PanDA's HPO service", "gitlab": "PanDA's GitLab CI service"}


@dataclass(frozen=True)
class OutputFile:
    """One ``--outputs`` entry of a task: the file(s) a job leaves and where they go."""

    pattern: str  # as written: a file name, a glob, or regex|…
    dataset: str  # {task}_{type}/
    file: str  # the name in the job directory after prun's renaming (a glob becomes XYZ….tgz)

    @classmethod
    def from_spec(cls, spec: OutputSpec, task_name: str) -> OutputFile:
        name = spec.pattern
        if "*" in name and not name.startswith("regex|"):
            name = name.replace("*", "XYZ") + ".tgz"
        return cls(pattern=spec.pattern, dataset=f"{task_name}_{spec.type}/", file=name)


def _output_file(spec: OutputSpec, task: Task) -> OutputFile:
    """The OutputFile of one --outputs entry; a bad regex| pattern is refused at submit."""
    if spec.pattern.startswith("regex|"):
        try:
            re.compile(spec.pattern[len("regex|") :])
        except re.error as err:
            raise CwlbridgeError(
                f"step {task.step!r}: opt_args: --outputs {spec.pattern}: not a regular expression ({err})"
            ) from None
    return OutputFile.from_spec(spec, task.name)


def _job_inputs(job: _Job) -> tuple[Any, ...]:
    secondary = tuple(sorted((k, tuple(f.name for f in v)) for k, v in job.secondary.items()))
    return tuple((f.dataset, f.name) for f in job.inputs), secondary


def output_file_name(prefix: str, number: int, serial: int, name: str) -> str:
    """PanDA's name for a job's output file: ``user.jdoe.<number:08d>._<serial:06d>.<name>``."""
    return f"{prefix}.{number:08d}._{serial:06d}.{name}"


def lfn_prefix(task_name: str) -> str:
    """prun's output file prefix: the first two fields of the output dataset name."""
    fields = task_name.split(".")
    return ".".join(fields[:2]) if len(fields) > 2 else task_name


@dataclass
class _Job:
    index: int
    command: str
    inputs: list[InputFile]
    secondary: dict[str, list[InputFile]]
    phase: Phase = "pending"
    attempts: int = 0
    reuse_attempt: bool = False  # the last attempt directory was made but its job never started
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    not_before: float = 0.0
    bytes_out: int = 0
    produced: dict[str, list[str]] = field(default_factory=dict)
    message: str = ""

    @property
    def bytes_in(self) -> int:
        return sum(f.size for f in self.inputs) + sum(f.size for fs in self.secondary.values() for f in fs)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "command": self.command,
            "inputs": [[f.dataset, f.name, f.size] for f in self.inputs],
            "secondary": {k: [[f.dataset, f.name, f.size] for f in v] for k, v in self.secondary.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Job:
        return cls(
            index=int(data["index"]),
            command=str(data["command"]),
            inputs=[InputFile(str(d), str(n), int(s)) for d, n, s in data["inputs"]],
            secondary={
                str(k): [InputFile(str(d), str(n), int(s)) for d, n, s in v] for k, v in data["secondary"].items()
            },
        )


@dataclass
class _DatasetSplit:
    """How far the files of one input dataset have been cut into jobs."""

    seen: set[str] = field(default_factory=set)
    waiting: list[InputFile] = field(default_factory=list)  # accepted, not in a job yet
    skipped: int = 0
    accepted: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "seen": sorted(self.seen),
            "waiting": [[f.dataset, f.name, f.size] for f in self.waiting],
            "skipped": self.skipped,
            "accepted": self.accepted,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _DatasetSplit:
        return cls(
            seen=set(data["seen"]),
            waiting=[InputFile(str(d), str(n), int(s)) for d, n, s in data["waiting"]],
            skipped=int(data["skipped"]),
            accepted=int(data["accepted"]),
        )


@dataclass
class _TaskRun:
    handle: str
    workdir: Path
    name: str
    type: str
    exec: str
    args: str
    container: str | None
    in_ds: list[str]
    growing: set[str]
    outputs: list[OutputFile]
    number: int
    retries: int
    sandbox: Path
    env: dict[str, str]
    key: str
    previous: list[str] = field(default_factory=list)
    jobs: list[_Job] = field(default_factory=list)
    splits: dict[str, _DatasetSplit] = field(default_factory=dict)
    closed: bool = True
    cancelled: bool = False
    message: str = ""  # a task-level failure (e.g. its inputs could not be split)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "key": self.key,
            "previous": self.previous,
            "name": self.name,
            "type": self.type,
            "exec": self.exec,
            "args": self.args,
            "container": self.container,
            "in_ds": self.in_ds,
            "growing": sorted(self.growing),
            "outputs": [{"pattern": o.pattern, "dataset": o.dataset, "file": o.file} for o in self.outputs],
            "number": self.number,
            "retries": self.retries,
            "sandbox": str(self.sandbox),
            "env": self.env,
            "jobs": [j.to_json() for j in self.jobs],
            "splits": {k: v.to_json() for k, v in self.splits.items()},
            "message": self.message,
        }

    def save(self) -> None:
        _write_json(self.workdir / TASK_FILE, self.to_json())


class LocalBackend(Backend):
    """Runs prun, junction and plain reana tasks as jobs on this machine.

    ``jobs`` limits the jobs running at once over all tasks; ``containers`` says whether a
    task's ``opt_containerImage`` is honoured (``auto``: Apptainer, or Docker if its daemon
    answers); ``retry_delay`` is the first backoff before a failed job's next attempt (it
    doubles each time, up to ``max_retry_delay``).  ``say`` gets one-line notices.  ``shared``
    is where sandbox files the jobs share are kept (see ``sandbox``); without it each job
    gets a copy of every file.
    """

    name = "local"

    def __init__(
        self,
        store: DatasetStore,
        *,
        jobs: int | None = None,
        containers: str = "auto",
        say: Callable[[str], None] = print,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        kill_grace: float = 2.0,
        shared: Path | None = None,
    ) -> None:
        if containers not in CONTAINER_CHOICES:
            raise CwlbridgeError(f"--containers {containers!r} is not one of {', '.join(CONTAINER_CHOICES)}")
        self.store = store
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.containers = containers
        self.say = say
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.kill_grace = kill_grace
        self.shared = shared
        self._runner = JobRunner()
        self._runs: dict[str, _TaskRun] = {}
        # Handles whose status may differ from what poll last returned for them (see changed()).
        self._changed: set[str] = set()
        self._running: dict[Path, tuple[_TaskRun, _Job]] = {}
        self._queue: list[tuple[_TaskRun, _Job]] = []
        self._sandboxes: dict[Path, Sandbox] = {}
        self._said: set[str] = set()
        self._engine: tuple[str | None, str] | None = None
        self._base_env = self._job_environment()
        self._notes_due: list[tuple[Path, dict[str, Any]]] = []  # see _register_outputs

    # -- the contract -------------------------------------------------------------------------

    def submit(self, spec: TaskSpec) -> str:
        workdir = Path(os.path.abspath(spec.workdir))
        handle = str(workdir)
        if handle in self._runs or (workdir / TASK_FILE).is_file():
            found = self._load(handle)
            if found is None:
                raise CwlbridgeError(
                    f"{workdir / TASK_FILE} is unreadable or was written by another version of cwlbridge;"
                    f" cannot resume task {spec.task.name}",
                    hint="start a new run of the chain (a new --outds)",
                )
            self._pump()
            self._create_outputs(found)
            return handle
        run = self._plan(spec, workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        run.save()
        self._adopt_run(run, fresh=True)
        self._pump()
        # After the first jobs started: a job's outputs are added (which creates the dataset
        # anyway) only when it ended, and a crash before this line is mended on resume above.
        self._create_outputs(run)
        return handle

    def _create_outputs(self, run: _TaskRun) -> None:
        for output in run.outputs:
            self.store.create(output.dataset)

    def poll(self, handles: Sequence[str]) -> dict[str, TaskStatus]:
        self._pump()
        statuses: dict[str, TaskStatus] = {}
        for handle in handles:
            self._changed.discard(handle)
            run = self._load(handle)
            if run is None:
                statuses[handle] = TaskStatus("failed", message=f"no local task at {handle}")
                continue
            if run.growing and not run.closed and not run.cancelled:
                self._extend(run)
            statuses[handle] = self._status(run)
        self._launch()
        return statuses

    def cancel(self, handle: str) -> None:
        run = self._load(handle)
        if run is None:
            return
        self._changed.add(handle)
        if not run.cancelled:
            (run.workdir / CANCELLED_FILE).touch()
            run.cancelled = True
        self._queue = [(r, j) for r, j in self._queue if r is not run]
        running = [j for j in run.jobs if j.phase == "running"]
        attempts = [self._attempt_dir(run, j) for j in running]
        # Only a finished kill marks the jobs cancelled: one interrupted by a second Ctrl-C
        # leaves them running, so the next cancel (without grace) still finds them.
        self._runner.kill_all(attempts, grace=self.kill_grace)
        now = time.time()
        for attempt in attempts:
            self._running.pop(attempt, None)
        for job in run.jobs:
            if job.phase in ("pending", "running"):
                job.phase = "cancelled"
                job.ended = job.ended or now

    def outputs(self, handle: str) -> list[str]:
        run = self._load(handle)
        if run is None:
            return []
        filled = {d for job in run.jobs for d, names in job.produced.items() if names}
        finished = bool(run.jobs) and all(j.phase == "finished" for j in run.jobs) and run.closed
        return [o.dataset for o in run.outputs if finished or o.dataset in filled]

    def inputs_closed(self, handle: str) -> None:
        run = self._load(handle)
        if run is None or run.closed:
            return
        self._changed.add(handle)
        (run.workdir / CLOSED_FILE).touch()
        run.closed = True
        if not run.cancelled:
            self._extend(run)
            self._launch()

    def changed(self) -> list[str]:
        """Handles of tasks that changed since poll last reported them: the scheduler polls
        only these, so a round costs the same with 1000 tasks in flight as with one."""
        return list(self._changed)

    def wait(self, timeout: float) -> None:
        self._pump()
        # A job that ended in the pump (or in a poll or submit since the scheduler asked
        # ``changed``) is news already: waiting for the next one would stall a chain.
        if self._changed or self._launchable_now():
            return
        now = time.time()
        due = [j.not_before for _, j in self._queue if j.not_before > now]
        if due and len(self._running) < self.jobs:
            timeout = min(timeout, max(0.0, min(due) - now))
        self._write_notes()
        self._finish_ended(self._runner.wait(timeout))
        self._launch()

    def _write_notes(self) -> None:
        """Append the notes of stored outputs that wait (see _register_outputs)."""
        due, self._notes_due = self._notes_due, []
        for work, note in due:
            with contextlib.suppress(OSError):  # a job without one is only registered again
                append_note(work, note)

    def close(self) -> None:
        self._write_notes()
        self._runner.close()
        self._running.clear()
        self._queue.clear()
        self._runs.clear()

    # -- planning ---------------------------------------------------------------------------

    def _plan(self, spec: TaskSpec, workdir: Path) -> _TaskRun:
        task = spec.task
        if task.type in _UNSUPPORTED:
            raise CwlbridgeError(
                f"the local backend cannot run {task.type} step {task.step!r} ({task.name}):"
                f" it needs {_UNSUPPORTED[task.type]}",
                hint="run this chain with pchain on PanDA",
            )
        if task.type not in _RUNNABLE_TYPES:
            raise CwlbridgeError(f"the local backend cannot run step {task.step!r}: unknown type {task.type!r}")
        if not task.exec:
            raise CwlbridgeError(f"step {task.step!r} ({task.name}) has no opt_exec: nothing to run")
        try:
            options = parse_prun_args(task.args or "")
            rules = _split_rules_of(task.args or "")  # prun's own refusals, before anything is created
        except PrunOptionError as err:
            raise CwlbridgeError(f"step {task.step!r}: opt_args: prun rejects it: {err}") from None
        except SplitError as err:
            raise CwlbridgeError(f"step {task.step!r}: opt_args: {err.message}") from None
        # A reana step gets no --inDS: its opt_inDS only filled %{DSn} (pchain.md §10).
        in_ds = list(task.in_ds) if task.type != "reana" else []
        secondary = {s.dataset for s in rules.secondaries}
        if task.use_secrets:
            self._say_once(
                "secrets",
                f"{task.name} asks for PanDA secrets (--useSecrets); local jobs run with your own environment",
            )
        run = _TaskRun(
            handle=str(workdir),
            workdir=workdir,
            name=task.name,
            type=task.type,
            exec=task.exec,
            args=task.args or "",
            container=task.container or str(options.namespace.get("containerImage") or "") or None,
            in_ds=in_ds,
            growing=set(spec.growing) & (set(in_ds) | secondary),
            outputs=[_output_file(o, task) for o in options.outputs],
            number=spec.number,
            retries=max(0, spec.retries),
            sandbox=Path(os.path.abspath(spec.sandbox)),
            env=dict(spec.env),
            key=spec.key,
            previous=list(spec.previous),
        )
        run.closed = not run.growing
        run.splits = {d: _DatasetSplit() for d in in_ds}
        self._cut(run)
        return run

    def _rules(self, run: _TaskRun) -> SplitRules:
        rules = _split_rules_of(run.args)
        if rules.n_events_per_job is not None and rules.n_events_per_file is None and run.in_ds:
            self._say_once(
                "events-per-file",
                f"{run.name}: --nEventsPerJob without --nEventsPerFile: the events per file are not known"
                " here (PanDA reads them from Rucio), so each job gets one file",
            )
            rules = dataclasses.replace(rules, n_files_per_job=rules.n_files_per_job or 1, n_events_per_job=None)
        return rules

    def _cut(self, run: _TaskRun) -> int:
        """Cut whatever input is ready into new jobs; returns how many were added."""
        rules = self._rules(run)
        if not run.closed and any(s.dataset in run.growing for s in rules.secondaries):
            return 0  # a job's secondary files must all be there when it is cut
        secondary_lists = {s.stream: self._list(s.dataset) for s in rules.secondaries}
        slices: list[JobSlice] = []
        next_index = len(run.jobs)
        if run.type == "reana" or (not run.in_ds and run.type == "junction"):
            if not run.jobs:
                slices.append(JobSlice(0))
        elif not run.in_ds:
            if not run.jobs:
                slices = [JobSlice(k, skip_events=s, max_events=m) for k, (s, m) in enumerate(no_input_jobs(rules))]
        else:
            for dataset in run.in_ds:
                final = run.closed or dataset not in run.growing
                split = run.splits.setdefault(dataset, _DatasetSplit())
                self._accept(split, dataset, rules)
                if run.type == "junction":
                    continue
                if rules.by_events:
                    if not final:
                        continue
                    for chunk in chunk_events(split.waiting, rules):
                        index = next_index + len(slices)
                        slices.append(JobSlice(index, chunk.files, {}, chunk.skip_events, chunk.max_events))
                    split.waiting = []
                    continue
                chunks = chunk_files(split.waiting, rules, final=final)
                used = sum(len(c) for c in chunks)
                split.waiting = split.waiting[used:]
                slices += [JobSlice(next_index + len(slices) + i, c) for i, c in enumerate(chunks)]
            if run.type == "junction" and run.closed and not run.jobs:
                files = [f for d in run.in_ds for f in run.splits[d].waiting]
                for split in run.splits.values():
                    split.waiting = []
                slices.append(JobSlice(0, files))
        for piece in slices:
            for stream in rules.secondaries:
                piece.secondary[stream.stream] = secondary_files(stream, secondary_lists[stream.stream], piece.index)
            run.jobs.append(
                _Job(
                    index=piece.index,
                    command=job_command(
                        run.exec,
                        piece,
                        core_number=os.environ.get("ATHENA_CORE_NUMBER", "1"),
                        proc_number=os.environ.get("ATHENA_PROC_NUMBER", "1"),
                    ),
                    inputs=piece.inputs,
                    secondary=piece.secondary,
                )
            )
        return len(slices)

    def _accept(self, split: _DatasetSplit, dataset: str, rules: SplitRules) -> None:
        """Take the dataset's new files into ``split.waiting`` (filters, skip and limit applied)."""
        listing = self._list(dataset)
        new = [InputFile(dataset, f.name, f.size) for f in listing if f.name not in split.seen]
        split.seen.update(f.name for f in new)
        kept = select_files(new, _unlimited(rules))
        skip = max(0, rules.n_skip_files - split.skipped)
        split.skipped += min(skip, len(kept))
        kept = kept[skip:]
        if rules.n_files is not None:
            kept = kept[: max(0, rules.n_files - split.accepted)]
        split.accepted += len(kept)
        split.waiting += kept

    def _list(self, dataset: str) -> list[InputFile]:
        return [InputFile(dataset, f.name, f.size) for f in self.store.list(dataset)]

    def _extend(self, run: _TaskRun) -> None:
        self._changed.add(run.handle)
        try:
            added = self._cut(run)
        except CwlbridgeError as err:
            # The input is unreadable (e.g. its dataset was deleted): nothing more can start.
            run.message = f"cannot read the input of {run.name}: {err.message}"
            run.closed = True
            self._queue = [(r, j) for r, j in self._queue if r is not run]
            for job in run.jobs:
                if job.phase == "pending":
                    job.phase, job.message = "failed", run.message
            added = 0
        if added or run.message:
            run.save()
            for job in run.jobs[len(run.jobs) - added :]:
                self._queue.append((run, job))

    # -- loading and adopting -----------------------------------------------------------------

    def _load(self, handle: str) -> _TaskRun | None:
        run = self._runs.get(handle)
        if run is not None:
            return run
        workdir = Path(handle)
        try:
            data = json.loads((workdir / TASK_FILE).read_text(encoding="utf-8"))
            if data.get("format") != _FORMAT:
                return None  # another layout: adopting its jobs could run them again
            run = _TaskRun(
                handle=handle,
                workdir=workdir,
                name=str(data["name"]),
                type=str(data["type"]),
                exec=str(data["exec"]),
                args=str(data["args"]),
                container=data.get("container") or None,
                in_ds=list(data["in_ds"]),
                growing=set(data["growing"]),
                outputs=[OutputFile(**o) for o in data["outputs"]],
                number=int(data["number"]),
                retries=int(data["retries"]),
                sandbox=Path(data["sandbox"]),
                env={str(k): str(v) for k, v in data["env"].items()},
                key=str(data["key"]),
                previous=[str(h) for h in data.get("previous", [])],
                jobs=[_Job.from_json(j) for j in data["jobs"]],
                splits={k: _DatasetSplit.from_json(v) for k, v in data["splits"].items()},
                message=str(data.get("message") or ""),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        run.closed = not run.growing or (workdir / CLOSED_FILE).exists()
        run.cancelled = (workdir / CANCELLED_FILE).exists()
        self._adopt_run(run)
        return run

    def _adopt_run(self, run: _TaskRun, *, fresh: bool = False) -> None:
        """Take a task into this backend: find each job's state on disk and queue or watch it.

        ``fresh``: the task was planned just now, so nothing of it is on disk to look at.
        """
        self._runs[run.handle] = run
        self._changed.add(run.handle)
        attempts: dict[int, int] = {}
        entries: list[str] = []
        if not fresh:
            with contextlib.suppress(FileNotFoundError):
                entries = os.listdir(run.workdir)
        # A job attempt began when its directory or its log exists: 000001.2, 000001.2.jsonl.
        for entry in entries:
            serial, _, rest = entry.partition(".")
            number = rest.partition(".")[0]
            if serial.isdigit() and number.isdigit():
                index = int(serial) - 1
                attempts[index] = max(attempts.get(index, 0), int(number))
        for job in run.jobs:
            self._restore(run, job, attempts)

    def _restore(self, run: _TaskRun, job: _Job, attempts: Mapping[int, int]) -> None:
        job.attempts = attempts.get(job.index, 0)
        if job.attempts == 0:
            if run.cancelled:
                job.phase = "cancelled"
            else:
                self._queue.append((run, job))
            return
        attempt = self._attempt_dir(run, job)
        state = observe(attempt)
        job.started = state.started
        if state.state == "absent" and _failure(state.notes) is None:
            if run.cancelled:
                job.phase = "cancelled"
            else:
                job.reuse_attempt = True
                self._queue.append((run, job))
            return
        if state.state == "running" and state.record is not None:
            if run.cancelled:
                with contextlib.suppress(CwlbridgeError):
                    self._runner.kill(attempt, grace=0)
                job.phase = "cancelled"
                return
            if self._runner.adopt(attempt, state.record):
                job.phase = "running"
                self._running[attempt] = (run, job)
                return
            state = observe(attempt)
        self._attempt_ended(run, job, state)

    # -- running ------------------------------------------------------------------------------

    def _pump(self) -> None:
        self._finish_ended(self._runner.wait(0))
        self._launch()

    def _finish_ended(self, ended: Sequence[Path]) -> None:
        for attempt in ended:
            entry = self._running.pop(attempt, None)
            if entry is not None:
                self._attempt_ended(entry[0], entry[1], observe(attempt))

    def _launchable_now(self) -> bool:
        if len(self._running) >= self.jobs:
            return False
        now = time.time()
        return any(j.not_before <= now for _, j in self._queue)

    def _launch(self) -> None:
        if not self._queue or len(self._running) >= self.jobs:
            return
        now = time.time()
        waiting: list[tuple[_TaskRun, _Job]] = []
        for position, (run, job) in enumerate(self._queue):
            if len(self._running) >= self.jobs:
                waiting += self._queue[position:]
                break
            if run.cancelled or job.phase != "pending":
                continue
            if job.not_before > now:
                waiting.append((run, job))
                continue
            self._start(run, job)
        self._queue = waiting

    def _attempt_dir(self, run: _TaskRun, job: _Job) -> Path:
        return run.workdir / _job_dir_name(job.index, job.attempts)

    def _start(self, run: _TaskRun, job: _Job) -> None:
        self._changed.add(run.handle)
        if (run.workdir / CANCELLED_FILE).exists():  # cancelled by another process (cwlbridge kill)
            run.cancelled = True
            job.phase = "cancelled"
            return
        if job.attempts == 0 and not job.reuse_attempt and self._carry_over(run, job):
            return
        if not job.reuse_attempt:
            job.attempts += 1
        job.reuse_attempt = False
        work = self._attempt_dir(run, job)  # the job's working directory, and its name for the runner
        job.started, job.ended, job.exit_code = time.time(), None, None
        try:
            sandbox = self._sandbox(run.sandbox)
            with contextlib.suppress(FileExistsError):
                os.mkdir(work)
            self._copy_sandbox(sandbox, work, run.name)
            self._stage(job, work, sandbox)
            self._write_input_lists(run, job, work)
            command, container = self._command(run, job, work)
            # runGen makes the first word executable; only a sandbox copy may be changed.
            first = os.path.normpath(job.command.split(maxsplit=1)[0]) if job.command.strip() else ""
            if first in sandbox.files:
                _make_executable(work / first)
            env = dict(self._base_env)
            env.update(run.env)
            self._runner.launch(work, command, cwd=work, env=env, container=container)
        except (CwlbridgeError, OSError) as err:
            message = err.message if isinstance(err, CwlbridgeError) else f"{err.strerror or err}: {err.filename}"
            note = {"failure": f"could not start: {message}"}
            with contextlib.suppress(OSError):
                append_note(work, note)
            self._attempt_ended(run, job, JobState("absent", notes=(note,)))
            return
        job.phase = "running"
        self._running[work] = (run, job)

    def _carry_over(self, run: _TaskRun, job: _Job) -> bool:
        """Reuse the outputs of the same job (same inputs) that finished in an earlier attempt.

        A retried task reruns its failed jobs only, as PanDA's retry does; the outputs of the
        finished ones are already in the datasets under the same names.
        """
        wanted = (job.command, _job_inputs(job))
        for handle in reversed(run.previous):
            earlier = self._load(handle)
            if earlier is None:
                continue
            for old in earlier.jobs:
                if old.index == job.index and old.phase == "finished" and (old.command, _job_inputs(old)) == wanted:
                    job.phase, job.produced, job.bytes_out = "finished", dict(old.produced), old.bytes_out
                    job.started, job.ended, job.exit_code = old.started, old.ended, old.exit_code
                    job.message = f"carried over from {Path(handle).name}"
                    return True
        return False

    def _stage(self, job: _Job, work: Path, sandbox: Sandbox) -> None:
        by_dataset: dict[str, list[str]] = {}
        for f in job.inputs + [f for fs in job.secondary.values() for f in fs]:
            names = by_dataset.setdefault(f.dataset, [])
            if f.name not in names:
                names.append(f.name)
        for dataset, names in by_dataset.items():
            for name in names:
                if name in sandbox.files:  # an input replaces the sandbox file of the same name
                    (work / name).unlink()
            self.store.fetch(dataset, work, names)

    def _write_input_lists(self, run: _TaskRun, job: _Job, work: Path) -> None:
        """prun's --writeInputToTxt STREAM:FILE: the stream's file names, comma-joined, in FILE."""
        wanted = str(parse_prun_args(run.args).namespace.get("writeInputToTxt") or "")
        streams = {"IN": job.inputs, **job.secondary}
        for item in wanted.split(","):
            stream, colon, filename = item.partition(":")
            if colon and streams.get(stream) and filename:
                (work / filename).write_text(",".join(f.name for f in streams[stream]), encoding="utf-8")

    def _attempt_ended(self, run: _TaskRun, job: _Job, state: JobState) -> None:
        self._changed.add(run.handle)
        attempt = self._attempt_dir(run, job)
        job.exit_code = state.exit_code
        job.ended = state.ended or time.time()
        if state.started is not None:
            job.started = state.started
        stored = next((n for n in state.notes if "outputs" in n), None)
        if stored is not None:
            self._read_outputs(job, stored)
            return
        if run.cancelled or (run.workdir / CANCELLED_FILE).exists():
            run.cancelled = True
            job.phase = "cancelled"
            return
        failure = _failure(state.notes)
        if failure is None and state.state == "done" and state.exit_code == 0:
            try:
                self._register_outputs(run, job, attempt)
                return
            except _MissingOutput as missing:
                failure = str(missing)
                with contextlib.suppress(OSError):
                    append_note(attempt, {"failure": failure, "ended": job.ended})
            except (CwlbridgeError, OSError) as err:
                reason = err.message if isinstance(err, CwlbridgeError) else f"{err.strerror or err}"
                failure = f"its outputs could not be stored: {reason}"
        if failure is None:
            if state.state == "lost":
                failure = "its process ended without an exit code (killed, or the machine stopped)"
            else:
                failure = f"exit code {state.exit_code}"
        job.message = failure.strip()
        if job.attempts <= run.retries:
            job.phase = "pending"
            delay = min(self.max_retry_delay, self.retry_delay * 2 ** (job.attempts - 1))
            job.not_before = job.ended + delay
            self._queue.append((run, job))
        else:
            job.phase = "failed"

    def _register_outputs(self, run: _TaskRun, job: _Job, work: Path) -> None:
        prefix = lfn_prefix(run.name)
        pairs: dict[str, list[tuple[str, Path]]] = {}
        for output in run.outputs:
            files = _output_files(output, work)
            pairs[output.dataset] = [
                (output_file_name(prefix, run.number, job.index + 1, path.name), path) for path in files
            ]
        produced: dict[str, list[str]] = {}
        total = 0
        for dataset, items in pairs.items():
            stored = self.store.add(dataset, items)
            produced[dataset] = [s.name for s in stored]
            total += sum(s.size for s in stored)
        # The note only spares a later process this registration (store.add is idempotent, and
        # a job that ended without one is registered again), so it is written once the engine
        # waits (see _write_notes), not between a job's end and the start of the next.
        self._notes_due.append((work, {"outputs": produced, "bytes": total, "ended": job.ended}))
        job.produced, job.bytes_out, job.phase, job.message = produced, total, "finished", ""

    def _read_outputs(self, job: _Job, note: Mapping[str, Any]) -> None:
        try:
            job.produced = {str(k): [str(n) for n in v] for k, v in note["outputs"].items()}
            job.bytes_out = int(note["bytes"])
        except (ValueError, KeyError, TypeError, AttributeError):
            job.produced, job.bytes_out = {}, 0
        job.phase, job.message = "finished", ""

    # -- status -------------------------------------------------------------------------------

    def _status(self, run: _TaskRun) -> TaskStatus:
        jobs = [
            JobInfo(
                index=j.index,
                phase=j.phase,
                attempts=j.attempts,
                exit_code=j.exit_code,
                started=j.started,
                ended=j.ended if j.phase in ("finished", "failed", "cancelled") else None,
                bytes_in=j.bytes_in if j.attempts else 0,
                bytes_out=j.bytes_out,
            )
            for j in run.jobs
        ]
        produced = (
            any(j.phase == "finished" for j in run.jobs)
            if not run.outputs
            else any(names for j in run.jobs for names in j.produced.values())
        )
        if run.cancelled:
            return TaskStatus("cancelled", jobs, produced, "cancelled")
        phases = [j.phase for j in run.jobs]
        if "running" in phases:
            return TaskStatus("running", jobs, produced)
        if "pending" in phases or (not run.closed and not run.message):
            started = any(j.attempts for j in run.jobs)
            waiting_for = sorted(run.growing) if not run.closed else []
            message = f"waiting for more input in {', '.join(waiting_for)}" if waiting_for else ""
            return TaskStatus("running" if started else "pending", jobs, produced, message)
        if run.message:
            return TaskStatus("failed", jobs, produced, run.message)
        if not run.jobs:
            where = ", ".join(run.in_ds) or "its input"
            return TaskStatus("failed", jobs, produced, f"no input files in {where}")
        failed = [j for j in run.jobs if j.phase == "failed"]
        if failed:
            first = failed[0]
            after = f" after {first.attempts} attempts" if first.attempts > 1 else ""
            message = (
                f"{len(failed)} of {len(run.jobs)} job(s) failed; job {first.index + 1}:"
                f" {first.message or 'failed'}{after} (logs: {stderr_path(self._attempt_dir(run, first))})"
            )
            return TaskStatus("failed", jobs, produced, message)
        return TaskStatus("finished", jobs, produced)

    # -- environment, sandbox and containers ----------------------------------------------------

    def _job_environment(self) -> dict[str, str]:
        env = dict(os.environ)
        store = store_spec(self.store)
        if store is not None:
            env["CWLBRIDGE_STORE"] = store
        # The caller's own environment, with the job directory first on PATH as runGen gives
        # it (so `skim.sh %IN` finds the sandbox's script).  cwlbridge's virtualenv is not put
        # in front: a job's python3 is the user's (an LCG view's, with ROOT), as on the grid.
        entries = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != "."]
        env["PATH"] = os.pathsep.join([".", *entries])
        return env

    def _copy_sandbox(self, sandbox: Sandbox, work: Path, task: str) -> None:
        for rel in sandbox.copy_into(work, self.shared):
            self.say(f"a job of {task} or earlier changed the shared sandbox file {rel}; written again")

    def _sandbox(self, directory: Path) -> Sandbox:
        sandbox = self._sandboxes.get(directory)
        if sandbox is None:
            sandbox = Sandbox.scan(directory)
            self._sandboxes[directory] = sandbox
            if len(sandbox.files) > SANDBOX_MANY_FILES:
                self.say(f"sandbox {directory} holds {len(sandbox.files)} files; every job starts with a copy of them")
            if sandbox.too_big:
                shown = ", ".join(sandbox.too_big[:3]) + (" …" if len(sandbox.too_big) > 3 else "")
                self.say(
                    f"sandbox {directory}: {len(sandbox.too_big)} file(s) of 1 MB or more are not copied into"
                    f" jobs, as pchain would not upload them: {shown}"
                )
        return sandbox

    def _command(self, run: _TaskRun, job: _Job, work: Path) -> tuple[str, str | None]:
        """The shell text the job runs, and the container name a kill must stop (if any)."""
        if not run.container:
            return job.command, None
        engine, reason = self._container_engine()
        image = run.container
        if engine == "docker" and image.startswith("/"):
            engine, reason = None, f"docker cannot run the image directory {image}"
        if engine is None:
            self._say_once("container", f"container {image} requested; running on the host: {reason}")
            return job.command, None
        payload = Path(f"{work}{PAYLOAD_SUFFIX}")
        payload.write_text(job.command + "\n", encoding="utf-8")
        name = f"cwlbridge-{job_mark(work)}" if engine == "docker" else None
        env_names = sorted({*run.env, "CWLBRIDGE_STORE", MARK_ENV})
        argv = container_command(
            engine, image, bind=run.workdir, payload=payload, work=work, env_names=env_names, name=name
        )
        return "exec " + shlex.join(argv), name

    def _container_engine(self) -> tuple[str | None, str]:
        if self._engine is None:
            self._engine = find_container_engine(self.containers)
        return self._engine

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.say(message)


class _MissingOutput(Exception):
    pass


@functools.lru_cache(maxsize=256)
def _split_rules_of(args: str) -> SplitRules:
    """prun's split rules for an ``opt_args`` text (worked out once per text: every task of a
    chain's step, and every cut of a growing input, has the same)."""
    return split_rules(parse_prun_args(args).namespace)


@functools.lru_cache(maxsize=256)
def _unlimited(rules: SplitRules) -> SplitRules:
    """``rules`` without the skip and the limit, which ``_accept`` applies over all cuts."""
    return dataclasses.replace(rules, n_skip_files=0, n_files=None)


def _output_files(output: OutputFile, work: Path) -> list[Path]:
    """The files one ``--outputs`` entry names in a finished job's directory (globs tarred)."""
    pattern = output.pattern
    if pattern.startswith("regex|"):
        regex = re.compile(pattern[len("regex|") :])
        found = sorted(p for p in work.iterdir() if p.is_file() and regex.fullmatch(p.name))
        if not found:
            raise _MissingOutput(f"no output matches {pattern}")
        return found
    if "*" in pattern:
        target = work / output.file
        if not target.is_file():
            members = sorted(glob.glob(pattern, root_dir=work))
            if not members:
                raise _MissingOutput(f"expected output {pattern} is missing (nothing matches)")
            tmp = work / f".{output.file}.tmp"
            with tarfile.open(tmp, "w:gz") as archive:
                for member in members:
                    archive.add(work / member, arcname=member)
            os.replace(tmp, target)
        return [target]
    path = work / pattern
    if not path.is_file():
        raise _MissingOutput(f"expected output {pattern} is missing")
    return [path]


def _make_executable(path: Path) -> None:
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode
        os.chmod(path, mode | ((mode & 0o444) >> 2))


def store_spec(store: DatasetStore) -> str | None:
    """What ``CWLBRIDGE_STORE`` must say for ``open_store`` in a job to open ``store``."""
    if isinstance(store, LocalStore):
        return str(store.root)
    if isinstance(store, RucioStore):
        return f"rucio:{store.rse}"
    return None


def _failure(notes: Sequence[Mapping[str, Any]]) -> str | None:
    """Why an attempt failed, as noted in its job log, if noted."""
    return next((str(n["failure"]) for n in notes if "failure" in n), None)


def _job_dir_name(index: int, attempt: int) -> str:
    """The working directory of a job attempt (and its name for the runner), in its task's."""
    return f"{index + 1:06d}.{attempt}"


def _tmp_name(path: Path | str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")


def _write_json(path: Path, data: object) -> None:
    tmp = _tmp_name(path)
    fd = open_empty(tmp)
    try:
        view = memoryview(json.dumps(data, separators=(",", ":")).encode("utf-8"))
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)
