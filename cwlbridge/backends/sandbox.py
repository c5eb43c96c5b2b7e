"""The chain's sandbox: the files pchain would upload beside the CWL, copied into each job.

pchain tars ``find . -type f -size -1024k`` of the chain's directory (panda-client
``PchainScript.py``, default ``--maxSizeInSandbox 1``): regular files under 1 MB, sub-
directories included, symbolic links not.  Here hidden entries stay out as well (``.git``,
``.cwlbridge`` with the runs and the local store, ``.env`` files): pchain uploads them, which
pchain.md lists as a defect to fix.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

#: pchain puts only files under 1 MB into the sandbox (``find . -type f -size -1024k``).
SANDBOX_MAX_BYTES = 1023 * 1024
#: More sandbox files than this get a notice (a chain kept in a big directory).
SANDBOX_MANY_FILES = 500


@dataclass
class Sandbox:
    """The files of a chain's directory that go into every job, listed once."""

    root: Path
    files: dict[str, int]  # relative path -> mode
    dirs: list[str]
    too_big: list[str]

    @classmethod
    def scan(cls, root: Path) -> Sandbox:
        """What pchain would put in the sandbox (``find . -type f -size -1024k``), hidden entries left out."""
        files: dict[str, int] = {}
        too_big: list[str] = []
        for current, subdirs, names in os.walk(root):
            # Hidden entries (.git, .cwlbridge with runs and the local store, .env) stay out.
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            rel_dir = os.path.relpath(current, root)
            for name in sorted(names):
                if name.startswith("."):
                    continue
                try:
                    st = os.lstat(os.path.join(current, name))
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue  # like find -type f: no symbolic links, devices or sockets
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if st.st_size > SANDBOX_MAX_BYTES:
                    too_big.append(rel)
                else:
                    files[rel] = st.st_mode & 0o777
        dirs = sorted({os.path.dirname(rel) for rel in files} - {""})
        return cls(root, files, dirs, too_big)

    def copy_into(self, work: Path) -> None:
        """Copy the files into ``work`` (copies, not links: a job may change its own files)."""
        for d in self.dirs:
            os.makedirs(work / d, exist_ok=True)
        for rel, mode in self.files.items():
            try:
                source = os.open(self.root / rel, os.O_RDONLY)
            except FileNotFoundError:
                continue  # removed from the chain's directory since it was listed
            try:
                # Created with the source's mode (less the umask), so no chmod is needed.
                target = os.open(work / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode | 0o200)
                try:
                    _copy_fd(source, target)
                finally:
                    os.close(target)
            finally:
                os.close(source)


def _copy_fd(source: int, target: int) -> None:
    size = os.fstat(source).st_size
    offset = 0
    try:
        while offset < size:
            sent = os.sendfile(target, source, offset, size - offset)
            if sent == 0:
                return
            offset += sent
    except OSError as exc:
        # Systems whose sendfile() only writes to sockets.
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP) or offset:
            raise
        while chunk := os.read(source, 1 << 20):
            os.write(target, chunk)
