"""``cwlbridge runs / status / logs / report`` on a run state written through the RunState API."""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cwlbridge.backends.base import JobInfo
from cwlbridge.engine.report import layered_svg, plan_from_json
from cwlbridge.engine.state import RUNS_DIR, RunState, attempt_dir
from cwlbridge.engine.state import attempt_dir as attempt_dir_of
from tests.cli_run import run_cli

GOLDEN = Path(__file__).parent / "golden" / "scatter-merge.json"
OUTDS = "user.jdoe.example"
SVG = "{http://www.w3.org/2000/svg}"


def full(short: str) -> str:
    return f"{OUTDS}_{short}"


class Clock:
    """The times the state records: a fixed origin in the past plus what the scenario says."""

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.offset = 0.0

    def __call__(self) -> float:
        return self.origin + self.offset


@dataclass
class Scenario:
    base: Path
    run_id: str
    run_dir: Path
    origin: float
    state: RunState  # still open: the "engine" of this run


def write_log(run_dir: Path, task: str, attempt: int, rel: str, text: str) -> Path:
    path = attempt_dir(run_dir, full(task), attempt) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def build_run(base: Path, run_id: str = "20240501-120000-beef") -> Scenario:
    """The scatter-merge chain as the engine would record it, 1000 s ago, with one retry and one failure."""
    plan = json.loads(GOLDEN.read_text())
    origin = time.time() - 1000
    clock = Clock(origin)
    run_dir = base / RUNS_DIR / run_id
    state = RunState.create(
        run_dir, run_id=run_id, chain=Path("workflows/scatter-merge/chain.cwl"),
        inputs=Path("workflows/scatter-merge/inputs.yaml"), outds=OUTDS, options={"jobs": 4}, plan=plan,
        clock=clock,
    )
    backends = {"001_cutflow": "reana"}
    with state.transaction():
        for task in plan["tasks"]:
            short = task["name"][len(OUTDS) + 1 :]
            state.add_task(task["name"], step=task["step"], type=task["type"],
                           backend=backends.get(short, "local"), plan_id=task["id"])

    def at(offset: float) -> None:
        clock.offset = offset

    def submit(short: str, attempt: int, jobs: list[JobInfo]) -> None:
        name = full(short)
        state.begin_attempt(name, attempt, f"{run_id}/{name}/{attempt}")
        state.record_handle(name, attempt, f"h-{short}-{attempt}")
        state.set_task_state(name, "submitted")
        state.update_jobs(name, attempt, jobs)
        state.set_task_state(name, "running")

    def done(short: str, attempt: int, outcome: str, jobs: list[JobInfo], message: str = "") -> None:
        with state.transaction():
            state.update_jobs(full(short), attempt, jobs)
            state.set_task_state(full(short), outcome, message)

    o = origin
    at(0)
    submit("004_skim", 1, [JobInfo(i, "running", 1, started=o) for i in range(2)])
    at(5)
    submit("000_skim", 1, [JobInfo(i, "running", 1, started=o + 5) for i in range(3)])
    at(20)
    submit("001_cutflow", 1, [JobInfo(0, "running", 1, started=o + 20)])
    at(30)
    submit("002_select", 1, [JobInfo(0, "running", 1, started=o + 30)])
    at(40)
    submit("005_cutflow", 1, [JobInfo(0, "running", 1, started=o + 40)])
    at(50)
    done("002_select", 1, "failed", [JobInfo(0, "failed", 1, 1, o + 30, o + 50, bytes_in=1000)], "job 0: exit code 1")
    at(60)
    done("001_cutflow", 1, "finished", [JobInfo(0, "finished", 1, 0, o + 20, o + 60, 2048, 512)])
    at(70)
    state.set_task_state(full("002_select"), "waiting", "retry")
    submit("002_select", 2, [JobInfo(i, "running", 1, started=o + 70) for i in range(2)])
    at(80)
    done("005_cutflow", 1, "failed", [JobInfo(0, "failed", 3, 3, o + 40, o + 80, 500)], "job 0: exit code 3")
    at(90)
    done("004_skim", 1, "finished", [JobInfo(i, "finished", 1, 0, o, o + 90, 10_000, 4_000) for i in range(2)])
    at(100)
    done("000_skim", 1, "finished", [JobInfo(i, "finished", 1, 0, o + 5, o + 100, 10_000, 4_000) for i in range(3)])
    at(110)
    submit("006_select", 1, [JobInfo(i, "pending") for i in range(4)])
    state.update_jobs(
        full("006_select"), 1,
        [
            JobInfo(0, "finished", 1, 0, o + 110, o + 120, 100, 10),
            JobInfo(1, "finished", 1, 0, o + 110, o + 125, 100, 10),
            JobInfo(2, "running", 1, started=o + 115),
            JobInfo(3, "pending"),
        ],
    )
    at(150)
    done(
        "002_select", 2, "finished",
        [
            JobInfo(0, "finished", 1, 0, o + 70, o + 140, 700, 70),
            JobInfo(1, "finished", 2, 0, o + 70, o + 150, 700, 70),
        ],
    )

    write_log(run_dir, "000_skim", 1, "job-0000/stdout", "skim job zero says hello\n")
    write_log(run_dir, "000_skim", 1, "job-0001/stdout", "skim job one\n")
    write_log(run_dir, "000_skim", 1, "job-0001/stderr", "warning from job one\n")
    write_log(run_dir, "000_skim", 1, "job-0002/stdout", "skim job two, no newline at the end")
    write_log(run_dir, "002_select", 1, "job-0000/stdout", "first attempt output\n")
    write_log(run_dir, "002_select", 2, "job-0000/stdout", "second attempt, job 0\n")
    write_log(run_dir, "002_select", 2, "job-0001/stdout", "second attempt, job 1\n")
    write_log(run_dir, "001_cutflow", 1, "reana-workflow.log", "REANA workflow cwlb-cutflow finished\n")
    write_log(run_dir, "001_cutflow", 1, "workspace/out.txt", "not a log\n")
    write_log(run_dir, "005_cutflow", 1, "job-0000/stderr", "Segmentation fault\n")
    return Scenario(base, run_id, run_dir, origin, state)


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    built = build_run(tmp_path)
    yield built
    built.state.close()


