"""What a run did, from its state alone: figures per task and in total, and a one-file HTML page.

The page is self-contained (inline CSS and SVG, no scripts, nothing fetched): a timeline of
the tasks from their recorded start and end times, coloured by state, and the DAG of the
plan — drawn by Graphviz ``dot`` when it is installed, otherwise by a simple layered layout.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cwlbridge import __version__
from cwlbridge.engine.state import REMOTE_KEY, Event, JobRow, RunInfo, RunState, TaskRow, attempt_dir
from cwlbridge.errors import CwlbridgeError
from cwlbridge.model.plan import Parent, Plan, Task, short_name, to_dot
from cwlbridge.units import human_size

STATE_COLOURS = {
    "waiting": "#e0e0e0",
    "submitted": "#90caf9",
    "running": "#1e88e5",
    "finished": "#43a047",
    "failed": "#e53935",
    "cancelled": "#fb8c00",
    "skipped": "#bdbdbd",
}
_NOT_CREATED = "#ffffff"


def plan_from_json(data: Mapping[str, Any]) -> Plan:
    """Rebuild a Plan (tasks and their parents) from ``Plan.to_json()``; unknown keys are ignored."""
    tasks: list[Task] = []
    for item in data.get("tasks") or []:
        tasks.append(
            Task(
                id=int(item.get("id", len(tasks))),
                name=str(item["name"]),
                step=str(item.get("step", item["name"])),
                path=str(item.get("path", "")),
                type=str(item.get("type", "")),
                in_ds=list(item.get("in_ds") or []),
                secondary_ds=list(item.get("secondary_ds") or []),
                exec=item.get("exec"),
                args=item.get("args"),
                container=item.get("container"),
                use_secrets=bool(item.get("use_secrets", False)),
                output_datasets=list(item.get("output_datasets") or []),
                parents=[Parent(str(p["task"]), str(p.get("link", "processed"))) for p in item.get("parents") or []],
                condition=item.get("condition"),
                in_loop=bool(item.get("in_loop", False)),
            )
        )
    return Plan(outds=str(data.get("outds", "")), tasks=tasks, warnings=list(data.get("warnings") or []))


# -- figures -----------------------------------------------------------------------------------


def run_json(info: RunInfo, now: float) -> dict[str, Any]:
    """The run's part of the ``status --json`` and ``report --json`` documents."""
    return {
        "id": info.id,
        "dir": str(info.run_dir) if info.run_dir else None,
        "chain": info.chain,
        "inputs": info.inputs,
        "outds": info.outds,
        "status": info.effective_status(),
        "recorded_status": info.status,
        "pid": info.pid,
        "host": info.host,
        "created": info.created,
        "started": info.started,
        "ended": info.ended,
        "updated": info.updated,
        "duration": info.duration(now),
        "tasks": {"total": info.tasks_total, "done": info.tasks_done, "failed": info.tasks_failed},
    }


@dataclass
class TaskFigures:
    """One task's line in the report."""

    row: TaskRow
    short: str
    wall: float | None
    attempts: int
    job_attempts: int
    panda: dict[str, Any] | None = None  # what PanDA last said (TaskStatus.remote), for a PanDA task


def _job_runs(job: JobRow) -> int:
    # A backend that does not count tries still ran a job that left "pending" once.
    return max(job.attempts, 0 if job.phase == "pending" else 1)


def task_figures(state: RunState, info: RunInfo, now: float) -> list[TaskFigures]:
    """Per task: wall time, attempts, and job runs over all attempts (jobs and bytes: latest attempt).

    ``now`` ends the clock of tasks that have not ended: ``RunInfo.last_moment()``.
    """
    attempts: dict[str, int] = {}
    for attempt in state.all_attempts():
        attempts[attempt.task] = attempts.get(attempt.task, 0) + 1
    job_runs: dict[str, int] = {}
    for job in state.all_jobs():
        job_runs[job.task] = job_runs.get(job.task, 0) + _job_runs(job)
    remote = state.values(REMOTE_KEY)
    return [
        TaskFigures(
            row=row,
            short=short_name(row.name, info.outds),
            wall=row.elapsed(now),
            attempts=attempts.get(row.name, 0),
            job_attempts=job_runs.get(row.name, 0),
            panda=remote.get(row.name),
        )
        for row in state.tasks()
    ]


