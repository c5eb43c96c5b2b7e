"""The chain's sandbox: the files pchain would upload beside the CWL, copied into each job.

pchain tars ``find . -type f -size -1024k`` of the chain's directory (panda-client
``PchainScript.py``, default ``--maxSizeInSandbox 1``): regular files under 1 MB, sub-
directories included, symbolic links not.  Here hidden entries stay out as well (``.git``,
``.cwlbridge`` with the runs and the local store, ``.env`` files): pchain uploads them, which
pchain.md lists as a defect to fix.

The files are read once, when the sandbox is listed, as pchain reads them once to upload
them: every job then starts with the same contents, written from memory (one ``write`` per
file instead of opening and copying the original each time), even if the user edits a
file while the chain runs.  Past ``SANDBOX_MEMORY_BYTES`` in all, the rest is copied from
disk for each job.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

#: pchain puts only files under 1 MB into the sandbox (``find . -type f -size -1024k``).
SANDBOX_MAX_BYTES = 1023 * 1024
#: More sandbox files than this get a notice (a chain kept in a big directory).
SANDBOX_MANY_FILES = 500
#: At most this many bytes of sandbox contents are kept in memory.
SANDBOX_MEMORY_BYTES = 32 * 1024 * 1024


@dataclass
class Sandbox:
    """The files of a chain's directory that go into every job, listed once."""

    root: Path
    files: dict[str, int]  # relative path -> mode
    dirs: list[str]
    too_big: list[str]
    contents: dict[str, bytes] = field(default_factory=dict)  # relative path -> bytes, as read when listed

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
        contents: dict[str, bytes] = {}
        budget = SANDBOX_MEMORY_BYTES
        for rel in list(files):
            try:
                with open(os.path.join(root, rel), "rb") as handle:
                    data = handle.read(SANDBOX_MAX_BYTES + 1)
            except FileNotFoundError:
                del files[rel]  # removed since it was listed
                continue
            except OSError:
                continue  # unreadable: copying it fails the job, with the reason
            if len(data) > SANDBOX_MAX_BYTES:
                del files[rel]  # grew past the limit since it was listed
                too_big.append(rel)
            elif len(data) <= budget:
                contents[rel] = data
                budget -= len(data)
        dirs = sorted({os.path.dirname(rel) for rel in files} - {""})
        return cls(root, files, dirs, too_big, contents)

    def copy_into(self, work: Path) -> None:
        """Copy the files into ``work`` (copies, not links: a job may change its own files)."""
        base = str(work)
        for d in self.dirs:
            os.makedirs(os.path.join(base, d), exist_ok=True)
        for rel, mode in self.files.items():
            data = self.contents.get(rel)
            source = -1
            if data is None:
                try:
                    source = os.open(os.path.join(self.root, rel), os.O_RDONLY)
                except FileNotFoundError:
                    continue  # removed from the chain's directory since it was listed
            try:
                # Created with the source's mode (less the umask), so no chmod is needed.
                target = os.open(os.path.join(base, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode | 0o200)
                try:
                    if data is not None:
                        _write_all(target, data)
                    else:
                        _copy_fd(source, target)
                finally:
                    os.close(target)
            finally:
                if source >= 0:
                    os.close(source)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
