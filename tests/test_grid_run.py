"""`cwlbridge run --backend panda` end to end: the PanDA emulator runs the tasks' jobs for real
against the real Rucio test server, the REANA emulator runs the REANA step.

The command runs as a user would start it (a subprocess in a copy of the example); the
emulators live in this test process.  PanDA's jobs stage in and out as the root account
(PanDA's own identity); the user registers inputs and reads outputs as jdoe.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers.panda_emulator import PandaEmulator
from tests.servers.panda_jobs import JobRunner

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"


@dataclass
class Grid:
    panda: PandaEmulator
    jobs: JobRunner
    rucio: Any
    token: str
    cwd: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REANA_", "CWLBRIDGE_", "PANDA_", "RUCIO_"))}
        env |= {"PYTHONPATH": str(REPO), **self.panda.environ(self.token), **self.rucio.env()}
        env.pop("PANDA_NICKNAME", None)
        env.update(extra)
        return env

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cwlbridge", *args], cwd=self.cwd, env=env or self.env(),
            capture_output=True, text=True, timeout=timeout,
        )

    def store(self) -> list[str]:
        return ["--store", f"rucio:{self.rucio.rse}"]

    def register(self, dataset: str, count: int) -> None:
        files = []
        for i in range(count):
            path = self.cwd / "inputs" / f"aod{i}.root"
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"event data {i}\n")
            files.append(str(path))
        done = self.cli("data", "add", dataset, *files, *self.store())
        assert done.returncode == 0, done.stderr

    def submits(self) -> int:
        return sum(1 for r in self.panda.requests if r["path"] == "/api/v1/task/submit")


@pytest.fixture
def grid(tmp_path: Path, rucio_server: Any) -> Iterator[Grid]:
    jobs = JobRunner(rucio_server.root_config, rucio_server.rse, tmp_path / "grid-jobs")
    (tmp_path / "grid-jobs").mkdir()
    # Task ids unique in the session: the Rucio server (and PanDA's file names) outlive a test.
    first = random.randrange(10**6, 10**9)
    with PandaEmulator(tmp_path / "panda", tick_s=0.05, jobs=jobs, first_task_id=first) as panda:
        token = panda.add_user("jdoe")
        cwd = tmp_path / "work"
        cwd.mkdir()
        yield Grid(panda, jobs, rucio_server, token, cwd)


def _recast(grid: Grid) -> tuple[str, str]:
    shutil.copytree(WORKFLOWS / "recast", grid.cwd / "recast")
    aod = f"user.jdoe:user.jdoe.aod.{random.randrange(10**8)}"
    grid.register(aod, 4)
    (grid.cwd / "recast" / "inputs.yaml").write_text(f"aod: {aod}\nsignal_point: m1000\n")
    return aod, f"user.jdoe.g{random.randrange(10**8)}"


def _listing(grid: Grid, dataset: str) -> list[dict[str, Any]]:
    done = grid.cli("data", "ls", dataset, "--json", *grid.store())
    assert done.returncode == 0, done.stderr
    files: list[dict[str, Any]] = json.loads(done.stdout)["files"]
    return files


def test_recast_on_panda_with_the_reana_step_run_from_here(grid: Grid, reana_server: Any) -> None:
    _, outds = _recast(grid)
    env = grid.env(REANA_SERVER_URL=reana_server.url, REANA_ACCESS_TOKEN=reana_server.token)
    run = grid.cli(
        "run", "recast/chain.cwl", "recast/inputs.yaml", "--outds", outds, "--backend", "panda",
        *grid.store(), "--poll-interval", "0.2", env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr + json.dumps(grid.jobs.errors)
    # derive and skim are PanDA tasks, each submitted once, and ran their jobs for real.
    derive, skim = (grid.panda.tasks_named(f"{outds}_{n}") for n in ("000_derive", "001_skim"))
    assert [t.status for t in derive + skim] == ["done", "done"]
    assert grid.submits() == 2 and not grid.panda.tasks_named(f"{outds}_002_fit")
    assert sorted(s for t, s in grid.jobs.runs if t == derive[0].task_id) == [1, 2]  # 4 files, 2 per job
    daods = _listing(grid, f"{outds}_000_derive_daod.root/")
    assert sorted(f["name"] for f in daods) == [
        f"user.jdoe.{derive[0].task_id}._00000{i}.daod.root" for i in (1, 2)
    ]
    assert len(_listing(grid, f"{outds}_001_skim_ntup.root/")) == 1
    # The REANA step read the skim's dataset name and its tar is in Rucio, byte for byte.
    [workflow] = reana_server.workflows()
    assert workflow["status"] == "finished"
    [tar] = _listing(grid, f"{outds}_002_fit_out.tar/")
    got = grid.cli("data", "get", f"{outds}_002_fit_out.tar/", str(grid.cwd / "back"), *grid.store())
    assert got.returncode == 0, got.stderr
    [back] = list((grid.cwd / "back").iterdir())
    [made] = (grid.cwd / ".cwlbridge" / "runs").glob("*/tasks/*_002_fit.a1/*/out.tar")  # the submitter's own tar
    with tarfile.open(back) as archive:
        member = archive.extractfile("results/fit.txt")
        assert member is not None
        assert f"{outds}_001_skim_ntup.root/" in member.read().decode()
    assert back.read_bytes() == made.read_bytes()
    assert back.stat().st_size == tar["size"]
    assert grid.token not in run.stdout + run.stderr
    assert reana_server.token not in run.stdout + run.stderr
    _shows_panda_tasks(grid, outds, {"000_derive": (derive[0].task_id, 4), "001_skim": (skim[0].task_id, 2)})


def _shows_panda_tasks(grid: Grid, outds: str, expected: dict[str, tuple[int, int]]) -> None:
    """`status` and `report` (text and --json) give each PanDA task's id, status, files and link."""
    status = grid.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    tasks = {t["short"]: t for t in json.loads(status.stdout)["tasks"]}
    report = grid.cli("report", "--json")
    assert report.returncode == 0, report.stderr
    reported = {t["short"]: t for t in json.loads(report.stdout)["tasks"]}
    text, table = grid.cli("status").stdout, grid.cli("report").stdout
    for short, (task_id, files) in expected.items():
        link = f"https://bigpanda.cern.ch/task/{task_id}/"
        panda = {"jediTaskID": task_id, "status": "done", "link": link, "note": None,
                 "files": {"total": files, "done": files, "failed": 0}}
        assert tasks[short]["panda"] == panda and tasks[short]["handle"] == str(task_id)
        assert reported[short]["panda"] == panda
        line = next(x for x in text.splitlines() if x.lstrip().startswith(short))
        assert str(task_id) in line and " done " in line and f"{files}/{files}" in line and link in line
        assert link in table
    assert tasks["002_fit"]["panda"] is None  # the REANA step ran from here


