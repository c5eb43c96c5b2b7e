"""Job processes that outlive cwlbridge (cwlbridge.backends.jobs): real processes throughout."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cwlbridge.backends import jobs
from cwlbridge.backends.jobs import (
    JobRecord,
    JobRunner,
    append_note,
    job_mark,
    log_path,
    observe,
    read_log,
    stderr_path,
    stdout_path,
)
from cwlbridge.errors import CwlbridgeError
from tests.waiting import wait_until_exists

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")


@pytest.fixture
def runner() -> Iterator[JobRunner]:
    r = JobRunner()
    yield r
    r.close()


def _wait_for(runner: JobRunner, job_dir: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job_dir in runner.wait(1.0):
            return
    raise AssertionError(f"{job_dir} did not end within {timeout} s")


def _until(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def _processes_with(token: str) -> list[int]:
    """Live processes whose command line or environment contains ``token``."""
    found = []
    needle = token.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"Z", b"X"):
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
            try:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    environ = handle.read()
            except OSError:
                environ = b""
        except (OSError, IndexError):
            continue
        if needle in cmdline or needle in environ:
            found.append(int(entry))
    return found


@pytest.fixture
def token() -> Iterator[str]:
    """A unique marker for a test's processes; whatever still carries it is killed afterwards."""
    value = f"cwlbtest{uuid.uuid4().hex[:12]}"
    yield value
    for pid in _processes_with(value):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_job_runs_in_its_directory_with_outputs_and_exit_code(tmp_path: Path, runner: JobRunner) -> None:
    job_dir = tmp_path / "job"
    work = tmp_path / "work"
    job_dir.mkdir()
    work.mkdir()
    env = dict(os.environ, GREETING="hello")
    record = runner.launch(job_dir, 'echo "$GREETING from $(pwd)"; echo oops >&2; exit 7', cwd=work, env=env)
    assert record.pid == record.pgid == record.sid
    assert record.pid != os.getpid()
    _wait_for(runner, job_dir)
    state = observe(job_dir)
    assert state.state == "done"
    assert state.exit_code == 7
    assert state.started is not None and state.ended is not None and state.ended >= state.started
    assert Path(stdout_path(job_dir)).read_text() == f"hello from {work}\n"
    assert Path(stderr_path(job_dir)).read_text() == "oops\n"
    first, second = Path(log_path(job_dir)).read_text().splitlines()
    assert json.loads(first)["pid"] == record.pid and json.loads(second) == {"exit": 7}
    assert sorted(p.name for p in tmp_path.glob("job*")) == ["job", "job.jsonl", "job.sh", "job.stderr", "job.stdout"]
    assert not any(job_dir.iterdir())  # the job's own files are beside its name
    assert runner.running == 0


def test_a_job_starts_with_empty_files_whatever_was_left_under_its_name(tmp_path: Path, runner: JobRunner) -> None:
    """Files made ahead (empty) are used as they are; anything else there is emptied first."""
    job_dir, work = tmp_path / "job", tmp_path / "work"
    job_dir.mkdir()
    work.mkdir()
    Path(log_path(job_dir)).write_text('{"pid": 12, "pg')  # a launcher killed mid-record
    Path(stdout_path(job_dir)).write_text("stale output, much longer than what the job prints\n")
    Path(stderr_path(job_dir)).write_text("")
    assert observe(job_dir).state == "absent"
    record = runner.launch(job_dir, "echo new; echo err >&2", cwd=work, env=dict(os.environ))
    _wait_for(runner, job_dir)
    assert Path(stdout_path(job_dir)).read_text() == "new\n"
    assert Path(stderr_path(job_dir)).read_text() == "err\n"
    first, second = Path(log_path(job_dir)).read_text().splitlines()
    assert json.loads(first)["pid"] == record.pid and json.loads(second) == {"exit": 0}


