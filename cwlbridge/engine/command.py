"""``cwlbridge runs``, ``status``, ``logs`` and ``report``: read a run's state, never change it.

They open the state read-only, so they work while a run writes to it and after it ended.

``status --json`` prints::

    {"run": RUN, "tasks": [{"name", "short", "step", "type", "backend", "plan_id", "iteration",
      "loop", "state", "attempt", "handle", "message", "started", "ended", "elapsed",
      "jobs": {"total", "done", "failed", "running"}, "bytes_in", "bytes_out", "panda"}, …]}

``report --json`` prints::

    {"run": RUN, "generated": time,
     "tasks": [{"name", "short", "step", "type", "backend", "iteration", "state", "message",
       "started", "ended", "wall", "attempts", "jobs": {"total", "done", "failed"},
       "job_attempts", "bytes_in", "bytes_out", "panda"}, …],
     "totals": {"tasks", "states": {state: count}, "wall", "task_time", "attempts", "jobs",
       "jobs_done", "jobs_failed", "job_attempts", "bytes_in", "bytes_out"}}

with ``RUN = {"id", "dir", "chain", "inputs", "outds", "status", "recorded_status", "pid",
"host", "created", "started", "ended", "updated", "duration", "tasks": {"total", "done",
"failed"}}``.  Times are epoch seconds (float) or null, durations seconds; ``status`` is
"interrupted" for a run recorded as running whose process is gone from this host, and
``recorded_status`` is what the state file says.  Task jobs and bytes are those of the latest
attempt; ``attempts`` counts task attempts, ``job_attempts`` every job run of every attempt.
``panda`` is null for a task that is not on PanDA, else ``{"jediTaskID", "status" (JEDI's),
"files": {"total", "done", "failed"} or null, "link", "note"}`` as of the run's last poll.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cwlbridge.engine.state import REMOTE_KEY
from cwlbridge.errors import EXIT_OK, CwlbridgeError, UsageError

#: Names of the files ``logs`` prints: stdout files (and the reana backend's ``*.log``), or stderr.
LOG_STDOUT, LOG_STDERR = "stdout", "stderr"


class TaskNotFoundError(UsageError):
    """No task, or more than one, matches what the user named (a usage error: exit 2)."""


class LogsNotFoundError(CwlbridgeError):
    """A task attempt has no log files (yet)."""


def register(subparsers: Any) -> None:
    """Add ``runs``, ``status``, ``logs`` and ``report``."""
    base_help = "directory holding .cwlbridge/runs (default: the current directory)"

    runs = subparsers.add_parser("runs", help="list the recorded runs", description="List the runs under --base.")
    runs.add_argument("--json", action="store_true", help="machine-readable output")
    runs.add_argument("--base", metavar="DIR", default=".", help=base_help)
    runs.set_defaults(handler=run_runs)

    status = subparsers.add_parser(
        "status",
        help="show the tasks of a run",
        description="Per task: state, backend, attempt, jobs done/total, elapsed time. Works while the run goes on.",
    )
    status.add_argument(
        "run", metavar="RUN", nargs="?", help="run id, a unique prefix, or its directory (default: latest)"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--base", metavar="DIR", default=".", help=base_help)
    status.set_defaults(handler=run_status)

    logs = subparsers.add_parser(
        "logs",
        help="print the job logs of a task",
        description="Print the stdout (or stderr) files of a task's jobs, each after a '==> FILE <==' line."
        " With one name, TASK is looked up in the latest run (as `status` picks it).",
    )
    logs.add_argument(
        "run", metavar="RUN", nargs="?", help="run id, a unique prefix, or its directory (default: latest)"
    )
    logs.add_argument("task", metavar="TASK", help="full task name, name without the outDS prefix, or step name")
    logs.add_argument("--job", type=int, metavar="N", help="only job N (the number in its directory name)")
    logs.add_argument("--attempt", type=int, metavar="N", help="task attempt (default: the latest)")
    logs.add_argument("--stderr", action="store_true", help="print stderr instead of stdout")
    logs.add_argument("--base", metavar="DIR", default=".", help=base_help)
    logs.set_defaults(handler=run_logs)

    report = subparsers.add_parser(
        "report",
        help="wall time, jobs, attempts and bytes of a run",
        description="Per-task and total figures of a run; --html writes a self-contained page with a"
        " timeline and the DAG.",
    )
    report.add_argument(
        "run", metavar="RUN", nargs="?", help="run id, a unique prefix, or its directory (default: latest)"
    )
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.add_argument("--html", metavar="FILE", help="write an HTML report to FILE")
    report.add_argument("--base", metavar="DIR", default=".", help=base_help)
    report.set_defaults(handler=run_report)


# -- tables ------------------------------------------------------------------------------------


_STATE_STYLES = {
    "running": "bold cyan",
    "submitted": "cyan",
    "finished": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "interrupted": "yellow",
    "skipped": "dim",
    "waiting": "dim",
    "unreadable": "red",
}


def print_table(
    title: str | None,
    headers: list[str],
    rows: list[list[str]],
    right: frozenset[int],
    *,
    wrap: frozenset[int] = frozenset(),
    state: int | None = None,
) -> None:
    """A table on stdout: rich on a terminal, plain aligned columns otherwise.

    Counts such as jobs and tasks are shown as done/total.  On a terminal only the ``wrap``
    columns (free text such as paths and messages) may fold; the ``state`` column is coloured.
    """
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        console = Console()
        if title:
            console.print(Text(title))
        table = Table(show_edge=False, header_style="bold")
        for index, header in enumerate(headers):
            table.add_column(
                header,
                justify="right" if index in right else "left",
                no_wrap=index not in wrap,
                overflow="ellipsis" if index in wrap else "fold",
            )
        for row in rows:
            styled = [Text(cell, style=_STATE_STYLES.get(cell, "") if i == state else "") for i, cell in enumerate(row)]
            table.add_row(*styled)
        console.print(table)
        return
    if title:
        sys.stdout.write(title + "\n")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        sys.stdout.write("  ".join(cells).rstrip() + "\n")


def _open(ref: str | None, base: str) -> Any:
    from cwlbridge.engine.state import RunState, find_run

    return RunState.open(find_run(ref, Path(base).resolve()), readonly=True)


def _shown_path(path: str) -> str:
    """A recorded path relative to the current directory when it lies below it."""
    if not os.path.isabs(path):
        return path
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _write_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


# -- runs --------------------------------------------------------------------------------------


def run_runs(args: argparse.Namespace) -> int:
    from cwlbridge.engine.report import format_duration, format_time
    from cwlbridge.engine.state import RUNS_DIR, list_runs

    infos = list_runs(Path(args.base))
    if args.json:
        from cwlbridge.engine.report import run_json

        now = time.time()
        _write_json(
            [
                {"id": info.id, "status": "unreadable", "error": info.error} if info.error
                else run_json(info, info.last_moment(now))
                for info in infos
            ]
        )
        return EXIT_OK
    if not infos:
        sys.stderr.write(f"no runs under {Path(args.base) / RUNS_DIR}\n")
        return EXIT_OK
    now = time.time()
    rows = []
    for info in infos:
        if info.error:
            rows.append([info.id, "?", "?", "unreadable", "", "", ""])
            continue
        tasks = f"{info.tasks_done}/{info.tasks_total}"
        if info.tasks_failed:
            tasks += f" ({info.tasks_failed} failed)"
        rows.append(
            [
                info.id, _shown_path(info.chain), info.outds, info.effective_status(),
                format_time(info.started or info.created), format_duration(info.duration(now)), tasks,
            ]
        )
    print_table(
        None, ["run", "chain", "outds", "status", "started", "duration", "tasks"], rows,
        frozenset({5}), wrap=frozenset({1}), state=3,
    )
    for info in infos:
        if info.error:
            sys.stderr.write(f"run {info.id}: {info.error}\n")
    return EXIT_OK


# -- status ------------------------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
    from cwlbridge.engine.report import format_duration, format_time, run_json
    from cwlbridge.model.plan import short_name

    with _open(args.run, args.base) as state, state.transaction():
        info = state.info(with_plan=False)
        rows = state.tasks()
        remote = state.values(REMOTE_KEY)
    now = info.last_moment(time.time())
    if args.json:
        _write_json(
            {
                "run": run_json(info, now),
                "tasks": [
                    {
                        "name": r.name,
                        "short": short_name(r.name, info.outds),
                        "step": r.step,
                        "type": r.type,
                        "backend": r.backend,
                        "plan_id": r.plan_id,
                        "iteration": r.iteration,
                        "loop": r.loop,
                        "state": r.state,
                        "attempt": r.attempt,
                        "handle": r.handle,
                        "message": r.message,
                        "started": r.started,
                        "ended": r.ended,
                        "elapsed": r.elapsed(now),
                        "jobs": {"total": r.jobs_total, "done": r.jobs_done, "failed": r.jobs_failed,
                                 "running": r.jobs_running},
                        "bytes_in": r.bytes_in,
                        "bytes_out": r.bytes_out,
                        "panda": remote.get(r.name),
                    }
                    for r in rows
                ],
            }
        )
        return EXIT_OK
    title = (
        f"run {info.id}  {info.effective_status()}  {_shown_path(info.chain)} → {info.outds}\n"
        f"started {format_time(info.started or info.created)}, {format_duration(info.duration(now))};"
        f" tasks {info.tasks_done}/{info.tasks_total} done"
        + (f", {info.tasks_failed} failed" if info.tasks_failed else "")
    )
    table = []
    for r in rows:
        jobs = f"{r.jobs_done}/{r.jobs_total}" if r.jobs_total else ""
        if r.jobs_failed:
            jobs += f" ({r.jobs_failed} failed)"
        line = [short_name(r.name, info.outds), r.backend, r.state, str(r.attempt) if r.attempt else "",
                jobs, format_duration(r.elapsed(now)), r.message]
        if remote:
            line[6:6] = panda_cells(remote.get(r.name))
            if r.name in remote:  # the id, status and files have their columns: the link and any note
                note = remote[r.name].get("note")
                line[-1] = remote[r.name]["link"] + (f" — {note}" if note else "")
        table.append(line)
    headers = ["task", "backend", "state", "attempt", "jobs", "elapsed", "message"]
    numeric, wrap = frozenset({3, 5}), frozenset({6})
    if remote:
        headers[6:6] = PANDA_HEADERS
        numeric, wrap = frozenset({3, 5, 6}), frozenset({9})
    print_table(title, headers, table, numeric, wrap=wrap, state=2)
    return EXIT_OK


#: The columns `status` and `report` add for a run with PanDA tasks.
PANDA_HEADERS = ["jediTaskID", "PanDA", "files"]


def panda_cells(remote: dict[str, Any] | None) -> list[str]:
    """A task's jediTaskID, PanDA status and ``done/total (failed)`` files; blanks if not on PanDA."""
    if not remote:
        return ["", "", ""]
    files = remote.get("files") or {}
    shown = f"{files.get('done', 0)}/{files.get('total', 0)}" if files.get("total") else ""
    if files.get("failed"):
        shown += f" ({files['failed']} failed)"
    return [str(remote.get("jediTaskID", "")), str(remote.get("status", "")), shown]



