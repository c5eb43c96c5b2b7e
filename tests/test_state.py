"""The run state: schema, batching, events, idempotency keys that survive a crash, readers beside a writer."""

from __future__ import annotations

import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cwlbridge.backends.base import JobInfo
from cwlbridge.engine.state import (
    RUNS_DIR,
    SCHEMA_VERSION,
    RunNotFoundError,
    RunState,
    StateError,
    find_run,
    list_runs,
    new_run_id,
)

PLAN = {"outds": "user.jdoe.demo", "tasks": [], "warnings": []}


def make_run(base: Path, run_id: str | None = None) -> RunState:
    run_id = run_id or new_run_id()
    return RunState.create(
        base / RUNS_DIR / run_id,
        run_id=run_id,
        chain=Path("chain.cwl"),
        inputs=Path("inputs.yaml"),
        outds="user.jdoe.demo",
        options={"jobs": 2},
        plan=PLAN,
    )


def test_schema_tables_wal_and_version(tmp_path: Path) -> None:
    state = make_run(tmp_path)
    state.close()
    conn = sqlite3.connect(state.run_dir / "state.sqlite")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "tasks", "attempts", "jobs", "events", "kv"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    assert (state.run_dir / "tasks").is_dir()


def test_run_id_format_and_info(tmp_path: Path) -> None:
    run_id = new_run_id()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", run_id)
    with make_run(tmp_path, run_id) as state:
        info = state.info()
        assert (info.id, info.chain, info.inputs, info.outds) == (run_id, "chain.cwl", "inputs.yaml", "user.jdoe.demo")
        assert info.options == {"jobs": 2}
        assert info.plan == PLAN
        assert info.status == "running" and info.pid == os.getpid()
        state.set_run_status("finished")
        info = state.info()
        assert info.status == "finished" and info.ended is not None and info.ended >= info.created
        changes = [(e.kind, e.old, e.new) for e in state.events()]
        assert changes == [("run", None, "running"), ("run", "running", "finished")]
        with pytest.raises(ValueError, match="unknown run status"):
            state.set_run_status("done")


def test_task_states_make_events_with_times(tmp_path: Path) -> None:
    with make_run(tmp_path) as state:
        before = time.time()
        state.add_task("user.jdoe.demo_000_make", step="make", type="prun", backend="local", plan_id=0)
        state.add_task("user.jdoe.demo_000_make", step="other", type="x", backend="y", plan_id=9)  # ignored
        row = state.task("user.jdoe.demo_000_make")
        assert (row.step, row.state, row.attempt, row.started, row.ended) == ("make", "waiting", 0, None, None)
        state.begin_attempt(row.name, 1, "key-1")
        state.set_task_state(row.name, "submitted")
        state.set_task_state(row.name, "running")
        state.set_task_state(row.name, "running", "still running")  # no change of state: no event
        state.set_task_state(row.name, "finished")
        after = time.time()
        events = [e for e in state.events(row.name) if e.kind == "task"]
        assert [(e.old, e.new) for e in events] == [
            (None, "waiting"), ("waiting", "submitted"), ("submitted", "running"), ("running", "finished")
        ]
        times = [e.time for e in events]
        assert times == sorted(times) and before <= times[0] and times[-1] <= after
        row = state.task(row.name)
        assert row.started is not None and row.ended is not None and before <= row.started <= row.ended <= after
        assert state.attempts(row.name)[0].state == "finished"
        with pytest.raises(KeyError):
            state.task("nope")
        with pytest.raises(KeyError):
            state.set_task_state("nope", "running")
        with pytest.raises(ValueError, match="unknown task state"):
            state.set_task_state(row.name, "done")


def test_retry_restarts_the_clock_and_counts_attempts(tmp_path: Path) -> None:
    with make_run(tmp_path) as state:
        state.add_task("t", step="s", type="prun", backend="local", plan_id=0)
        state.begin_attempt("t", 1, "k1")
        state.set_task_state("t", "running")
        state.set_task_state("t", "failed", "exit 3")
        first = state.task("t")
        state.set_task_state("t", "waiting")
        assert state.task("t").started is None and state.task("t").ended is None
        state.begin_attempt("t", 2, "k2")
        state.record_handle("t", 2, "local:2")
        state.set_task_state("t", "running")
        row = state.task("t")
        assert row.attempt == 2 and row.handle == "local:2" and row.ended is None
        assert row.started is not None and first.started is not None and row.started >= first.started
        assert [(a.attempt, a.key, a.state) for a in state.attempts("t")] == [(1, "k1", "failed"), (2, "k2", "running")]


