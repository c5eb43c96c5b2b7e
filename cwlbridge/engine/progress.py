"""What a running chain shows: a live table on a terminal, timestamped lines in a pipe, or nothing."""

from __future__ import annotations

import datetime as _dt
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, Protocol

from cwlbridge.engine.scheduler import DONE_STATES, IN_FLIGHT, Node
from cwlbridge.model.plan import short_name

_STYLE = {
    "waiting": "dim",
    "submitted": "cyan",
    "running": "bold cyan",
    "finished": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "skipped": "dim",
}


class Progress(Protocol):
    def start(self, nodes: Mapping[str, Node]) -> None: ...
    def update(self, node: Node) -> None: ...
    def say(self, message: str) -> None: ...
    def stop(self) -> None: ...


def _elapsed(node: Node, now: float) -> str:
    if node.started is None:
        return ""
    seconds = (node.ended or now) - node.started
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _jobs(node: Node) -> str:
    return f"{node.jobs_done}/{node.jobs_total}" if node.jobs_total else ""


class QuietProgress:
    """``--quiet``: nothing but errors (the summary is printed by the caller)."""

    def start(self, nodes: Mapping[str, Node]) -> None:
        pass

    def update(self, node: Node) -> None:
        pass

    def say(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


class LineProgress:
    """One timestamped line per change of a task's state (pipes, CI logs)."""

    def __init__(self, outds: str, stream: IO[str] | None = None) -> None:
        self.outds = outds
        self.stream = stream or sys.stdout
        self._last: dict[str, tuple[str, str]] = {}

    def _write(self, text: str) -> None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%H:%M:%SZ")
        self.stream.write(f"{stamp} {text}\n")
        self.stream.flush()

    def start(self, nodes: Mapping[str, Node]) -> None:
        for node in nodes.values():
            if node.state != "waiting":
                self._last[node.task.name] = (node.state, _jobs(node))

    def update(self, node: Node) -> None:
        seen = (node.state, _jobs(node))
        if self._last.get(node.task.name) == seen:
            return
        first_jobs = node.state == "running" and self._last.get(node.task.name, ("",))[0] != "running"
        self._last[node.task.name] = seen
        if node.state == "running" and not first_jobs and node.jobs_done < node.jobs_total:
            return  # job counts are shown on state changes only: a pipe is not a terminal
        parts = [f"{short_name(node.task.name, self.outds)}", node.backend, node.state]
        if node.jobs_total:
            parts.append(f"jobs {_jobs(node)}")
        if node.state in DONE_STATES and node.started is not None:
            parts.append(_elapsed(node, time.time()))
        if node.message and node.state in ("failed", "skipped", "cancelled"):
            parts.append(f"({node.message})")
        self._write("  ".join(parts))

    def say(self, message: str) -> None:
        self._write(message)

    def stop(self) -> None:
        pass


class LiveProgress:
    """A table redrawn in place: task, backend, state, jobs done/total, elapsed."""

    def __init__(self, outds: str) -> None:
        from rich.console import Console
        from rich.live import Live

        self.outds = outds
        self.console = Console(stderr=False)
        self.nodes: Mapping[str, Node] = {}
        self.live = Live(console=self.console, get_renderable=self._table, refresh_per_second=4, transient=False)

    def _table(self) -> Any:
        from rich.table import Table

        now = time.time()
        nodes = list(self.nodes.values())
        height = max(self.console.size.height - 6, 5)
        counts: dict[str, int] = {}
        for node in nodes:
            counts[node.state] = counts.get(node.state, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        table = Table(title=f"{self.outds}: {len(nodes)} task(s) — {summary}", expand=False)
        for column in ("task", "backend", "state", "jobs", "elapsed"):
            table.add_column(column)
        shown = nodes
        if len(nodes) > height:
            # Too many to show: what runs first, then what ended last, then what waits.
            active = [n for n in nodes if n.state in IN_FLIGHT]
            ended = sorted((n for n in nodes if n.state in DONE_STATES), key=lambda n: n.ended or 0, reverse=True)
            waiting = [n for n in nodes if n.state == "waiting"]
            shown = (active + ended + waiting)[:height]
        for node in shown:
            style = _STYLE.get(node.state, "")
            table.add_row(
                short_name(node.task.name, self.outds),
                node.backend,
                f"[{style}]{node.state}[/]",
                _jobs(node),
                _elapsed(node, now),
            )
        return table

    def start(self, nodes: Mapping[str, Node]) -> None:
        self.nodes = nodes
        self.live.start()

    def update(self, node: Node) -> None:
        pass  # the table is redrawn from the nodes themselves

    def say(self, message: str) -> None:
        self.live.console.print(message)

    def stop(self) -> None:
        self.live.stop()


def choose_progress(outds: str, *, quiet: bool, stream: IO[str] | None = None) -> Progress:
    """Live table on a terminal, lines otherwise, nothing with ``--quiet``."""
    if quiet:
        return QuietProgress()
    out = stream or sys.stdout
    if out.isatty():
        return LiveProgress(outds)
    return LineProgress(outds, out)
