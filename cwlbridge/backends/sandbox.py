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

One exception to "each job gets its own copy": the chain's CWL documents (``*.cwl``) are
shared.  They are what cwlbridge reads, not what jobs run, and they grow with the chain (a
1000-step chain.cwl is 200 kB: a copy per job is 200 MB written, and 0.7 ms per job on the
machine this was measured on).  Given a ``shared`` directory, each such file is written
there once, read-only and named by its content, and every job gets a hard link to it.  A
job that tries to write one in place is refused (EACCES), where on the grid it would
change its own copy; root is not refused, so before each job the shared file is checked
(size and mtime) and written again if a job changed it.  Where links cannot be made, the
file is copied as any other.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
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
#: Sandbox files that jobs share read-only instead of each getting a copy (see above).
SHARED_SUFFIXES = (".cwl",)


@dataclass
class Sandbox:
    """The files of a chain's directory that go into every job, listed once."""

    root: Path
    files: dict[str, int]  # relative path -> mode
    dirs: list[str]
    too_big: list[str]
    contents: dict[str, bytes] = field(default_factory=dict)  # relative path -> bytes, as read when listed
    # rel -> (path, size, mtime_ns) of its shared copy, or None: copy it
    _shared: dict[str, tuple[str, int, int] | None] = field(default_factory=dict, init=False, repr=False)

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

    def copy_into(self, work: Path, shared: Path | None = None) -> list[str]:
        """Put the files into ``work``: copies (a job may change its own files), except that
        ``*.cwl`` files are hard links to read-only copies in ``shared`` when it is given.
        Files already in ``work`` (an earlier copy) are replaced, never written through.

        Returns the shared files that had to be written again because a job changed them.
        """
        rewritten: list[str] = []
        base = str(work)
        for d in self.dirs:
            os.makedirs(os.path.join(base, d), exist_ok=True)
        for rel, mode in self.files.items():
            target_path = os.path.join(base, rel)
            if shared is not None and rel.endswith(SHARED_SUFFIXES):
                source = self._shared_copy(rel, mode, shared, rewritten)
                if source is not None:
                    try:
                        _link_over(source, target_path)
                        continue
                    except OSError:
                        self._shared[rel] = None  # e.g. another file system, or too many links: copy
            data = self.contents.get(rel)
            source_fd = -1
            if data is None:
                try:
                    source_fd = os.open(os.path.join(self.root, rel), os.O_RDONLY)
                except FileNotFoundError:
                    continue  # removed from the chain's directory since it was listed
            try:
                # Created with the source's mode (less the umask), so no chmod is needed.  A new
                # file: one left by an earlier copy may be a link to a shared read-only copy.
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                try:
                    target = os.open(target_path, flags, mode | 0o200)
                except FileExistsError:
                    os.unlink(target_path)
                    target = os.open(target_path, flags, mode | 0o200)
                try:
                    if data is not None:
                        _write_all(target, data)
                    else:
                        _copy_fd(source_fd, target)
                finally:
                    os.close(target)
            finally:
                if source_fd >= 0:
                    os.close(source_fd)
        return rewritten

    def _shared_copy(self, rel: str, mode: int, shared: Path, rewritten: list[str]) -> str | None:
        """The read-only copy of ``rel`` in ``shared`` (written when missing or changed), or None."""
        first = rel not in self._shared
        if not first:
            known = self._shared[rel]
            if known is None:
                return None
            path, size, mtime_ns = known
            with contextlib.suppress(OSError):
                st = os.stat(path)
                if (st.st_size, st.st_mtime_ns) == (size, mtime_ns):
                    return path
            rewritten.append(rel)  # a job changed it (or removed it)
        data = self.contents.get(rel)
        if data is None:  # not kept in memory: copied into each job as any other file
            self._shared[rel] = None
            return None
        path = os.path.join(shared, f"{hashlib.sha256(data).hexdigest()[:24]}-{os.path.basename(rel)}")
        try:
            if not first or not _holds(path, data):  # left by an earlier process, maybe changed
                os.makedirs(shared, exist_ok=True)
                tmp = f"{path}.{os.getpid()}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    _write_all(fd, data)
                finally:
                    os.close(fd)
                os.chmod(tmp, mode & 0o555)
                os.replace(tmp, path)  # jobs linked to a changed copy keep it; new ones get this
            st = os.stat(path)
        except OSError:
            self._shared[rel] = None
            return None
        self._shared[rel] = (path, st.st_size, st.st_mtime_ns)
        return path


def _link_over(source: str, target: str) -> None:
    """Hard-link ``source`` at ``target``, replacing another file there."""
    try:
        os.link(source, target)
    except FileExistsError:
        if os.path.samestat(os.stat(source), os.lstat(target)):
            return
        os.unlink(target)
        os.link(source, target)


def _holds(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(data) + 1) == data
    except OSError:
        return False


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
