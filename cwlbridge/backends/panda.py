"""The panda backend: each prun or junction task of the plan becomes a PanDA task.

A handle is the task's jediTaskID.  The scheduler records an attempt's key durably before it
calls ``submit``; on PanDA the key is the task name, so ``submit`` first looks the name up
among the user's tasks modified since the run began, and adopts a task it finds instead of
submitting again (PanDA would re-execute an ended task whose name comes back, code 3).  A
reply that is lost is resolved the same way (with a fresh look; the first one lists the run's
tasks once per process, not once per submission).  A later attempt of a task (``cwlbridge retry``)
is ``task/retry`` of the same PanDA task, which reruns only its failed files.

``poll`` costs one ``get_tasks_modified_since`` per cycle for every task of the run (paged
past 500 rows by the client), and a ``get_detailed_info`` only for the tasks whose status
changed.  JEDI's statuses map as iDDS maps them, except ``paused`` and ``exhausted``, which
need the user and are not final (pchain.md fix 12); ``finished`` (some files failed) counts
as processed, as in PanDA, and its message says how many files failed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from cwlbridge.backends.base import Backend, Phase, TaskSpec, TaskStatus
from cwlbridge.errors import CwlbridgeError
from cwlbridge.model.plan import Plan
from cwlbridge.panda.client import PandaClient, PandaRejectedError, PandaUnavailableError, TaskRow
from cwlbridge.panda.taskparams import emailed_paths, task_parameters

log = logging.getLogger(__name__)

#: JEDI status -> our phase (iDDS's mapping; paused and exhausted are not final here).
PHASES: dict[str, Phase] = {
    **dict.fromkeys(
        ("registered", "defined", "assigning", "ready", "pending", "scouting", "scouted", "prepared",
         "topreprocess", "preprocessing", "rerefine", "paused", "exhausted", "staging"),
        "pending",
    ),
    **dict.fromkeys(
        ("running", "toretry", "toincexec", "throttled", "merging", "finishing", "passed", "aborting", "tobroken"),
        "running",
    ),
    "done": "finished",
    "finished": "finished",
    **dict.fromkeys(("failed", "broken"), "failed"),
    "aborted": "cancelled",
}
#: Statuses in which a child with a `started` link may be submitted (its parent has begun).
STARTED = frozenset({"running", "throttled", "merging", "finishing", "passed", "done", "finished"})
#: How far before the run's start a name lookup reaches (clock skew between us and PanDA).
LOOKUP_MARGIN = dt.timedelta(minutes=10)
DEFAULT_POLL_INTERVAL = 60.0
#: Submissions of one task while PanDA gives no reply and the name lookup finds nothing.
SUBMIT_TRIES = 5
MAX_POLL_INTERVAL = 300.0
#: What a paused or exhausted task's message adds: PanDA waits for the user.
NEEDS_YOU = "needs you: `cwlbridge retry` it, or kill the run"


@dataclass
class _Known:
    name: str
    status: str
    message: str
    remote: dict[str, Any] | None = None  # TaskStatus.remote


class PandaBackend(Backend):
    """Submits tasks to PanDA through ``client`` and follows them.

    ``platform`` is the base platform of container-less tasks; ``sandbox`` is the
    uploaded sandbox's name and ``source_url`` where PanDA fetches it; ``since`` is when the
    run began (tasks are looked up by name among those modified after it).
    """

    name = "panda"

    def __init__(
        self,
        client: PandaClient,
        plan: Plan | None,
        *,
        nickname: str,
        platform: str,
        sandbox: str,
        source_url: str,
        since: dt.datetime,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        monitor_url: str = "https://bigpanda.cern.ch/task/{id}/",
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.plan = plan
        self.nickname = nickname
        self.platform = platform
        self.emailed = emailed_paths(plan.tasks) if plan is not None else set()
        self.sandbox = sandbox
        self.source_url = source_url
        self.since = since
        self.poll_interval = poll_interval
        self.monitor_url = monitor_url
        self.say = say
        self._clock = clock
        self._sleep = sleep
        self._known: dict[str, _Known] = {}  # handle -> what the last poll said
        self._outputs: dict[str, list[str]] = {}
        self._last_poll: dt.datetime | None = None
        self._polled_at: float | None = None  # clock() of the last poll
        self._quiet_rounds = 0
        self._before: dict[str, TaskRow] | None = None  # see _existing

    # ---------------------------------------------------------------- submit

    def _existing(self, name: str) -> TaskRow | None:
        """The newest task called ``name`` that PanDA had when this process first submitted.

        One listing serves every submission of the process: a task an earlier (crashed)
        process submitted is in it, and one this process submits it knows by its handle.
        """
        if self._before is None:
            self._before = {}
            for row in self.client.tasks_modified_since(self.since - LOOKUP_MARGIN):  # by task id
                self._before[row.name] = row
        return self._before.get(name.rstrip("/"))

    def submit(self, spec: TaskSpec) -> str:
        task = spec.task
        lookup_since = self.since - LOOKUP_MARGIN
        # A retry needs the task's status now; a first attempt only whether it exists already.
        found = self.client.find_task(task.name, lookup_since) if spec.attempt > 1 else self._existing(task.name)
        if found is not None:
            if spec.attempt > 1 and PHASES.get(found.status) in ("failed", "cancelled", "finished"):
                self.client.retry(found.task_id)  # only the failed files run again
                self.say(f"{task.name}: PanDA task {found.task_id} retried (attempt {spec.attempt})")
            else:
                log.info("%s is PanDA task %d (%s); not submitted again", task.name, found.task_id, found.status)
            return self._remember(str(found.task_id), task.name, task.output_datasets, found.status)
        params = task_parameters(
            task, self.emailed, nickname=self.nickname, sandbox=self.sandbox, source_url=self.source_url,
            platform=self.platform,
        )
        for tries_left in range(SUBMIT_TRIES - 1, -1, -1):
            try:
                submitted = self.client.submit(params)
                break
            except PandaUnavailableError:
                # No reply: the task may exist.  Look; submit again only when it does not
                # (uniqueTaskName makes a second copy of an active name impossible anyway).
                found = self.client.find_task(task.name, lookup_since)
                if found is not None:
                    self.say(f"{task.name}: PanDA task {found.task_id} {self.monitor_url.format(id=found.task_id)}")
                    return self._remember(str(found.task_id), task.name, task.output_datasets, found.status)
                if not tries_left:
                    raise
                log.warning("PanDA did not answer the submission of %s, which it does not have; sending it again",
                            task.name)
                tried = SUBMIT_TRIES - tries_left
                self._sleep(min(self.client.backoff_max, self.client.backoff_initial * 2 ** (tried - 1)))
            except PandaRejectedError as exc:
                found = self.client.find_task(task.name, lookup_since) if exc.code == 2 else None
                if found is not None:  # code 2: the name is active, i.e. our own lost submission
                    return self._remember(str(found.task_id), task.name, task.output_datasets, found.status)
                raise CwlbridgeError(f"PanDA refused task {task.name}: {exc.message}") from None
        if submitted.code == 3:
            log.warning("PanDA re-executed an ended task named %s (jediTaskID %d)", task.name, submitted.task_id)
        self.say(f"{task.name}: PanDA task {submitted.task_id} {self.monitor_url.format(id=submitted.task_id)}")
        return self._remember(str(submitted.task_id), task.name, task.output_datasets, "registered")

    def _remember(self, handle: str, name: str, outputs: list[str], status: str) -> str:
        self._known[handle] = _Known(name, status, "", self._remote(int(handle), status))
        self._outputs[handle] = list(outputs)
        return handle

    # ---------------------------------------------------------------- poll

    def poll(self, handles: Sequence[str]) -> dict[str, TaskStatus]:
        wanted = set(handles)
        began = dt.datetime.now(dt.timezone.utc)
        # Since the last poll (a minute of margin for clock skew), or since the run began.
        since = (self._last_poll or self.since) - dt.timedelta(minutes=1)
        if any(h not in self._known for h in wanted):
            since = self.since - LOOKUP_MARGIN  # a resumed run knows nothing yet
        try:
            rows = {str(r.task_id): r for r in self.client.tasks_modified_since(since)}
        except PandaUnavailableError as exc:
            # PanDA runs the tasks whether we see it or not: ask again at the next poll.
            log.warning("PanDA did not answer this poll (%s); asking again later", exc.message)
            self._polled_at = self._clock()
            return {h: self._status(h) for h in wanted if h in self._known}
        self._last_poll = began
        self._polled_at = self._clock()
        changed = False
        for handle in wanted:
            row = rows.get(handle)
            known = self._known.get(handle)
            if row is None:
                continue
            if known is None or known.status != row.status:
                changed = True
                self._known[handle] = self._describe(int(handle), row.name, row.status)
        self._quiet_rounds = 0 if changed else self._quiet_rounds + 1
        return {h: self._status(h) for h in wanted if h in self._known}

    def _remote(
        self, task_id: int, status: str, files: tuple[int, int, int] | None = None, note: str = ""
    ) -> dict[str, Any]:
        total, done, failed = files or (0, 0, 0)
        return {
            "jediTaskID": task_id,
            "status": status,
            "files": {"total": total, "done": done, "failed": failed} if files else None,
            "link": self.monitor_url.format(id=task_id),
            "note": note or None,
        }

    def _describe(self, task_id: int, name: str, status: str) -> _Known:
        """What a task whose status changed is now: its file counts from ``get_detailed_info``."""
        link = self.monitor_url.format(id=task_id)
        try:
            info = self.client.detailed_info(task_id)
        except CwlbridgeError as exc:
            message = f"jediTaskID {task_id} {status} ({link}; details unavailable: {exc.message})"
            return _Known(name, status, message, self._remote(task_id, status))
        files, done, failed = (int(info.get(k) or 0) for k in ("nFiles", "nFilesFinished", "nFilesFailed"))
        counts = f", {done}/{files} files done" if files else ""
        if failed:
            counts += f", {failed} failed"
        note = NEEDS_YOU if status in ("exhausted", "paused") else ""
        message = f"jediTaskID {task_id} {status}{counts} ({link})" + (f"; {note}" if note else "")
        return _Known(name, status, message, self._remote(task_id, status, (files, done, failed), note))

    def _status(self, handle: str) -> TaskStatus:
        known = self._known[handle]
        phase = PHASES.get(known.status, "pending")
        return TaskStatus(
            phase=phase, produced=known.status in STARTED, message=known.message, remote=known.remote
        )

    # ---------------------------------------------------------------- the rest of the contract

    def cancel(self, handle: str) -> None:
        try:
            self.client.kill(int(handle))
        except PandaRejectedError as exc:
            log.info("kill of PanDA task %s: %s", handle, exc.message)  # already ended: nothing to stop

    def outputs(self, handle: str) -> list[str]:
        if handle not in self._outputs and handle in self._known:  # adopted by a resumed run
            tasks = self.plan.tasks if self.plan is not None else []
            with_name = [t for t in tasks if t.name == self._known[handle].name]
            self._outputs[handle] = list(with_name[0].output_datasets) if with_name else []
        return list(self._outputs.get(handle, []))

    def _interval(self) -> float:
        """The poll interval, growing by half each quiet round up to ``MAX_POLL_INTERVAL``."""
        return min(MAX_POLL_INTERVAL, self.poll_interval * (1.5 ** min(max(self._quiet_rounds - 1, 0), 10)))

    def _due_in(self) -> float:
        if self._polled_at is None:
            return 0.0
        return max(0.0, self._polled_at + self._interval() - self._clock())

    def changed(self) -> Collection[str] | None:
        """Nothing, until the poll interval has passed (PanDA is asked once per interval)."""
        return None if self._due_in() <= 0 else ()

    def wait(self, timeout: float) -> None:
        """Sleep until the next poll is due, at most ``timeout``."""
        self._sleep(min(timeout, self._due_in()))

    def close(self) -> None:
        self.client.close()