def rows_of(text: str) -> dict[str, list[str]]:
    """Plain table rows keyed by their first cell."""
    return {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}


# -- runs --------------------------------------------------------------------------------------


def test_runs_lists_each_run_with_progress(scenario: Scenario) -> None:
    older = build_run(scenario.base, "20240101-080000-0001")
    older.state.set_run_status("finished")
    older.state.close()
    result = run_cli("runs", "--base", str(scenario.base))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["run", "chain", "outds", "status", "started", "duration", "tasks"]
    assert lines[1].startswith("20240101-080000-0001") and lines[2].startswith(scenario.run_id)
    row = rows_of(result.out)[scenario.run_id]
    assert row[1:4] == ["workflows/scatter-merge/chain.cwl", OUTDS, "running"]
    assert result.out.rstrip().endswith("4/7 (1 failed)")
    finished = rows_of(result.out)["20240101-080000-0001"]
    assert finished[3] == "finished" and finished[6] == "2m30s"  # ended at +150 s


def test_runs_with_none_and_with_an_unreadable_one(tmp_path: Path) -> None:
    result = run_cli("runs", "--base", str(tmp_path))
    assert result.code == 0 and "no runs under" in result.err
    broken = tmp_path / RUNS_DIR / "20240101-000000-dead"
    broken.mkdir(parents=True)
    (broken / "state.sqlite").write_bytes(b"garbage" * 200)
    result = run_cli("runs", "--base", str(tmp_path))
    assert result.code == 0
    assert "unreadable" in rows_of(result.out)["20240101-000000-dead"]
    assert "not a readable run state" in result.err


# -- status ------------------------------------------------------------------------------------


