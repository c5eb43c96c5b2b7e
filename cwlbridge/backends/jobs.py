"""Job processes that outlive cwlbridge: start them, adopt them, wait for them, kill them.

A job runs in its own session (process group and session id = the wrapper's pid), as grid
jobs do under runGen: its command is written to a script, ``JOB.sh``, which ``bash`` runs in
a process of its own (EL grid nodes run commands with bash; ``/bin/sh`` is dash on Debian
and Ubuntu), with stdout/stderr sent to files.  A small ``/bin/sh`` wrapper around it waits
for a "go" line on a pipe, which it is sent only after the job's record is written (if
cwlbridge dies before, the wrapper reads end of file and exits without running anything),
and appends the command's exit code to the job's log when it ends.
Because the job is not in cwlbridge's process group, Ctrl-C and SIGKILL of cwlbridge leave
it running, and a later cwlbridge can adopt it from the files alone.

A job is named by a path, ``JOB``; its files sit beside that path (nothing else is
written for it, and ``JOB`` itself is left to the caller, e.g. as the job's working
directory):

- ``JOB.jsonl``: the job's log, one JSON object a line, only ever appended to: first the
  record (pid, pgid, sid, ``started`` in epoch seconds, ``mark``, a container name if any,
  and the command), written before the wrapper is sent its script; then ``{"exit": CODE}``,
  appended by the wrapper; then whatever the caller notes with ``append_note`` (e.g. that the outputs are
  stored).  One file instead of a record, an exit-code file and notes: creating a file is
  the dearest step of starting a job on a disk-backed file system, appending is not.
- ``JOB.sh``: the command, as the script bash runs
- ``JOB.stdout``, ``JOB.stderr``: the command's output

Every line goes out in one ``write`` with ``O_APPEND``, so a reader sees whole lines plus at
most an unfinished last one (no newline yet, or cut short by a kill), which it ignores: an
unfinished record means no script was sent (nothing ran), and a note is written again by
whoever wrote it.  The end time of a job is the log's mtime when the exit code is its last
line; a note written later carries ``ended`` so the time survives.

A job's mark is a random token its wrapper got when it was started (recorded as ``mark``).
A pid is taken for the job's wrapper only while that process leads its own session and
carries the job's mark in its environment (checked in ``/proc/<pid>/environ`` when a job is
adopted or looked at, never at launch), so a pid reused by another process is not mistaken
for the job.  Every process of a job carries ``CWLBRIDGE_JOB_MARK`` in its environment (a
job started inside a job appends its own token), so a kill finds descendants that left the
session or were re-parented to init, also after cwlbridge restarted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cwlbridge.errors import CwlbridgeError
from cwlbridge.osutil import append_line, open_empty, pid_alive

#: Environment variable holding the job tokens of every process of a job (":"-separated).
MARK_ENV = "CWLBRIDGE_JOB_MARK"

#: Suffixes of a job's files (see the module's docstring).
LOG_SUFFIX = ".jsonl"
STDOUT_SUFFIX = ".stdout"
STDERR_SUFFIX = ".stderr"

SCRIPT_SUFFIX = ".sh"
#: The wrapper exits with this without running anything when cwlbridge died before "go".
NOT_STARTED_EXIT = 111

_SH = "/bin/sh"
#: Signals Python ignores that a job must not inherit ignored: with SIGPIPE ignored,
#: ``yes | head`` would print "Broken pipe" errors.
_DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, name))
# $1: the job's name, $2: its working directory, $3: bash.  The wrapper's own variables are
# not exported, so the command does not see them.
_WRAPPER = f"""\
IFS= read -r go || exit {NOT_STARTED_EXIT}
exec 0</dev/null
if cd "$2"; then
  "$3" "$1{SCRIPT_SUFFIX}" 1<>"$1{STDOUT_SUFFIX}" 2<>"$1{STDERR_SUFFIX}"
  rc=$?
else
  rc=127
