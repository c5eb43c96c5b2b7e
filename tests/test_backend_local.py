"""The local backend (cwlbridge.backends.local): real jobs, a real local dataset store."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from cwlbridge.backends.base import FINAL_PHASES, TaskSpec, TaskStatus
from cwlbridge.backends.containers import container_command, find_container_engine
from cwlbridge.backends.jobs import JobRecord, is_job_wrapper, observe, read_log
from cwlbridge.backends.local import LocalBackend, lfn_prefix, output_file_name
from cwlbridge.backends.sandbox import SANDBOX_MAX_BYTES
from cwlbridge.backends.splitting import (
    InputFile,
    chunk_files,
    files_from_n_jobs,
    split_rules,
)
from cwlbridge.data.datasets import LocalStore
from cwlbridge.errors import CwlbridgeError
from cwlbridge.model.plan import Task
from cwlbridge.model.prunopts import parse_prun_args
from tests.waiting import wait_until_exists

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")

INPUT = "user.jdoe:user.jdoe.inputs"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A chain directory as a user has it: scripts, a sub-directory, hidden things, a big file."""
    chain = tmp_path / "chain"
    (chain / "conf").mkdir(parents=True)
    (chain / "chain.cwl").write_text("cwlVersion: v1.0\nclass: Workflow\n")
    (chain / "conf" / "settings.txt").write_text("alpha=1\n")
    (chain / "show.sh").write_text('#!/bin/sh\necho "show: $*"\n')  # not executable, as after a git clone
    (chain / ".env").write_text("TOKEN=secret\n")
    (chain / ".git").mkdir()
    (chain / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (chain / ".cwlbridge" / "runs").mkdir(parents=True)
    (chain / ".cwlbridge" / "runs" / "state").write_text("x\n")
    (chain / "big.root").write_bytes(b"\0" * (SANDBOX_MAX_BYTES + 1))
    return chain


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def backend(store: LocalStore, said: list[str]) -> Iterator[LocalBackend]:
    b = LocalBackend(store, jobs=4, containers="never", say=said.append, retry_delay=0.05)
    yield b
    b.close()


def _add_inputs(store: LocalStore, tmp_path: Path, dataset: str = INPUT, count: int = 5, prefix: str = "f") -> None:
    src = tmp_path / f"src-{uuid.uuid4().hex[:6]}"
    src.mkdir()
    files = []
    for i in range(count):
        path = src / f"{prefix}{i}.root"
        path.write_text(f"{prefix}{i}\n" * (i + 1))
        files.append((path.name, path))
    store.add(dataset, files)


def _task(
    exec_text: str,
    args: str = "",
    *,
    name: str = "user.jdoe.test_000_step",
    type_: str = "prun",
    in_ds: list[str] | None = None,
    container: str | None = None,
) -> Task:
    options = parse_prun_args(args)
    return Task(
        id=0,
        name=name,
        step=name.rsplit("_", 1)[-1],
        path="step",
        type=type_,
        in_ds=list(in_ds or []),
        secondary_ds=[],
        exec=exec_text,
        args=args,
        container=container,
        use_secrets=False,
        output_datasets=[f"{name}_{o.type}/" for o in options.outputs],
        parents=[],
        condition=None,
        in_loop=False,
        output_types=[o.type for o in options.outputs] or ["dummy"],
    )


def _spec(task: Task, tmp_path: Path, sandbox: Path, *, retries: int = 0, number: int = 7, **extra: object) -> TaskSpec:
    return TaskSpec(
        task=task,
        run_id="run1",
        attempt=1,
        key=f"run1/{task.name}/1",
        workdir=tmp_path / "run" / "tasks" / task.name / "a1",
        sandbox=sandbox,
        number=number,
        retries=retries,
        env={"CWLBRIDGE_RUN": "run1"},
        **extra,  # type: ignore[arg-type]
    )


def _run(backend: LocalBackend, handle: str, timeout: float = 60.0) -> TaskStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.poll([handle])[handle]
        if status.phase in FINAL_PHASES:
            return status
        backend.wait(1.0)
    raise AssertionError(f"{handle} did not end within {timeout} s: {backend.poll([handle])[handle]}")


def _stdouts(handle: str) -> list[str]:
    """Each job's stdout (last attempt), in job order."""
    result = {}
    for path in sorted(Path(handle).glob("*.*.stdout")):
        index = int(path.name.split(".")[0])
        result[index] = path.read_text()
    return [result[k] for k in sorted(result)]


# -- splitting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("--nFilesPerJob 2", ["f0.root,f1.root", "f2.root,f3.root", "f4.root"]),
        ("--nFiles 3 --nFilesPerJob 2", ["f0.root,f1.root", "f2.root"]),
        ("--nJobs 2 --nFilesPerJob 2", ["f0.root,f1.root", "f2.root,f3.root"]),  # nFiles = 2 x 2
        ("--nJobs 2 --nFiles 4", ["f0.root,f1.root", "f2.root,f3.root"]),  # nFilesPerJob = 4 // 2
        ("--nSkipFiles 1 --nFilesPerJob 3", ["f1.root,f2.root,f3.root", "f4.root"]),
        ("--match 'f[13]*' --nFilesPerJob 1", ["f1.root", "f3.root"]),
        ("--antiMatch f4*,f0* --nFilesPerJob 5", ["f1.root,f2.root,f3.root"]),
        ("", ["f0.root,f1.root,f2.root,f3.root,f4.root"]),  # up to --maxNFilesPerJob (200) per job
        ("--maxNFilesPerJob 2", ["f0.root,f1.root", "f2.root,f3.root", "f4.root"]),
    ],
)
def test_input_files_are_split_as_prun_and_jedi_do(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path, args: str, expected: list[str]
) -> None:
    _add_inputs(store, tmp_path)
    task = _task("echo %IN", args, in_ds=[INPUT])
    handle = backend.submit(_spec(task, tmp_path, sandbox))
    status = _run(backend, handle)
    assert status.phase == "finished", status.message
    assert [line.strip() for line in _stdouts(handle)] == expected
    assert [j.index for j in status.jobs] == list(range(len(expected)))