def test_begin_attempt_is_idempotent_and_keys_are_unique(tmp_path: Path) -> None:
    with make_run(tmp_path) as state:
        state.add_task("a", step="a", type="prun", backend="local", plan_id=0)
        state.add_task("b", step="b", type="prun", backend="local", plan_id=1)
        state.begin_attempt("a", 1, "run/a/1")
        state.begin_attempt("a", 1, "run/a/1")  # a resume records the same attempt again
        assert len(state.attempts("a")) == 1
        with pytest.raises(StateError, match="recorded with key run/a/1"):
            state.begin_attempt("a", 1, "other")
        with pytest.raises(StateError):
            state.begin_attempt("b", 1, "run/a/1")
        with pytest.raises(KeyError):
            state.begin_attempt("missing", 1, "k")
        found = state.attempt_by_key("run/a/1")
        assert found is not None and (found.task, found.attempt, found.handle) == ("a", 1, None)
        assert state.attempt_by_key("never") is None


def test_jobs_upsert_and_phase_events(tmp_path: Path) -> None:
    with make_run(tmp_path) as state:
        state.add_task("t", step="s", type="prun", backend="local", plan_id=0)
        state.begin_attempt("t", 1, "k1")
        state.update_jobs("t", 1, [JobInfo(0, "pending"), JobInfo(1, "pending")])
        state.update_jobs("t", 1, [JobInfo(0, "running", attempts=1, started=10.0), JobInfo(1, "pending")])
        state.update_jobs(
            "t",
            1,
            [
                JobInfo(0, "finished", attempts=1, exit_code=0, started=10.0, ended=12.5, bytes_in=100, bytes_out=7),
                JobInfo(1, "failed", attempts=3, exit_code=2, started=11.0, ended=13.0, bytes_in=50),
            ],
        )
        jobs = state.jobs("t")
        assert [(j.index, j.phase, j.attempts, j.exit_code, j.started, j.ended) for j in jobs] == [
            (0, "finished", 1, 0, 10.0, 12.5),
            (1, "failed", 3, 2, 11.0, 13.0),
        ]
        row = state.task("t")
        assert (row.jobs_total, row.jobs_done, row.jobs_failed, row.bytes_in, row.bytes_out) == (2, 1, 1, 150, 7)
        job_events = [(e.job, e.old, e.new, e.message) for e in state.events("t") if e.kind == "job"]
        assert job_events == [
            (0, None, "pending", ""),
            (1, None, "pending", ""),
            (0, "pending", "running", ""),
            (0, "running", "finished", "exit code 0"),
            (1, "pending", "failed", "exit code 2"),
        ]
        assert state.jobs("t", 2) == []
        with pytest.raises(KeyError):
            state.update_jobs("t", 5, [JobInfo(0, "pending")])


def test_values_round_trip(tmp_path: Path) -> None:
    with make_run(tmp_path) as state:
        assert state.get_value("loop:x", {"i": 0}) == {"i": 0}
        state.set_value("loop:x", {"i": 3, "vars": [1.5, "a"]})
        assert state.get_value("loop:x") == {"i": 3, "vars": [1.5, "a"]}


def test_transaction_batches_and_rolls_back(tmp_path: Path) -> None:
    state = make_run(tmp_path)
    reader = RunState.open(state.run_dir, readonly=True)
    with state.transaction():
        for i in range(50):
            state.add_task(f"t{i}", step=f"s{i}", type="prun", backend="local", plan_id=i)
        assert reader.tasks() == []  # nothing visible outside until the batch commits
    assert len(reader.tasks()) == 50
    with pytest.raises(RuntimeError), state.transaction():
        state.set_task_state("t0", "running")
        raise RuntimeError("boom")
    assert state.task("t0").state == "waiting"
    reader.close()
    state.close()