# -- logs --------------------------------------------------------------------------------------


def resolve_task(names: list[tuple[str, str]], outds: str, ref: str) -> str:
    """The full task name for a full name, a name without the outDS prefix, or a unique step name.

    ``names`` holds (task name, step name) pairs.
    """
    from cwlbridge.model.plan import short_name

    for name, _ in names:
        if name == ref:
            return name
    for name, _ in names:
        if short_name(name, outds) == ref:
            return name
    by_step = [name for name, step in names if step == ref]
    if len(by_step) == 1:
        return by_step[0]
    if by_step:
        shown = ", ".join(short_name(n, outds) for n in by_step[:10])
        raise TaskNotFoundError(f"step '{ref}' has {len(by_step)} tasks: {shown}", hint="name one of them")
    raise TaskNotFoundError(f"no task '{ref}' in this run", hint="`cwlbridge status RUN` lists its tasks")


@dataclass(frozen=True)
class LogFile:
    """A log file found in an attempt directory."""

    path: Path
    job: int | None  # the number in the first numbered directory under the attempt dir


_NUMBER = re.compile(r"^\D*(\d+)")  # job-0003, or 000003.1 (job 3, attempt 1)


def find_logs(attempt_dir: Path, *, stderr: bool) -> list[LogFile]:
    """Log files under an attempt directory, by job number then path.

    stdout: a job's ``NNNNNN.A.stdout``, files named ``stdout`` (any extension) and ``*.log``;
    stderr: a job's ``NNNNNN.A.stderr`` and files named ``stderr``.
    """
    from cwlbridge.backends.jobs import STDERR_SUFFIX, STDOUT_SUFFIX

    found: list[LogFile] = []
    for folder, dirs, files in os.walk(attempt_dir):
        dirs.sort()
        for name in files:
            stem = name.split(".", 1)[0]
            job_file = name.endswith((STDOUT_SUFFIX, STDERR_SUFFIX)) and _NUMBER.match(name) is not None
            is_stderr = stem == LOG_STDERR or name.endswith(STDERR_SUFFIX)
            is_stdout = not is_stderr and (stem == LOG_STDOUT or name.endswith((STDOUT_SUFFIX, ".log")))
            if not (is_stderr if stderr else is_stdout):
                continue
            path = Path(folder) / name
            parts = path.relative_to(attempt_dir).parts
            job = None
            for part in parts if job_file else parts[:-1]:
                match = _NUMBER.search(part)
                if match:
                    job = int(match.group(1))
                    break
            found.append(LogFile(path, job))
    found.sort(key=lambda f: (-1 if f.job is None else f.job, str(f.path)))
    return found


