"""The engine end to end: links, Ctrl-C, kill, retry, resume, REANA steps and crash safety."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from cwlbridge.engine.scheduler import evaluate
from cwlbridge.model.conditions import parse_condition
from cwlbridge.model.plan import Task

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
AOD = "mc20_13TeV:mc20_13TeV.700320.Sh_2211_Zee_maxHTpTV2_BFilter.recon.AOD.e8351_s3681_r13167"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REANA_", "CWLBRIDGE_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cwlbridge", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _popen(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cwlbridge", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _write_script(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + textwrap.dedent(body))
    path.chmod(0o755)


def _register(cwd: Path, env: dict[str, str], dataset: str, count: int = 3, *store: str) -> None:
    files = []
    for i in range(count):
        path = cwd / f"input{i}.root"
        path.write_text(f"event data {i}\n")
        files.append(str(path))
    result = _cli(["data", "add", dataset, *files, *store], cwd, env)
    assert result.returncode == 0, result.stderr


def _run_dirs(base: Path) -> list[Path]:
    runs = base / ".cwlbridge" / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def _status(cwd: Path, env: dict[str, str], run: str) -> dict[str, Any]:
    result = _cli(["status", run, "--json"], cwd, env)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline or marker.encode() in environ:
            found.append(int(entry.name))
    return found


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- conditions


def _task_with(cond: str, inputs: dict[str, list[list[str]]]) -> Task:
    return Task(
        id=0, name="t", step="t", path="t", type="prun", in_ds=[], secondary_ds=[], exec=None, args=None,
        container=None, use_secrets=False, output_datasets=[], parents=[], condition=None, in_loop=False,
        condition_tree=parse_condition(cond), condition_inputs=inputs,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("cond", "states", "expected"),
    [
        ("$(self.x)", {"a": "finished"}, True),
        ("$(self.x)", {"a": "running"}, None),
        ("$(self.x)", {"a": "failed"}, False),
        ("$(!self.x)", {"a": "failed"}, True),
        ("$(!self.x)", {"a": "finished"}, False),
        ("$(self.x)", {"a": "skipped"}, False),
        ("$(self.y[0] && self.y[1])", {"b": "finished", "c": "running"}, None),
        ("$(self.y[0] && self.y[1])", {"b": "failed", "c": "running"}, False),
        ("$(self.y[0] || self.y[1])", {"b": "finished", "c": "running"}, True),
        ("$(self.y[1] || !self.x)", {"a": "finished", "c": "failed"}, False),
        ("$(!(self.x && self.y[0]))", {"a": "finished", "b": "finished"}, False),
    ],
)
def test_conditions_are_three_valued(cond: str, states: dict[str, str], expected: bool | None) -> None:
    task = _task_with(cond, {"x": [["a"]], "y": [["b"], ["c"]]})
    assert evaluate(task.condition_tree, task, lambda name: states.get(name, "waiting")) is expected  # type: ignore[arg-type]


# --------------------------------------------------------------------------- links and loops


def test_started_child_begins_before_its_parent_ends(tmp_path: Path) -> None:
    shutil.copytree(WORKFLOWS / "two-step", tmp_path / "two-step")
    # gen runs three jobs one after the other, each sleeping a little; ana (linked by
    # `started`) must begin while gen still runs, and still read all three files in the end.
    _write_script(
        tmp_path / "two-step" / "gen.sh",
        """\
        seed=$(cat "$1")
        sleep "0.$(( RANDOM % 3 + 1 ))"
        echo "event $seed" > "$2"
        """,
    )
    env = _env()
    result = _cli(
        ["run", "two-step/chain.cwl", "two-step/inputs.yaml", "--outds", "user.jdoe.st", "--jobs", "1"], tmp_path, env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = _run_dirs(tmp_path)[-1]
    assert not (run_dir / "state.sqlite-wal").exists()  # closed: its log went into the database
    tasks = {t["short"]: t for t in _status(tmp_path, env, run_dir.name)["tasks"]}
    assert tasks["001_ana"]["started"] < tasks["000_gen"]["ended"]
    assert tasks["001_ana"]["jobs"]["done"] == 3
    # As PanDA does: the same --outds again is refused before anything runs.
    again = _cli(
        ["run", "two-step/chain.cwl", "two-step/inputs.yaml", "--outds", "user.jdoe.st", "--jobs", "1"], tmp_path, env
    )
    assert again.returncode != 0 and len(_run_dirs(tmp_path)) == 1
    assert re.search(r"--outds user\.jdoe\.st was used before: [1-9]\d* of its output datasets exist", again.stderr)


def test_max_iterations_stops_a_loop(tmp_path: Path) -> None:
    shutil.copytree(WORKFLOWS / "loop", tmp_path / "loop")
    env = _env()
    _register(tmp_path, env, "user.jdoe:user.jdoe.loop.input")
    result = _cli(
        ["run", "loop/chain.cwl", "loop/inputs.yaml", "--outds", "user.jdoe.lp", "--max-iterations", "2"], tmp_path, env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--max-iterations 2" in result.stdout + result.stderr
    run = _run_dirs(tmp_path)[-1].name
    names = [t["short"] for t in _status(tmp_path, env, run)["tasks"]]
    assert names.count("001_fit.1") == 1 and "001_fit.2" in names and "001_fit.3" not in names


# --------------------------------------------------------------------------- stopping


def _slow_chain(root: Path, marker: str) -> Path:
    """A two-step chain whose first step sleeps in a process tree (child, grandchild)."""
    chain = root / "slow"
    chain.mkdir()
    (chain / "chain.cwl").write_text(
        textwrap.dedent(
            """\
            cwlVersion: v1.0
            class: Workflow
            inputs: {}
            outputs: {}
            steps:
              nap:
                run: prun
                in:
                  opt_exec: {default: "./nap.sh"}
                  opt_args: {default: "--outputs nap.txt --nJobs 2"}
                out: [outDS]
              after:
                run: prun
                in:
                  opt_inDS: nap/outDS
                  opt_exec: {default: "cat $(echo %IN | tr , ' ') > after.txt"}
                  opt_args: {default: "--outputs after.txt"}
                out: [outDS]
            """
        )
    )
    (chain / "inputs.yaml").write_text("{}\n")
    _write_script(
        chain / "nap.sh",
        f"""\
        sleep 300 &
        setsid sleep 301 &
        ( sleep 302 & ) &
        if [ -e "$NAP_OK" ]; then echo ok > nap.txt; exit 0; fi
        sleep 303
        echo {marker} > nap.txt
        """,
    )
    return chain


def test_first_ctrl_c_cancels_records_and_leaves_no_process(tmp_path: Path) -> None:
    marker = f"cwlbridge-ctrlc-{os.getpid()}"
    _slow_chain(tmp_path, marker)
    env = _env(CWLB_TEST_MARKER=marker, NAP_OK=str(tmp_path / "never"))
    proc = _popen(["run", "slow/chain.cwl", "slow/inputs.yaml", "--outds", "user.jdoe.cc"], tmp_path, env)
    _wait_for(lambda: len(_marked_processes(marker)) >= 8, 30, "the jobs' process trees")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "resume" in out
    _wait_for(lambda: not _marked_processes(marker), 10, "every job process to be gone")
    run = _run_dirs(tmp_path)[-1].name
    status = _status(tmp_path, env, run)
    states = {t["short"]: t["state"] for t in status["tasks"]}
    assert states == {"000_nap": "cancelled", "001_after": "waiting"}
    assert status["run"]["status"] == "interrupted"


def test_resume_after_ctrl_c_runs_the_cancelled_task_again_and_goes_on(tmp_path: Path) -> None:
    marker = f"cwlbridge-ctrlc-resume-{os.getpid()}"
    chain = _slow_chain(tmp_path, marker)
    starts = tmp_path / "starts.txt"
    # Job 0 or 1, whichever comes first, finishes at once; the other waits for NAP_OK.
    _write_script(
        chain / "nap.sh",
        f"""\
        echo start >> {starts}
        if mkdir {tmp_path}/first 2>/dev/null; then echo quick > nap.txt; exit 0; fi
        while [ ! -e "$NAP_OK" ]; do sleep 0.2; done
        echo {marker} > nap.txt
        """,
    )
    ok = tmp_path / "ok"
    env = _env(CWLB_TEST_MARKER=marker, NAP_OK=str(ok))
    proc = _popen(["run", "slow/chain.cwl", "slow/inputs.yaml", "--outds", "user.jdoe.cr"], tmp_path, env)
    run = ""

    def one_job_done() -> bool:
        nonlocal run
        dirs = _run_dirs(tmp_path)
        if not dirs:
            return False
        run = dirs[-1].name
        jobs = _status(tmp_path, env, run)["tasks"][0]["jobs"]
        return bool(jobs["done"] == 1 and starts.exists() and len(starts.read_text().split()) == 2)

    _wait_for(one_job_done, 60, "one job of the two to finish")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    ok.touch()
    resumed = _cli(["resume", run], tmp_path, env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    states = {t["short"]: t["state"] for t in _status(tmp_path, env, run)["tasks"]}
    assert states == {"000_nap": "finished", "001_after": "finished"}
    assert starts.read_text().split() == ["start"] * 3, "the finished job is kept, only the cancelled one runs again"


def test_kill_after_ctrl_c_makes_the_cancellation_final(tmp_path: Path) -> None:
    marker = f"cwlbridge-ctrlc-kill-{os.getpid()}"
    _slow_chain(tmp_path, marker)
    env = _env(CWLB_TEST_MARKER=marker, NAP_OK=str(tmp_path / "never"))
    proc = _popen(["run", "slow/chain.cwl", "slow/inputs.yaml", "--outds", "user.jdoe.ck"], tmp_path, env)
    _wait_for(lambda: len(_marked_processes(marker)) >= 8, 30, "the jobs' process trees")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    run = _run_dirs(tmp_path)[-1].name
    killed = _cli(["kill", run], tmp_path, env)
    assert killed.returncode == 0 and "cancelled for good" in killed.stdout, killed.stdout + killed.stderr
    resumed = _cli(["resume", run], tmp_path, env)
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    tasks = {t["short"]: t for t in _status(tmp_path, env, run)["tasks"]}
    assert tasks["000_nap"]["state"] == "cancelled" and "cwlbridge kill" in tasks["000_nap"]["message"]
    assert tasks["001_after"]["state"] == "skipped"
    assert "parent 000_nap cancelled" in tasks["001_after"]["message"]  # the real parent's name
    _wait_for(lambda: not _marked_processes(marker), 10, "every job process to be gone")


def test_second_ctrl_c_kills_jobs_that_ignore_sigterm(tmp_path: Path) -> None:
    marker = f"cwlbridge-ctrlc2-{os.getpid()}"
    chain = _slow_chain(tmp_path, marker)
    _write_script(chain / "nap.sh", "trap '' TERM\nfor i in $(seq 600); do sleep 1; done\n")
    env = _env(CWLB_TEST_MARKER=marker)
    proc = _popen(["run", "slow/chain.cwl", "slow/inputs.yaml", "--outds", "user.jdoe.c2"], tmp_path, env)
    _wait_for(lambda: len(_marked_processes(marker)) >= 5, 30, "the jobs")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # the first Ctrl-C is now waiting for jobs that ignore SIGTERM
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    _wait_for(lambda: not _marked_processes(marker), 10, "every job process to be gone")
    run = _run_dirs(tmp_path)[-1].name
    assert _status(tmp_path, env, run)["tasks"][0]["state"] == "cancelled"


def test_kill_command_stops_a_run_and_its_jobs(tmp_path: Path) -> None:
    marker = f"cwlbridge-kill-{os.getpid()}"
    _slow_chain(tmp_path, marker)
    env = _env(CWLB_TEST_MARKER=marker, NAP_OK=str(tmp_path / "never"))
    proc = _popen(["run", "slow/chain.cwl", "slow/inputs.yaml", "--outds", "user.jdoe.kl"], tmp_path, env)
    _wait_for(lambda: len(_marked_processes(marker)) >= 8, 30, "the jobs' process trees")
    run = _run_dirs(tmp_path)[-1].name
    killed = _cli(["kill", run], tmp_path, env)
    assert killed.returncode == 0, killed.stderr
    proc.communicate(timeout=60)
    assert proc.returncode == 1
    _wait_for(lambda: not _marked_processes(marker), 10, "every job process to be gone")
    status = _status(tmp_path, env, run)
    assert {t["state"] for t in status["tasks"]} <= {"cancelled", "waiting"}
    assert status["run"]["status"] == "cancelled"  # final: resume does not run it again
    assert all("cwlbridge kill" in t["message"] for t in status["tasks"] if t["state"] == "cancelled")


def test_kill_of_an_orphaned_run_cancels_its_jobs(tmp_path: Path) -> None:
    """The engine died (SIGKILL); its jobs ran on; `cwlbridge kill` still stops them."""
    marker = f"cwlbridge-orphan-{os.getpid()}"
    _slow_chain(tmp_path, marker)
    env = _env(CWLB_TEST_MARKER=marker, NAP_OK=str(tmp_path / "never"))
    proc = _popen(["run", "slow/chain.cwl", "slow/inputs.yaml", "--outds", "user.jdoe.or"], tmp_path, env)
    _wait_for(lambda: len(_marked_processes(marker)) >= 8, 30, "the jobs' process trees")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert _marked_processes(marker), "jobs should outlive a crashed engine (they are adopted on resume)"
    run = _run_dirs(tmp_path)[-1].name
    killed = _cli(["kill", run], tmp_path, env)
    assert killed.returncode == 0, killed.stderr
    _wait_for(lambda: not _marked_processes(marker), 10, "every job process to be gone")


def test_resume_after_a_crash_adopts_running_jobs_and_retry_reruns_failures(tmp_path: Path) -> None:
    marker = f"cwlbridge-resume-{os.getpid()}"
    _slow_chain(tmp_path, marker)
    ok_flag = tmp_path / "nap-ok"
    env = _env(CWLB_TEST_MARKER=marker, NAP_OK=str(ok_flag))
    _write_script(
        tmp_path / "slow" / "nap.sh",
        """\
        echo "start $PWD" >> "$LEDGER"
        sleep 1.5
        if [ ! -e "$NAP_OK" ]; then echo "not yet" >&2; exit 4; fi
        echo ok > nap.txt
        echo "end $PWD" >> "$LEDGER"
        """,
    )
    env["LEDGER"] = str(tmp_path / "ledger")
    proc = _popen(["run", "slow/chain.cwl", "slow/inputs.yaml", "--outds", "user.jdoe.rs"], tmp_path, env)
    ledger = tmp_path / "ledger"
    _wait_for(lambda: ledger.exists() and ledger.read_text().count("start") == 2, 30, "both jobs to start")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    run = _run_dirs(tmp_path)[-1].name
    resumed = _cli(["resume", run], tmp_path, env)
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    assert f"cwlbridge logs {run} 000_nap" in resumed.stderr
    starts = (tmp_path / "ledger").read_text().count("start")
    assert starts == 2, "the resumed run must adopt the running jobs, not start them again"
    ok_flag.touch()
    retried = _cli(["retry", run], tmp_path, env)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    tasks = {t["short"]: t for t in _status(tmp_path, env, run)["tasks"]}
    assert tasks["000_nap"]["state"] == "finished" and tasks["000_nap"]["attempt"] == 2
    assert tasks["001_after"]["state"] == "finished"


_DIE_AFTER_SUBMIT = textwrap.dedent(
    """
    import os, sys
    from cwlbridge.backends.local import LocalBackend
    from cwlbridge.cli import main
    submit = LocalBackend.submit
    def submit_then_die(self, spec):
        submit(self, spec)
        os._exit(9)  # the backend has the task; its handle and state are not recorded yet
    LocalBackend.submit = submit_then_die
    sys.argv = ["cwlbridge", *sys.argv[1:]]
    main()
    """
)


def test_a_crash_between_submit_and_its_record_resubmits_the_same_attempt(tmp_path: Path) -> None:
    chain = _slow_chain(tmp_path, "unused")
    _write_script(chain / "nap.sh", 'echo "start $PWD" >> "$LEDGER"\necho ok > nap.txt\n')
    ledger = tmp_path / "ledger"
    env = _env(LEDGER=str(ledger), NAP_OK="")
    args = ["run", "slow/chain.cwl", "slow/inputs.yaml", "--outds", "user.jdoe.cs"]
    died = subprocess.run(
        [sys.executable, "-c", _DIE_AFTER_SUBMIT, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert died.returncode == 9, died.stdout + died.stderr
    run = _run_dirs(tmp_path)[-1].name
    resumed = _cli(["resume", run], tmp_path, env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    tasks = {t["short"]: t for t in _status(tmp_path, env, run)["tasks"]}
    # The attempt whose key was recorded is submitted again under that key (the backend finds
    # it), not a second attempt that would run the same work again.
    assert tasks["000_nap"]["attempt"] == 1 and tasks["000_nap"]["state"] == "finished"
    assert ledger.read_text().count("start") == 2  # its two jobs, once each


# --------------------------------------------------------------------------- REANA


def _recast(tmp_path: Path, nap: str = "0.$(( RANDOM % 5 ))") -> None:
    shutil.copytree(WORKFLOWS / "recast", tmp_path / "recast")
    for name in ("derive.sh", "skim.sh"):
        script = tmp_path / "recast" / name
        body = script.read_text().split("set -euo pipefail\n", 1)[1]
        _write_script(
            script,
            f'echo "start $PWD" >> "$LEDGER"\nsleep {nap}\n' + body + 'echo "end $PWD" >> "$LEDGER"\n',
        )


def _ledger_ends(ledger: Path) -> list[str]:
    if not ledger.exists():
        return []
    return [line.split(" ", 1)[1] for line in ledger.read_text().splitlines() if line.startswith("end ")]


def test_reana_step_on_the_emulator_and_tar_in_rucio(tmp_path: Path, reana_server: Any, rucio_env: Any) -> None:
    ledger = tmp_path / "ledger"
    _recast(tmp_path)
    env = _env(
        REANA_SERVER_URL=reana_server.url, REANA_ACCESS_TOKEN=reana_server.token, LEDGER=str(ledger)
    )
    store = ["--store", f"rucio:{rucio_env.rse}"]
    _register(tmp_path, env, f"user.jdoe:user.jdoe.aod.{os.getpid()}", 4, *store)
    inputs = f"aod: user.jdoe:user.jdoe.aod.{os.getpid()}\nsignal_point: m1000\n"
    (tmp_path / "recast" / "inputs.yaml").write_text(inputs)
    outds = f"user.jdoe.rr{random.randrange(10**6)}"
    result = _cli(["run", "recast/chain.cwl", "recast/inputs.yaml", "--outds", outds, *store], tmp_path, env, 300)
    assert result.returncode == 0, result.stdout + result.stderr
    [workflow] = reana_server.workflows()
    assert workflow["status"] == "finished"
    listed = _cli(["data", "ls", f"{outds}_002_fit_out.tar/", "--json", *store], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    got = _cli(["data", "get", f"{outds}_002_fit_out.tar/", str(tmp_path / "back"), *store], tmp_path, env)
    assert got.returncode == 0, got.stderr
    [tar_path] = list((tmp_path / "back").iterdir())
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile("results/fit.txt")
        assert member is not None
        assert f"{outds}_001_skim_ntup.root/" in member.read().decode()
    assert reana_server.token not in result.stdout + result.stderr


def test_sigkill_at_ten_moments_then_resume_runs_everything_once(tmp_path: Path, reana_server: Any) -> None:
    ledger = tmp_path / "ledger"
    _recast(tmp_path, nap="2.$(( RANDOM % 5 ))")
    reana_server.queue_delay = 6.0
    env = _env(REANA_SERVER_URL=reana_server.url, REANA_ACCESS_TOKEN=reana_server.token, LEDGER=str(ledger))
    _register(tmp_path, env, AOD, 8)
    rng = random.Random(20261121)
    args = ["recast/chain.cwl", "recast/inputs.yaml", "--outds", "user.jdoe.crash", "--jobs", "2"]
    kills = 0
    while kills < 10:
        runs = _run_dirs(tmp_path)
        command = ["resume", runs[-1].name] if runs else ["run", *args]
        proc = _popen(command, tmp_path, env)
        time.sleep(rng.uniform(0.3, 1.5))
        if proc.poll() is not None:
            out = proc.communicate()[0]
            assert proc.returncode in (0, 1), out
            if proc.returncode == 0:
                break  # finished before we could kill it: the remaining kills are moot
            continue
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        kills += 1
    assert kills == 10, "the chain finished before it could be killed ten times"
    [run] = _run_dirs(tmp_path)
    final = _cli(["resume", run.name], tmp_path, env, 300)
    assert final.returncode == 0, final.stdout + final.stderr
    # Every job ran to completion exactly once per recorded attempt.
    ends = _ledger_ends(ledger)
    assert len(ends) == len(set(ends)), "a job attempt ran to completion twice"
    status = _status(tmp_path, env, run.name)
    assert all(t["state"] == "finished" for t in status["tasks"]), status
    for task in status["tasks"]:
        if task["type"] == "prun":
            ended = [e for e in ends if f"/tasks/{task['name']}.a" in e]
            assert len(ended) == task["jobs"]["done"], (task["name"], ended)
    # No REANA workflow was created twice.
    names = [wf["name"] for wf in reana_server.workflows()]
    assert len(names) == len(set(names)) == 1, names
    # The final outputs are complete.
    listed = _cli(["data", "ls", "user.jdoe.crash_002_fit_out.tar/", "--json"], tmp_path, env)
    files = json.loads(listed.stdout)["files"]
    assert len(files) == 1 and files[0]["size"] > 0
    derived = json.loads(_cli(["data", "ls", "user.jdoe.crash_000_derive_daod.root/", "--json"], tmp_path, env).stdout)
    assert len(derived["files"]) == 4  # 8 inputs, --nFilesPerJob 2


# --------------------------------------------------------------------------- progress


def test_terminal_gets_a_live_table_pipe_gets_lines_quiet_gets_the_summary(tmp_path: Path) -> None:
    import pty

    shutil.copytree(WORKFLOWS / "two-step", tmp_path / "two-step")
    env = _env(COLUMNS="120", LINES="40", TERM="xterm")
    args = ["two-step/chain.cwl", "two-step/inputs.yaml"]
    # A terminal: the table with its columns, redrawn in place.
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cwlbridge", "run", *args, "--outds", "user.jdoe.tty"],
        cwd=tmp_path, env=env, stdin=child, stdout=child, stderr=child,
    )  # fmt: skip
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode(errors="replace")
    for column in ("task", "backend", "state", "jobs", "elapsed"):
        assert column in screen
    assert "000_gen" in screen and "finished" in screen and "\x1b[" in screen
    # A pipe: timestamped plain lines, no escape codes.
    piped = _cli(["run", *args, "--outds", "user.jdoe.pipe"], tmp_path, env)
    assert piped.returncode == 0
    assert "\x1b[" not in piped.stdout
    assert any(line.endswith("Z 000_gen  local  finished  jobs 3/3") or " 000_gen  local  finished" in line
               for line in piped.stdout.splitlines())  # fmt: skip
    # --quiet: only the one-line summary.
    quiet = _cli(["run", *args, "--outds", "user.jdoe.quiet", "--quiet"], tmp_path, env)
    assert quiet.returncode == 0
    assert quiet.stdout.strip().count("\n") == 0 and "2 task(s) finished" in quiet.stdout


def test_retry_reruns_only_the_failed_jobs(tmp_path: Path) -> None:
    shutil.copytree(WORKFLOWS / "two-step", tmp_path / "two-step")
    # gen's job 2 fails the first time only; a retry must rerun it alone.
    _write_script(
        tmp_path / "two-step" / "gen.sh",
        """\
        seed=$(cat "$1")
        echo "run $seed" >> "$LEDGER"
        if [ "$seed" = "12" ] && [ ! -e "$FIXED" ]; then exit 5; fi
        echo "event $seed" > "$2"
        """,
    )
    env = _env(LEDGER=str(tmp_path / "ledger"), FIXED=str(tmp_path / "fixed"))
    args = ["run", "two-step/chain.cwl", "two-step/inputs.yaml", "--outds", "user.jdoe.rt"]
    first = _cli(args, tmp_path, env)
    assert first.returncode == 1
    (tmp_path / "fixed").touch()
    run = _run_dirs(tmp_path)[-1].name
    again = _cli(["retry", run, "--task", "gen"], tmp_path, env)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = (tmp_path / "ledger").read_text().split("\n")
    assert sorted(r for r in runs if r) == ["run 11", "run 12", "run 12", "run 13"]
    listed = json.loads(_cli(["data", "ls", "user.jdoe.rt_000_gen_evt.txt/", "--json"], tmp_path, env).stdout)
    assert len(listed["files"]) == 3


def test_a_step_after_a_loop_reads_its_last_iteration(tmp_path: Path) -> None:
    shutil.copytree(WORKFLOWS / "loop", tmp_path / "loop")
    chain = tmp_path / "loop" / "chain.cwl"
    chain.write_text(
        chain.read_text().replace("outputSource: refine/outDS", "outputSource: summary/outDS")
        + textwrap.indent(
            textwrap.dedent(
                """\
                summary:
                  run: prun
                  in:
                    opt_inDS: refine/outDS
                    opt_exec: {default: "cat $(echo %IN | tr , ' ') > summary.txt"}
                    opt_args: {default: "--outputs summary.txt"}
                  out: [outDS]
                """
            ),
            "  ",
        )
    )
    env = _env()
    _register(tmp_path, env, "user.jdoe:user.jdoe.loop.input")
    result = _cli(["run", "loop/chain.cwl", "loop/inputs.yaml", "--outds", "user.jdoe.al"], tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    run = _run_dirs(tmp_path)[-1].name
    tasks = {t["short"]: t for t in _status(tmp_path, env, run)["tasks"]}
    assert tasks["004_summary"]["state"] == "finished"
    assert tasks["004_summary"]["started"] >= tasks["002_decide.3"]["ended"]
    listed = json.loads(_cli(["data", "ls", "user.jdoe.al_004_summary_summary.txt/", "--json"], tmp_path, env).stdout)
    text = Path(listed["files"][0]["path"]).read_text()
    assert text == "fit alpha=0.7 iteration=3\n"