fi
printf '{{"exit":%d}}\\n' "$rc" >>"$1{LOG_SUFFIX}"
"""


def script_path(job: Path | str) -> str:
    """The script holding the command of the job named ``job``."""
    return f"{job}{SCRIPT_SUFFIX}"


JobStateName = Literal["absent", "running", "done", "lost"]


@dataclass(frozen=True)
class JobRecord:
    """What the first line of a job's log says about a started job."""

    pid: int
    pgid: int
    sid: int
    started: float
    mark: str
    container: str | None = None
    command: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "pgid": self.pgid,
            "sid": self.sid,
            "started": self.started,
            "mark": self.mark,
            "container": self.container,
            "command": self.command,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobRecord | None:
        """The record in a parsed log line, or None when the line is not a whole record."""
        try:
            return cls(
                pid=int(data["pid"]),
                pgid=int(data["pgid"]),
                sid=int(data["sid"]),
                started=float(data["started"]),
                mark=str(data["mark"]),
                container=data.get("container") or None,
                command=str(data.get("command") or ""),
            )
        except (ValueError, KeyError, TypeError):
            return None

    @classmethod
    def read(cls, job: Path) -> JobRecord | None:
        """The record in the log of ``job``, or None when there is none (or it is unreadable)."""
        return read_log(job).record


@dataclass(frozen=True)
class JobLog:
    """What a job's log holds so far: its record, exit code, and the notes added after."""

    record: JobRecord | None = None
    exit_code: int | None = None
    notes: tuple[dict[str, Any], ...] = ()
    mtime: float | None = None  # when the log was last written


def log_path(job: Path | str) -> str:
    """The log of the job named ``job``."""
    return f"{job}{LOG_SUFFIX}"


def stdout_path(job: Path | str) -> str:
    """Where the command of the job named ``job`` writes its standard output."""
    return f"{job}{STDOUT_SUFFIX}"


def stderr_path(job: Path | str) -> str:
    """Where the command of the job named ``job`` writes its standard error."""
    return f"{job}{STDERR_SUFFIX}"


def read_log(job: Path | str) -> JobLog:
    """Parse the log of ``job`` (an absent or unreadable log is an empty one).

    Only whole lines count: an unfinished last line, or a line that is not a JSON object
    (what remains of one cut short, with a later line appended), is left out.
    """
    try:
        with open(log_path(job), "rb") as handle:
            raw = handle.read()
            mtime = os.fstat(handle.fileno()).st_mtime
    except OSError:
        return JobLog()
    record: JobRecord | None = None
    exit_code: int | None = None
    notes: list[dict[str, Any]] = []
    for line in raw.split(b"\n")[:-1]:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        if "pid" in data:
            record = record or JobRecord.from_json(data)
        elif "exit" in data:
            if exit_code is None and isinstance(data["exit"], int):
                exit_code = data["exit"]
        else:
            notes.append(data)
    return JobLog(record, exit_code, tuple(notes), mtime)


def append_note(job: Path | str, note: Mapping[str, Any]) -> None:
    """Append one line to the job's log (created if the job never started); one ``write``."""
    append_line(log_path(job), (json.dumps(note, separators=(",", ":")) + "\n").encode("utf-8"))


@dataclass(frozen=True)
class JobState:
    """A job as seen now.

    ``absent``: never started (safe to start under this name); ``running``: its wrapper is
    alive; ``done``: the command ended with ``exit_code``; ``lost``: started, but the wrapper
    is gone without an exit code (killed, or the machine went down).  ``notes`` are the
    lines appended with ``append_note``, in order.
    """

    state: JobStateName
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    record: JobRecord | None = None
    notes: tuple[dict[str, Any], ...] = ()


def job_mark(job: Path | str) -> str:
    """A token derived from the job's name, stable across restarts (e.g. to name its container)."""
    return hashlib.sha1(str(job).encode("utf-8")).hexdigest()[:20]


def _done(log: JobLog) -> JobState:
    started = log.record.started if log.record else None
    ended = next((float(n["ended"]) for n in log.notes if isinstance(n.get("ended"), (int, float))), log.mtime)
    if ended is not None and started is not None:
        # File times come from a clock that ticks every few milliseconds: never before the start.
        ended = max(ended, started)
    return JobState("done", log.exit_code, started, ended, log.record, log.notes)


