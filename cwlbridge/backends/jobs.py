"""Job processes that outlive cwlbridge: start them, adopt them, wait for them, kill them.

A job runs in its own session (process group and session id = the wrapper's pid) through a
tiny ``/bin/sh`` wrapper.  The wrapper waits for a go-ahead on a pipe, so the command never
runs before ``job.json`` records it: if cwlbridge dies in between, the wrapper reads end of
file and exits without running anything.  It then runs the command with ``/bin/sh -c`` (as
prun's job wrapper does with ``os.system``), stdout/stderr sent to files, and writes the exit
code when the command ends.  Because the
job is not in cwlbridge's process group, Ctrl-C and SIGKILL of cwlbridge leave it running, and
a later cwlbridge can adopt it from the files alone.

A job directory holds (nothing else is written there):

- ``job.json``: pid, pgid, sid, ``start_ticks`` (field 22 of /proc/<pid>/stat, to tell a
  reused pid apart), ``started`` (epoch seconds), ``mark``, a container name if any, and the
  command (``/bin/sh`` text)
- ``stdout``, ``stderr``: the command's output
- ``exit_code``: ``"<code>\\n"``, present once the command ended

The exit code is written with one shell redirection rather than tmp + ``mv``: ``mv`` is a
fork and exec per job (about 1.5 ms here), and a two-to-four byte ``write`` is never split,
so the only in-between state is an empty file.  Readers take the file as written only when
it ends with a newline; an empty file whose wrapper is gone means the wrapper was killed
while writing, which is a lost attempt like any other kill.

Every process of a job carries ``CWLBRIDGE_JOB_MARK`` in its environment (a job started
inside a job appends its own token), so a kill finds descendants that left the session or
were re-parented to init, also after cwlbridge restarted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from cwlbridge.errors import CwlbridgeError

#: Environment variable holding the job tokens of every process of a job (":"-separated).
MARK_ENV = "CWLBRIDGE_JOB_MARK"

RECORD_FILE = "job.json"
STDOUT_FILE = "stdout"
STDERR_FILE = "stderr"
EXIT_FILE = "exit_code"

#: Linux refuses a single argument longer than 128 KiB (MAX_ARG_STRLEN).
MAX_COMMAND_BYTES = 120 * 1024
#: The wrapper exits with this without running anything when cwlbridge died before go.
NOT_STARTED_EXIT = 111

_SH = "/bin/sh"
# $1: job directory, $2: working directory, $3: the command.
_WRAPPER = (
    "IFS= read -r __cwlb_go || :\n"
    f'[ "$__cwlb_go" = go ] || exit {NOT_STARTED_EXIT}\n'
    "__cwlb_dir=$1\n"
    'cd "$2" || { printf "127\\n" >"$__cwlb_dir/exit_code"; exit 0; }\n'
    '/bin/sh -c "$3" </dev/null >"$__cwlb_dir/stdout" 2>"$__cwlb_dir/stderr"\n'
    'printf "%d\\n" "$?" >"$__cwlb_dir/exit_code"\n'
)

JobStateName = Literal["absent", "running", "done", "lost"]


@dataclass(frozen=True)
class JobRecord:
    """What ``job.json`` says about a started job."""

    pid: int
    pgid: int
    sid: int
    start_ticks: int
    started: float
    mark: str
    container: str | None = None
    command: str = ""

    @classmethod
    def read(cls, job_dir: Path) -> JobRecord | None:
        """The record in ``job_dir``, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads((job_dir / RECORD_FILE).read_text(encoding="utf-8"))
            return cls(
                pid=int(data["pid"]),
                pgid=int(data["pgid"]),
                sid=int(data["sid"]),
                start_ticks=int(data["start_ticks"]),
                started=float(data["started"]),
                mark=str(data["mark"]),
                container=data.get("container") or None,
                command=str(data.get("command") or ""),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class JobState:
    """A job directory as seen now.

    ``absent``: never started (safe to start in this directory); ``running``: its wrapper is
    alive; ``done``: the command ended with ``exit_code``; ``lost``: started, but the wrapper
    is gone without an exit code (killed, or the machine went down).
    """

    state: JobStateName
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    record: JobRecord | None = None


def job_mark(job_dir: Path) -> str:
    """The token that marks the processes of the job in ``job_dir`` (stable across restarts)."""
    return hashlib.sha1(str(job_dir).encode("utf-8")).hexdigest()[:20]


def read_exit_code(job_dir: Path) -> tuple[int, float] | None:
    """(exit code, time written) once the wrapper wrote a complete exit code, else None."""
    path = job_dir / EXIT_FILE
    try:
        with open(path, "rb") as handle:
            text = handle.read(32)
            ended = os.fstat(handle.fileno()).st_mtime
    except OSError:
        return None
    if not text.endswith(b"\n"):
        return None
    try:
        return int(text), ended
    except ValueError:
        return None


def observe(job_dir: Path) -> JobState:
    """Look at a job directory: absent, running, done or lost (see JobState)."""
    finished = read_exit_code(job_dir)
    record = JobRecord.read(job_dir)
    started = record.started if record else None
    if finished is not None:
        return JobState("done", finished[0], started, finished[1], record)
    if record is None:
        return JobState("absent")
    if process_alive(record.pid, record.start_ticks):
        return JobState("running", None, started, None, record)
    # It may have written its code between the two looks.
    finished = read_exit_code(job_dir)
    if finished is not None:
        return JobState("done", finished[0], started, finished[1], record)
    return JobState("lost", None, started, None, record)


# -- /proc ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start_ticks: int


def _read_stat(pid: int) -> _Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain anything, so split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return _Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0].decode(), int(fields[19]))
    except (IndexError, ValueError):
        return None