def test_the_command_runs_as_bash_runs_a_script(tmp_path: Path, runner: JobRunner) -> None:
    """As runGen runs -p on an EL grid node: bash, in a process of its own, no positional
    parameters, `exit` ends the command only, syntax errors give exit code 2."""
    cases = {
        "args": ('echo "$# [$1]"; false; echo "status $?"', 0, "0 []\nstatus 1\n"),
        "exit": ("echo before; exit 5; echo after", 5, "before\n"),
        "exec": ("exec sh -c 'echo replaced; exit 6'", 6, "replaced\n"),
        "syntax": ("if then fi", 2, ""),
        "empty": ("", 0, ""),
        "trap": ("trap 'echo cleaned up' EXIT; echo work; exit 4", 4, "work\ncleaned up\n"),
        "plain": ("echo out; echo err >&2; false", 1, "out\n"),
        "set -e": ("set -e; false; echo not reached", 1, ""),
        "in a function": ("f() { exit 9; }; f", 9, ""),
        "sourced exec": (". ./lib.sh; echo not reached", 3, "lib\n"),
        # bash, not dash: what fails under Debian's /bin/sh
        "[[": ('[[ "a b" == a* ]] && echo match', 0, "match\n"),
        "braces": ("echo {1..3}", 0, "1 2 3\n"),
        "source": ("source ./vars.sh; echo $FROM_SOURCE", 0, "yes\n"),
        "arrays": ("a=(x y z); echo ${#a[@]} ${a[1]}", 0, "3 y\n"),
        "pipefail": ("set -o pipefail; false | true", 1, ""),
        # the wrapper's own variables are not the command's
        "wrapper vars": ('echo "[$rc][$go]"', 0, "[][]\n"),
    }
    (tmp_path / "lib.sh").write_text("echo lib\nexec sh -c 'exit 3'\n")
    (tmp_path / "vars.sh").write_text("FROM_SOURCE=yes\n")
    for name, (command, _, _) in cases.items():
        (tmp_path / name).mkdir()
        runner.launch(tmp_path / name, command, cwd=tmp_path, env=os.environ)
    pending = {tmp_path / name for name in cases}
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        pending -= set(runner.wait(1.0))
    assert not pending, f"{pending} did not end in time"
    for name, (command, code, out) in cases.items():
        state = observe(tmp_path / name)
        got = (state.state, state.exit_code, Path(stdout_path(tmp_path / name)).read_text())
        assert got == ("done", code, out), name
        lines = Path(log_path(tmp_path / name)).read_text().splitlines()
        assert [line for line in lines if line.startswith('{"exit"')] == [f'{{"exit":{code}}}'], name  # once
        assert Path(jobs.script_path(tmp_path / name)).read_text() == command + "\n"