def test_status_table_while_the_run_writes(scenario: Scenario) -> None:
    with scenario.state.transaction():
        scenario.state.set_task_state(full("006_select"), "finished")  # not committed while status reads
        result = run_cli("status", "--base", str(scenario.base))
    assert result.code == 0, result.err
    assert result.out.startswith(f"run {scenario.run_id}  running  workflows/scatter-merge/chain.cwl → {OUTDS}")
    assert "tasks 4/7 done, 1 failed" in result.out
    rows = rows_of(result.out)
    assert "user.jdoe.example_000_skim" not in result.out  # short names only
    assert rows["000_skim"][:6] == ["000_skim", "local", "finished", "1", "3/3", "1m35s"]
    assert rows["001_cutflow"][:6] == ["001_cutflow", "reana", "finished", "1", "1/1", "40.0s"]
    assert rows["002_select"][:6] == ["002_select", "local", "finished", "2", "2/2", "1m20s"]
    assert rows["005_cutflow"][:8] == ["005_cutflow", "local", "failed", "1", "0/1", "(1", "failed)", "40.0s"]
    assert "job 0: exit code 3" in result.out
    assert rows["006_select"][:5] == ["006_select", "local", "running", "1", "2/4"]
    assert rows["008_merge"] == ["008_merge", "local", "waiting"]
    assert scenario.state.task(full("006_select")).state == "finished"


def test_status_json_shape(scenario: Scenario) -> None:
    result = run_cli("status", scenario.run_id[:15], "--json", "--base", str(scenario.base))
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    run = doc["run"]
    assert run["id"] == scenario.run_id and run["status"] == "running" and run["outds"] == OUTDS
    assert run["tasks"] == {"total": 7, "done": 4, "failed": 1}
    assert run["dir"] == str(scenario.run_dir)
    tasks = {t["short"]: t for t in doc["tasks"]}
    order = ["000_skim", "001_cutflow", "002_select", "004_skim", "005_cutflow", "006_select", "008_merge"]
    assert list(tasks) == order
    select = tasks["002_select"]
    assert select["name"] == full("002_select") and select["step"] == "select" and select["plan_id"] == 2
    assert (select["state"], select["attempt"], select["handle"]) == ("finished", 2, "h-002_select-2")
    assert select["started"] == pytest.approx(scenario.origin + 70)
    assert select["elapsed"] == pytest.approx(80)
    assert select["jobs"] == {"total": 2, "done": 2, "failed": 0, "running": 0}
    assert (select["bytes_in"], select["bytes_out"]) == (1400, 140)
    running = tasks["006_select"]
    assert running["ended"] is None and running["elapsed"] == pytest.approx(time.time() - scenario.origin - 110, abs=5)
    assert running["jobs"] == {"total": 4, "done": 2, "failed": 0, "running": 1}
    assert tasks["008_merge"]["attempt"] == 0 and tasks["008_merge"]["started"] is None