def observe(job: Path | str) -> JobState:
    """Look at a job: absent, running, done or lost (see JobState)."""
    log = read_log(job)
    if log.exit_code is not None:
        return _done(log)
    record = log.record
    if record is None:
        return JobState("absent", notes=log.notes)
    if is_job_wrapper(record.pid, record.mark):
        return JobState("running", None, record.started, None, record, log.notes)
    # It may have written its code between the two looks.
    log = read_log(job)
    if log.exit_code is not None:
        return _done(log)
    return JobState("lost", None, record.started, None, record, log.notes)


# -- /proc ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str


def _read_stat(pid: int) -> _Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain anything, so split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return _Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0].decode())
    except (IndexError, ValueError):
        return None


def is_job_wrapper(pid: int, mark: str) -> bool:
    """True if ``pid`` is the live wrapper of the job marked ``mark`` (zombies are not).

    The wrapper leads its own session and has the mark in its environment; a process that
    got the pid since (the kernel reuses them) has neither, and the job's own processes do
    not lead a session of their own unless they ran setsid.  Without /proc, any live process
    with that pid counts.
    """
    proc = _read_stat(pid)
    if proc is None:
        return not os.path.isdir("/proc/self") and pid_alive(pid)
    return proc.state not in ("Z", "X") and proc.sid == pid and _has_mark(pid, {mark.encode()})


def _all_procs() -> list[_Proc]:
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _read_stat(int(entry))
            if proc is not None:
                procs.append(proc)
    return procs


def _has_mark(pid: int, tokens: set[bytes]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read()
    except OSError:
        return False
    prefix = MARK_ENV.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return not tokens.isdisjoint(item[len(prefix) :].split(b":"))
    return False


def job_processes(records: Sequence[JobRecord], sessions: set[int] | None = None) -> set[int]:
    """Every live process of these jobs: each job's session while its wrapper lives, processes
    carrying its mark, and all their descendants (by parent pid).

    ``sessions`` collects the sessions found trusted, and they stay trusted in later calls
    with the same set: a kill, which takes seconds, must still find the session's processes
    once it has killed the wrapper that leads it.
    """
    if not os.path.isdir("/proc/self"):
        return {r.pid for r in records if is_job_wrapper(r.pid, r.mark)}
    procs = [p for p in _all_procs() if p.state not in ("Z", "X")]
    protected = _ancestors(os.getpid())
    by_pid = {p.pid: p for p in procs}
    # A session id is only trusted while its leader is our wrapper (ids get reused), or for
    # the caller's ``sessions`` (seen led by the wrapper moments ago).
    if sessions is None:
        sessions = set()
    sessions |= {
        r.sid
        for r in records
        if (w := by_pid.get(r.pid)) is not None and w.sid == w.pid and _has_mark(w.pid, {r.mark.encode()})
    }
    tokens = {r.mark.encode() for r in records}
    found: set[int] = set()
    for proc in procs:
        if proc.pid in protected:
            continue
        if proc.sid in sessions or proc.pgid in sessions or _has_mark(proc.pid, tokens):
            found.add(proc.pid)
    children: dict[int, list[int]] = {}
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc.pid)
    queue = list(found)
    while queue:
        for child in children.get(queue.pop(), []):
            if child not in found and child not in protected:
                found.add(child)
                queue.append(child)
    return found


def _ancestors(pid: int) -> set[int]:
    chain = {pid}
    proc = _read_stat(pid)
    while proc is not None and proc.ppid > 1 and proc.ppid not in chain:
        chain.add(proc.ppid)
        proc = _read_stat(proc.ppid)
    return chain


def _signal_all(pids: Iterable[int], sig: int, first: Collection[int] = ()) -> None:
    """Send ``sig`` to ``pids``, those in ``first`` (the jobs' wrappers) before the others:
    a wrapper that outlived its command by a moment would record an exit code for it."""
    for pid in sorted(pids, key=lambda pid: pid not in first):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# -- the runner -------------------------------------------------------------------------------


@dataclass
class _Watch:
    job: Path
    pid: int
    mark: str
    child: bool  # started by this process, so it must be reaped here
    pidfd: int | None