def test_several_input_datasets_are_split_one_after_the_other(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    _add_inputs(store, tmp_path, count=3)
    _add_inputs(store, tmp_path, dataset="user.jdoe:user.jdoe.more", count=2, prefix="g")
    task = _task("echo %IN", "--nFilesPerJob 2", in_ds=[INPUT, "user.jdoe.more/"])
    status = _run(backend, backend.submit(_spec(task, tmp_path, sandbox)))
    assert status.phase == "finished"
    assert [s.strip() for s in _stdouts(str(tmp_path / "run" / "tasks" / task.name / "a1"))] == [
        "f0.root,f1.root",
        "f2.root",
        "g0.root,g1.root",
    ]


def test_n_gb_per_job_packs_files_by_size() -> None:
    rules = split_rules(parse_prun_args("--nGBPerJob 2 --outputs o.root").namespace)
    gib = 1024**3
    files = [InputFile("d", f"f{i}", size) for i, size in enumerate([gib, gib // 2, gib, 3 * gib, 10, 10])]
    chunks = chunk_files(files, rules)
    assert [[f.name for f in c] for c in chunks] == [["f0", "f1"], ["f2"], ["f3"], ["f4", "f5"]]
    # While the dataset still grows, the last, still open chunk waits.
    assert [[f.name for f in c] for c in chunk_files(files, rules, final=False)] == [["f0", "f1"], ["f2"], ["f3"]]
    assert split_rules(parse_prun_args("--nGBPerJob MAX").namespace).n_gb_per_job is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--nGBPerJob 2 --nFilesPerJob 3", "--nFilesPerJob and --nGBPerJob must be used exclusively"),
        ("--nGBPerJob two", "--nGBPerJob must be an integer or MAX"),
        ("--nGBPerJob 2 --nEventsPerJob 10", "split by events and split by file size"),
    ],
)
def test_options_prun_refuses_are_refused_at_submit(
    backend: LocalBackend, tmp_path: Path, sandbox: Path, args: str, message: str
) -> None:
    with pytest.raises(CwlbridgeError, match=message):
        backend.submit(_spec(_task("echo", args), tmp_path, sandbox))


def test_n_jobs_translation_matches_panda_client() -> None:
    """Our --nJobs rules against panda-client's own set_n_files_from_n_jobs, over a grid."""
    common_args = pytest.importorskip("pandaclient.CommonArgs")
    reference = getattr(common_args, "set_n_files_from_n_jobs", None)
    if reference is None:
        pytest.skip("this panda-client has no set_n_files_from_n_jobs to compare with")
    for n_jobs in (-1, 1, 3):
        for n_files in (0, 2, 7):
            for per_job in (-1, 1, 4):
                for events in ((-1, 0), (10, 0), (10, 25), (30, 10)):
                    options = argparse.Namespace(
                        nJobs=n_jobs, nFiles=n_files, nFilesPerJob=per_job,
                        nEventsPerJob=events[0], nEventsPerFile=events[1],
                    )  # fmt: skip
                    reference(options)
                    ours = files_from_n_jobs(
                        n_jobs if n_jobs > 0 else None,
                        n_files or None,
                        per_job if per_job > 0 else None,
                        events[0] if events[0] > 0 else None,
                        events[1] or None,
                    )
                    theirs = (options.nFiles or None, options.nFilesPerJob if options.nFilesPerJob > 0 else None)
                    assert ours == theirs, (n_jobs, n_files, per_job, events)


def test_tasks_without_input_get_n_jobs_and_rndm_numbers(backend: LocalBackend, tmp_path: Path, sandbox: Path) -> None:
    task = _task("echo seed=%RNDM:100 skip=%SKIPEVENTS max=%MAXEVENTS in=%IN", "--nJobs 3")
    handle = backend.submit(_spec(task, tmp_path, sandbox))
    status = _run(backend, handle)
    assert status.phase == "finished"
    assert _stdouts(handle) == [
        "seed=101 skip=0 max=1 in=%IN\n",
        "seed=102 skip=1 max=1 in=%IN\n",
        "seed=103 skip=2 max=1 in=%IN\n",
    ]


def test_event_splitting_fills_skipevents(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    _add_inputs(store, tmp_path, count=2)
    task = _task("echo %IN %SKIPEVENTS %MAXEVENTS", "--nEventsPerJob 5 --nEventsPerFile 10", in_ds=[INPUT])
    handle = backend.submit(_spec(task, tmp_path, sandbox))
    assert _run(backend, handle).phase == "finished"
    assert _stdouts(handle) == ["f0.root 0 5\n", "f0.root 5 5\n", "f1.root 0 5\n", "f1.root 5 5\n"]
    no_input = _task("echo %SKIPEVENTS %MAXEVENTS", "--nEvents 25 --nEventsPerJob 10", name="user.jdoe.test_001_gen")
    handle = backend.submit(_spec(no_input, tmp_path, sandbox))
    assert _run(backend, handle).phase == "finished"
    assert _stdouts(handle) == ["0 10\n", "10 10\n", "20 5\n"]


def test_secondary_streams_fill_in2_and_start_over_when_used_up(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    _add_inputs(store, tmp_path, count=3)
    _add_inputs(store, tmp_path, dataset="user.jdoe:user.jdoe.bkg", count=2, prefix="b")
    task = _task(
        'echo "%IN" "%IN2" && cat b*.root | head -1',
        "--nFilesPerJob 1 --secondaryDSs IN2:1:user.jdoe.bkg/",
        in_ds=[INPUT],
    )
    handle = backend.submit(_spec(task, tmp_path, sandbox))
    status = _run(backend, handle)
    assert status.phase == "finished"
    assert _stdouts(handle) == [
        "f0.root b0.root\nb0\n",
        "f1.root b1.root\nb1\n",
        "f2.root b0.root\nb0\n",
    ]
    assert status.jobs[0].bytes_in == len("f0\n") + len("b0\n")


def test_write_input_to_txt_lists_a_jobs_inputs_in_a_file(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    _add_inputs(store, tmp_path, count=3)
    task = _task("cat in.txt", "--nFilesPerJob 2 --writeInputToTxt IN:in.txt", in_ds=[INPUT])
    handle = backend.submit(_spec(task, tmp_path, sandbox))
    assert _run(backend, handle).phase == "finished"
    assert _stdouts(handle) == ["f0.root,f1.root", "f2.root"]


# -- outputs ------------------------------------------------------------------------------------


def test_outputs_are_registered_under_panda_names(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    _add_inputs(store, tmp_path, count=2)
    name = "user.jdoe.ana_003_skim"
    task = _task(
        "cat %IN > ntup.root && echo h > hist.root && echo a > a.txt && echo b > b.txt && echo x > log.dat",
        "--outputs ntup.root,hist:hist.root,*.txt,regex|log\\.dat --nFilesPerJob 1",
        name=name,
        in_ds=[INPUT],
    )
    spec = _spec(task, tmp_path, sandbox, number=42)
    # Children must see the datasets as soon as the task is submitted.
    handle = backend.submit(spec)
    for dataset in task.output_datasets:
        assert store.exists(dataset)
    status = _run(backend, handle)
    assert status.phase == "finished", status.message
    assert status.produced
    assert backend.outputs(handle) == [
        f"{name}_ntup.root/",
        f"{name}_hist/",
        f"{name}_XYZ.txt.tgz/",
        f"{name}_0/",
    ]
    assert [f.name for f in store.list(f"{name}_ntup.root/")] == [
        "user.jdoe.00000042._000001.ntup.root",
        "user.jdoe.00000042._000002.ntup.root",
    ]
    assert output_file_name("user.jdoe", 42, 2, "ntup.root") == "user.jdoe.00000042._000002.ntup.root"
    assert store.list(f"{name}_hist/")[0].name == "user.jdoe.00000042._000001.hist.root"
    assert store.list(f"{name}_0/")[0].name == "user.jdoe.00000042._000001.log.dat"
    tgz = store.list(f"{name}_XYZ.txt.tgz/")[0]
    assert tgz.name == "user.jdoe.00000042._000001.XYZ.txt.tgz"
    assert tgz.path is not None
    with tarfile.open(tgz.path) as archive:
        assert sorted(archive.getnames()) == ["a.txt", "b.txt"]
    stored = store.list(f"{name}_ntup.root/")[1]
    assert stored.path is not None and stored.path.read_text() == "f1\nf1\n"
    assert status.jobs[1].bytes_out == sum(f.size for d in backend.outputs(handle) for f in store.list(d)[1:2])
    assert status.jobs[1].bytes_in == len("f1\nf1\n")


def test_a_missing_output_fails_the_job(backend: LocalBackend, tmp_path: Path, sandbox: Path) -> None:
    task = _task("echo only > other.root", "--outputs out.root")
    handle = backend.submit(_spec(task, tmp_path, sandbox))
    status = _run(backend, handle)
    assert status.phase == "failed"
    assert "expected output out.root is missing" in status.message
    assert status.jobs[0].phase == "failed" and status.jobs[0].exit_code == 0
    assert not status.produced
    assert backend.outputs(handle) == []


def test_a_failed_job_is_retried_in_a_fresh_directory(backend: LocalBackend, tmp_path: Path, sandbox: Path) -> None:
    flag = tmp_path / "failed-once"
    task = _task(
        f"if [ -e {flag} ]; then echo ok > out.root; else touch {flag} leftover; echo bad >&2; exit 3; fi",
        "--outputs out.root",
    )
    handle = backend.submit(_spec(task, tmp_path, sandbox, retries=2))
    status = _run(backend, handle)
    assert status.phase == "finished", status.message
    assert status.jobs[0].attempts == 2
    first, second = Path(handle) / "000001.1", Path(handle) / "000001.2"
    assert observe(first).exit_code == 3
    assert Path(f"{first}.stderr").read_text() == "bad\n"
    assert (first / "leftover").exists() and not (second / "leftover").exists()
    assert observe(second).exit_code == 0


def test_retries_run_out(backend: LocalBackend, tmp_path: Path, sandbox: Path) -> None:
    task = _task("exit 5", "--outputs out.root")
    handle = backend.submit(_spec(task, tmp_path, sandbox, retries=2))
    status = _run(backend, handle)
    assert status.phase == "failed"
    assert status.jobs[0].attempts == 3 and status.jobs[0].exit_code == 5
    assert "exit code 5" in status.message and "after 3 attempts" in status.message
    assert sorted(p.name for p in Path(handle).glob("000001.*") if p.is_dir()) == ["000001.1", "000001.2", "000001.3"]
    # Backoff: each attempt started after the previous one ended (plus a growing delay).
    ends = [observe(Path(handle) / f"000001.{n}").ended or 0.0 for n in (1, 2)]
    starts = [observe(Path(handle) / f"000001.{n}").started or 0.0 for n in (2, 3)]
    assert starts[0] >= ends[0] + 0.04 and starts[1] >= ends[1] + 0.09


# -- running ----------------------------------------------------------------------------------


def test_jobs_run_in_parallel_up_to_the_limit(store: LocalStore, tmp_path: Path, sandbox: Path) -> None:
    log = tmp_path / "intervals"
    log.mkdir()
    command = f"t0=$(date +%s.%N); sleep 0.4; echo $t0 $(date +%s.%N) > {log}/$$"
    backend = LocalBackend(store, jobs=2, containers="never", say=lambda m: None)
    try:
        first = backend.submit(_spec(_task(command, "--nJobs 3"), tmp_path, sandbox))
        second = backend.submit(_spec(_task(command, "--nJobs 3", name="user.jdoe.test_001_b"), tmp_path, sandbox))
        assert _run(backend, first).phase == "finished"
        assert _run(backend, second).phase == "finished"
    finally:
        backend.close()
    intervals = [tuple(map(float, p.read_text().split())) for p in log.iterdir()]
    assert len(intervals) == 6
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2


def test_cancel_kills_every_job_and_its_process_tree(backend: LocalBackend, tmp_path: Path, sandbox: Path) -> None:
    token = f"cwlbtest{uuid.uuid4().hex[:10]}"
    ready = tmp_path / "ready"
    ready.mkdir()
    command = f"( sleep 300 & ); setsid sleep 301 & touch {ready}/$$; TOKEN={token} sleep 302; wait"
    task = _task(command, "--nJobs 3")
    spec = dataclasses_replace_env(_spec(task, tmp_path, sandbox), TESTMARK=token)
    handle = backend.submit(spec)
    try:
        # Per job: its wrapper (which runs the command and names the ready file after its pid),
        # the two sleeps it leaves behind and the one it waits for.  Counted by what each process
        # is, not by how many carry the token: a subshell or a touch may be alive for a moment.
        sleeps = sorted([f"sleep {n}" for n in (300, 301, 302)] * 3)
        deadline = time.monotonic() + 30
        while True:
            alive = _processes_with(token)
            wrappers = {int(p.name) for p in ready.iterdir()}
            started = sorted(c for c in _command_lines(alive) if c.startswith("sleep "))
            if (len(wrappers) == 3 and started == sleeps) or time.monotonic() > deadline:
                break
            backend.wait(0.1)
        assert len(wrappers) == 3 and wrappers <= set(alive)
        assert started == sleeps
        backend.cancel(handle)
        assert _processes_with(token) == []
        status = backend.poll([handle])[handle]
        assert status.phase == "cancelled"
        assert [j.phase for j in status.jobs] == ["cancelled"] * 3
        backend.cancel(handle)  # twice is fine
        # A later backend sees it cancelled too, and starts nothing.
        fresh = LocalBackend(backend.store, jobs=2, containers="never", say=lambda m: None)
        try:
            assert fresh.poll([handle])[handle].phase == "cancelled"
        finally:
            fresh.close()
    finally:
        for pid in _processes_with(token):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def dataclasses_replace_env(spec: TaskSpec, **env: str) -> TaskSpec:
    import dataclasses

    return dataclasses.replace(spec, env={**spec.env, **env})


def _what_jobs_left(task: Path) -> str:
    """Every file a task's jobs left beside their directories, with its text (for a failure)."""
    lines = []
    for path in sorted(task.glob("*.*")):
        if path.is_file():
            text = path.read_text(errors="replace")
            lines.append(f"{path.name}: {text!r}")
            if path.suffix == ".jsonl" and text.startswith("{"):
                record = json.loads(text.splitlines()[0])
                pid = record["pid"]
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text().strip()
                except OSError as exc:
                    stat = str(exc)
                lines.append(f"  pid {pid}: {stat} / is_job_wrapper: {is_job_wrapper(pid, record['mark'])}")
    return "\n".join(lines)


def _command_lines(pids: Iterable[int]) -> list[str]:
    """The command lines of processes, arguments joined by spaces ("" for one that is gone)."""
    lines = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                lines.append(handle.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            lines.append("")
    return lines


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                if handle.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except (OSError, IndexError):
            continue
        if token.encode() in environ or token.encode() in cmdline:
            found.append(int(entry))
    return found


def test_each_job_starts_with_a_copy_of_the_sandbox(
    backend: LocalBackend, tmp_path: Path, sandbox: Path, said: list[str]
) -> None:
    task = _task("./show.sh $(cat conf/settings.txt) && echo changed > conf/settings.txt && ls -A", "--nJobs 2")
    handle = backend.submit(_spec(task, tmp_path, sandbox))
    assert _run(backend, handle).phase == "finished"
    for out in _stdouts(handle):
        lines = out.splitlines()
        assert lines[0] == "show: alpha=1"
        assert sorted(lines[1:]) == ["chain.cwl", "conf", "show.sh"]
    assert (sandbox / "conf" / "settings.txt").read_text() == "alpha=1\n"
    assert not os.access(sandbox / "show.sh", os.X_OK), "the user's own file must not be changed"
    assert said == [
        f"sandbox {sandbox}: 1 file(s) of 1 MB or more are not copied into jobs, as pchain would not"
        " upload them: big.root"
    ]


def test_cwl_files_are_shared_read_only_and_the_rest_copied(
    store: LocalStore, tmp_path: Path, sandbox: Path, said: list[str]
) -> None:
    shared = tmp_path / "shared"
    backend = LocalBackend(store, jobs=1, containers="never", say=said.append, shared=shared)
    command = "cat chain.cwl; echo mine >> conf/settings.txt; echo edit >> chain.cwl 2>/dev/null || echo refused"
    try:
        handle = backend.submit(_spec(_task(command, "--nJobs 3"), tmp_path, sandbox))
        assert _run(backend, handle).phase == "finished"
    finally:
        backend.close()
    original = (sandbox / "chain.cwl").read_text()
    (kept,) = shared.iterdir()
    assert not kept.stat().st_mode & 0o222
    jobs = [Path(handle) / f"00000{n}.1" for n in (1, 2, 3)]
    for work, out in zip(jobs, _stdouts(handle), strict=True):
        assert out.startswith(original)  # each job saw the chain as it was, whatever the others did
        assert (work / "conf" / "settings.txt").read_text() == "alpha=1\nmine\n"  # its own copy
        assert (work / "show.sh").stat().st_nlink == 1
    if os.getuid() != 0:  # the write is refused
        assert all(out.endswith("refused\n") for out in _stdouts(handle))
        assert all(os.path.samefile(work / "chain.cwl", kept) for work in jobs)  # one copy, linked
        assert kept.read_text() == original and not [m for m in said if "changed the shared" in m]
    else:  # root writes through any mode; each job after one that did gets a fresh copy
        assert os.path.samefile(jobs[-1] / "chain.cwl", kept)
        assert (jobs[0] / "chain.cwl").read_text() == original + "edit\n"
        assert [m for m in said if "changed the shared" in m] == [
            f"a job of {_task(command, '').name} or earlier changed the shared sandbox file chain.cwl; written again"
        ] * 2


def test_submit_is_idempotent(
    store: LocalStore, backend: LocalBackend, tmp_path: Path, sandbox: Path, release: Path
) -> None:
    count = tmp_path / "count"
    task = _task(f"echo x >> {count}; {wait_until_exists(release)}", "")
    spec = _spec(task, tmp_path, sandbox)
    handle = backend.submit(spec)
    assert backend.submit(spec) == handle
    other = LocalBackend(store, containers="never", say=lambda m: None)
    try:
        assert other.submit(spec) == handle
    finally:
        other.close()
    release.touch()
    assert _run(backend, handle).phase == "finished"
    assert count.read_text() == "x\n"
    assert sorted(p.name for p in Path(handle).iterdir()) == [
        "000001.1", "000001.1.jsonl", "000001.1.sh", "000001.1.stderr", "000001.1.stdout", "task.json"
    ]  # fmt: skip


def test_a_task_of_another_layout_is_not_adopted(store: LocalStore, tmp_path: Path, sandbox: Path) -> None:
    """A task directory written by an older cwlbridge is refused, not half-understood (its jobs could rerun)."""
    spec = _spec(_task("echo ok", ""), tmp_path, sandbox)
    first = LocalBackend(store, containers="never", say=lambda m: None)
    try:
        handle = first.submit(spec)
        assert _run(first, handle).phase == "finished"
    finally:
        first.close()
    task_file = Path(handle) / "task.json"
    task_file.write_text(task_file.read_text().replace('"format":2', '"format":1'))
    other = LocalBackend(store, containers="never", say=lambda m: None)
    try:
        with pytest.raises(CwlbridgeError, match="written by another version of cwlbridge") as caught:
            other.submit(spec)
        assert caught.value.hint == "start a new run of the chain (a new --outds)"
        assert _stdouts(handle) == ["ok\n"]  # nothing ran again
    finally:
        other.close()


def test_a_fresh_backend_adopts_running_jobs_and_starts_the_rest(
    store: LocalStore, tmp_path: Path, sandbox: Path, release: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    command = f"touch {runs}/%RNDM:0; {wait_until_exists(release)}; echo %RNDM:0 > out.root"
    task = _task(command, "--nJobs 3 --outputs out.root")
    first = LocalBackend(store, jobs=2, containers="never", say=lambda m: None)
    handle = first.submit(_spec(task, tmp_path, sandbox))
    assert [j.phase for j in first.poll([handle])[handle].jobs] == ["running", "running", "pending"]
    first.close()  # as if cwlbridge stopped: the two jobs keep running
    second = LocalBackend(store, jobs=2, containers="never", say=lambda m: None)
    try:
        phases = [j.phase for j in second.poll([handle])[handle].jobs]
        assert phases == ["running", "running", "pending"], _what_jobs_left(Path(handle))
        release.touch()
        status = _run(second, handle)
    finally:
        second.close()
    assert status.phase == "finished"
    assert sorted(p.name for p in runs.iterdir()) == ["1", "2", "3"]
    assert [j.attempts for j in status.jobs] == [1, 1, 1]
    assert len(store.list(f"{task.name}_out.root/")) == 3


def test_a_job_that_ended_while_nobody_watched_is_not_run_again(
    store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    count = tmp_path / "count"
    task = _task(f"echo x >> {count}; echo out > out.root", "--outputs out.root")
    first = LocalBackend(store, containers="never", say=lambda m: None)
    handle = first.submit(_spec(task, tmp_path, sandbox))
    first.close()
    deadline = time.monotonic() + 30
    while observe(Path(handle) / "000001.1").state != "done" and time.monotonic() < deadline:
        time.sleep(0.02)
    second = LocalBackend(store, containers="never", say=lambda m: None)
    try:
        status = _run(second, handle)
    finally:
        second.close()
    assert status.phase == "finished"
    assert count.read_text() == "x\n"
    assert second.outputs(handle) == [f"{task.name}_out.root/"]


def test_the_note_of_stored_outputs_waits_for_the_engine_to_wait_and_is_not_needed(
    store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    """The note that a job's outputs are stored is written once the backend waits (off the
    path from one job's end to the next start); a process that dies before that leaves a job
    that a later backend registers again, to the same result."""
    task = _task("echo out > out.root", "--outputs out.root")
    first = LocalBackend(store, containers="never", say=lambda m: None)
    try:
        handle = first.submit(_spec(task, tmp_path, sandbox))
        deadline = time.monotonic() + 30
        while (status := first.poll([handle])[handle]).phase not in FINAL_PHASES and time.monotonic() < deadline:
            time.sleep(0.01)  # polls only: never waits
        assert status.phase == "finished"
        job = Path(handle) / "000001.1"
        assert [n for n in read_log(job).notes if "outputs" in n] == []
        # As if the first process died here: a fresh backend finds the job done, without the note.
        second = LocalBackend(store, containers="never", say=lambda m: None)
        try:
            again = second.poll([handle])[handle]
            assert again.phase == "finished" and again.jobs[0].bytes_out == status.jobs[0].bytes_out == 4
            assert second.outputs(handle) == first.outputs(handle) == [f"{task.name}_out.root/"]
        finally:
            second.close()
        notes = [n for n in read_log(job).notes if "outputs" in n]
        assert len(notes) == 1 and notes[0]["outputs"] == {
            f"{task.name}_out.root/": [output_file_name(lfn_prefix(task.name), 7, 1, "out.root")]
        }
        first.wait(0)
        assert len([n for n in read_log(job).notes if "outputs" in n]) == 2  # each process wrote its own
    finally:
        first.close()
    assert [f.name for f in store.list(f"{task.name}_out.root/")] == notes[0]["outputs"][f"{task.name}_out.root/"]


_SUBMIT_AND_CRASH = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path
    from cwlbridge.backends.base import TaskSpec
    from cwlbridge.backends.local import LocalBackend
    from cwlbridge.data.datasets import LocalStore
    from cwlbridge.model.plan import Task
    data = json.loads(sys.argv[1])
    task = Task(**data["task"])
    spec = TaskSpec(task=task, run_id="r", attempt=1, key="k", workdir=Path(data["workdir"]),
                    sandbox=Path(data["sandbox"]), number=1)
    backend = LocalBackend(LocalStore(data["store"]), jobs=2, containers="never")
    handle = backend.submit(spec)
    deadline = time.time() + 30
    while time.time() < deadline:
        status = backend.poll([handle])[handle]
        if sum(j.phase == "finished" for j in status.jobs) >= 1:
            break
        backend.wait(0.2)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sigkill_of_cwlbridge_mid_task_then_resume_runs_each_job_once(
    store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    log = tmp_path / "log"
    log.mkdir()
    command = f"touch {log}/%RNDM:0.$$; sleep 0.%RNDM:0; echo %RNDM:0 > out.root"
    task = _task(command, "--nJobs 5 --outputs out.root")
    data = {
        "task": {k: v for k, v in vars(task).items() if k in Task.__dataclass_fields__ and k != "pos"},
        "workdir": str(tmp_path / "run" / "a1"),
        "sandbox": str(sandbox),
        "store": str(store.root),
    }
    data["task"]["parents"] = []
    result = subprocess.run([sys.executable, "-c", _SUBMIT_AND_CRASH, json.dumps(data)], check=False)
    assert result.returncode == -signal.SIGKILL
    resumed = LocalBackend(store, jobs=2, containers="never", say=lambda m: None)
    try:
        status = _run(resumed, str(tmp_path / "run" / "a1"))
    finally:
        resumed.close()
    assert status.phase == "finished"
    assert sorted(p.name.split(".")[0] for p in log.iterdir()) == ["1", "2", "3", "4", "5"]
    names = [f.name for f in store.list(f"{task.name}_out.root/")]
    assert names == [f"user.jdoe.00000001._{n:06d}.out.root" for n in range(1, 6)]


# -- growing inputs -----------------------------------------------------------------------------


def test_growing_inputs_are_split_as_they_come(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    parent_out = "user.jdoe.test_000_parent_out.root/"
    store.create(parent_out)
    task = _task("echo %IN", "--nFilesPerJob 2", name="user.jdoe.test_001_child", in_ds=[parent_out])
    handle = backend.submit(_spec(task, tmp_path, sandbox, growing=frozenset({parent_out})))
    status = backend.poll([handle])[handle]
    assert (status.phase, status.jobs) == ("pending", [])
    assert "waiting for more input" in status.message
    _add_inputs(store, tmp_path, dataset=parent_out, count=3)
    status = backend.poll([handle])[handle]
    assert len(status.jobs) == 1  # the third file waits for a partner
    backend.inputs_closed(handle)
    status = _run(backend, handle)
    assert status.phase == "finished"
    assert [s.strip() for s in _stdouts(handle)] == ["f0.root,f1.root", "f2.root"]


def test_jobs_wait_for_a_growing_secondary_dataset(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    _add_inputs(store, tmp_path, count=2)
    secondary = "user.jdoe.test_000_gen_bkg.root/"
    store.create(secondary)
    task = _task(
        "echo %IN %IN2",
        f"--nFilesPerJob 1 --secondaryDSs IN2:1:{secondary}",
        name="user.jdoe.test_001_mix",
        in_ds=[INPUT],
    )
    handle = backend.submit(_spec(task, tmp_path, sandbox, growing=frozenset({secondary})))
    assert backend.poll([handle])[handle].jobs == []
    _add_inputs(store, tmp_path, dataset=secondary, count=1, prefix="b")
    assert backend.poll([handle])[handle].jobs == []
    _add_inputs(store, tmp_path, dataset=secondary, count=2, prefix="c")
    backend.inputs_closed(handle)
    assert _run(backend, handle).phase == "finished"
    assert _stdouts(handle) == ["f0.root b0.root\n", "f1.root c0.root\n"]


def test_a_task_whose_input_stays_empty_fails(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    store.create("user.jdoe:user.jdoe.empty")
    task = _task("echo %IN", "", in_ds=["user.jdoe:user.jdoe.empty"])
    status = _run(backend, backend.submit(_spec(task, tmp_path, sandbox)))
    assert status.phase == "failed"
    assert status.message == "no input files in user.jdoe:user.jdoe.empty"


# -- task types ---------------------------------------------------------------------------------


def test_junction_runs_once_over_every_input_and_outputs_results_json(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    _add_inputs(store, tmp_path, count=3)
    task = _task(
        'echo "%IN" && echo \'{"to_continue": false}\' > results.json',
        "--outputs results.json",
        type_="junction",
        name="user.jdoe.test_004_decide",
        in_ds=[INPUT],
    )
    handle = backend.submit(_spec(task, tmp_path, sandbox))
    status = _run(backend, handle)
    assert status.phase == "finished"
    assert _stdouts(handle) == ["f0.root,f1.root,f2.root\n"]
    stored = store.list(f"{task.name}_results.json/")
    assert [f.name for f in stored] == ["user.jdoe.00000007._000001.results.json"]
    assert stored[0].path is not None and json.loads(stored[0].path.read_text()) == {"to_continue": False}


def test_a_reana_step_that_is_not_the_submitter_runs_once_without_staging(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    _add_inputs(store, tmp_path, count=2)
    task = _task(f"echo fit {INPUT} %IN > fit.txt; ls", "--outputs fit.txt --nJobs 4", type_="reana", in_ds=[INPUT])
    handle = backend.submit(_spec(task, tmp_path, sandbox))
    status = _run(backend, handle)
    assert status.phase == "finished"
    assert len(status.jobs) == 1
    assert "f0.root" not in _stdouts(handle)[0]
    work = Path(handle) / "000001.1"
    assert (work / "fit.txt").read_text() == f"fit {INPUT} %IN\n"


@pytest.mark.parametrize("type_", ["phpo", "gitlab"])
def test_phpo_and_gitlab_steps_are_refused(backend: LocalBackend, tmp_path: Path, sandbox: Path, type_: str) -> None:
    with pytest.raises(CwlbridgeError, match=f"the local backend cannot run {type_} step"):
        backend.submit(_spec(_task("x", "", type_=type_), tmp_path, sandbox))


# -- containers -------------------------------------------------------------------------------


def test_container_image_in_opt_args_and_use_secrets_are_noticed(
    backend: LocalBackend, tmp_path: Path, sandbox: Path, said: list[str]
) -> None:
    task = _task("echo ok", "--containerImage docker://alpine:3 --useSecrets")
    task.use_secrets = True
    assert _run(backend, backend.submit(_spec(task, tmp_path, sandbox))).phase == "finished"
    assert f"{task.name} asks for PanDA secrets (--useSecrets); local jobs run with your own environment" in said
    assert "container docker://alpine:3 requested; running on the host: --containers never" in said


def test_container_command_lines(tmp_path: Path) -> None:
    bind = tmp_path
    work = tmp_path / "000001.1"
    payload = tmp_path / "000001.1.payload.sh"
    docker = container_command(
        "docker", "docker://python:3.11", bind=bind, payload=payload, work=work, env_names=["A", "B"],
        name="cwlbridge-x",
    )  # fmt: skip
    assert docker == [
        "docker", "run", "--rm", "--init", "--name", "cwlbridge-x",
        "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{bind}:{bind}", "-w", str(work),
        "-e", "A", "-e", "B", "python:3.11", "/bin/sh", str(payload),
    ]  # fmt: skip
    apptainer = container_command("apptainer", "python:3.11", bind=bind, payload=payload, work=work, env_names=[])
    assert apptainer[1:] == [
        "exec", "--bind", str(bind), "--pwd", str(work), "docker://python:3.11", "/bin/sh", str(payload),
    ]  # fmt: skip
    cvmfs = container_command(
        "apptainer", "/cvmfs/unpacked.cern.ch/x", bind=bind, payload=payload, work=work, env_names=[]
    )
    assert cvmfs[-3] == "/cvmfs/unpacked.cern.ch/x"
    assert find_container_engine("never") == (None, "--containers never")


def test_a_container_step_runs_on_the_host_when_containers_are_off(
    backend: LocalBackend, tmp_path: Path, sandbox: Path, said: list[str]
) -> None:
    for number, name in enumerate(["user.jdoe.test_000_a", "user.jdoe.test_001_b"]):
        task = _task("echo host > out.txt", "--outputs out.txt", name=name, container="docker://python:3.11")
        assert _run(backend, backend.submit(_spec(task, tmp_path, sandbox, number=number))).phase == "finished"
    notices = [m for m in said if m.startswith("container")]
    assert notices == ["container docker://python:3.11 requested; running on the host: --containers never"]


def test_a_container_step_runs_through_the_engine(store: LocalStore, tmp_path: Path, sandbox: Path) -> None:
    """A stand-in ``docker`` on PATH records its arguments and runs the payload as docker would."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "docker-calls"
    fake = bindir / "docker"
    fake.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            printf '%s\\n' "$@" > {calls}
            while [ $# -gt 2 ]; do
              case "$1" in -w) cd "$2"; shift 2;; *) shift;; esac
            done
            exec "$@"
            """
        )
    )
    fake.chmod(0o755)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bindir}{os.pathsep}{old_path}"
    try:
        backend = LocalBackend(store, containers="docker", say=lambda m: None)
        task = _task("echo inside > out.txt", "--outputs out.txt", container="docker://alpine:3")
        handle = backend.submit(_spec(task, tmp_path, sandbox))
        status = _run(backend, handle)
        backend.close()
    finally:
        os.environ["PATH"] = old_path
    assert status.phase == "finished", status.message
    argv = calls.read_text().splitlines()
    attempt = Path(handle) / "000001.1"
    assert argv[:2] == ["run", "--rm"]
    assert argv[argv.index("-w") + 1] == str(attempt)
    assert argv[argv.index("-v") + 1] == f"{handle}:{handle}"
    assert argv[-3:] == ["alpine:3", "/bin/sh", f"{attempt}.payload.sh"]
    assert Path(f"{attempt}.payload.sh").read_text() == "echo inside > out.txt\n"
    record = JobRecord.read(attempt)
    assert record is not None and record.container == argv[argv.index("--name") + 1]


def test_wait_returns_at_once_when_a_change_is_not_reported_yet(
    backend: LocalBackend, store: LocalStore, tmp_path: Path, sandbox: Path
) -> None:
    """A job that ended while the backend was busy elsewhere (here: a poll about other
    tasks) is news: ``wait`` must not sleep until the next job ends.  It once did, and a
    chain lost up to its whole timeout on every such step."""
    handle = backend.submit(_spec(_task("echo done"), tmp_path, sandbox))
    _until_done_on_disk(handle)
    assert backend.poll([]) == {}  # pumps: the end is seen, but nobody asked about this task
    assert handle in backend.changed()
    start = time.monotonic()
    backend.wait(60.0)
    assert time.monotonic() - start < 30.0
    assert backend.poll([handle])[handle].phase == "finished"
    assert handle not in backend.changed()


def _until_done_on_disk(handle: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if observe(Path(handle) / "000001.1").state == "done":
            return
        time.sleep(0.02)
    raise AssertionError(f"the job of {handle} did not end within {timeout} s")
