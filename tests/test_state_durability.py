"""The run state on the file systems users have, its durable keys, and its creation window."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cwlbridge.engine import state as state_mod
from cwlbridge.engine.state import RUNS_DIR, RunState, filesystem_type, wal_is_safe
from tests.cli_run import run_cli

REPO = Path(__file__).resolve().parent.parent

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /afs rw,relatime shared:20 - afs AFS rw
41 22 0:36 / /eos/user rw,nosuid shared:21 - fuse.eos eosuser rw
42 22 0:37 / /home/my\\040space rw shared:22 - nfs4 server:/home rw,vers=4.2
"""


def test_the_file_system_of_a_path_is_read_from_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert filesystem_type(Path("/afs/cern.ch/user/j/jdoe/run"), info) == "afs"
    assert filesystem_type(Path("/eos/user/j/jdoe"), info) == "fuse.eos"
    assert filesystem_type(Path("/eos/usersomething"), info) == "ext4"  # a prefix of a name is not a mount
    assert filesystem_type(Path("/home/my space/x"), info) == "nfs4"
    assert filesystem_type(Path("/tmp/x"), info) == "ext4"
    assert filesystem_type(Path("/x"), tmp_path / "absent") is None
    assert [wal_is_safe(t) for t in ("ext4", "xfs", None, "afs", "nfs4", "fuse.eos", "NFS")] == [
        True, True, True, False, False, False, False,
    ]
    assert filesystem_type(tmp_path) is not None  # this machine's own /proc/self/mountinfo


def _create(run_dir: Path) -> RunState:
    return RunState.create(
        run_dir, run_id=run_dir.name, chain=Path("chain.cwl"), inputs=None, outds="user.jdoe.x", options={}, plan={}
    )


def test_on_a_network_file_system_the_state_uses_a_rollback_journal_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # This machine has no AFS or NFS: the file system type is what is stood in for.
    monkeypatch.setattr(state_mod, "filesystem_type", lambda path, mountinfo=None: "afs")
    monkeypatch.setattr(state_mod, "_warned_journal", set())
    run_dir = tmp_path / "r1"
    state = _create(run_dir)
    with state.transaction():
        state.add_task("user.jdoe.x_000_a", step="a", type="prun", backend="local", plan_id=0)
    state.begin_attempt("user.jdoe.x_000_a", 1, "k1")
    assert state._conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert state._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert not Path(f"{run_dir / 'state.sqlite'}-wal").exists()
    state.close()
    again = RunState.open(run_dir)
    assert [a.key for a in again.attempts("user.jdoe.x_000_a")] == ["k1"]
    again.close()
    err = capsys.readouterr().err
    assert err.count("is on afs, where SQLite's write-ahead log is unsafe") == 1  # said once
    assert "--base DIR on a local disk avoids it" in err


def test_a_remote_submission_key_is_committed_with_an_fsync(tmp_path: Path) -> None:
    state = _create(tmp_path / "r2")
    with state.transaction():
        for name in ("user.jdoe.x_000_a", "user.jdoe.x_001_b"):
            state.add_task(name, step=name[-1], type="reana", backend="reana", plan_id=0)
    said: list[str] = []
    state._conn.set_trace_callback(said.append)
    with state.transaction():
        state.begin_attempts([("user.jdoe.x_000_a", 1, "ka")], durable=True)
        durable = list(said)
        said.clear()
        state.begin_attempts([("user.jdoe.x_001_b", 1, "kb")])
    state.close()
    full = durable.index("PRAGMA synchronous = FULL")
    insert = next(i for i, s in enumerate(durable) if s.startswith("INSERT INTO attempts"))
    commit = max(i for i, s in enumerate(durable) if s == "COMMIT")
    assert full < insert < commit < durable.index("PRAGMA synchronous = NORMAL")
    assert not any("synchronous" in s for s in said), "a local job's key needs no fsync"


def test_a_fifo_given_as_a_chain_or_inputs_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "chain.cwl"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args in (["validate", str(fifo)], ["plan", str(REPO / "workflows/simple/chain.cwl"), str(fifo),
                                              "--outds", "user.jdoe.x"]):
        done = subprocess.run(
            [sys.executable, "-m", "cwlbridge", *args], capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == 2, done.stderr
        assert "is not a regular file (a FIFO, device or socket)" in done.stderr
    result = run_cli("validate", "/dev/zero")
    assert result.code == 2 and "not a regular file" in result.err


def test_a_run_killed_while_its_state_is_made_leaves_no_run(tmp_path: Path) -> None:
    dies = textwrap.dedent(
        f"""\
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from cwlbridge.engine import state

        real = state._connect

        class Dying:
            def __init__(self, conn):
                self.conn = conn
            def execute(self, sql, *args):
                if sql.startswith("PRAGMA user_version ="):
                    self.conn.execute(sql, *args)
                    os._exit(9)  # killed between the schema and its commit
                return self.conn.execute(sql, *args)
            def __getattr__(self, name):
                return getattr(self.conn, name)

        state._connect = lambda *a, **k: Dying(real(*a, **k))
        state.RunState.create(Path({str(tmp_path / RUNS_DIR / "20240101-000000-dead")!r}), run_id="x",
                              chain=Path("c.cwl"), inputs=None, outds="user.jdoe.x", options={{}}, plan={{}})
        """
    )
    done = subprocess.run([sys.executable, "-c", dies], capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr
    runs = run_cli("runs", "--base", str(tmp_path))
    assert runs.code == 0 and "unreadable" not in runs.text and "no runs under" in runs.err
    resumed = run_cli("resume", "--base", str(tmp_path), "20240101-000000-dead")
    assert resumed.code == 2 and "no schema version" not in resumed.err
    # The same directory can hold a run made later.
    _create(tmp_path / RUNS_DIR / "20240101-000000-dead").close()
    assert "20240101-000000-dead" in run_cli("runs", "--base", str(tmp_path)).out