def test_begin_attempt_inside_a_batch_commits_at_once(tmp_path: Path) -> None:
    state = make_run(tmp_path)
    reader = RunState.open(state.run_dir, readonly=True)
    with state.transaction():
        state.add_task("t", step="s", type="prun", backend="local", plan_id=0)
        state.begin_attempt("t", 1, "k1")
        assert reader.attempt_by_key("k1") is not None  # visible to others before submit is called
        state.set_task_state("t", "submitted")
        assert reader.task("t").state == "waiting"  # the rest of the batch waits for its commit
    assert reader.task("t").state == "submitted"
    reader.close()
    state.close()


def test_a_rounds_other_writes_wait_for_its_end_and_its_reads_see_them(tmp_path: Path) -> None:
    """Between one task's end and the next submission only the attempt is written and committed."""
    state = make_run(tmp_path)
    for name in ("a", "b"):
        state.add_task(name, step=name, type="prun", backend="local", plan_id=0)
    state.begin_attempt("a", 1, "ka")
    statements: list[str] = []
    state._conn.set_trace_callback(statements.append)
    with state.transaction():
        state.update_jobs("a", 1, [JobInfo(0, "finished", attempts=1, exit_code=0)])
        state.set_task_state("a", "finished")
        state.begin_attempt("b", 1, "kb")
        until_commit = statements[: statements.index("COMMIT") + 1]
        assert not [s for s in until_commit if s.startswith(("UPDATE", "INSERT")) and "attempts" not in s
                    and "SET attempt" not in s], until_commit
        state.record_handle("b", 1, "hb")
        state.set_task_state("b", "submitted")
        assert state.task("a").state == "finished" and state.jobs("a")[0].phase == "finished"
        state.set_task_state("b", "running")
    reader = RunState.open(state.run_dir, readonly=True)
    assert [(e.task, e.kind, e.new) for e in reader.events()][-6:] == [
        ("a", "job", "finished"), ("a", "task", "finished"), ("b", "attempt", "begun"),
        ("b", "handle", "hb"), ("b", "task", "submitted"), ("b", "task", "running"),
    ]
    assert reader.task("b").state == "running" and reader.attempts("b")[0].state == "running"
    reader.close()
    state.close()


def test_a_round_of_1000_tasks_is_one_commit(tmp_path: Path) -> None:
    state = make_run(tmp_path)
    statements: list[str] = []
    state._conn.set_trace_callback(statements.append)
    names = [f"user.jdoe.demo_{i:03d}_s{i}" for i in range(1000)]
    with state.transaction():
        for i, name in enumerate(names):
            state.add_task(name, step=f"s{i}", type="prun", backend="local", plan_id=i)
    state.begin_attempts([(name, 1, f"k/{name}") for name in names])
    with state.transaction():
        for name in names:
            state.record_handle(name, 1, f"local:{name}")
            state.set_task_state(name, "running")
            state.update_jobs(name, 1, [JobInfo(0, "running", attempts=1, started=1.0)])
    commits = [s for s in statements if s.strip().upper() == "COMMIT"]
    assert len(commits) == 3
    assert len(state.tasks()) == 1000 and all(r.state == "running" for r in state.tasks())
    state.close()


def _begin_then_die(run_dir: str) -> None:
    state = RunState.open(Path(run_dir))
    with state.transaction():
        state.set_task_state("t", "submitted")
        state.begin_attempt("t", 1, "run/t/1")
        # The engine would call the backend's submit now; the process dies instead.
        os._exit(9)


