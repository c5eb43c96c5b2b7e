"""``spawning.spawn``: what the started process gets, and that other threads run meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cwlbridge.backends import spawning


def _sig_ignored(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)


@pytest.mark.parametrize("how", ["glibc", "os.posix_spawn"])
def test_spawn_gives_a_new_session_stdin_and_default_signals(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "os.posix_spawn":
        monkeypatch.setattr(spawning, "_glibc", lambda: None)
    elif not spawning.available():
        pytest.skip("this C library is not glibc 2.26+")
    out = tmp_path / "out"
    read_end, write_end = os.pipe()
    try:
        pid = spawning.spawn(
            "/bin/sh",
            ["/bin/sh", "-c", f'read line; echo "$line $MYVAR $$" > {out}; sleep 30'],
            {"MYVAR": "v1", "PATH": os.environ["PATH"]},
            stdin=read_end,
            default_signals=[signal.SIGPIPE],
        )
    finally:
        os.close(read_end)
    try:
        os.write(write_end, b"hello\n")
        os.close(write_end)
        for _ in range(3000):
            if out.exists() and out.read_text().endswith("\n"):
                break
            time.sleep(0.01)
        assert out.read_text() == f"hello v1 {pid}\n"
        assert os.getsid(pid) == pid  # its own session, so a kill reaches all of it
        assert not _sig_ignored(pid) & (1 << (signal.SIGPIPE - 1))
        assert os.readlink(f"/proc/{pid}/fd/1") == os.devnull
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_spawn_reports_what_cannot_start(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError) as caught:
            spawning.spawn(
                str(tmp_path / "missing"), ["missing"], {}, stdin=read_end, default_signals=[]
            )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert caught.value.errno == 2


@pytest.mark.skipif(not spawning.available(), reason="this C library is not glibc 2.26+: spawn holds the GIL")
def test_other_threads_run_while_a_process_is_being_started(tmp_path: Path) -> None:
    """The child opens a FIFO (its stdout) before exec and blocks there until someone reads it.

    Only a thread that is not waiting for the GIL can open the FIFO's other end: with the lock
    held through the spawn, the process would hang (and be killed by the timeout below).
    """
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    script = textwrap.dedent(
        f"""
        import os, threading, time
        from cwlbridge.backends import spawning
        os.devnull = {str(fifo)!r}  # the child's stdout and stderr: opened before exec, blocks
        pids = []
        def start():
            r, w = os.pipe()
            pids.append(spawning.spawn("/bin/true", ["/bin/true"], {{}}, stdin=r, default_signals=[]))
        helper = threading.Thread(target=start)
        helper.start()
        time.sleep(0.3)  # the helper is in the spawn by now, blocked until the FIFO has a reader
        reader = os.open({str(fifo)!r}, os.O_RDONLY)  # needs the GIL after the sleep
        helper.join()
        os.waitpid(pids[0], 0)
        print("ran during the spawn")
        """
    )
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # lets the child go on (and end)
        pytest.fail("no other thread ran while the process was being started")
    assert done.stdout == "ran during the spawn\n", done.stderr