def active_seconds(events: Iterable[Event], info: RunInfo, now: float) -> float:
    """How long the run was going: from each start or resume to its stop, gaps left out.

    A stop is the next run status other than "running".  A run that died without one
    (a crash, a SIGKILL) is taken to have gone on until the last thing it recorded before
    it was resumed; one still going counts up to ``now``.
    """
    total = 0.0
    since: float | None = None
    last = 0.0
    for event in events:
        if event.kind == "run" and event.new == "running":
            if since is not None:
                total += max(0.0, last - since)
            since = event.time
        elif event.kind == "run" and since is not None:
            total += max(0.0, event.time - since)
            since = None
        last = max(last, event.time)
    if since is not None:
        total += max(0.0, max(last, now) - since)
    return total if total or since is not None else info.duration(now)


def report_json(
    info: RunInfo, figures: list[TaskFigures], now: float, *, active: float | None = None
) -> dict[str, Any]:
    """The ``report --json`` document (shape in ``cwlbridge.engine.command``).

    ``active``: the run's active time (``active_seconds``), its wall time; by default the
    whole span from start to end.
    """
    tasks = []
    states: dict[str, int] = {}
    for f in figures:
        r = f.row
        states[r.state] = states.get(r.state, 0) + 1
        tasks.append(
            {
                "name": r.name,
                "short": f.short,
                "step": r.step,
                "type": r.type,
                "backend": r.backend,
                "iteration": r.iteration,
                "state": r.state,
                "message": r.message,
                "started": r.started,
                "ended": r.ended,
                "wall": f.wall,
                "attempts": f.attempts,
                "jobs": {"total": r.jobs_total, "done": r.jobs_done, "failed": r.jobs_failed},
                "job_attempts": f.job_attempts,
                "bytes_in": r.bytes_in,
                "bytes_out": r.bytes_out,
                "panda": f.panda,
            }
        )
    totals = {
        "tasks": len(figures),
        "states": states,
        "wall": info.duration(now) if active is None else active,
        "span": info.duration(now),
        "task_time": sum(f.wall or 0.0 for f in figures),
        "attempts": sum(f.attempts for f in figures),
        "jobs": sum(f.row.jobs_total for f in figures),
        "jobs_done": sum(f.row.jobs_done for f in figures),
        "jobs_failed": sum(f.row.jobs_failed for f in figures),
        "job_attempts": sum(f.job_attempts for f in figures),
        "bytes_in": sum(f.row.bytes_in for f in figures),
        "bytes_out": sum(f.row.bytes_out for f in figures),
    }
    return {"run": run_json(info, now), "tasks": tasks, "totals": totals, "generated": time.time()}


# -- formatting --------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """``0.4s``, ``12.3s``, ``3m05s``, ``1h02m``; empty for unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{(whole % 3600) // 60:02d}m"


def format_bytes(count: int) -> str:
    """Bytes as ``data ls`` shows them: ``512 B``, ``29.3 kB``, ``3.21 GB``."""
    return human_size(count)


def format_time(epoch: float | None) -> str:
    """Local time as ``YYYY-MM-DD HH:MM:SS``; empty for unknown."""
    if epoch is None:
        return ""
    return _dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


# -- the timeline ------------------------------------------------------------------------------

_LABEL_W = 260
_CHART_W = 720
_ROW_H = 20
_BAR_H = 12
_TOP = 44
_TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


def _x(text: str) -> str:
    return html.escape(text, quote=True)