def _copy_text(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    last = "\n"
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 16)
            text = decoder.decode(chunk, final=not chunk)
            if text:
                sys.stdout.write(text)
                last = text[-1]
            if not chunk:
                break
    if last != "\n":
        sys.stdout.write("\n")


def run_logs(args: argparse.Namespace) -> int:
    from cwlbridge.engine import state as state_mod
    from cwlbridge.model.plan import short_name

    with _open(args.run, args.base) as state:
        info = state.info(with_plan=False)
        rows = state.tasks()
        name = resolve_task([(r.name, r.step) for r in rows], info.outds, args.task)
        row = state.task(name)
        attempts = [a.attempt for a in state.attempts(name)]
    attempt = args.attempt if args.attempt is not None else row.attempt
    if attempt == 0:
        raise LogsNotFoundError(f"task {name} has not been submitted (state {row.state}): no logs yet")
    if args.attempt is not None and attempt not in attempts:
        shown = ", ".join(map(str, attempts)) or "none"
        raise LogsNotFoundError(f"task {name} has no attempt {attempt} (attempts: {shown})")
    attempt_dir = state_mod.attempt_dir(Path(state.run_dir), name, attempt)
    which = LOG_STDERR if args.stderr else LOG_STDOUT
    if not attempt_dir.is_dir():
        short = short_name(name, info.outds)
        if row.started is None and not row.jobs_total:
            # The backend refused the task before any job ran (its reason is the task's message).
            why = f": {row.message}" if row.message else ""
            raise LogsNotFoundError(f"no job of task {short} ever started (it is {row.state}), so it has no logs{why}")
        raise LogsNotFoundError(f"the logs of attempt {attempt} of {short} are gone: {attempt_dir} does not exist")
    logs = find_logs(attempt_dir, stderr=args.stderr)
    if args.job is not None:
        numbers = sorted({f.job for f in logs if f.job is not None})
        logs = [f for f in logs if f.job == args.job]
        if not logs:
            shown = ", ".join(map(str, numbers)) or "none numbered"
            raise LogsNotFoundError(
                f"no {which} file of job {args.job} in {attempt_dir} (jobs with {which} files: {shown})"
            )
    if not logs:
        looked = "files named stderr" if args.stderr else "files named stdout or *.log"
        raise LogsNotFoundError(f"no {which} files in {attempt_dir} (looked for {looked})")
    for log in logs:
        job = "" if log.job is None else f" (job {log.job})"
        sys.stdout.write(f"==> {log.path}{job} <==\n")
        _copy_text(log.path)
    return EXIT_OK