def test_the_command_is_a_bash_process_of_its_own(runner: JobRunner, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    record = runner.launch(job_dir, "echo $PPID; cat /proc/$$/comm; echo $BASH_VERSION", cwd=tmp_path, env=os.environ)
    _wait_for(runner, job_dir)
    parent, name, version = Path(stdout_path(job_dir)).read_text().splitlines()
    assert int(parent) == record.pid  # the wrapper waits for it, to record its exit code
    assert name == "bash" and version


def test_a_job_runs_with_default_signal_handling(tmp_path: Path, runner: JobRunner) -> None:
    """As under PanDA's pilot: nothing the launcher ignores (Python ignores SIGPIPE) is ignored
    in the job, so a closed pipe ends its writer quietly and Ctrl-C-style signals work."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    runner.launch(job_dir, "yes | head -1; grep '^SigIgn:' /proc/self/status", cwd=tmp_path, env=os.environ)
    _wait_for(runner, job_dir)
    first, ignored = Path(stdout_path(job_dir)).read_text().splitlines()
    assert first == "y" and Path(stderr_path(job_dir)).read_text() == ""
    mask = int(ignored.split()[1], 16)
    for number in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM):
        assert not mask & (1 << (number - 1)), signal.Signals(number).name


def test_exit_by_signal_and_a_failing_cd_still_give_an_exit_code(tmp_path: Path, runner: JobRunner) -> None:
    killed = tmp_path / "killed"
    killed.mkdir()
    runner.launch(killed, "sh -c 'kill -9 $$'", cwd=tmp_path, env=os.environ)
    _wait_for(runner, killed)
    assert observe(killed).exit_code == 128 + 9
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    runner.launch(nowhere, "true", cwd=tmp_path / "missing", env=os.environ)
    _wait_for(runner, nowhere)
    assert observe(nowhere).exit_code == 127


def test_wait_returns_when_a_job_ends_not_at_the_timeout(tmp_path: Path, runner: JobRunner) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    runner.launch(job_dir, "sleep 0.2", cwd=tmp_path, env=os.environ)
    start = time.monotonic()
    ended = runner.wait(60)
    while not ended:
        ended = runner.wait(60)
    assert ended == [job_dir]
    assert time.monotonic() - start < 30, "wait() slept to its timeout instead of waking at the job's end"


def test_wake_interrupts_wait(runner: JobRunner) -> None:
    runner.wake()
    start = time.monotonic()
    assert runner.wait(60) == []
    assert time.monotonic() - start < 30


def test_the_command_never_runs_when_cwlbridge_dies_before_the_go_ahead(tmp_path: Path) -> None:
    """The wrapper reads end of file instead of "go" and exits without running anything."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    marker = tmp_path / "ran"
    Path(jobs.script_path(job_dir)).write_text(f"touch {marker}\n")
    argv = ["/bin/sh", "-c", jobs._WRAPPER, "sh", str(job_dir), str(tmp_path), "bash"]
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == jobs.NOT_STARTED_EXIT
    assert observe(job_dir).state == "absent" and not marker.exists()
    assert subprocess.run(argv, input=b"go\n", check=False).returncode == 0
    assert marker.exists() and (tmp_path / "job.jsonl").read_text() == '{"exit":0}\n'


_LAUNCH_AND_CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from cwlbridge.backends.jobs import JobRunner
    job_dir, work = Path(sys.argv[1]), Path(sys.argv[2])
    JobRunner().launch(job_dir, sys.argv[3], cwd=work, env=os.environ)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _launch_in_a_process_that_crashes(job_dir: Path, work: Path, command: str) -> None:
    job_dir.mkdir()
    work.mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, "-c", _LAUNCH_AND_CRASH, str(job_dir), str(work), command], check=False)
    assert result.returncode == -signal.SIGKILL


def test_a_second_process_adopts_a_job_whose_launcher_was_killed(
    tmp_path: Path, runner: JobRunner, release: Path
) -> None:
    job_dir = tmp_path / "job"
    command = f"{wait_until_exists(release)}; echo finished; exit 4"
    _launch_in_a_process_that_crashes(job_dir, tmp_path, command)
    state = observe(job_dir)
    assert state.state == "running", "the job must survive the SIGKILL of the process that started it"
    assert state.record is not None
    assert runner.adopt(job_dir, state.record)
    assert runner.watching(job_dir)
    release.touch()
    _wait_for(runner, job_dir)
    state = observe(job_dir)
    assert (state.state, state.exit_code) == ("done", 4)
    assert Path(stdout_path(job_dir)).read_text() == "finished\n"


def test_a_job_gone_without_exit_code_is_lost(tmp_path: Path, runner: JobRunner) -> None:
    job_dir = tmp_path / "job"
    _launch_in_a_process_that_crashes(job_dir, tmp_path, "sleep 300")
    record = JobRecord.read(job_dir)
    assert record is not None
    os.killpg(record.pgid, signal.SIGKILL)
    _until(lambda: observe(job_dir).state != "running")
    state = observe(job_dir)
    assert state.state == "lost"
    assert not runner.adopt(job_dir, record)


def _log_with_record(job_dir: Path, pid: int, mark: str) -> None:
    job_dir.mkdir()
    record = JobRecord(pid=pid, pgid=pid, sid=pid, started=time.time(), mark=mark)
    Path(log_path(job_dir)).write_text(json.dumps(record.to_json()) + "\n")