def _clock_label(epoch: float, step: float) -> str:
    """A tick's local time: ``12:03:10`` (``12:03:10.5`` below a second's step, ``12:05`` from a minute's)."""
    moment = _dt.datetime.fromtimestamp(epoch)
    if step < 1:
        return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 100000}"
    return moment.strftime("%H:%M" if step >= 60 else "%H:%M:%S")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def gantt_svg(figures: list[TaskFigures], now: float) -> str:
    """Inline SVG: one bar per started task from start to end (or now), ordered by start.

    Tasks that never started are listed below the bars with their state.  Each bar carries
    ``data-task`` and ``data-start`` and a tooltip with its times.
    """
    started = sorted((f for f in figures if f.row.started is not None), key=lambda f: f.row.started or 0.0)
    unstarted = [f for f in figures if f.row.started is None]
    if started:
        t0 = min(f.row.started or 0.0 for f in started)
        t1 = max(f.row.ended if f.row.ended is not None else now for f in started)
    else:
        t0 = t1 = now
    span = max(t1 - t0, 1e-3)
    step = next((s for s in _TICK_STEPS if span / s <= 10), _TICK_STEPS[-1] * max(1, int(span / 432000) + 1))
    rows = len(started) + len(unstarted)
    height = _TOP + rows * _ROW_H + 10
    width = _LABEL_W + _CHART_W + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
    ]
    # The axis is the local clock: ticks at round times (every `step` seconds since the
    # epoch), the day and the first start in the caption, offsets in each bar's tooltip.
    out.append(
        f'<text class="axis" x="{_LABEL_W}" y="12" fill="#333">local time on {_x(format_time(t0)[:10])}'
        f" (first start {_x(format_time(t0)[11:])}, {_x(format_duration(span))} shown)</text>"
        f'<line x1="{_LABEL_W}" y1="{_TOP - 6}" x2="{_LABEL_W + _CHART_W}" y2="{_TOP - 6}" stroke="#999"/>'
    )
    tick = math.ceil(t0 / step - 1e-9) * step
    while tick <= t1 + 1e-9:
        x = _LABEL_W + (tick - t0) / span * _CHART_W
        out.append(
            f'<line x1="{x:.1f}" y1="{_TOP - 9}" x2="{x:.1f}" y2="{height - 10}" stroke="#ddd"/>'
            f'<text class="tick" data-time="{tick:.3f}" x="{x:.1f}" y="{_TOP - 12}" text-anchor="middle"'
            f' fill="#555">{_clock_label(tick, step)}</text>'
        )
        tick += step
    y = _TOP
    for f in started:
        r = f.row
        start = r.started or t0
        end = r.ended if r.ended is not None else now
        x = _LABEL_W + (start - t0) / span * _CHART_W
        w = max(1.5, (end - start) / span * _CHART_W)
        colour = STATE_COLOURS.get(r.state, "#9e9e9e")
        tip = f"{r.name}\n{r.state}, {format_time(start)} → {format_time(r.ended) or 'now'}"
        tip += f" ({format_duration(end - start)})"
        if r.message:
            tip += f"\n{r.message}"
        out.append(f'<text x="{_LABEL_W - 6}" y="{y + _BAR_H - 2}" text-anchor="end">{_x(_clip(f.short, 40))}</text>')
        opacity = ' fill-opacity="0.6"' if r.ended is None else ""
        out.append(
            f'<rect class="bar" data-task="{_x(r.name)}" data-start="{start:.3f}" x="{x:.1f}" y="{y}"'
            f' width="{w:.1f}" height="{_BAR_H}" rx="2" fill="{colour}"{opacity}><title>{_x(tip)}</title></rect>'
        )
        y += _ROW_H
    for f in unstarted:
        out.append(
            f'<text x="{_LABEL_W - 6}" y="{y + _BAR_H - 2}" text-anchor="end" fill="#777">'
            f"{_x(_clip(f.short, 40))}</text>"
            f'<text x="{_LABEL_W + 4}" y="{y + _BAR_H - 2}" fill="#777">{_x(f.row.state)}, never started</text>'
        )
        y += _ROW_H
    out.append("</svg>")
    return "\n".join(out)


# -- the DAG -----------------------------------------------------------------------------------