def process_start_ticks(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (0 where /proc is not available)."""
    proc = _read_stat(pid)
    return proc.start_ticks if proc is not None else 0


def process_alive(pid: int, start_ticks: int) -> bool:
    """True if ``pid`` runs and is the process that started at ``start_ticks`` (zombies are not)."""
    proc = _read_stat(pid)
    if proc is None:
        if os.path.isdir("/proc/self"):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return proc.state not in ("Z", "X") and (start_ticks == 0 or proc.start_ticks == start_ticks)


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


def job_processes(records: Sequence[JobRecord]) -> set[int]:
    """Every live process of these jobs: each job's session while its wrapper lives, processes
    carrying its mark, and all their descendants (by parent pid)."""
    if not os.path.isdir("/proc/self"):
        return {r.pid for r in records if process_alive(r.pid, r.start_ticks)}
    procs = [p for p in _all_procs() if p.state not in ("Z", "X")]
    protected = _ancestors(os.getpid())
    by_pid = {p.pid: p for p in procs}
    # A session id is only trusted while its leader is our wrapper (ids get reused).
    sessions = {r.sid for r in records if (w := by_pid.get(r.pid)) is not None and w.start_ticks == r.start_ticks}
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


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# -- the runner -------------------------------------------------------------------------------


@dataclass
class _Watch:
    job_dir: Path
    pid: int
    start_ticks: int
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
        self._dirs: set[Path] = set()
        self._ended: list[Path] = []

    # -- starting ---------------------------------------------------------------------------

    def launch(
        self,
        job_dir: Path,
        command: str,
        *,
        cwd: Path,
        env: Mapping[str, str],
        container: str | None = None,
    ) -> JobRecord:
        """Start ``command`` (shell text) for the job in ``job_dir``, working in ``cwd``.

        ``job_dir`` must exist and hold no record yet.  ``container`` names a container the
        command starts (``docker run --name …``) so that a kill can stop it too.
        """
        job_dir = Path(os.path.abspath(job_dir))
        if len(command.encode("utf-8")) > MAX_COMMAND_BYTES:
            raise CwlbridgeError(
                f"the command of the job in {job_dir} is {len(command)} characters long;"
                f" at most {MAX_COMMAND_BYTES} fit on one command line"
            )
        mark = job_mark(job_dir)
        inherited = env.get(MARK_ENV, "")
        environ = dict(env)
        environ[MARK_ENV] = f"{inherited}:{mark}" if inherited else mark
        go_r, go_w = os.pipe()
        try:
            pid = os.posix_spawn(
                _SH,
                [_SH, "-c", _WRAPPER, "sh", str(job_dir), str(cwd), command],
                environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, go_r, 0),
                    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                ],
                setsid=True,
            )
        except OSError as exc:
            os.close(go_w)
            raise CwlbridgeError(f"cannot start a job in {job_dir}: {exc.strerror or exc}") from exc
        finally:
            os.close(go_r)
        try:
            record = JobRecord(
                pid=pid, pgid=pid, sid=pid, start_ticks=process_start_ticks(pid), started=time.time(),
                mark=mark, container=container, command=command,
            )  # fmt: skip
            _write_json_atomic(job_dir / RECORD_FILE, asdict(record))
        except OSError as exc:
            # No go-ahead: the wrapper reads end of file and exits without running the command.
            os.close(go_w)
            os.waitpid(pid, 0)
            raise CwlbridgeError(f"cannot record the job in {job_dir}: {exc.strerror or exc}") from exc
        try:
            os.write(go_w, b"go\n")
        finally:
            os.close(go_w)
        self._add_watch(_Watch(job_dir, pid, record.start_ticks, True, _pidfd(pid)))
        return record

    def adopt(self, job_dir: Path, record: JobRecord) -> bool:
        """Watch a job another process started; False if it is not running any more."""
        job_dir = Path(os.path.abspath(job_dir))
        if job_dir in self._dirs:
            return True
        pidfd = _pidfd(record.pid)
        # The pidfd pins the process, so this check cannot race with pid reuse.
        if not process_alive(record.pid, record.start_ticks):
            if pidfd is not None:
                os.close(pidfd)
            return False
        self._add_watch(_Watch(job_dir, record.pid, record.start_ticks, False, pidfd))
        return True

    def watching(self, job_dir: Path) -> bool:
        """Whether a job directory's process is watched by this runner."""
        return Path(os.path.abspath(job_dir)) in self._dirs

    def _add_watch(self, watch: _Watch) -> None:
        self._watched[watch.pid] = watch
        self._dirs.add(watch.job_dir)
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
        """Block until a watched job ends (or ``wake``, or ``timeout``); the ended job dirs."""
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
        elif process_alive(watch.pid, watch.start_ticks):
            return
        self._forget(watch)
        self._ended.append(watch.job_dir)

    def _forget(self, watch: _Watch) -> None:
        self._watched.pop(watch.pid, None)
        self._dirs.discard(watch.job_dir)
        if watch.pidfd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(watch.pidfd)
            os.close(watch.pidfd)

    # -- killing ----------------------------------------------------------------------------

    def kill(self, job_dir: Path, *, grace: float = 2.0) -> None:
        """Kill the job's whole process tree (see ``kill_all``)."""
        self.kill_all([job_dir], grace=grace)

    def kill_all(self, job_dirs: Sequence[Path], *, grace: float = 2.0) -> None:
        """Kill the whole process trees of these jobs: SIGTERM, ``grace`` seconds, SIGKILL.

        Processes are collected before any signal (so none is missed by being re-parented),
        frozen with SIGSTOP before SIGKILL (so none can fork away), and checked to be gone.
        Raises CwlbridgeError naming the pids that survive (e.g. stuck in the kernel).
        """
        records = [r for r in (JobRecord.read(Path(os.path.abspath(d))) for d in job_dirs) if r is not None]
        if not records:
            return
        for record in records:
            if record.container:
                _stop_container(record.container)

        def scan() -> set[int]:
            return job_processes(records)

        victims = scan()
        if victims and grace > 0:
            _signal_all(victims, signal.SIGTERM)
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
            _signal_all(victims, signal.SIGKILL)
            time.sleep(0.01)
            self._reap_children()
        deadline = time.monotonic() + 5.0
        while True:
            self._reap_children()
            left = sorted(pid for pid in scan() | victims if _alive_pid(pid))
            if not left:
                break
            if time.monotonic() > deadline:
                where = ", ".join(str(d) for d in job_dirs)
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
        self._dirs.clear()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._wake_r)
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
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


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)
