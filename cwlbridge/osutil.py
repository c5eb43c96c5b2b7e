"""Small operating-system helpers shared by the engine, the backends and the cache."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def append_line(path: Path | str, line: bytes) -> None:
    """Append ``line`` (ending in a newline) in one ``write``, creating the file if needed.

    After a line cut short (a writer killed mid-line) it starts a line of its own, so that a
    reader that keeps only whole lines keeps this one.
    """
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)


def open_empty(path: Path | str, flags: int = os.O_WRONLY, mode: int = 0o666) -> int:
    """Open ``path`` for writing as an empty file, created if missing: ``O_TRUNC``, cheaper.

    On ext4, ``O_TRUNC`` on an existing file costs several times a file creation even when
    the file is empty, so an empty file made ahead of time is opened as it is and only a
    non-empty one is cut.
    """
    fd = os.open(path, flags | os.O_CREAT, mode)
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def empty_file(path: Path | str) -> None:
    """Make ``path`` an empty file (see ``open_empty``)."""
    os.close(open_empty(path))
