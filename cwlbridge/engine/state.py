"""The run state: one SQLite file per run, owned by the scheduler, readable by anyone.

Layout: ``<base>/.cwlbridge/runs/<RUN_ID>/state.sqlite`` beside ``tasks/<task>.a<attempt>/``
(the backends' work directories) and ``sandbox/`` (sandbox files the jobs share).  The
database runs in WAL mode with ``synchronous=NORMAL``: a commit is a write to the log, not
an fsync, so it survives a crash of cwlbridge (not of the machine), and readers in other
processes (``cwlbridge status``) see the last committed round while the engine keeps
writing.  The engine groups its writes per scheduling round with ``transaction()``;
``begin_attempt`` always commits the attempt's row before it returns, because the
idempotency key must be durable before the backend's ``submit`` is called; for a remote
backend (REANA, PanDA) that commit is made with ``synchronous=FULL``, an fsync, so that not
even a power cut can lose a submission that happened.  On a network file system (NFS, AFS,
EOS, CIFS: lxplus homes) SQLite's WAL is unsafe, so there the state uses a rollback journal
with ``synchronous=FULL`` throughout and says so once.  Within a round,
the other writes (state changes, job rows, events) are kept in memory and written together
when the round ends, so that they cost nothing between one task's end and the next one's
submission; whatever this process reads, it reads after them.

Every status change (run, task, attempt, job) is also an ``events`` row with its time.
Nothing secret is stored: the API takes no environment values, tokens or passwords.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import operator
import os
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cwlbridge.errors import CwlbridgeError, UsageError
from cwlbridge.osutil import pid_alive

if TYPE_CHECKING:
    from cwlbridge.backends.base import JobInfo

RUNS_DIR = Path(".cwlbridge") / "runs"
STATE_FILE = "state.sqlite"
#: Sandbox files that every job of the run shares (read-only, hard-linked into the jobs).
SHARED_DIR = "sandbox"
#: Bumped on every incompatible schema change; an older cwlbridge refuses a newer file.
SCHEMA_VERSION = 1
#: File systems on which SQLite's write-ahead log is unsafe (its shared memory and locks do
#: not work across machines, and some of these lie about locks on one machine too).
WAL_UNSAFE_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "afs", "openafs", "cifs", "smb3", "smbfs", "fuse.eos", "eos", "fuse.sshfs", "9p"}
)

RUN_STATUSES = ("running", "finished", "failed", "cancelled", "interrupted")
FINAL_RUN_STATUSES = frozenset({"finished", "failed", "cancelled", "interrupted"})
TASK_STATES = ("waiting", "submitted", "running", "finished", "failed", "cancelled", "skipped")
FINAL_TASK_STATES = frozenset({"finished", "failed", "cancelled", "skipped"})
#: kv key prefix (+ task name) of what a remote service last said about a task (TaskStatus.remote).
REMOTE_KEY = "remote:"

# Every page a commit changes is one more 4 KiB frame in the write-ahead log (and later in a
# checkpoint), and a chain step commits twice.  So: no AUTOINCREMENT (it rewrites
# sqlite_sequence on every insert; ids only grow here anyway, nothing is deleted), attempts and
# jobs stored in their primary key's own B-tree (WITHOUT ROWID: one tree, not table + index),
# and no index on events by task (read whole, by `cwlbridge status` and the report).  That took
# a 300-step chain from 14.3 to 8.7 log frames per step.  Files written with the earlier
# layout read the same.
_SCHEMA = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    inputs TEXT,
    outds TEXT NOT NULL,
    options TEXT NOT NULL,
    plan TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    host TEXT,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    updated REAL NOT NULL
);
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    step TEXT NOT NULL,
    type TEXT NOT NULL,
    backend TEXT NOT NULL,
    plan_id INTEGER NOT NULL,
    iteration INTEGER,
    loop TEXT,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    started REAL,
    ended REAL
);
CREATE TABLE attempts (
    task TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    key TEXT NOT NULL UNIQUE,
    handle TEXT,
    state TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    PRIMARY KEY (task, attempt)
) WITHOUT ROWID;
CREATE TABLE jobs (
    task TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    phase TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    started REAL,
    ended REAL,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    PRIMARY KEY (task, attempt, idx)
) WITHOUT ROWID;
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    task TEXT,
    kind TEXT NOT NULL,
    old TEXT,
    new TEXT,
    message TEXT NOT NULL DEFAULT '',
    attempt INTEGER,
    job INTEGER
);
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


_INSERT_EVENT = (
    "INSERT INTO events (time, task, kind, old, new, message, attempt, job) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_TASK = "UPDATE tasks SET state = ?, message = ?, started = ?, ended = ? WHERE name = ?"
# An attempt that ended keeps its outcome when the task is taken back for a retry.
_UPDATE_ATTEMPT_STATE = (
    "UPDATE attempts SET state = ?, ended = ? WHERE task = ? AND attempt = ?"
    " AND state NOT IN ('finished', 'failed', 'cancelled', 'skipped')"
)
_UPDATE_HANDLE = (
    "UPDATE attempts SET handle = ?, state = CASE state WHEN 'submitting' THEN 'submitted' ELSE state END"
    " WHERE task = ? AND attempt = ?"
)
_UPSERT_JOB = (
    "INSERT OR REPLACE INTO jobs (task, attempt, idx, phase, attempts, exit_code, started, ended,"
    " bytes_in, bytes_out, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class StateError(CwlbridgeError):
    """The run state cannot be used: missing, corrupt, or written by a newer cwlbridge."""


class RunNotFoundError(UsageError):
    """No run matches what the user named (a usage error: exit 2)."""


@dataclass
class RunInfo:
    """One run as recorded: what was asked, and where it stands."""

    id: str
    chain: str
    inputs: str | None
    outds: str
    options: dict[str, Any]
    plan: dict[str, Any]
    status: str
    pid: int | None
    created: float
    updated: float
    # Beyond the agreed contract: what `cwlbridge runs` and the reports need.
    host: str | None = None
    started: float | None = None
    ended: float | None = None
    run_dir: Path | None = None
    tasks_total: int = 0
    tasks_done: int = 0  # finished or skipped
    tasks_failed: int = 0
    error: str = ""  # set by list_runs for a run whose state cannot be read

    def effective_status(self) -> str:
        """The status, with a "running" run whose process is gone on this host shown as "interrupted"."""
        if self.status == "running" and self.pid and self.host == socket.gethostname() and not pid_alive(self.pid):
            return "interrupted"
        return self.status

    def last_moment(self, now: float | None = None) -> float:
        """The time the state speaks for: now while the run is live, else its end or its last write."""
        if self.ended is not None:
            return self.ended
        if self.effective_status() == "running":
            return now if now is not None else time.time()
        return self.updated

    def duration(self, now: float | None = None) -> float:
        """Seconds from the start to ``last_moment``."""
        start = self.started if self.started is not None else self.created
        return max(0.0, self.last_moment(now) - start)


@dataclass
class TaskRow:
    """One task as the run state knows it; job figures are those of its latest attempt."""

    name: str
    step: str
    type: str
    backend: str
    plan_id: int
    iteration: int | None
    loop: str | None
    state: str
    attempt: int  # latest attempt, 0 = never submitted
    handle: str | None
    message: str
    created: float
    started: float | None
    ended: float | None
    jobs_total: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    jobs_running: int = 0

    def elapsed(self, now: float | None = None) -> float | None:
        """Wall time so far: start to end, or to now while it has not ended."""
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else (now if now is not None else time.time())
        return max(0.0, end - self.started)


@dataclass
class AttemptRow:
    """One attempt of a task: its idempotency key and the backend's handle once known."""

    attempt: int
    key: str
    handle: str | None
    state: str
    started: float
    ended: float | None
    task: str = ""


