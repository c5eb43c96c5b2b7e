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