# -- report ------------------------------------------------------------------------------------


def run_report(args: argparse.Namespace) -> int:
    from cwlbridge.engine import report as rep

    with _open(args.run, args.base) as state, state.transaction():
        info = state.info()
        now = info.last_moment(time.time())
        figures = rep.task_figures(state, info, now)
        active = rep.active_seconds(state.events(), info, now)
    if args.html:
        page = rep.html_page(info, figures, rep.plan_from_json(info.plan), now, active=active)
        try:
            Path(args.html).write_text(page, encoding="utf-8")
        except OSError as err:
            raise CwlbridgeError(f"cannot write {args.html}: {err.strerror or err}") from None
        sys.stderr.write(f"wrote {args.html}\n")
    if args.json:
        _write_json(rep.report_json(info, figures, now, active=active))
    elif not args.html:
        doc = rep.report_json(info, figures, now, active=active)
        rows = [
            [
                f.short, f.row.state, rep.format_duration(f.wall), str(f.attempts),
                f"{f.row.jobs_done}/{f.row.jobs_total}", str(f.job_attempts),
                rep.format_bytes(f.row.bytes_in), rep.format_bytes(f.row.bytes_out),
            ]
            for f in figures
        ]
        t = doc["totals"]
        rows.append(
            [
                "total", f"{info.tasks_done}/{info.tasks_total} done", rep.format_duration(t["task_time"]),
                str(t["attempts"]), f"{t['jobs_done']}/{t['jobs']}", str(t["job_attempts"]),
                rep.format_bytes(t["bytes_in"]), rep.format_bytes(t["bytes_out"]),
            ]
        )
        headers = ["task", "state", "wall", "attempts", "jobs", "job runs", "in", "out"]
        numeric = frozenset({2, 3, 4, 5, 6, 7})
        if any(f.panda for f in figures):  # then the id, status, files and link of each PanDA task
            headers += [*PANDA_HEADERS, "link"]
            numeric |= {8}
            for row, f in zip(rows, figures):
                row += [*panda_cells(f.panda), (f.panda or {}).get("link", "")]
            rows[-1] += ["", "", "", ""]
        title = (
            f"run {info.id}  {info.effective_status()}  {info.outds}: wall time"
            f" {rep.format_duration(doc['totals']['wall'])}"
            + (
                f" (active; {rep.format_duration(doc['totals']['span'])} from start to end)"
                if doc["totals"]["span"] - doc["totals"]["wall"] >= 1
                else ""
            )
        )
        print_table(title, headers, rows, numeric, state=1)
    return EXIT_OK
