"""Every example chain in workflows/ runs end to end on this machine, as the README shows.

Each test copies an example into a temporary directory, works there as a user would (the
dataset store and the run state land in ``./.cwlbridge``), registers small stub files for
every input dataset the chain reads but does not make (found from ``cwlbridge plan --format
json``), runs ``cwlbridge run`` and reads the outputs back from where ``cwlbridge data ls
DATASET --json`` says they are.  The REANA step of the recast chain runs on REANA's local
engine (no REANA_SERVER_URL).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cli_run import Result, run_cli

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
RUNNABLE = ["conditions", "loop", "recast", "scatter-merge", "secondary", "simple", "two-step"]
GRID_ONLY = {"phpo": "optimise", "gitlab": "plots"}
OUTDS = "user.jdoe.demo"
LOOP_MARK = "___idds___num_run___"
CORRUPT_DS = "data18_13TeV:data18_13TeV.periodC.DAOD_PHYS.r1_p2_corrupt"

Text = Callable[[str, int], str]


def _event_text(dataset: str, k: int) -> str:
    return f"event block {k} of {dataset}\n"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REANA server, no store chosen from outside: the defaults a new user gets."""
    for name in list(os.environ):
        if name.startswith(("REANA_", "CWLBRIDGE_")):
            monkeypatch.delenv(name)


# -- helpers -----------------------------------------------------------------------------------


def plan_json(chain: str, inputs: str, outds: str = OUTDS) -> dict[str, Any]:
    """The plan of a chain, as ``cwlbridge plan --format json`` prints it."""
    result = run_cli("plan", chain, inputs, "--outds", outds, "--format", "json")
    assert result.code == 0, result.text
    plan: dict[str, Any] = json.loads(result.out)
    return plan


def external_datasets(plan: dict[str, Any]) -> list[str]:
    """Datasets the chain reads (primary or secondary) that none of its tasks produces."""
    produced = {d for task in plan["tasks"] for d in task["output_datasets"]}
    read = {d for task in plan["tasks"] for d in task["in_ds"] + task["secondary_ds"]}
    return sorted(read - produced)


def _label(dataset: str) -> str:
    """A short file-name stem for a dataset: the last dot-field of its name, e.g. ``m500``."""
    name = dataset.rstrip("/").partition(":")[2] or dataset.rstrip("/")
    return re.sub(r"[^A-Za-z0-9_-]", "_", name.rsplit(".", 1)[-1])


def register_stub_inputs(
    plan: dict[str, Any], where: Path, *, count: int = 3, text: Text = _event_text
) -> dict[str, list[str]]:
    """Register ``count`` (2–5) small files with ``cwlbridge data add`` for every external dataset.

    Names are taken as the plan spells them (with or without scope, with or without a
    trailing ``/``): ``data add`` must accept each as a user would paste it.  Returns the
    file names registered per dataset.
    """
    assert 2 <= count <= 5
    registered: dict[str, list[str]] = {}
    for dataset in external_datasets(plan):
        folder = where / "stub-inputs" / _label(dataset)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for k in range(1, count + 1):
            path = folder / f"{_label(dataset)}._{k:06d}.root"
            path.write_text(text(dataset, k))
            paths.append(str(path))
        result = run_cli("data", "add", dataset, *paths)
        assert result.code == 0, result.text
        registered[dataset] = [Path(p).name for p in paths]
    return registered


def data_files(dataset: str) -> dict[str, str]:
    """File name -> content of a dataset, read from the paths ``cwlbridge data ls --json`` gives."""
    result = run_cli("data", "ls", dataset, "--json")
    assert result.code == 0, result.text
    listing = json.loads(result.out)
    assert listing["kind"] == "local"
    files = {}
    for entry in listing["files"]:
        path = Path(entry["path"])
        assert path.is_file(), f"{dataset}: data ls names {path}, which is not there"
        assert path.stat().st_size == entry["size"]
        assert path.is_relative_to(Path.cwd() / ".cwlbridge" / "data"), path
        files[entry["name"]] = path.read_text(errors="replace")
    return files