def plan_states(plan: Plan, rows: Iterable[TaskRow]) -> dict[int, str]:
    """State per plan task id: that of its latest run task (the last loop iteration wins)."""
    states: dict[int, str] = {}
    for row in rows:
        states[row.plan_id] = row.state
    return {t.id: states[t.id] for t in plan.tasks if t.id in states}


def dag_svg(plan: Plan, states: Mapping[int, str]) -> tuple[str, str]:
    """The plan as inline SVG, coloured by state; returns (svg, how it was drawn)."""
    dot = shutil.which("dot")
    if dot is not None:
        svg = _graphviz_svg(dot, plan, states)
        if svg is not None:
            return svg, "Graphviz dot"
    return layered_svg(plan, states), "cwlbridge's layered layout (Graphviz dot is not installed)"


def _graphviz_svg(dot: str, plan: Plan, states: Mapping[int, str]) -> str | None:
    text = to_dot(plan).rstrip().removesuffix("}")
    extra = []
    for task in plan.tasks:
        state = states.get(task.id)
        colour = STATE_COLOURS.get(state, _NOT_CREATED) if state else _NOT_CREATED
        tip = f"{task.name}: {state or 'not created'}".replace("\\", "\\\\").replace('"', '\\"')
        extra.append(f'  t{task.id:03d} [fillcolor="{colour}", tooltip="{tip}"];')
    source = text + "\n".join(extra) + "\n}\n"
    try:
        done = subprocess.run([dot, "-Tsvg"], input=source.encode(), capture_output=True, timeout=120, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    svg = done.stdout.decode("utf-8", errors="replace")
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else None


_NODE_W = 190
_NODE_H = 40
_COL_GAP = 70
_ROW_GAP = 14


def _layers(plan: Plan) -> list[list[Task]]:
    by_name = {t.name: t for t in plan.tasks}
    layer: dict[str, int] = {}
    pending = list(plan.tasks)
    # Kahn-style passes; anything left in a cycle (a malformed plan) goes after the rest.
    while pending:
        progressed = False
        rest = []
        for task in pending:
            parents = [p.task for p in task.parents if p.task in by_name and p.task != task.name]
            if all(p in layer for p in parents):
                layer[task.name] = 1 + max((layer[p] for p in parents), default=-1)
                progressed = True
            else:
                rest.append(task)
        if not progressed:
            bottom = 1 + max(layer.values(), default=-1)
            for task in rest:
                layer[task.name] = bottom
            break
        pending = rest
    columns: list[list[Task]] = [[] for _ in range(1 + max(layer.values(), default=-1))]
    for task in plan.tasks:
        columns[layer[task.name]].append(task)
    position: dict[str, float] = {}
    for column in columns:
        # One barycentre pass keeps children near their parents, which removes most crossings.
        def weight(task: Task) -> float:
            places = [position[p.task] for p in task.parents if p.task in position]
            return sum(places) / len(places) if places else float(task.id)

        column.sort(key=lambda t: (weight(t), t.id))
        for index, task in enumerate(column):
            position[task.name] = float(index)
    return columns


def layered_svg(plan: Plan, states: Mapping[int, str]) -> str:
    """The plan drawn without Graphviz: columns by depth, edges styled by start link."""
    columns = _layers(plan)
    tallest = max((len(c) for c in columns), default=0)
    width = max(1, len(columns)) * (_NODE_W + _COL_GAP) + 20
    height = max(1, tallest) * (_NODE_H + _ROW_GAP) + 20
    where: dict[str, tuple[float, float]] = {}
    for ci, column in enumerate(columns):
        for ri, task in enumerate(column):
            where[task.name] = (10 + ci * (_NODE_W + _COL_GAP), 10 + ri * (_NODE_H + _ROW_GAP))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        '<defs><marker id="cwlbridge-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"'
        ' markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    for task in plan.tasks:
        for parent in task.parents:
            if parent.task not in where:
                continue
            px, py = where[parent.task]
            cx, cy = where[task.name]
            x1, y1 = px + _NODE_W, py + _NODE_H / 2
            x2, y2 = cx, cy + _NODE_H / 2
            mid = (x1 + x2) / 2
            style = {"started": ' stroke-dasharray="5,3"', "failed": ""}.get(parent.link, "")
            colour = "#e53935" if parent.link == "failed" else "#555"
            out.append(
                f'<path d="M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" fill="none"'
                f' stroke="{colour}"{style} marker-end="url(#cwlbridge-arrow)"><title>{_x(parent.link)}</title></path>'
            )
    for task in plan.tasks:
        x, y = where[task.name]
        state = states.get(task.id)
        colour = STATE_COLOURS.get(state, _NOT_CREATED) if state else _NOT_CREATED
        out.append(
            f'<g class="node" data-task="{_x(task.name)}"><title>{_x(task.name)}: {_x(state or "not created")}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{_NODE_W}" height="{_NODE_H}" rx="6" fill="{colour}"'
            f' stroke="#555"/>'
            f'<text x="{x + 8:.1f}" y="{y + 16:.1f}">{_x(_clip(f"{task.id:03d} {task.step}", 30))}</text>'
            f'<text x="{x + 8:.1f}" y="{y + 31:.1f}" fill="#333">{_x(task.type)} · {_x(state or "not created")}</text>'
            "</g>"
        )
    out.append("</svg>")
    return "\n".join(out)


# -- the page ----------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.picture { overflow: auto; border: 1px solid #eee; padding: 4px; }
.state { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 4px; }
.legend span { margin-right: 1em; }
footer { margin-top: 2em; color: #777; font-size: 0.8em; }
"""


def _swatch(state: str) -> str:
    return f'<span class="state" style="background:{STATE_COLOURS.get(state, "#9e9e9e")}"></span>'


def _file_link(path: Path, text: str) -> str:
    return f'<a href="{_x(path.as_uri())}">{_x(text)}</a>'


def _output_cells(info: RunInfo, plan: Plan, figures: list[TaskFigures]) -> dict[str, str]:
    """Per run task: its output datasets, each a link to its folder when the store is local.

    A loop iteration's datasets are the plan's with the iteration's task name put in.
    """
    from cwlbridge.data.datasets import LocalStore, open_store

    by_id = {t.id: t for t in plan.tasks}
    spec = info.options.get("store")
    store: LocalStore | None = None
    if not str(spec or "").startswith("rucio"):
        try:
            opened = open_store(spec, cwd=Path(info.options.get("cwd") or "."))
        except CwlbridgeError:
            opened = None
        store = opened if isinstance(opened, LocalStore) else None
    cells: dict[str, str] = {}
    for f in figures:
        task = by_id.get(f.row.plan_id)
        if task is None:
            continue
        links = []
        for dataset in task.output_datasets:
            name = f.row.name + dataset[len(task.name):] if dataset.startswith(task.name) else dataset
            shown = short_name(name.rstrip("/"), info.outds)
            where = store.dataset_path(name.rstrip("/")) if store is not None else None
            links.append(_file_link(where, shown) if where is not None and where.is_dir() else _x(shown))
        cells[f.row.name] = "<br>".join(links)
    return cells


def html_page(
    info: RunInfo, figures: list[TaskFigures], plan: Plan, now: float, *, active: float | None = None
) -> str:
    """The whole self-contained report page.

    Each task links to its latest attempt's directory (the job logs), or for a PanDA task to
    its page on PanDA's monitor, and to its output datasets' folders in a local store (Rucio
    datasets are named, not linked).
    """
    doc = report_json(info, figures, now, active=active)
    outputs = _output_cells(info, plan, figures)
    run, totals = doc["run"], doc["totals"]
    meta = [
        ("chain", info.chain),
        ("inputs", info.inputs or ""),
        ("outDS", info.outds),
        ("status", run["status"]),
        ("started", format_time(info.started or info.created)),
        ("ended", format_time(info.ended)),
        ("duration", format_duration(run["duration"])),
        ("tasks", f"{info.tasks_done}/{info.tasks_total} done, {info.tasks_failed} failed"),
        ("run directory", str(info.run_dir or "")),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>cwlbridge run {_x(info.id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Run {_x(info.id)} — {_x(info.outds)}</h1>",
        "<table class=\"meta\">",
        *(f"<tr><th>{_x(k)}</th><td>{_x(v)}</td></tr>" for k, v in meta),
        "</table>",
        "<h2>Totals</h2><table class=\"totals\">",
        f"<tr><th>tasks</th><td>{totals['tasks']} ("
        + ", ".join(f"{_swatch(s)}{_x(s)} {n}" for s, n in sorted(totals["states"].items()))
        + ")</td></tr>",
        f"<tr><th>wall time of the run</th><td>{format_duration(totals['wall'])} while it ran"
        f" ({format_duration(totals['span'])} from start to end)</td></tr>",
        f"<tr><th>sum of task wall times</th><td>{format_duration(totals['task_time'])}</td></tr>",
        f"<tr><th>task attempts</th><td>{totals['attempts']}</td></tr>",
        f"<tr><th>jobs</th><td>{totals['jobs_done']}/{totals['jobs']} done, {totals['jobs_failed']} failed,"
        f" {totals['job_attempts']} job runs</td></tr>",
        f"<tr><th>bytes in / out</th><td>{format_bytes(totals['bytes_in'])} / {format_bytes(totals['bytes_out'])}"
        "</td></tr>",
        "</table>",
        "<h2>Timeline</h2>",
        '<p class="legend">' + "".join(f"<span>{_swatch(s)}{s}</span>" for s in STATE_COLOURS) + "</p>",
        f'<div class="picture">{gantt_svg(figures, now)}</div>',
        "<h2>Tasks</h2>",
        '<table class="tasks"><tr><th>task</th><th>type</th><th>backend</th><th>state</th><th>started</th>'
        "<th>wall</th><th>attempts</th><th>jobs done/total</th><th>job runs</th><th>in</th><th>out</th>"
        "<th>logs</th><th>output datasets</th><th>message</th></tr>",
    ]
    for f in figures:
        r = f.row
        logs = ""
        if r.attempt and info.run_dir is not None:
            folder = attempt_dir(Path(info.run_dir), r.name, r.attempt)
            logs = _file_link(folder, f"attempt {r.attempt}") if folder.is_dir() else ""
        if f.panda:  # a PanDA task's logs are on PanDA's monitor
            link = str(f.panda.get("link", ""))
            logs += f' <a href="{_x(link)}">jediTaskID {_x(str(f.panda.get("jediTaskID", "")))}</a>'
        parts.append(
            f'<tr><td title="{_x(r.name)}">{_x(f.short)}</td><td>{_x(r.type)}</td><td>{_x(r.backend)}</td>'
            f"<td>{_swatch(r.state)}{_x(r.state)}</td><td>{format_time(r.started)}</td>"
            f'<td class="num">{format_duration(f.wall)}</td><td class="num">{f.attempts}</td>'
            f'<td class="num">{r.jobs_done}/{r.jobs_total}</td><td class="num">{f.job_attempts}</td>'
            f'<td class="num">{format_bytes(r.bytes_in)}</td><td class="num">{format_bytes(r.bytes_out)}</td>'
            f'<td>{logs}</td><td class="datasets">{outputs.get(r.name, "")}</td><td>{_x(r.message)}</td></tr>'
        )
    parts.append("</table>")
    parts.append("<h2>Graph</h2>")
    if plan.tasks:
        svg, how = dag_svg(plan, plan_states(plan, (f.row for f in figures)))
        parts.append(f"<p>Drawn by {_x(how)}; boxes coloured by the state of each task.</p>")
        parts.append(f'<div class="picture">{svg}</div>')
    else:
        parts.append("<p>This run recorded no plan.</p>")
    parts.append(f"<footer>cwlbridge {__version__}, report made {format_time(time.time())}</footer>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