class JobRunner:
    """Starts job processes, adopts those of earlier cwlbridge processes, reports ends.

    ``wait`` blocks until a watched job ends (a pidfd per job in one selector; where pidfds
    do not exist, a short poll), so callers never sleep-poll.  Not thread-safe except ``wake``.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._watched: dict[int, _Watch] = {}  # by pid
        self._jobs: set[Path] = set()
        self._ended: list[Path] = []
        self._bash: str | None = None

    # -- starting ---------------------------------------------------------------------------

    def launch(
        self,
        job: Path,
        command: str,
        *,
        cwd: Path,
        env: Mapping[str, str],
        container: str | None = None,
    ) -> JobRecord:
        """Start ``command`` (bash script text) as the job named ``job``, working in ``cwd``.

        The directory of ``job`` must exist, and the job must have no record yet.  ``container``
        names a container the command starts (``docker run --name …``) so that a kill can stop
        it too.
        """
        job = Path(os.path.abspath(job))
        if "\0" in command:  # bash would drop it silently and run something else
            raise CwlbridgeError(f"the command of the job in {job} contains a NUL character")
        try:
            _write_file(script_path(job), (command + "\n").encode("utf-8", "surrogateescape"))
            for path in (stdout_path(job), stderr_path(job)):  # the wrapper does not truncate them
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_size:
                        os.truncate(path, 0)
        except OSError as exc:
            raise CwlbridgeError(f"cannot write the job's script in {job}: {exc.strerror or exc}") from exc
        mark = secrets.token_hex(10)
        pid, go = self._spawn(job, cwd, env, mark)
        record = JobRecord(pid=pid, pgid=pid, sid=pid, started=time.time(), mark=mark, container=container,
                           command=command)
        try:
            # Truncated: what a launcher killed before "go" left is not a record.
            line = (json.dumps(record.to_json(), separators=(",", ":")) + "\n").encode("utf-8")
            fd = open_empty(log_path(job), os.O_WRONLY | os.O_APPEND)
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(errno.EIO, "the record was written in part")
            finally:
                os.close(fd)
            os.write(go, b"go\n")
        except OSError as exc:  # nothing ran: the wrapper reads end of file and exits
            os.close(go)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            raise CwlbridgeError(f"cannot start the job in {job}: {exc.strerror or exc}") from exc
        except BaseException:
            os.close(go)
            raise
        os.close(go)
        self._add_watch(_Watch(job, pid, mark, True, _pidfd(pid)))
        return record

    def _spawn(self, job: Path, cwd: Path, env: Mapping[str, str], mark: str) -> tuple[int, int]:
        """Start the wrapper of ``job`` in a session of its own; (its pid, the pipe to say "go" on)."""
        if self._bash is None:
            self._bash = shutil.which("bash") or "/bin/bash"
        inherited = env.get(MARK_ENV, "")
        environ = dict(env)
        environ[MARK_ENV] = f"{inherited}:{mark}" if inherited else mark
        go_r, go_w = os.pipe()
        try:
            pid = os.posix_spawn(
                _SH,
                [_SH, "-c", _WRAPPER, _SH, str(job), str(cwd), self._bash],
                environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, go_r, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                ],
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
            )
        except OSError as exc:
            os.close(go_w)
            raise CwlbridgeError(f"cannot start the job in {job}: {exc.strerror or exc}") from exc
        finally:
            os.close(go_r)
        return pid, go_w

    def adopt(self, job: Path, record: JobRecord) -> bool:
        """Watch a job another process started; False if it is not running any more."""
        job = Path(os.path.abspath(job))
        if job in self._jobs:
            return True
        pidfd = _pidfd(record.pid)
        # The pidfd pins the process, so this check cannot race with pid reuse.
        if not is_job_wrapper(record.pid, record.mark):
            if pidfd is not None:
                os.close(pidfd)
            return False
        self._add_watch(_Watch(job, record.pid, record.mark, False, pidfd))
        return True

    def watching(self, job: Path) -> bool:
        """Whether a job's process is watched by this runner."""
        return Path(os.path.abspath(job)) in self._jobs

    def _add_watch(self, watch: _Watch) -> None:
        self._watched[watch.pid] = watch
        self._jobs.add(watch.job)
        if watch.pidfd is not None:
            self._selector.register(watch.pidfd, selectors.EVENT_READ, watch.pid)

    # -- waiting ----------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """How many watched jobs have not been seen to end."""
        return len(self._watched)

    def wake(self) -> None:
        """Make a blocked ``wait`` return (callable from another thread or a signal handler)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def wait(self, timeout: float) -> list[Path]:
        """Block until a watched job ends (or ``wake``, or ``timeout``); the jobs that ended."""
        if not self._ended:
            fallback = [w for w in self._watched.values() if w.pidfd is None]
            limit = min(timeout, 0.05) if fallback else timeout
            for key, _ in self._selector.select(max(0.0, limit)):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError, OSError):
                        os.read(self._wake_r, 4096)
                else:
                    self._check(self._watched.get(key.data))
            for watch in fallback:
                self._check(watch)
        ended, self._ended = self._ended, []
        return ended

    def _check(self, watch: _Watch | None) -> None:
        if watch is None:
            return
        if watch.child:
            try:
                done, _ = os.waitpid(watch.pid, os.WNOHANG)
            except ChildProcessError:
                done = watch.pid
            if done == 0:
                return
        elif is_job_wrapper(watch.pid, watch.mark):
            return
        self._forget(watch)
        self._ended.append(watch.job)

    def _forget(self, watch: _Watch) -> None:
        self._watched.pop(watch.pid, None)
        self._jobs.discard(watch.job)
        if watch.pidfd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(watch.pidfd)
            os.close(watch.pidfd)

    # -- killing ----------------------------------------------------------------------------

    def kill(self, job: Path, *, grace: float = 2.0) -> None:
        """Kill the job's whole process tree (see ``kill_all``)."""
        self.kill_all([job], grace=grace)

    def kill_all(self, jobs: Sequence[Path], *, grace: float = 2.0) -> None:
        """Kill the whole process trees of these jobs: SIGTERM, ``grace`` seconds, SIGKILL.

        Processes are collected before any signal (so none is missed by being re-parented),
        frozen with SIGSTOP before SIGKILL (so none can fork away), and checked to be gone.
        Raises CwlbridgeError naming the pids that survive (e.g. stuck in the kernel).
        """
        records = [r for r in (JobRecord.read(Path(os.path.abspath(d))) for d in jobs) if r is not None]
        if not records:
            return
        for record in records:
            if record.container:
                _stop_container(record.container)

        sessions: set[int] = set()

        def scan() -> set[int]:
            return job_processes(records, sessions)

        wrappers = {r.pid for r in records}
        victims = scan()
        if victims and grace > 0:
            _signal_all(victims, signal.SIGTERM, wrappers)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self._reap_children()
                victims = {pid for pid in victims if _alive_pid(pid)} | scan()
                if not victims:
                    break
                time.sleep(0.02)
        for _ in range(100):
            victims = scan()
            if not victims:
                break
            _signal_all(victims, signal.SIGSTOP)
            # A process forked between the scan and the stop is stopped on the next round.
            if scan() - victims:
                continue
            _signal_all(victims, signal.SIGKILL)  # all stopped: the order no longer matters
            time.sleep(0.01)
            self._reap_children()
        deadline = time.monotonic() + 5.0
        while True:
            self._reap_children()
            left = sorted(pid for pid in scan() | victims if _alive_pid(pid))
            if not left:
                break
            if time.monotonic() > deadline:
                where = ", ".join(str(d) for d in jobs)
                raise CwlbridgeError(f"processes {left} of the job(s) in {where} survived SIGKILL")
            _signal_all(left, signal.SIGKILL)
            time.sleep(0.02)

    def _reap_children(self) -> None:
        for watch in list(self._watched.values()):
            self._check(watch)

    def close(self) -> None:
        """Stop watching; running jobs keep running (a later process can adopt them)."""
        for watch in list(self._watched.values()):
            if watch.pidfd is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(watch.pidfd)
                os.close(watch.pidfd)
        self._watched.clear()
        self._jobs.clear()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._wake_r)
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    fd = open_empty(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _alive_pid(pid: int) -> bool:
    proc = _read_stat(pid)
    return proc is not None and proc.state not in ("Z", "X")


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _stop_container(name: str) -> None:
    for tool in ("docker", "podman"):
        path = shutil.which(tool)
        if path is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [path, "kill", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False
            )
        return