def _run_ids(base: Path) -> list[str]:
    runs = base / ".cwlbridge" / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


@dataclass
class ExampleRun:
    """An example copied into a scratch directory and run there with ``cwlbridge run``."""

    name: str
    workdir: Path
    plan: dict[str, Any]
    inputs: dict[str, list[str]]
    result: Result
    run_id: str
    _status: dict[str, Any] | None = field(default=None, repr=False)

    def task(self, step: str) -> dict[str, Any]:
        """The one planned task of a step."""
        [task] = [t for t in self.plan["tasks"] if t["step"] == step]
        return task

    def output(self, step: str, iteration: int | None = None) -> str:
        """The (first) output dataset of a step, of one loop iteration if given."""
        dataset: str = self.task(step)["output_datasets"][0]
        return dataset.replace(LOOP_MARK, str(iteration)) if iteration is not None else dataset

    def status(self) -> dict[str, Any]:
        """``cwlbridge status RUN --json``."""
        if self._status is None:
            result = run_cli("status", self.run_id, "--json")
            assert result.code == 0, result.text
            self._status = json.loads(result.out)
        return self._status

    def states(self) -> dict[str, str]:
        """Short task name -> state."""
        return {t["short"]: t["state"] for t in self.status()["tasks"]}


def copy_example(name: str, workdir: Path) -> None:
    shutil.copytree(WORKFLOWS / name, workdir / name)


def run_example(
    name: str,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    count: int = 3,
) -> ExampleRun:
    """Copy, register the stub inputs, and ``cwlbridge run`` an example in ``workdir``; it must succeed."""
    monkeypatch.chdir(workdir)
    copy_example(name, workdir)
    chain, inputs = f"{name}/chain.cwl", f"{name}/inputs.yaml"
    plan = plan_json(chain, inputs)
    registered = register_stub_inputs(plan, workdir, count=count)
    result = run_cli("run", chain, inputs, "--outds", OUTDS)
    assert result.code == 0, result.text
    [run_id] = _run_ids(workdir)
    return ExampleRun(name, workdir, plan, registered, result, run_id)


# -- coverage of workflows/ --------------------------------------------------------------------


def test_every_example_is_run_or_refused_here() -> None:
    examples = sorted(p.name for p in WORKFLOWS.iterdir() if (p / "chain.cwl").exists())
    assert examples == sorted(RUNNABLE + list(GRID_ONLY))


def test_stub_registration_accepts_names_without_scope_and_with_a_slash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    plan = plan_json(str(WORKFLOWS / "secondary" / "chain.cwl"), str(WORKFLOWS / "secondary" / "inputs.yaml"))
    background = "mc16_5TeV.361238.Pythia8EvtGen_A3NNPDF23LO_minbias_inelastic_low.merge.HITS.e6446_s3238_s3250/"
    assert background in external_datasets(plan)
    registered = register_stub_inputs(plan, tmp_path, count=2)
    assert set(registered) == set(external_datasets(plan))
    # No scope and a trailing "/": the scope is the first field and the "/" names the same dataset.
    files = data_files("mc16_5TeV:" + background.rstrip("/"))
    assert sorted(files) == registered[background]
    assert files[registered[background][0]] == _event_text(background, 1)


# -- the examples ------------------------------------------------------------------------------