def test_key_survives_a_crash_right_after_begin_attempt(tmp_path: Path) -> None:
    with make_run(tmp_path) as state:
        state.add_task("t", step="s", type="prun", backend="local", plan_id=0)
        run_dir = state.run_dir
    child = multiprocessing.get_context("spawn").Process(target=_begin_then_die, args=(str(run_dir),))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    with RunState.open(run_dir) as state:
        found = state.attempt_by_key("run/t/1")
        assert found is not None and found.task == "t" and found.handle is None and found.state == "submitting"
        row = state.task("t")
        # The attempt is committed; the state change of the same batch waits for the batch's
        # end (the scheduler's restore treats such a begun attempt as submitted).
        assert row.attempt == 1 and row.state == "waiting"


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from cwlbridge.backends.base import JobInfo
    from cwlbridge.engine.state import RunState
    state = RunState.open(Path(sys.argv[1]))
    for round in range(int(sys.argv[2])):
        with state.transaction():
            for i in range(20):
                name = f"r{round}-t{i}"
                state.add_task(name, step=name, type="prun", backend="local", plan_id=round * 20 + i)
                state.set_task_state(name, "running")
        with state.transaction():
            for i in range(20):
                name = f"r{round}-t{i}"
                state.begin_attempt(name, 1, f"k-{name}")
                state.update_jobs(name, 1, [JobInfo(j, "finished", attempts=1) for j in range(5)])
                state.set_task_state(name, "finished")
        time.sleep(0.02)
    state.set_run_status("finished")
    state.close()
    """
)


def test_readers_see_whole_rounds_while_a_writer_writes(tmp_path: Path) -> None:
    with make_run(tmp_path) as state:
        run_dir = state.run_dir
    rounds = 40
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(run_dir), str(rounds)])
    seen_counts = set()
    try:
        while True:
            reader = RunState.open(run_dir, readonly=True)
            with reader.transaction():
                info = reader.info()
                rows = reader.tasks()
            reader.close()
            assert len(rows) % 20 == 0  # a round is committed whole or not at all
            for row in rows:
                if row.state == "finished":
                    assert (row.jobs_total, row.jobs_done) == (5, 5)
            seen_counts.add(len(rows))
            if info.status == "finished":
                break
            assert writer.poll() is None or writer.returncode == 0
    finally:
        writer.wait(60)
    assert writer.returncode == 0
    assert max(seen_counts) == rounds * 20
    assert any(0 < n < rounds * 20 for n in seen_counts), f"no read fell inside the run: {sorted(seen_counts)}"
    with RunState.open(run_dir, readonly=True) as done:
        assert all(r.state == "finished" for r in done.tasks())
        with pytest.raises(StateError, match="read-only"):
            done.set_value("x", 1)


def test_unknown_schema_version_is_a_clear_error(tmp_path: Path) -> None:
    state = make_run(tmp_path)
    state.close()
    conn = sqlite3.connect(state.run_dir / "state.sqlite")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    for readonly in (True, False):
        with pytest.raises(StateError, match=f"schema version {SCHEMA_VERSION + 1}, newer than .*upgrade cwlbridge"):
            RunState.open(state.run_dir, readonly=readonly)
    runs = list_runs(tmp_path)
    assert [(r.id, r.status) for r in runs] == [(state.run_id, "unreadable")]
    assert "upgrade cwlbridge" in runs[0].error


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    run_dir = tmp_path / RUNS_DIR / "20240101-000000-abcd"
    run_dir.mkdir(parents=True)
    (run_dir / "state.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateError, match="not a readable run state"):
        RunState.open(run_dir, readonly=True)
    with pytest.raises(StateError, match="missing"):
        RunState.open(tmp_path)


def test_find_run_by_id_prefix_path_and_latest(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="no runs under"):
        find_run(None, tmp_path)
    for run_id in ("20240101-000000-aaaa", "20240102-000000-bbbb", "20240102-000000-bbbc"):
        make_run(tmp_path, run_id).close()
    root = tmp_path / RUNS_DIR
    assert find_run(None, tmp_path) == root / "20240102-000000-bbbc"
    assert find_run("20240101-000000-aaaa", tmp_path) == root / "20240101-000000-aaaa"
    assert find_run("20240101", tmp_path) == root / "20240101-000000-aaaa"
    assert find_run(str(root / "20240102-000000-bbbb"), tmp_path) == root / "20240102-000000-bbbb"
    with pytest.raises(RunNotFoundError, match="ambiguous"):
        find_run("20240102", tmp_path)
    with pytest.raises(RunNotFoundError, match="no run 'zzz'") as err:
        find_run("zzz", tmp_path)
    assert "cwlbridge runs" in str(err.value)
    ids = [r.id for r in list_runs(tmp_path)]
    assert ids == ["20240101-000000-aaaa", "20240102-000000-bbbb", "20240102-000000-bbbc"]
    with pytest.raises(StateError, match="exists already"):
        make_run(tmp_path, "20240101-000000-aaaa")


def test_a_dead_running_run_shows_as_interrupted(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with make_run(tmp_path) as state:
        state.set_run_status("running", pid=child.pid)
        info = state.info()
    assert info.status == "running" and info.effective_status() == "interrupted"
    with make_run(tmp_path) as state:
        assert state.info().effective_status() == "running"  # this process is alive