def test_a_reused_pid_is_not_taken_for_the_job(tmp_path: Path) -> None:
    """A live session leader with the job's pid counts only if it carries the job's mark."""
    stranger_dir, job_dir = tmp_path / "stranger", tmp_path / "job"
    mark = job_mark(job_dir)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    marked = subprocess.Popen(["sleep", "60"], start_new_session=True, env=dict(os.environ, **{jobs.MARK_ENV: mark}))
    try:
        # The stranger stands in for a process the kernel gave the job's pid to since.
        _log_with_record(stranger_dir, stranger.pid, mark)
        assert observe(stranger_dir).state == "lost"
        assert not JobRunner().adopt(stranger_dir, JobRecord.read(stranger_dir))  # type: ignore[arg-type]
        _log_with_record(job_dir, marked.pid, mark)
        # Until `sleep` is exec'd, /proc shows the environment of the Python that forked it.
        _until(lambda: observe(job_dir).state == "running")
    finally:
        for proc in (stranger, marked):
            proc.kill()
            proc.wait()
    assert observe(job_dir).state == "lost"


def test_only_whole_log_lines_count(tmp_path: Path) -> None:
    """An unfinished line is not written yet; a line cut short and followed by another is skipped."""
    job_dir = tmp_path / "job"
    _log_with_record(job_dir, 2**22 + 17, "x")  # above any pid_max: no such process
    log = Path(log_path(job_dir))
    with open(log, "a") as handle:
        handle.write('{"exit":')
    assert observe(job_dir).state == "lost"
    with open(log, "a") as handle:
        handle.write("3}\n")
    state = observe(job_dir)
    assert state.started is not None and state.ended == max(log.stat().st_mtime, state.started)
    assert (state.state, state.exit_code) == ("done", 3)
    with open(log, "a") as handle:
        handle.write('{"outp')  # a note cut short by a kill, then written again
    ended = time.time() + 5
    append_note(job_dir, {"outputs": ["a"], "ended": ended})
    state = observe(job_dir)
    assert state.notes == ({"outputs": ["a"], "ended": ended},) and state.ended == ended
    assert read_log(tmp_path / "nothing-here").record is None
    append_note(tmp_path, {"failure": "could not start"})
    assert observe(tmp_path).state == "absent" and observe(tmp_path).notes == ({"failure": "could not start"},)


def test_kill_leaves_no_process_behind(tmp_path: Path, runner: JobRunner, token: str) -> None:
    """Background, setsid, double-forked, and setsid+double-forked+scrubbed descendants all die."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    ready = tmp_path / "ready"
    command = textwrap.dedent(
        f"""
        sleep 300 &
        setsid sleep 301 &
        ( sleep 302 & )
        sh -c 'setsid sleep 303 & exit 0'
        env -i TESTMARK={token} setsid sleep 304 &
        sh -c 'env -i TESTMARK={token} sh -c "sleep 305 & exit 0" & exit 0'
        touch {ready}
        wait
        """
    )
    runner.launch(job_dir, command, cwd=tmp_path, env=dict(os.environ, TESTMARK=token))
    _until(ready.exists)
    # The job shell, four sleeps with its environment, and two with only TESTMARK.
    _until(lambda: len(_processes_with(token)) >= 7)
    runner.kill(job_dir, grace=0.5)
    assert _processes_with(token) == []
    _wait_for(runner, job_dir)
    assert observe(job_dir).state == "lost"


def test_kill_of_a_job_adopted_from_a_dead_launcher(tmp_path: Path, runner: JobRunner, token: str) -> None:
    job_dir = tmp_path / "job"
    command = f"( sleep 310 & ); TESTMARK={token} sleep 311"
    os.environ["TESTMARK_OUTER"] = token
    try:
        _launch_in_a_process_that_crashes(job_dir, tmp_path, command)
    finally:
        del os.environ["TESTMARK_OUTER"]
    _until(lambda: len(_processes_with(token)) >= 3)
    fresh = JobRunner()
    try:
        fresh.kill(job_dir, grace=0)
    finally:
        fresh.close()
    assert _processes_with(token) == []
    assert observe(job_dir).state == "lost"


def test_kill_ignores_a_sigterm_trap(tmp_path: Path, runner: JobRunner, token: str) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    runner.launch(job_dir, "trap '' TERM; sleep 320 & wait; wait", cwd=tmp_path, env=dict(os.environ, TESTMARK=token))
    _until(lambda: len(_processes_with(token)) >= 2)
    runner.kill(job_dir, grace=0.2)
    assert _processes_with(token) == []


_KILL_FROM_INSIDE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from cwlbridge.backends.jobs import JobRunner
    JobRunner().kill(Path(sys.argv[1]), grace=0)
    print("survived")
    """
)