def _secret(grid: Grid, name: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cwlbridge", "panda", "secrets", "set", name], input=value, cwd=grid.cwd,
        env=grid.env(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert value not in done.stdout + done.stderr


def test_recast_with_the_reana_step_as_a_panda_job_reading_panda_secrets(grid: Grid, reana_server: Any) -> None:
    _, outds = _recast(grid)
    _secret(grid, "REANA_SERVER_URL", reana_server.url)
    _secret(grid, "REANA_ACCESS_TOKEN", reana_server.token)
    listed = grid.cli("panda", "secrets", "ls", "--json")
    assert sorted(s["name"] for s in json.loads(listed.stdout)["secrets"]) == ["REANA_ACCESS_TOKEN", "REANA_SERVER_URL"]
    assert reana_server.token not in listed.stdout
    run = grid.cli(
        "run", "recast/chain.cwl", "recast/inputs.yaml", "--outds", outds, "--backend", "panda", "--reana-via",
        "panda", "--poll-interval", "0.2", *grid.store(),
    )
    assert run.returncode == 0, run.stdout + run.stderr + json.dumps(grid.jobs.errors)
    [fit] = grid.panda.tasks_named(f"{outds}_002_fit")
    assert fit.status == "done" and fit.params["useSecrets"] is True and fit.params["runOnInstant"] is True
    [workflow] = reana_server.workflows()  # the submitter in the PanDA job reached REANA with the secret token
    assert workflow["status"] == "finished"
    [tar] = _listing(grid, f"{outds}_002_fit_out.tar/")
    assert tar["name"] == f"user.jdoe.{fit.task_id}._000001.out.tar"
    got = grid.cli("data", "get", f"{outds}_002_fit_out.tar/", str(grid.cwd / "back"), *grid.store())
    assert got.returncode == 0, got.stderr
    [back] = list((grid.cwd / "back").iterdir())
    with tarfile.open(back) as archive:
        member = archive.extractfile("results/fit.txt")
        assert member is not None
        assert f"{outds}_001_skim_ntup.root/" in member.read().decode()
    assert reana_server.token not in run.stdout + run.stderr


# -- pre-flight: each refusal sends nothing -----------------------------------------------------


def _refused(
    grid: Grid, *extra: str, env: dict[str, str] | None = None, chain: str = "recast", code: int = 2
) -> str:
    run = grid.cli("run", f"{chain}/chain.cwl", f"{chain}/inputs.yaml", "--backend", "panda", *extra, env=env)
    assert run.returncode == code, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert grid.submits() == 0 and not grid.panda.tasks
    assert not (grid.cwd / ".cwlbridge" / "runs").exists() or not any((grid.cwd / ".cwlbridge" / "runs").iterdir())
    return run.stderr


def test_preflight_refuses_without_credentials_or_with_an_expired_token(grid: Grid) -> None:
    _, outds = _recast(grid)
    env = grid.env()
    del env["PANDA_AUTH_ID_TOKEN"]
    assert "no ID token" in _refused(grid, "--outds", outds, *grid.store(), env=env)
    expired = grid.panda.add_user("jdoe", lifetime_s=-60)
    said = _refused(grid, "--outds", outds, *grid.store(), env=grid.env(PANDA_AUTH_ID_TOKEN=expired))
    assert "expired" in said and "pbook" in said and expired not in said
    assert not grid.panda.requests  # not even a read


def test_preflight_refuses_an_unreachable_server(grid: Grid) -> None:
    _, outds = _recast(grid)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/server/panda"
    env = grid.env(PANDA_URL_SSL=dead, PANDACACHE_URL=dead)
    said = _refused(grid, "--outds", outds, *grid.store(), env=env, code=1)  # a remote failure, not a usage error
    assert f"127.0.0.1:{port}" in said and "no reply" in said


def test_preflight_refuses_a_chain_needing_rucio_without_a_rucio_store(grid: Grid) -> None:
    _, outds = _recast(grid)
    said = _refused(grid, "--outds", outds)
    assert "needs a Rucio store" in said and "REANA step 'fit'" in said
    shutil.copytree(WORKFLOWS / "loop", grid.cwd / "loop")
    said = _refused(grid, "--outds", outds, chain="loop")
    assert "junction 'decide'" in said
    assert "not a local store" in _refused(grid, "--outds", outds, "--store", "local")


def test_preflight_refuses_missing_inputs_and_an_outds_used_on_panda(grid: Grid) -> None:
    aod, outds = _recast(grid)
    (grid.cwd / "recast" / "inputs.yaml").write_text(f"aod: {aod}.missing\nsignal_point: m1000\n")
    assert "not in the" in _refused(grid, "--outds", outds, *grid.store())
    (grid.cwd / "recast" / "inputs.yaml").write_text(f"aod: {aod}\nsignal_point: m1000\n")
    from cwlbridge.panda.client import PandaClient

    with PandaClient.from_env(grid.env()) as client:
        client.submit({"taskName": f"{outds}_001_skim", "uniqueTaskName": True})
    before = grid.submits()
    args = ["recast/chain.cwl", "recast/inputs.yaml", "--backend", "panda", "--outds", outds, *grid.store()]
    run = grid.cli("run", *args)
    assert run.returncode == 2 and "was used on PanDA before" in run.stderr, run.stderr
    assert grid.submits() == before and len(grid.panda.tasks) == 1


def test_preflight_refuses_missing_panda_secrets_and_a_foreign_outds(grid: Grid) -> None:
    _, outds = _recast(grid)
    said = _refused(grid, "--outds", outds, "--reana-via", "panda", *grid.store())
    assert "step 'fit': REANA_SERVER_URL, REANA_ACCESS_TOKEN" in said
    said = _refused(grid, "--outds", "user.someone.recast", *grid.store())
    assert "user.jdoe." in said


def test_the_loop_runs_on_panda_steered_by_its_junction_results_read_through_rucio(grid: Grid) -> None:
    shutil.copytree(WORKFLOWS / "loop", grid.cwd / "loop")
    data = f"user.jdoe:user.jdoe.loop.{random.randrange(10**8)}"
    grid.register(data, 2)
    (grid.cwd / "loop" / "inputs.yaml").write_text(f"data: {data}\n")
    outds = f"user.jdoe.l{random.randrange(10**8)}"
    run = grid.cli(
        "run", "loop/chain.cwl", "loop/inputs.yaml", "--outds", outds, "--backend", "panda", *grid.store(),
        "--poll-interval", "0.2",
    )
    assert run.returncode == 0, run.stdout + run.stderr + json.dumps(grid.jobs.errors)
    names = sorted(t.name for t in grid.panda.tasks.values())
    # decide.sh says stop after the third iteration; each iteration's tasks exist once.
    assert names == sorted(
        [f"{outds}_000_start"] + [f"{outds}_{n}.{i}" for n in ("001_fit", "002_decide") for i in (1, 2, 3)]
    )
    for i, alpha in ((1, "0.5"), (2, "0.6"), (3, "0.7")):
        assert len(_listing(grid, f"{outds}_001_fit.{i}_fit.txt/")) == 1
        got = grid.cli("data", "get", f"{outds}_001_fit.{i}_fit.txt/", str(grid.cwd / f"fit{i}"), *grid.store())
        assert got.returncode == 0, got.stderr
        [path] = list((grid.cwd / f"fit{i}").iterdir())
        assert path.read_text() == f"fit alpha={alpha} iteration={i}\n"
    [decide] = grid.panda.tasks_named(f"{outds}_002_decide.1")
    assert decide.params["runOnInstant"] is True


# -- crashes and faults: no task twice ----------------------------------------------------------


def _no_duplicates(grid: Grid) -> None:
    names = [t.name for t in grid.panda.tasks.values()]
    assert len(names) == len(set(names)), sorted(names)
    assert all(t.executions == 1 for t in grid.panda.tasks.values())


def test_recast_ten_times_under_ten_percent_faults_with_no_duplicate_task(grid: Grid, reana_server: Any) -> None:
    _recast(grid)
    grid.panda.fault_rate, grid.panda.tick_s = 0.10, 0.02
    seeded, forced = grid.panda.fault, iter(["reply_lost", "500", "timeout", "503"])

    def fault(path: str) -> str | None:
        # Each kind hits a submission at least once; the rest are the seeded 10 %.
        kind = next(forced, None) if path == "task/submit" else None
        if kind is not None:
            grid.panda.faults_injected.append((path, kind))
            return kind
        return seeded(path)

    grid.panda.fault = fault  # type: ignore[method-assign]
    env = grid.env(
        REANA_SERVER_URL=reana_server.url, REANA_ACCESS_TOKEN=reana_server.token, CWLBRIDGE_PANDA_TIMEOUT="1",
    )
    for k in range(10):
        outds = f"user.jdoe.f{random.randrange(10**8)}"
        run = grid.cli(
            "run", "recast/chain.cwl", "recast/inputs.yaml", "--outds", outds, "--backend", "panda",
            *grid.store(), "--poll-interval", "0.1", env=env,
        )
        assert run.returncode == 0, f"run {k}: " + run.stdout + run.stderr + json.dumps(grid.jobs.errors)
        assert len(_listing(grid, f"{outds}_002_fit_out.tar/")) == 1
    _no_duplicates(grid)
    assert len(grid.panda.tasks) == 20
    kinds = {kind for _, kind in grid.panda.faults_injected}
    assert kinds == {"500", "503", "reply_lost", "timeout"}, kinds
    assert len(grid.panda.faults_injected) > 20


def test_sigkill_at_ten_moments_then_resume_submits_every_task_once(grid: Grid, reana_server: Any) -> None:
    _, outds = _recast(grid)
    for name in ("derive.sh", "skim.sh"):  # jobs long enough to be killed in the middle
        script = grid.cwd / "recast" / name
        script.write_text(script.read_text().replace("set -euo pipefail\n", "set -euo pipefail\nsleep 2\n", 1))
    grid.panda.tick_s = 0.4
    reana_server.queue_delay = 6.0
    env = grid.env(REANA_SERVER_URL=reana_server.url, REANA_ACCESS_TOKEN=reana_server.token)
    rng = random.Random(20261204)
    runs = grid.cwd / ".cwlbridge" / "runs"
    args = ["recast/chain.cwl", "recast/inputs.yaml", "--outds", outds, "--backend", "panda", *grid.store(),
            "--poll-interval", "0.1"]
    kills = 0
    while kills < 10:
        started = sorted(runs.iterdir()) if runs.is_dir() else []
        command = ["resume", started[-1].name, "--poll-interval", "0.1"] if started else ["run", *args]
        proc = subprocess.Popen(
            [sys.executable, "-m", "cwlbridge", *command], cwd=grid.cwd, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        time.sleep(rng.uniform(0.5, 3.0))
        if proc.poll() is not None:
            out = proc.communicate()[0]
            assert proc.returncode == 0, out
            break
        proc.kill()
        proc.communicate(timeout=30)
        kills += 1
    assert kills == 10, "the chain ended before it was killed ten times"
    [run_dir] = sorted(runs.iterdir())
    final = grid.cli("resume", run_dir.name, "--poll-interval", "0.1", env=env)
    assert final.returncode == 0, final.stdout + final.stderr + json.dumps(grid.jobs.errors)
    _no_duplicates(grid)
    assert sorted(t.name for t in grid.panda.tasks.values()) == [f"{outds}_000_derive", f"{outds}_001_skim"]
    assert len(_listing(grid, f"{outds}_000_derive_daod.root/")) == 2
    assert len(_listing(grid, f"{outds}_001_skim_ntup.root/")) == 1
    assert len(_listing(grid, f"{outds}_002_fit_out.tar/")) == 1
    names = [wf["name"] for wf in reana_server.workflows()]
    assert len(names) == len(set(names)) == 1, names