def test_two_step_generates_then_histograms_each_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("two-step", tmp_path, monkeypatch)
    assert run.inputs == {}  # nothing to register: gen has no input
    events = data_files(run.output("gen"))
    assert len(events) == 3  # --nJobs 3
    seeds = set()
    for text in events.values():
        lines = text.splitlines()
        assert len(lines) == 3 and all(line.startswith("event ") for line in lines)
        seeds.add(lines[0].rsplit(" ", 1)[1])
    assert len(seeds) == 3, f"%RNDM:10 gives each job its own seed, got {seeds}"
    hists = data_files(run.output("ana"))
    assert len(hists) == 3  # --nFilesPerJob 1
    assert set(hists.values()) == {"events 3\n"}
    assert run.states() == {"000_gen": "finished", "001_ana": "finished"}
    # The run's own summary lists the final dataset with the files data ls shows.
    assert run.output("ana") in run.result.out
    assert all(name in run.result.out for name in hists)


def test_simple_skims_makes_toys_and_fits_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("simple", tmp_path, monkeypatch, count=4)
    [raw] = run.inputs
    [ntuple] = data_files(run.output("skim")).values()
    assert ntuple.splitlines() == [f"ntuple of {name}" for name in run.inputs[raw]]
    [hist] = data_files(run.task("skim")["output_datasets"][1]).values()  # the second --outputs type
    assert hist == "hist of 4 file(s)\n"
    toys = data_files(run.output("toys"))
    assert len(toys) == 5  # --nJobs 5
    assert sorted(toys.values()) == [f"toys with seed {100 + k}\n" for k in range(1, 6)]  # %RNDM:100
    # A `run: reana` step whose opt_exec is not the submitter runs as a one-job task, as on PanDA.
    [fit] = [t for t in run.status()["tasks"] if t["step"] == "fit"]
    assert fit["backend"] == "local" and fit["jobs"]["total"] == 1
    assert len(data_files(run.output("fit"))) == 1
    [listing] = json.loads(run_cli("data", "ls", run.output("fit"), "--json").out)["files"]
    with tarfile.open(listing["path"]) as tar:
        member = tar.extractfile("fit/result.txt")
        assert member is not None
        result = member.read().decode()
    hist_ds = run.task("skim")["output_datasets"][1]
    assert result == f"fit of {hist_ds} and {run.output('toys')}\n"