def test_kill_never_touches_the_caller(tmp_path: Path, runner: JobRunner) -> None:
    """A cwlbridge started inside a job carries the job's mark; killing that job spares it."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    runner.launch(job_dir, "sleep 300", cwd=tmp_path, env=os.environ)
    record = JobRecord.read(job_dir)
    assert record is not None
    env = dict(os.environ, **{jobs.MARK_ENV: record.mark})
    result = subprocess.run(
        [sys.executable, "-c", _KILL_FROM_INSIDE, str(job_dir)], env=env, capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (0, "survived\n"), result.stderr
    _wait_for(runner, job_dir)
    assert observe(job_dir).state == "lost"


_NESTED = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from cwlbridge.backends.jobs import JobRunner
    inner = Path(sys.argv[1])
    inner.mkdir()
    JobRunner().launch(inner, sys.argv[2], cwd=inner, env=os.environ)
    """
)


def test_kill_reaches_jobs_started_by_a_cwlbridge_inside_the_job(tmp_path: Path, runner: JobRunner, token: str) -> None:
    """An inner job runs in its own session and outlives its launcher; it carries both marks."""
    job_dir = tmp_path / "outer"
    job_dir.mkdir()
    inner = tmp_path / "inner"
    script = tmp_path / "nested.py"
    script.write_text(_NESTED)
    command = f"{sys.executable} {script} {inner} 'sleep 330'; sleep 331"
    runner.launch(job_dir, command, cwd=tmp_path, env=dict(os.environ, TESTMARK=token))
    _until(lambda: JobRecord.read(inner) is not None and len(_processes_with(token)) >= 4)
    record = JobRecord.read(inner)
    assert record is not None and record.sid != JobRecord.read(job_dir).sid  # type: ignore[union-attr]
    runner.kill(job_dir, grace=0.2)
    assert _processes_with(token) == []


def test_commands_a_shell_would_not_take_as_given(runner: JobRunner, tmp_path: Path) -> None:
    """Long commands, bytes that are not UTF-8, syntax errors and NUL characters."""
    results = {}
    commands = {
        "long": ": '" + "x" * 1_000_000 + "'; echo ok",  # a script has no command-line limit
        "bytes": "printf '%s\\n' " + os.fsdecode(b"caf\xe9"),
        "syntax": "echo (",
    }
    for name, command in commands.items():
        job_dir = tmp_path / name
        job_dir.mkdir()
        runner.launch(job_dir, command, cwd=job_dir, env=dict(os.environ))
        _wait_for(runner, job_dir)
        results[name] = (observe(job_dir).exit_code, Path(stdout_path(job_dir)).read_bytes())
    assert results["long"] == (0, b"ok\n")
    assert results["bytes"] == (0, b"caf\xe9\n")
    assert results["syntax"][0] == 2 and b"syntax error" in Path(stderr_path(tmp_path / "syntax")).read_bytes()
    (tmp_path / "nul").mkdir()
    with pytest.raises(CwlbridgeError, match="NUL"):
        runner.launch(tmp_path / "nul", "echo a\0b", cwd=tmp_path, env=dict(os.environ))
    assert observe(tmp_path / "nul").state == "absent"


def test_kill_finds_the_session_after_its_leader_died(tmp_path: Path, runner: JobRunner, token: str) -> None:
    """A process that ignores SIGTERM, dropped the job's mark and was re-parented is found by
    its session only: the kill must still know that session once SIGTERM killed the wrapper."""
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    ready = tmp_path / "ready"
    inner = f"trap '' TERM; touch {ready}; sleep 300"
    command = f"env -i TESTMARK={token} PATH=\"$PATH\" sh -c \"{inner}\" & wait"
    runner.launch(job_dir, command, cwd=tmp_path, env=dict(os.environ, TESTMARK=token))
    _until(ready.exists)
    runner.kill(job_dir, grace=0.5)
    assert _processes_with(token) == []
    _wait_for(runner, job_dir)