def test_status_after_the_run_ended_and_by_path(scenario: Scenario) -> None:
    scenario.state.set_task_state(full("006_select"), "cancelled", "interrupted by the user")
    scenario.state.set_run_status("cancelled")
    scenario.state.close()
    result = run_cli("status", str(scenario.run_dir), "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["run"]["status"] == "cancelled" and doc["run"]["ended"] is not None
    assert {t["short"]: t["state"] for t in doc["tasks"]}["006_select"] == "cancelled"


def test_status_of_a_run_whose_process_died(scenario: Scenario) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    scenario.state.set_run_status("running", pid=dead.pid)  # as a run killed with SIGKILL leaves it (at +150 s)
    result = run_cli("status", scenario.run_id, "--json", "--base", str(scenario.base))
    doc = json.loads(result.out)
    assert (doc["run"]["status"], doc["run"]["recorded_status"]) == ("interrupted", "running")
    assert doc["run"]["duration"] == pytest.approx(150)
    # A task left "running" is timed up to the last thing the run recorded, not to now.
    assert {t["short"]: t["elapsed"] for t in doc["tasks"]}["006_select"] == pytest.approx(40)
    table = run_cli("status", scenario.run_id, "--base", str(scenario.base))
    assert table.out.startswith(f"run {scenario.run_id}  interrupted")


def test_unknown_run_is_a_clear_error(scenario: Scenario) -> None:
    for command in (["status", "nope"], ["logs", "nope", "merge"], ["report", "nope", "--json"]):
        result = run_cli(*command, "--base", str(scenario.base))
        assert result.code == 2
        assert "no run 'nope' under" in result.err and "cwlbridge runs --base" in result.err
        assert "Traceback" not in result.text and result.out == ""


# -- logs --------------------------------------------------------------------------------------


def test_logs_of_every_job_by_short_name(scenario: Scenario) -> None:
    result = run_cli("logs", scenario.run_id, "000_skim", "--base", str(scenario.base))
    assert result.code == 0, result.err
    attempt_dir = attempt_dir_of(scenario.run_dir, full("000_skim"), 1)
    assert result.out == (
        f"==> {attempt_dir / 'job-0000' / 'stdout'} (job 0) <==\nskim job zero says hello\n"
        f"==> {attempt_dir / 'job-0001' / 'stdout'} (job 1) <==\nskim job one\n"
        f"==> {attempt_dir / 'job-0002' / 'stdout'} (job 2) <==\nskim job two, no newline at the end\n"
    )


def test_logs_one_job_stderr_full_name_and_attempts(scenario: Scenario) -> None:
    base = ("--base", str(scenario.base))
    one = run_cli("logs", scenario.run_id, full("000_skim"), "--job", "1", "--stderr", *base)
    assert one.code == 0, one.err
    assert one.out.endswith("job-0001/stderr (job 1) <==\nwarning from job one\n")
    latest = run_cli("logs", scenario.run_id, "002_select", *base)
    assert "second attempt, job 0" in latest.out and "second attempt, job 1" in latest.out
    assert ".a2/" in latest.out and "first attempt" not in latest.out
    first = run_cli("logs", scenario.run_id, "002_select", "--attempt", "1", *base)
    assert first.code == 0 and ".a1/job-0000/stdout" in first.out and "first attempt output" in first.out
    missing = run_cli("logs", scenario.run_id, "002_select", "--attempt", "3", *base)
    assert missing.code == 1 and "has no attempt 3 (attempts: 1, 2)" in missing.err
    no_job = run_cli("logs", scenario.run_id, "000_skim", "--job", "7", *base)
    assert no_job.code == 1 and "no stdout file of job 7" in no_job.err and "0, 1, 2" in no_job.err


def test_logs_by_unique_step_and_reana_log(scenario: Scenario) -> None:
    base = ("--base", str(scenario.base))
    merge = run_cli("logs", scenario.run_id, "merge", *base)
    assert merge.code == 1 and "has not been submitted (state waiting)" in merge.err
    reana = run_cli("logs", scenario.run_id, "001_cutflow", *base)
    assert reana.code == 0, reana.err
    assert "reana-workflow.log <==\nREANA workflow cwlb-cutflow finished\n" in reana.out
    assert "not a log" not in reana.out
    skim = run_cli("logs", scenario.run_id, "skim", *base)
    assert skim.code == 2 and "step 'skim' has 2 tasks: 000_skim, 004_skim" in skim.err
    unknown = run_cli("logs", scenario.run_id, "fit", *base)
    assert unknown.code == 2 and "no task 'fit'" in unknown.err and "cwlbridge status" in unknown.err


def test_logs_without_stdout_files_says_where_it_looked(scenario: Scenario) -> None:
    base = ("--base", str(scenario.base))
    result = run_cli("logs", scenario.run_id, "005_cutflow", *base)
    assert result.code == 1
    assert "no stdout files in" in result.err and "looked for files named stdout or *.log" in result.err
    errors = run_cli("logs", scenario.run_id, "005_cutflow", "--stderr", *base)
    assert errors.code == 0 and "Segmentation fault" in errors.out
    gone = run_cli("logs", scenario.run_id, "004_skim", *base)
    assert gone.code == 1 and "the logs of attempt 1 of 004_skim are gone:" in gone.err


# -- report ------------------------------------------------------------------------------------


def test_report_json_figures(scenario: Scenario) -> None:
    scenario.state.clock.offset = 200  # type: ignore[attr-defined]
    scenario.state.set_task_state(full("006_select"), "cancelled")
    scenario.state.set_task_state(full("008_merge"), "skipped", "a parent was cancelled")
    scenario.state.set_run_status("failed")
    result = run_cli("report", scenario.run_id, "--json", "--base", str(scenario.base))
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    tasks = {t["short"]: t for t in doc["tasks"]}
    walls = {k: t["wall"] for k, t in tasks.items()}
    assert walls == pytest.approx(
        {"000_skim": 95, "001_cutflow": 40, "002_select": 80, "004_skim": 90, "005_cutflow": 40, "006_select": 90}
        | {"008_merge": None}
    )
    assert (tasks["002_select"]["attempts"], tasks["002_select"]["job_attempts"]) == (2, 4)
    assert (tasks["005_cutflow"]["attempts"], tasks["005_cutflow"]["job_attempts"]) == (1, 3)
    assert tasks["000_skim"]["jobs"] == {"total": 3, "done": 3, "failed": 0}
    assert (tasks["000_skim"]["bytes_in"], tasks["000_skim"]["bytes_out"]) == (30_000, 12_000)
    assert tasks["008_merge"]["state"] == "skipped" and tasks["008_merge"]["message"] == "a parent was cancelled"
    totals = doc["totals"]
    assert totals["tasks"] == 7
    assert totals["states"] == {"finished": 4, "failed": 1, "cancelled": 1, "skipped": 1}
    assert totals["wall"] == pytest.approx(200)
    assert totals["task_time"] == pytest.approx(95 + 40 + 80 + 90 + 40 + 90)
    assert (totals["jobs"], totals["jobs_done"], totals["jobs_failed"]) == (13, 10, 1)
    assert totals["attempts"] == 7
    assert totals["job_attempts"] == 3 + 1 + (1 + 3) + 2 + 3 + 3  # every run of every job of every attempt
    # Bytes are those of each task's latest attempt: the failed first try of 002_select (1000 in) is not counted.
    assert totals["bytes_in"] == 30_000 + 2048 + 1400 + 20_000 + 500 + 200
    assert totals["bytes_out"] == 12_000 + 512 + 140 + 8_000 + 20
    assert doc["run"]["status"] == "failed"


def test_report_table(scenario: Scenario) -> None:
    result = run_cli("report", scenario.run_id, "--base", str(scenario.base))
    assert result.code == 0, result.err
    rows = rows_of(result.out)
    assert rows["002_select"][:6] == ["002_select", "finished", "1m20s", "2", "2/2", "4"]
    assert rows["000_skim"][-4:] == ["30", "kB", "12", "kB"]  # as `data ls` shows sizes
    assert rows["total"][:2] == ["total", "4/7"]


def _svgs(page: str) -> list[ET.Element]:
    parts = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    return [ET.fromstring(part) for part in parts]


def _check_timeline(svg: ET.Element, origin: float) -> None:
    bars = [e for e in svg.iter(f"{SVG}rect") if e.get("class") == "bar"]
    assert [b.get("data-task") for b in bars] == [
        full(s) for s in ("004_skim", "000_skim", "001_cutflow", "005_cutflow", "002_select", "006_select")
    ]
    starts = [float(b.get("data-start", "nan")) for b in bars]
    assert starts == pytest.approx([origin + s for s in (0, 5, 20, 40, 70, 110)], abs=1e-3)
    ys = [float(b.get("y", "nan")) for b in bars]
    assert ys == sorted(ys) and len(set(ys)) == len(ys)
    colours = {b.get("data-task"): b.get("fill") for b in bars}
    assert colours[full("005_cutflow")] != colours[full("000_skim")]
    # The bar of a task that took twice as long is twice as wide.
    widths = {b.get("data-task"): float(b.get("width", "nan")) for b in bars}
    assert widths[full("001_cutflow")] * 2 == pytest.approx(widths[full("002_select")], rel=1e-2)
    texts = "".join(svg.itertext())
    assert "008_merge" in texts and "never started" in texts


def test_report_html_is_self_contained(scenario: Scenario, tmp_path: Path) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz 'dot' is not installed: the Graphviz drawing cannot be checked here")
    out = tmp_path / "report.html"
    result = run_cli("report", scenario.run_id, "--html", str(out), "--base", str(scenario.base))
    assert result.code == 0, result.err
    assert result.err == f"wrote {out}\n" and result.out == ""
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|src=|https?://(?!www\.w3\.org)", page)
    for task in json.loads(GOLDEN.read_text())["tasks"]:
        assert task["name"] in page
    gantt, dag = _svgs(page)
    _check_timeline(gantt, scenario.origin)
    assert "Drawn by Graphviz dot" in page
    titles = {"".join(t.itertext()) for t in dag.iter(f"{SVG}title")}
    assert {"t000", "t001", "t002", "t004", "t005", "t006", "t008"} <= titles
    assert "t004&#45;&gt;t005" in page or "t004->t005" in titles


def test_report_html_without_graphviz_draws_layers(
    scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "report.html"
    result = run_cli("report", scenario.run_id, "--html", str(out), "--json", "--base", str(scenario.base))
    assert result.code == 0, result.err
    assert json.loads(result.out)["run"]["id"] == scenario.run_id
    page = out.read_text()
    assert "Graphviz dot is not installed" in page
    gantt, dag = _svgs(page)
    _check_timeline(gantt, scenario.origin)
    nodes = {g.get("data-task"): g for g in dag.iter(f"{SVG}g") if g.get("class") == "node"}
    plan = json.loads(GOLDEN.read_text())
    assert set(nodes) == {t["name"] for t in plan["tasks"]}
    edges = [p for p in dag.iter(f"{SVG}path") if p.get("marker-end")]
    assert len(edges) == sum(len(t["parents"]) for t in plan["tasks"])
    fills = {name: g.find(f"{SVG}rect").get("fill") for name, g in nodes.items()}  # type: ignore[union-attr]
    assert fills[full("005_cutflow")] == "#e53935" and fills[full("000_skim")] == "#43a047"


def test_layered_layout_puts_children_right_of_parents() -> None:
    plan = plan_from_json(json.loads(GOLDEN.read_text()))
    svg = ET.fromstring(layered_svg(plan, {}))
    x = {
        g.get("data-task"): float(g.find(f"{SVG}rect").get("x", "nan"))  # type: ignore[union-attr]
        for g in svg.iter(f"{SVG}g")
        if g.get("class") == "node"
    }
    for task in plan.tasks:
        for parent in task.parents:
            assert x[parent.task] < x[task.name]
    assert x[full("008_merge")] > x[full("002_select")] > x[full("000_skim")]


def test_report_html_to_a_bad_path_is_an_error(scenario: Scenario, tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "r.html"
    result = run_cli("report", scenario.run_id, "--html", str(target), "--base", str(scenario.base))
    assert result.code == 1 and f"cannot write {target}" in result.err and "Traceback" not in result.err
    assert not os.path.exists(target)


# -- active time, the time axis and the links of the report ------------------------------------


def _run_with_gaps(base: Path) -> tuple[Path, float]:
    """Started; Ctrl-C at 100 s; resumed at 1000 s; killed -9 after 1050 s; resumed at 5000 s; done at 5100 s."""
    plan = json.loads(GOLDEN.read_text())
    origin = time.time() - 6000
    clock = Clock(origin)
    run_dir = base / RUNS_DIR / "20240601-000000-gaps"
    state = RunState.create(
        run_dir, run_id="20240601-000000-gaps", chain=Path("chain.cwl"), inputs=None, outds=OUTDS,
        options={"store": str(base / "store"), "cwd": str(base)}, plan=plan, clock=clock,
    )
    with state.transaction():
        state.add_task(full("000_skim"), step="skim", type="prun", backend="local", plan_id=0)
    steps: list[tuple[float, Any]] = [
        (0, lambda: state.set_run_status("running", pid=1)),
        (10, lambda: state.begin_attempt(full("000_skim"), 1, "k1")),
        (100, lambda: state.set_run_status("interrupted")),
        (1000, lambda: state.set_run_status("running", pid=2)),
        (1050, lambda: state.set_task_state(full("000_skim"), "running")),
        (5000, lambda: state.set_run_status("running", pid=3)),  # no stop was recorded: a crash
        (5100, lambda: state.set_task_state(full("000_skim"), "finished")),
        (5100, lambda: state.set_run_status("finished")),
    ]
    for offset, act in steps:
        clock.offset = offset
        act()
    state.close()
    return run_dir, origin


def test_report_wall_time_leaves_out_the_gaps(tmp_path: Path) -> None:
    _run_with_gaps(tmp_path)
    result = run_cli("report", "--json", "--base", str(tmp_path))
    assert result.code == 0, result.err
    totals = json.loads(result.out)["totals"]
    # 0-100, 1000 up to its last record at 1050, 5000-5100.
    assert totals["wall"] == pytest.approx(100 + 50 + 100)
    assert totals["span"] == pytest.approx(5100)
    table = run_cli("report", "--base", str(tmp_path))
    assert "wall time 4m10s (active; 1h25m from start to end)" in table.out


def test_report_html_has_a_clock_axis_and_links(tmp_path: Path) -> None:
    run_dir, origin = _run_with_gaps(tmp_path)
    dataset = f"{full('000_skim')}_skim.root"
    scope = ".".join(dataset.split(".")[:2])
    (tmp_path / "store" / scope / dataset).mkdir(parents=True)
    attempt_dir_of(run_dir, full("000_skim"), 1).mkdir(parents=True)
    out = tmp_path / "report.html"
    assert run_cli("report", "--html", str(out), "--base", str(tmp_path)).code == 0
    page = out.read_text()
    gantt = _svgs(page)[0]
    ticks = [e for e in gantt.iter(f"{SVG}text") if e.get("class") == "tick"]
    assert len(ticks) >= 3
    times = [float(t.get("data-time", "nan")) for t in ticks]
    assert all(b - a == pytest.approx(times[1] - times[0]) for a, b in itertools.pairwise(times))

    for tick, at in zip(ticks, times):
        assert tick.text == datetime.datetime.fromtimestamp(at).strftime("%H:%M")  # a step of minutes here
    (caption,) = [e for e in gantt.iter(f"{SVG}text") if e.get("class") == "axis"]
    assert datetime.datetime.fromtimestamp(origin + 10).strftime("%Y-%m-%d") in (caption.text or "")
    assert f'href="{attempt_dir_of(run_dir, full("000_skim"), 1).as_uri()}"' in page
    assert f'href="{(tmp_path / "store" / scope / dataset).as_uri()}">000_skim_skim.root</a>' in page
    assert "4m10s while it ran (1h25m from start to end)" in page


def test_logs_of_a_task_the_backend_refused_says_why(tmp_path: Path) -> None:
    """A task refused before any job ran has no attempt directory; `logs` gives its reason."""
    (tmp_path / "chain.cwl").write_text(
        "cwlVersion: v1.0\nclass: Workflow\ninputs: {}\noutputs:\n  out: {type: string, outputSource: a/outDS}\n"
        "steps:\n  a:\n    run: prun\n    in:\n      opt_exec: {default: 'echo hi > a.txt'}\n"
        "      opt_args: {default: '--outputs a.txt --nJobs 1 --nFilesPerJob 2 --nGBPerJob 1'}\n    out: [outDS]\n"
    )
    (tmp_path / "inputs.yaml").write_text("{}\n")
    base = ("--base", str(tmp_path / "base"))
    chain, inputs = str(tmp_path / "chain.cwl"), str(tmp_path / "inputs.yaml")
    ran = run_cli("run", chain, inputs, "--outds", "user.me.refused", *base)
    assert ran.code == 1 and "see why: cwlbridge logs" in ran.err, ran.text
    logs = run_cli("logs", "000_a", *base)
    assert logs.code == 1
    assert logs.err == (
        "cwlbridge: no job of task 000_a ever started (it is failed), so it has no logs: not submitted:"
        " step 'a': opt_args: --nFilesPerJob and --nGBPerJob must be used exclusively\n"
    )
