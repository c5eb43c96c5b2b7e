"""Start a process the way ``os.posix_spawn`` does, but without holding Python's lock.

``os.posix_spawn`` keeps the GIL until the child has called ``exec`` (glibc starts it with
``CLONE_VFORK``: the parent waits for the ``exec``).  On a busy machine that takes 0.2-0.7 ms,
during which no other thread of this process runs Python.  glibc's own ``posix_spawn``,
called through ``ctypes``, lets the lock go for the call, so a helper thread can start the
next job's shell while the engine notices the end of the current job (see ``jobs.JobRunner``).

Only where the C library is glibc 2.26 or later (``POSIX_SPAWN_SETSID``); elsewhere
``available()`` is False and callers use ``os.posix_spawn`` in the thread that needs the
process.  The constants below are glibc's (``spawn.h``), the same on every Linux architecture.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Mapping, Sequence

_SETSIGDEF = 0x04
_SETSID = 0x80
# glibc's posix_spawn_file_actions_t is 80 bytes and posix_spawnattr_t 336 (x86_64, aarch64):
# generous buffers, initialised and released by glibc itself.
_FILE_ACTIONS_BYTES = 512
_ATTR_BYTES = 1024
_SIGSET_BYTES = 128


@functools.cache  # found once; two threads asking at once both find the same library
def _glibc() -> ctypes.CDLL | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # type: ignore[union-attr]
        major, minor = (int(part) for part in version.split(".")[:2])
    except (AttributeError, OSError, TypeError, ValueError):
        return None  # not glibc
    if name != "glibc" or (major, minor) < (2, 26):
        return None
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        libc = ctypes.CDLL(path, use_errno=True)  # CDLL calls let the GIL go
        for symbol in (
            "posix_spawn",
            "posix_spawnattr_init",
            "posix_spawnattr_setflags",
            "posix_spawnattr_setsigdefault",
            "posix_spawnattr_destroy",
            "posix_spawn_file_actions_init",
            "posix_spawn_file_actions_adddup2",
            "posix_spawn_file_actions_addopen",
            "posix_spawn_file_actions_destroy",
            "sigemptyset",
            "sigaddset",
        ):
            getattr(libc, symbol)
    except (OSError, AttributeError):
        return None
    return libc


def available() -> bool:
    """Whether ``spawn`` lets other threads run while it starts the process."""
    return _glibc() is not None


def spawn(
    path: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stdin: int,
    default_signals: Sequence[int],
) -> int:
    """Start ``path`` with ``argv`` and ``env`` in a new session; its pid.

    ``stdin`` becomes the child's standard input, its stdout and stderr go to /dev/null;
    ``default_signals`` get their default handling in the child.  An
    ``OSError`` when the process cannot be started.
    """
    libc = _glibc()
    if libc is None:
        actions = [
            (os.POSIX_SPAWN_DUP2, stdin, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ]
        return os.posix_spawn(
            path, list(argv), dict(env), file_actions=actions, setsid=True, setsigdef=tuple(default_signals)
        )
    encode = os.fsencode
    args = (ctypes.c_char_p * (len(argv) + 1))(*[encode(arg) for arg in argv], None)
    environ = [encode(key) + b"=" + encode(value) for key, value in env.items()]
    envp = (ctypes.c_char_p * (len(environ) + 1))(*environ, None)
    actions_buf = ctypes.create_string_buffer(_FILE_ACTIONS_BYTES)
    attr = ctypes.create_string_buffer(_ATTR_BYTES)
    sigset = ctypes.create_string_buffer(_SIGSET_BYTES)
    pid = ctypes.c_int(0)
    _check(libc.posix_spawn_file_actions_init(actions_buf))
    try:
        _check(libc.posix_spawnattr_init(attr))
        try:
            _check(libc.posix_spawn_file_actions_adddup2(actions_buf, stdin, 0))
            for fd in (1, 2):
                _check(libc.posix_spawn_file_actions_addopen(actions_buf, fd, encode(os.devnull), os.O_WRONLY, 0))
            libc.sigemptyset(sigset)
            for signum in default_signals:
                libc.sigaddset(sigset, int(signum))
            _check(libc.posix_spawnattr_setsigdefault(attr, sigset))
            _check(libc.posix_spawnattr_setflags(attr, ctypes.c_short(_SETSID | _SETSIGDEF)))
            _check(libc.posix_spawn(ctypes.byref(pid), encode(path), actions_buf, attr, args, envp))
        finally:
            libc.posix_spawnattr_destroy(attr)
    finally:
        libc.posix_spawn_file_actions_destroy(actions_buf)
    return pid.value


def _check(code: int) -> None:
    """posix_spawn* return an error number rather than setting errno."""
    if code:
        raise OSError(code, os.strerror(code))