@dataclass
class JobRow:
    """One job of one task attempt, as the backend last reported it."""

    task: str
    attempt: int
    index: int
    phase: str
    attempts: int
    exit_code: int | None
    started: float | None
    ended: float | None
    bytes_in: int
    bytes_out: int


@dataclass
class Event:
    """One status change: ``kind`` is run, task, attempt, handle or job."""

    time: float
    task: str | None
    kind: str
    old: str | None
    new: str | None
    message: str
    attempt: int | None = None
    job: int | None = None


@dataclass
class _Batch:
    depth: int = 0


def attempt_dir(run_dir: Path, task: str, attempt: int) -> Path:
    """Where the backend works on one task attempt: ``tasks/<task>.a<attempt>`` (one level, one mkdir)."""
    return Path(run_dir) / "tasks" / f"{task}.a{attempt}"


def new_run_id() -> str:
    """A fresh run id, ``YYYYMMDD-HHMMSS-xxxx`` in UTC, so ids sort by start time."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + os.urandom(2).hex()


def _runs_root(base: Path) -> Path:
    return Path(base) / RUNS_DIR


def _run_dirs(base: Path) -> list[Path]:
    root = _runs_root(base)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / STATE_FILE).is_file())


def find_run(ref: str | None, base: Path) -> Path:
    """The run directory for a run id, a unique prefix of one, a path, or ``None`` for the latest."""
    root = _runs_root(base)
    runs = _run_dirs(base)
    hint = f"`cwlbridge runs --base {base}` lists the runs recorded there"
    if ref is None:
        if not runs:
            raise RunNotFoundError(
                f"no runs under {root}", hint="start one with `cwlbridge run`, or point --base at its directory"
            )
        return runs[-1]
    as_path = Path(ref)
    if (as_path / STATE_FILE).is_file():
        return as_path
    exact = [p for p in runs if p.name == ref]
    if exact:
        return exact[0]
    matches = [p for p in runs if p.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(p.name for p in matches[:10])
        raise RunNotFoundError(f"run '{ref}' is ambiguous under {root}: {shown}", hint="give more of the id")
    if not runs:
        raise RunNotFoundError(f"no run '{ref}': there are no runs under {root}", hint=hint)
    raise RunNotFoundError(f"no run '{ref}' under {root}", hint=hint)


def list_runs(base: Path) -> list[RunInfo]:
    """Every run under ``base``, oldest first; an unreadable one comes back with ``error`` set."""
    result: list[RunInfo] = []
    for run_dir in _run_dirs(base):
        try:
            state = RunState.open(run_dir, readonly=True)
        except CwlbridgeError as err:
            result.append(
                RunInfo(
                    id=run_dir.name, chain="?", inputs=None, outds="?", options={}, plan={},
                    status="unreadable", pid=None, created=0.0, updated=0.0, run_dir=run_dir,
                    error=err.message,
                )
            )
            continue
        try:
            result.append(state.info(with_plan=False))
        finally:
            state.close()
    return result


class RunState:
    """The state of one run; one writer (the engine), any number of readers."""

    def __init__(
        self, run_dir: Path, conn: sqlite3.Connection, run_id: str, *, readonly: bool, wal: bool = True
    ) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.readonly = readonly
        self.wal = wal  # False: a rollback journal, every commit an fsync
        self._conn = conn
        self._lock = threading.RLock()
        self._batch = _Batch()
        self._closed = False
        self._touched = float("-inf")
        # What this process (the run's one writer) knows of rows it wrote or read, so a write
        # need not SELECT first: task -> [state, attempt, started, ended], (task, attempt) ->
        # handle, (task, attempt) -> {job index -> recorded values}.  Dropped on a rollback.
        self._task_rows: dict[str, list[Any]] = {}
        self._handles: dict[tuple[str, int], str | None] = {}
        self._job_rows: dict[tuple[str, int], dict[int, tuple[Any, ...]]] = {}
        # Writes kept for the end of the batch (see the module): (statement, parameters).
        self._later: list[tuple[str, tuple[Any, ...]]] = []
        #: Where the times of changes come from; tests set a controlled clock.
        self.clock: Callable[[], float] = time.time

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        run_dir: Path,
        *,
        run_id: str,
        chain: Path,
        inputs: Path | None,
        outds: str,
        options: dict[str, Any],
        plan: dict[str, Any],
        clock: Callable[[], float] = time.time,
    ) -> RunState:
        """Create the run directory and its state; the run starts as "running" with this pid.

        ``clock`` gives the times recorded from now on (the real time unless a test controls it).
        """
        run_dir = Path(run_dir)
        path = run_dir / STATE_FILE
        if path.exists():
            raise StateError(f"{path} exists already: run '{run_id}' was created before")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "tasks").mkdir(exist_ok=True)
        # The state is made under another name and renamed into place once complete: a run
        # killed in between leaves no state.sqlite, so no half-made run for `runs` or `resume`.
        draft = run_dir / (STATE_FILE + ".new")
        for leftover in (draft, Path(f"{draft}-wal"), Path(f"{draft}-shm"), Path(f"{draft}-journal")):
            leftover.unlink(missing_ok=True)
        wal = _journal_for(run_dir)
        conn = _connect(draft, readonly=False, wal=wal)
        now = clock()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO runs (id, chain, inputs, outds, options, plan, status, pid, host, created, started,"
                " updated) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (
                    run_id, str(chain), None if inputs is None else str(inputs), outds,
                    json.dumps(options, sort_keys=True), json.dumps(plan), os.getpid(), socket.gethostname(),
                    now, now, now,
                ),
            )
            conn.execute(
                "INSERT INTO events (time, task, kind, old, new, message) VALUES (?, NULL, 'run', NULL, 'running', '')",
                (now,),
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            draft.unlink(missing_ok=True)
            raise
        conn.close()  # the last connection: the write-ahead log is folded into the file
        os.rename(draft, path)
        _fsync_dir(run_dir)
        conn = _connect(path, readonly=False, wal=wal)
        state = cls(run_dir, conn, run_id, readonly=False, wal=wal)
        state.clock = clock
        return state

    @classmethod
    def open(cls, run_dir: Path, *, readonly: bool = False) -> RunState:
        """Open an existing run's state; ``readonly`` for commands that only look."""
        run_dir = Path(run_dir)
        path = run_dir / STATE_FILE
        if not path.is_file():
            raise StateError(f"{run_dir} holds no run state ({STATE_FILE} is missing)")
        wal = readonly or _journal_for(run_dir)
        conn = _connect(path, readonly=readonly, wal=wal)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version != SCHEMA_VERSION:
                raise StateError(_version_message(path, version))
            row = conn.execute("SELECT id FROM runs").fetchone()
            if row is None:
                raise StateError(f"{path} records no run")
        except sqlite3.DatabaseError as err:
            conn.close()
            raise StateError(f"{path} is not a readable run state: {err}") from None
        except BaseException:
            conn.close()
            raise
        return cls(run_dir, conn, str(row[0]), readonly=readonly, wal=wal)

    def close(self) -> None:
        """Close the database; pending batched writes are committed first.  Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self.readonly:
                self._flush()
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")
            self._conn.close()

    def __enter__(self) -> RunState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Batch several writes into one commit; on a read-only state, one consistent snapshot.

        Nested use joins the outer batch.  An exception rolls back what the batch wrote, except
        the attempts ``begin_attempt`` committed on the spot.
        """
        with self._lock:
            outer = self._batch.depth == 0
            if outer and self.readonly:
                self._conn.execute("BEGIN DEFERRED")
            # A writer's batch begins at its first write (see _writing): a scheduling round
            # that changes nothing costs no transaction.
            self._batch.depth += 1
            try:
                yield
            except BaseException:
                self._batch.depth -= 1
                if outer:
                    self._abandon()
                raise
            self._batch.depth -= 1
            if outer:
                try:
                    self._flush()
                except BaseException:
                    self._abandon()
                    raise
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    def _abandon(self) -> None:
        """Drop the batch: the writes kept for later, and what was executed since the last commit."""
        if self._conn.in_transaction or self._later:
            self._later.clear()
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._forget()

    def _later_write(self, statement: str, parameters: tuple[Any, ...]) -> None:
        """A write for the end of the batch (see the module); the caller is inside ``_write``."""
        self._later.append((statement, parameters))

    def _flush(self) -> None:
        """Run the writes kept for later, in order, in the write transaction."""
        if not self._later:
            return
        later, self._later = self._later, []
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
        for statement, run in itertools.groupby(later, key=operator.itemgetter(0)):
            self._conn.executemany(statement, [parameters for _, parameters in run])

    def _forget(self) -> None:
        """Drop what this process remembers of rows (after a rollback it may be wrong)."""
        self._task_rows.clear()
        self._handles.clear()
        self._job_rows.clear()

    def _task_row(self, name: str) -> list[Any]:
        """[state, attempt, started, ended] of a task (remembered); ``KeyError`` if unknown."""
        row = self._task_rows.get(name)
        if row is None:
            self._flush()
            found = self._conn.execute(
                "SELECT state, attempt, started, ended FROM tasks WHERE name = ?", (name,)
            ).fetchone()
            if found is None:
                raise KeyError(name)
            row = self._task_rows[name] = list(found)
        return row

    def _handle_row(self, name: str, attempt: int) -> tuple[bool, str | None]:
        """(whether the attempt is recorded, its handle), remembered once seen."""
        key = (name, attempt)
        if key in self._handles:
            return True, self._handles[key]
        self._flush()
        found = self._conn.execute(
            "SELECT handle FROM attempts WHERE task = ? AND attempt = ?", (name, attempt)
        ).fetchone()
        if found is None:
            return False, None
        self._handles[key] = found[0]
        return True, found[0]

    def _commit_now(self) -> None:
        """Commit what was written so far (not the writes kept for later), even inside a caller's
        batch, which then goes on."""
        if self._batch.depth > 1 and self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def _write(self) -> contextlib.AbstractContextManager[None]:
        if self.readonly:
            raise StateError(f"run state of {self.run_id} was opened read-only")
        return self._writing()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        with self.transaction():
            if not self._conn.in_transaction:
                self._conn.execute("BEGIN IMMEDIATE")
            yield

    def _event(
        self,
        now: float,
        task: str | None,
        kind: str,
        old: str | None,
        new: str | None,
        message: str = "",
        attempt: int | None = None,
        job: int | None = None,
    ) -> None:
        self._later_write(_INSERT_EVENT, (now, task, kind, old, new, message, attempt, job))

    # -- the run ---------------------------------------------------------------------------

    def info(self, *, with_plan: bool = True) -> RunInfo:
        """The run's record; ``with_plan=False`` skips decoding the (possibly large) plan."""
        with self._lock:
            self._flush()
            row = self._conn.execute(
                "SELECT id, chain, inputs, outds, options, status, pid, host, created, started, ended, updated"
                + (", plan" if with_plan else "")
                + " FROM runs"
            ).fetchone()
            counts = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(state IN ('finished', 'skipped')), 0),"
                " COALESCE(SUM(state = 'failed'), 0) FROM tasks"
            ).fetchone()
        return RunInfo(
            id=row[0], chain=row[1], inputs=row[2], outds=row[3], options=json.loads(row[4]),
            plan=json.loads(row[12]) if with_plan else {}, status=row[5], pid=row[6], created=row[8],
            updated=row[11], host=row[7], started=row[9], ended=row[10], run_dir=self.run_dir,
            tasks_total=int(counts[0]), tasks_done=int(counts[1]), tasks_failed=int(counts[2]),
        )

    def set_run_status(self, status: str, *, pid: int | None = None) -> None:
        """Record the run's status ("running" again on resume, with the new pid and host)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; expected one of {', '.join(RUN_STATUSES)}")
        now = self.clock()
        with self._write():
            self._flush()
            old = self._conn.execute("SELECT status FROM runs").fetchone()[0]
            if status == "running":
                self._conn.execute(
                    "UPDATE runs SET status = ?, pid = COALESCE(?, pid), host = ?, ended = NULL, updated = ?,"
                    " started = COALESCE(started, ?)",
                    (status, pid, socket.gethostname(), now, now),
                )
            else:
                self._conn.execute(
                    "UPDATE runs SET status = ?, pid = COALESCE(?, pid), ended = ?, updated = ?",
                    (status, pid, now, now),
                )
            # "running" is recorded every time, even over a "running" left by a crash: the
            # report tells the run's active time from these marks.
            if old != status or status == "running":
                self._event(now, None, "run", old, status)

    def _touch(self, now: float) -> None:
        # The runs row carries the whole plan, so rewriting it on every write would cost a
        # copy of the plan per commit; "updated" only needs to be right to a second or so.
        if now - self._touched < 1.0:
            return
        self._touched = now
        self._later_write("UPDATE runs SET updated = ?", (now,))

    # -- tasks -----------------------------------------------------------------------------

    def add_task(
        self,
        name: str,
        *,
        step: str,
        type: str,
        backend: str,
        plan_id: int,
        iteration: int | None = None,
        loop: str | None = None,
    ) -> None:
        """Record a task as "waiting"; a task already recorded is left as it is."""
        now = self.clock()
        with self._write():
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO tasks (name, step, type, backend, plan_id, iteration, loop, state, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'waiting', ?)",
                (name, step, type, backend, plan_id, iteration, loop, now),
            )
            if cursor.rowcount:
                self._task_rows[name] = ["waiting", 0, None, None]
                self._event(now, name, "task", None, "waiting")
                self._touch(now)

    _TASK_QUERY = (
        "SELECT t.name, t.step, t.type, t.backend, t.plan_id, t.iteration, t.loop, t.state, t.attempt,"
        " a.handle, t.message, t.created, t.started, t.ended,"
        " COUNT(j.idx), COALESCE(SUM(j.phase = 'finished'), 0), COALESCE(SUM(j.phase = 'failed'), 0),"
        " COALESCE(SUM(j.bytes_in), 0), COALESCE(SUM(j.bytes_out), 0), COALESCE(SUM(j.phase = 'running'), 0)"
        " FROM tasks t"
        " LEFT JOIN attempts a ON a.task = t.name AND a.attempt = t.attempt"
        " LEFT JOIN jobs j ON j.task = t.name AND j.attempt = t.attempt"
    )

    def tasks(self) -> list[TaskRow]:
        """Every task, in the order they were added."""
        with self._lock:
            self._flush()
            rows = self._conn.execute(self._TASK_QUERY + " GROUP BY t.seq ORDER BY t.seq").fetchall()
        return [TaskRow(*row) for row in rows]

    def task(self, name: str) -> TaskRow:
        """One task by its full name; ``KeyError`` if it was never added."""
        with self._lock:
            self._flush()
            row = self._conn.execute(self._TASK_QUERY + " WHERE t.name = ? GROUP BY t.seq", (name,)).fetchone()
        if row is None:
            raise KeyError(name)
        return TaskRow(*row)

    def set_task_state(self, name: str, state: str, message: str = "") -> None:
        """Move a task to ``state``; every change of state is an event with its time.

        ``started`` is set when the task first leaves "waiting", ``ended`` when it reaches a final
        state; a task taken out of a final state (a retry) starts its clock again.  The latest
        attempt follows the task's state.
        """
        if state not in TASK_STATES:
            raise ValueError(f"unknown task state {state!r}; expected one of {', '.join(TASK_STATES)}")
        now = self.clock()
        with self._write():
            row = self._task_row(name)
            old, attempt, started, ended = row
            if old in FINAL_TASK_STATES and state not in FINAL_TASK_STATES:
                started, ended = None, None
            if state in ("submitted", "running") and started is None:
                started = now
            if state in FINAL_TASK_STATES and (old != state or ended is None):
                ended = now
            self._later_write(_UPDATE_TASK, (state, message, started, ended, name))
            row[:] = [state, attempt, started, ended]
            if attempt:
                self._later_write(
                    _UPDATE_ATTEMPT_STATE, (state, now if state in FINAL_TASK_STATES else None, name, attempt)
                )
            if old != state:
                self._event(now, name, "task", old, state, message, attempt or None)
                self._touch(now)

    # -- attempts --------------------------------------------------------------------------

    def begin_attempt(self, name: str, attempt: int, key: str) -> None:
        """Record an attempt and its idempotency key, and commit, before the backend's submit.

        Inside a ``transaction()`` what the batch executed so far is committed with it (its state
        changes and events wait for the batch's end, see the module) and the batch goes on.  A
        task whose attempt is begun but whose state still says "waiting" is one whose
        submission may or may not have happened: the scheduler submits it again under this key.
        Beginning the same attempt again with the same key (a resume) changes nothing; another
        key for a recorded attempt, or a key used by another attempt, is a ``StateError``.
        """
        self.begin_attempts([(name, attempt, key)])

    def begin_attempts(self, entries: Sequence[tuple[str, int, str]], *, durable: bool = False) -> None:
        """``begin_attempt`` for many (task, attempt, key) at once, with one commit.

        ``durable`` (a remote backend's submissions): that commit is fsync'd, so the keys
        survive a power cut too, not only a crash of cwlbridge.
        """
        now = self.clock()
        with self._write(), self._synced(durable and self.wal):
            for name, attempt, key in entries:
                if attempt < 1:
                    raise ValueError(f"attempt numbers start at 1, got {attempt}")
                row = self._task_row(name)
                existing = self._conn.execute(
                    "SELECT task, attempt, key FROM attempts WHERE (task = ? AND attempt = ?) OR key = ?",
                    (name, attempt, key),
                ).fetchall()
                if any(tuple(row) == (name, attempt, key) for row in existing):
                    continue
                if existing:
                    other = existing[0]
                    raise StateError(
                        f"cannot begin attempt {attempt} of {name} with key {key}: attempt {other[1]} of"
                        f" {other[0]} is recorded with key {other[2]}"
                    )
                self._conn.execute(
                    "INSERT INTO attempts (task, attempt, key, handle, state, started)"
                    " VALUES (?, ?, ?, NULL, 'submitting', ?)",
                    (name, attempt, key, now),
                )
                self._conn.execute(
                    "UPDATE tasks SET attempt = MAX(attempt, ?) WHERE name = ?", (attempt, name)
                )
                row[1] = max(row[1] or 0, attempt)
                self._handles[(name, attempt)] = None
                self._event(now, name, "attempt", None, "begun", key, attempt)
            self._touch(now)
            self._commit_now()

    @contextlib.contextmanager
    def _synced(self, full: bool) -> Iterator[None]:
        """Inside ``_write``: with ``full``, what is written in the block is committed with an fsync.

        SQLite changes ``synchronous`` only between transactions, so what the batch executed
        before is committed first (as ``_commit_now`` would have), then the block's writes go
        in a transaction of their own.
        """
        if not full:
            yield
            return
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")
        self._conn.execute("PRAGMA synchronous = FULL")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            yield
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        finally:
            self._conn.execute("PRAGMA synchronous = NORMAL")

    def record_handle(self, name: str, attempt: int, handle: str) -> None:
        """Record the handle the backend returned for an attempt."""
        now = self.clock()
        with self._write():
            recorded, old = self._handle_row(name, attempt)
            if not recorded:
                raise KeyError(f"{name} attempt {attempt}")
            if old == handle:
                return
            self._later_write(_UPDATE_HANDLE, (handle, name, attempt))
            self._handles[(name, attempt)] = handle
            self._event(now, name, "handle", old, handle, "", attempt)
            self._touch(now)

    def attempts(self, name: str) -> list[AttemptRow]:
        """A task's attempts, oldest first."""
        with self._lock:
            self._flush()
            rows = self._conn.execute(
                "SELECT attempt, key, handle, state, started, ended, task FROM attempts WHERE task = ?"
                " ORDER BY attempt",
                (name,),
            ).fetchall()
        return [AttemptRow(*row) for row in rows]

    def attempt_by_key(self, key: str) -> AttemptRow | None:
        """The attempt recorded under an idempotency key, if any."""
        with self._lock:
            self._flush()
            row = self._conn.execute(
                "SELECT attempt, key, handle, state, started, ended, task FROM attempts WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else AttemptRow(*row)

    def all_attempts(self) -> list[AttemptRow]:
        """Every attempt of every task (one query, for reports)."""
        with self._lock:
            self._flush()
            rows = self._conn.execute(
                "SELECT attempt, key, handle, state, started, ended, task FROM attempts ORDER BY task, attempt"
            ).fetchall()
        return [AttemptRow(*row) for row in rows]

    # -- jobs ------------------------------------------------------------------------------

    def update_jobs(self, name: str, attempt: int, jobs: Sequence[JobInfo]) -> None:
        """Record what the backend reported for an attempt's jobs; a phase change is an event.

        Rows that did not change are not rewritten, so polling often costs little.
        """
        if not jobs:
            return
        now = self.clock()
        with self._write():
            if not self._handle_row(name, attempt)[0]:
                raise KeyError(f"{name} attempt {attempt}")
            known = self._job_rows.get((name, attempt))
            if known is None:
                self._flush()
                known = self._job_rows[(name, attempt)] = {
                    row[0]: tuple(row[1:])
                    for row in self._conn.execute(
                        "SELECT idx, phase, attempts, exit_code, started, ended, bytes_in, bytes_out FROM jobs"
                        " WHERE task = ? AND attempt = ?",
                        (name, attempt),
                    )
                }
            changed = False
            for job in jobs:
                values = (
                    str(job.phase), int(job.attempts), job.exit_code, job.started, job.ended,
                    int(job.bytes_in), int(job.bytes_out),
                )
                before = known.get(job.index)
                if before == values:
                    continue
                self._later_write(_UPSERT_JOB, (name, attempt, job.index, *values, now))
                changed = True
                known[job.index] = values
                old_phase = None if before is None else before[0]
                if old_phase != values[0]:
                    message = "" if job.exit_code is None else f"exit code {job.exit_code}"
                    self._event(now, name, "job", old_phase, values[0], message, attempt, job.index)
            if changed:
                self._touch(now)

    _JOB_COLUMNS = "task, attempt, idx, phase, attempts, exit_code, started, ended, bytes_in, bytes_out"

    def jobs(self, name: str, attempt: int | None = None) -> list[JobRow]:
        """A task's jobs by index, of its latest attempt unless ``attempt`` is given."""
        with self._lock:
            self._flush()
            if attempt is None:
                found = self._conn.execute("SELECT attempt FROM tasks WHERE name = ?", (name,)).fetchone()
                if found is None:
                    raise KeyError(name)
                attempt = int(found[0])
            rows = self._conn.execute(
                f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE task = ? AND attempt = ? ORDER BY idx",
                (name, attempt),
            ).fetchall()
        return [JobRow(*row) for row in rows]

    def all_jobs(self) -> list[JobRow]:
        """Every job of every attempt of every task (one query, for reports)."""
        with self._lock:
            self._flush()
            rows = self._conn.execute(
                f"SELECT {self._JOB_COLUMNS} FROM jobs ORDER BY task, attempt, idx"
            ).fetchall()
        return [JobRow(*row) for row in rows]

    # -- events and values -----------------------------------------------------------------

    def events(self, task: str | None = None) -> list[Event]:
        """Status changes in the order they happened, of one task or of the whole run."""
        columns = "time, task, kind, old, new, message, attempt, job"
        with self._lock:
            self._flush()
            if task is None:
                rows = self._conn.execute(f"SELECT {columns} FROM events ORDER BY id").fetchall()
            else:
                rows = self._conn.execute(
                    f"SELECT {columns} FROM events WHERE task = ? ORDER BY id", (task,)
                ).fetchall()
        return [Event(*row) for row in rows]

    def set_value(self, key: str, value: Any) -> None:
        """Store a JSON-encodable value for the engine (loop variables, counters)."""
        text = json.dumps(value, sort_keys=True)
        with self._write():
            self._conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, text))

    def get_value(self, key: str, default: Any = None) -> Any:
        """A value stored with ``set_value``, or ``default``."""
        with self._lock:
            self._flush()
            row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def values(self, prefix: str) -> dict[str, Any]:
        """Every value stored under a key starting with ``prefix``, by the rest of the key."""
        with self._lock:
            self._flush()
            rows = self._conn.execute(
                "SELECT key, value FROM kv WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        return {key[len(prefix) :]: json.loads(value) for key, value in rows}


def filesystem_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the file system holding ``path`` (``ext4``, ``nfs4``, ``fuse.eos``…), or None
    where ``mountinfo`` cannot be read (not Linux)."""
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, found = -1, None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        mount = fields[4].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > best:
            best, found = len(mount), right.split()[0]
    return found


def wal_is_safe(fstype: str | None) -> bool:
    """Whether SQLite's WAL may be used on a file system of this type (unknown: yes)."""
    return fstype is None or fstype.lower() not in WAL_UNSAFE_FILESYSTEMS


_warned_journal: set[str] = set()


def _journal_for(run_dir: Path) -> bool:
    """True for WAL; False for a rollback journal, said once per file system type."""
    fstype = filesystem_type(run_dir)
    if wal_is_safe(fstype):
        return True
    if fstype not in _warned_journal:
        _warned_journal.add(str(fstype))
        sys.stderr.write(
            f"cwlbridge: note: the run state in {run_dir} is on {fstype}, where SQLite's write-ahead log is"
            " unsafe; it uses a rollback journal instead (slower). --base DIR on a local disk avoids it\n"
        )
    return False


def _connect(path: Path, *, readonly: bool, wal: bool = True) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    except sqlite3.DatabaseError as err:
        raise StateError(f"{path} is not a readable run state: {err}") from None
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        if not readonly and wal:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"{path}: the file system does not allow SQLite's WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
        elif not readonly:
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as err:
        conn.close()
        raise StateError(f"{path} is not a readable run state: {err}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _version_message(path: Path, version: int) -> str:
    if version == 0:
        return f"{path} is not a cwlbridge run state (no schema version)"
    if version > SCHEMA_VERSION:
        return (
            f"{path} has run-state schema version {version}, newer than this cwlbridge understands"
            f" ({SCHEMA_VERSION}); upgrade cwlbridge to read it"
        )
    return f"{path} has run-state schema version {version}, which this cwlbridge cannot read ({SCHEMA_VERSION})"