def test_conditions_normal_path_fits_and_skips_the_rescue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("conditions", tmp_path, monkeypatch)
    [data] = run.inputs
    [selected] = data_files(run.output("sel")).values()
    assert selected.splitlines() == [f"selected from {name}" for name in run.inputs[data]]
    assert list(data_files(run.output("ctrl")).values()) == ["control region\n"]
    fits = data_files(run.output("fit"))
    assert fits and set(fits.values()) == {f"fit of {run.output('sel')} with {run.output('ctrl')}\n"}
    assert run.states() == {
        "000_sel": "finished", "001_ctrl": "finished", "002_fit": "finished", "003_rescue": "skipped",
    }  # fmt: skip
    [rescue] = [t for t in run.status()["tasks"] if t["step"] == "rescue"]
    assert "failed(" in rescue["message"] and rescue["attempt"] == 0
    assert run_cli("data", "ls", run.output("rescue")).code != 0  # never made
    assert run.result.out.rstrip().endswith("3 task(s) finished, 1 skipped")
    # The rescue may have been made ahead while the selection ran (its child); nothing of it is left.
    tasks = tmp_path / ".cwlbridge" / "runs" / run.run_id / "tasks"
    assert sorted(p.name for p in tasks.iterdir()) == sorted(
        f"{t['name']}.a1" for t in run.status()["tasks"] if t["state"] == "finished"
    )


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REANA_", "CWLBRIDGE_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "cwlbridge", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_conditions_with_corrupt_data_takes_the_failure_branch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real process: exit 1, rescue finished, fit skipped, and a one-line summary saying where to look."""
    monkeypatch.chdir(tmp_path)
    copy_example("conditions", tmp_path)
    chain, inputs = "conditions/chain.cwl", "conditions/inputs-failing.yaml"
    plan = plan_json(chain, inputs)
    assert external_datasets(plan) == [CORRUPT_DS]
    register_stub_inputs(plan, tmp_path, count=2, text=lambda ds, k: f"corrupt block {k} of {ds}\n")

    done = _cli(["run", chain, inputs, "--outds", OUTDS], tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    [run_id] = _run_ids(tmp_path)
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"cwlbridge: run {run_id}: 1 task(s) failed (000_sel)"), done.stderr
    assert summary.endswith(f"see why: cwlbridge logs {run_id} 000_sel"), summary
    assert "Traceback" not in done.stderr

    # The command the summary names shows why (select.sh writes its reason on stderr).
    why = _cli([*summary.rpartition("see why: ")[2].split()[1:], "--stderr"], tmp_path)
    assert why.returncode == 0, why.stderr
    assert "select.sh: corrupt input" in why.stdout

    status = json.loads(_cli(["status", run_id, "--json"], tmp_path).stdout)
    states = {t["short"]: t["state"] for t in status["tasks"]}
    assert states == {"000_sel": "failed", "001_ctrl": "finished", "002_fit": "skipped", "003_rescue": "finished"}
    assert status["run"]["status"] == "failed"
    [sel] = [t for t in status["tasks"] if t["step"] == "sel"]
    assert "exit code 3" in sel["message"]
    rescue = next(t for t in plan["tasks"] if t["step"] == "rescue")["output_datasets"][0]
    assert list(data_files(rescue).values()) == ["notified: selection-failed\n"]
    fit = next(t for t in plan["tasks"] if t["step"] == "fit")["output_datasets"][0]
    assert run_cli("data", "ls", fit).code != 0  # the fit never ran


def test_scatter_merge_runs_both_elements_and_merges_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("scatter-merge", tmp_path, monkeypatch)
    elements = {"500": "user.jdoe:user.jdoe.ntup.m500", "1000": "user.jdoe:user.jdoe.ntup.m1000"}
    assert set(run.inputs) == set(elements.values())
    skims = {t["in_ds"][0]: t for t in run.plan["tasks"] if t["step"] == "skim"}
    expected_lines = []
    for mass, dataset in elements.items():
        skim_out = skims[dataset]["output_datasets"][0]
        [(skim_file, skim)] = data_files(skim_out).items()
        assert skim.splitlines() == [f"skim m={mass} {name}" for name in run.inputs[dataset]]
        expected_lines.append(f"selected m={mass} {skim_file}")
    merged = data_files(run.output("merge"))
    # The merge saw both elements' selections (PanDA gives it each element's dataset; JEDI does
    # not mix files of different input datasets in one job, hence one file per element here).
    lines = sorted(line for text in merged.values() for line in text.splitlines())
    assert lines == sorted(expected_lines)
    states = run.states()
    assert len(states) == 7 and set(states.values()) == {"finished"}


def test_loop_runs_three_iterations_because_the_junction_says_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = run_example("loop", tmp_path, monkeypatch)
    [prepared] = data_files(run.output("start")).values()
    assert prepared.splitlines() == [f"prepared {name}" for name in next(iter(run.inputs.values()))]
    iterations = [t["iteration"] for t in run.status()["tasks"] if t["step"] == "fit"]
    assert iterations == [1, 2, 3]
    assert [t["iteration"] for t in run.status()["tasks"] if t["step"] == "decide"] == [1, 2, 3]
    for i, alpha in ((1, "0.5"), (2, "0.6"), (3, "0.7")):
        assert list(data_files(run.output("fit", i)).values()) == [f"fit alpha={alpha} iteration={i}\n"]
    answers = [json.loads(next(iter(data_files(run.output("decide", i)).values()))) for i in (1, 2, 3)]
    assert [a["to_continue"] for a in answers] == [True, True, False]
    assert run_cli("data", "ls", run.output("fit", 4)).code != 0  # no fourth iteration
    # The run lists the last iteration's fit as its result.
    assert run.output("fit", 3) in run.result.out and run.output("fit", 2) not in run.result.out


def test_recast_derives_skims_and_fits_on_reana_into_a_tar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("recast", tmp_path, monkeypatch, count=5)
    [aod] = run.inputs
    daods = data_files(run.output("derive"))
    assert len(daods) == 3  # 5 AOD files, --nFilesPerJob 2
    made_from = sorted(line.removeprefix("DAOD from ") for text in daods.values() for line in text.splitlines())
    assert made_from == run.inputs[aod]
    [ntuple] = data_files(run.output("skim")).values()  # 3 DAOD files, --nFilesPerJob 4
    # The skim streams from the derivation (a `started` link): %IN follows the order the files came.
    assert sorted(ntuple.splitlines()) == [f"ntuple m1000 from {name}" for name in sorted(daods)]

    [listing] = json.loads(run_cli("data", "ls", run.output("fit"), "--json").out)["files"]
    assert listing["name"].endswith(".out.tar")
    with tarfile.open(listing["path"]) as tar:
        member = tar.extractfile("results/fit.txt")
        assert member is not None
        fit = member.read().decode()
    assert fit.splitlines() == [f"fit of {run.output('skim')}", "mu = 1.00 +- 0.10"]
    [step] = [t for t in run.status()["tasks"] if t["step"] == "fit"]
    assert step["backend"] == "reana" and step["state"] == "finished"
    # data get brings the tar next to the user, byte for byte.
    got = run_cli("data", "get", run.output("fit"), "results")
    assert got.code == 0, got.text
    assert (tmp_path / "results" / listing["name"]).read_bytes() == Path(listing["path"]).read_bytes()


def test_secondary_streams_reach_the_combination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("secondary", tmp_path, monkeypatch, count=2)
    gens = data_files(run.output("generate_some"))
    assert sorted(int(v) for v in gens.values()) == list(range(11, 21))  # %RNDM:10 over 10 jobs
    [klm] = data_files(run.output("premix")).values()
    [zip_file] = data_files(run.task("make_signal")["output_datasets"][1])
    [pool] = data_files(run.task("make_background_1")["output_datasets"][1])
    assert klm.split() == [zip_file, pool]  # %IN then %IN2 (--secondaryDSs IN2:2:…)
    [background_two] = data_files(run.output("make_background_2")).values()
    [jjj] = data_files(run.task("make_background_2")["output_datasets"][1]).values()
    assert len(jjj.strip().split(",")) == 2  # IN2:2: two generated files per job
    assert all(name in gens for name in jjj.strip().split(","))
    [combined] = data_files(run.output("combine")).values()
    [abc] = data_files(run.output("make_signal"))
    [klm_name] = data_files(run.output("premix"))
    [ooo_name] = data_files(run.output("make_background_2"))
    assert combined.split() == [abc, klm_name, ooo_name]
    background = next(d for d in run.inputs if d.endswith("/"))
    assert background_two.strip() == ",".join(run.inputs[background])


@pytest.mark.parametrize("name", sorted(GRID_ONLY))
def test_grid_only_examples_are_refused_before_anything_runs(name: str, tmp_path: Path) -> None:
    copy_example(name, tmp_path)
    done = _cli(["run", f"{name}/chain.cwl", f"{name}/inputs.yaml", "--outds", OUTDS], tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    step = GRID_ONLY[name]
    assert done.stderr.startswith(f"cwlbridge: step '{step}' is a `run: {name}` step;"), done.stderr
    assert "nothing was run" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / ".cwlbridge").exists()


# -- reading a finished run --------------------------------------------------------------------


def test_status_and_report_of_a_finished_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("recast", tmp_path, monkeypatch)
    status = run.status()
    assert status["run"]["id"] == run.run_id and status["run"]["status"] == "finished"
    assert status["run"]["tasks"] == {"total": 3, "done": 3, "failed": 0}
    assert [(t["short"], t["backend"], t["state"]) for t in status["tasks"]] == [
        ("000_derive", "local", "finished"), ("001_skim", "local", "finished"), ("002_fit", "reana", "finished"),
    ]  # fmt: skip
    for task in status["tasks"]:
        assert task["jobs"]["done"] == task["jobs"]["total"] >= 1 and task["jobs"]["failed"] == 0
        assert task["attempt"] == 1 and task["ended"] >= task["started"]
    assert status["tasks"][0]["bytes_in"] == sum(len(_event_text(d, k)) for d in run.inputs for k in (1, 2, 3))

    report = run_cli("report", run.run_id, "--html", "report.html")
    assert report.code == 0, report.text
    page = (tmp_path / "report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html")
    assert "<svg" in page
    for task in status["tasks"]:
        assert task["short"] in page
    figures = json.loads(run_cli("report", run.run_id, "--json").out)
    assert figures["totals"]["tasks"] == 3 and figures["totals"]["jobs_done"] == figures["totals"]["jobs"]
    tar_size = sum(f["size"] for f in json.loads(run_cli("data", "ls", run.output("fit"), "--json").out)["files"])
    assert figures["totals"]["bytes_out"] >= tar_size > 0
    runs = run_cli("runs")
    assert run.run_id in runs.out and "finished" in runs.out


def _scope_files(workdir: Path) -> list[str]:
    """Every output file name (``user.jdoe.<number>._…``) the local store holds in scope user.jdoe."""
    scope = workdir / ".cwlbridge" / "data" / "user.jdoe"
    return [f.name for d in scope.iterdir() if d.is_dir() for f in d.iterdir() if f.name.startswith("user.jdoe.")]


def test_loop_iterations_and_runs_get_their_own_task_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("loop", tmp_path, monkeypatch)
    fits = [name for i in (1, 2, 3) for name in data_files(run.output("fit", i))]
    assert len(set(fits)) == 3, fits  # user.jdoe.<number>._000001.fit.txt, a number per iteration
    first = _scope_files(tmp_path)
    again = run_cli("run", "loop/chain.cwl", "loop/inputs.yaml", "--outds", OUTDS + "2", "-q")
    assert again.code == 0, again.text
    both = _scope_files(tmp_path)
    assert len(both) == 2 * len(first) and len(set(both)) == len(both), sorted(both)


def test_a_retried_task_keeps_its_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    copy_example("simple", tmp_path)
    toys = tmp_path / "simple" / "toys.sh"
    script = toys.read_text()
    toys.write_text("#!/usr/bin/env bash\nexit 3\n")
    plan = plan_json("simple/chain.cwl", "simple/inputs.yaml")
    register_stub_inputs(plan, tmp_path, count=2)
    failed = run_cli("run", "simple/chain.cwl", "simple/inputs.yaml", "--outds", OUTDS, "-q")
    assert failed.code == 1, failed.text
    [run_id] = _run_ids(tmp_path)
    counter = tmp_path / ".cwlbridge" / "data" / "user.jdoe" / ".cwlbridge-task-numbers"
    drawn = counter.read_text()
    skim = {n.split(".")[2] for n in data_files(run_output(plan, "skim"))}
    toys.write_text(script)
    retried = run_cli("retry", run_id, "-q")
    assert retried.code == 0, retried.text
    toy_numbers = {n.split(".")[2] for n in data_files(run_output(plan, "toys"))}
    assert len(toy_numbers) == 1 and not toy_numbers & skim
    # Drawn at toys' first attempt (below the counter as the first run left it), not at the retry;
    # only fit, which never ran before, draws a new one now.
    assert int(next(iter(toy_numbers))) < int(drawn)
    assert int(counter.read_text()) == int(drawn) + 1


def run_output(plan: dict[str, Any], step: str) -> str:
    [task] = [t for t in plan["tasks"] if t["step"] == step]
    dataset: str = task["output_datasets"][0]
    return dataset
