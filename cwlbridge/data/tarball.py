"""Deterministic tarballs of step outputs, checksummed while they are written.

The stage-out names files after their content and treats "same name, same adler32" as
"already uploaded", so the same inputs must always give the same bytes: members are
sorted and their owner, group and timestamps are fixed.  adler32 and md5 (the two
checksums Rucio records) are computed on the bytes as they go to disk, so a tarball is
read once, when it is written, and never held in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

from cwlbridge.errors import InputFileError

#: Timestamp written for every member (and the gzip header): the Unix epoch.
FIXED_MTIME = 0
#: Chunk size used when checksumming files.
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class TarResult:
    """A written tarball: its path, size in bytes, adler32 (8 hex digits) and md5."""

    path: Path
    size: int
    adler32: str
    md5: str


class _ChecksummingWriter:
    """A write-only file object that checksums everything passing through it."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._adler = 1
        self._md5 = hashlib.md5()
        self.size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self._adler = zlib.adler32(view, self._adler)
        self._md5.update(view)
        self.size += len(view)
        return self._target.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._target.flush()

    @property
    def adler32(self) -> str:
        return format_adler32(self._adler)

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()


def format_adler32(value: int) -> str:
    """Format an adler32 value the way Rucio stores it: 8 lowercase hex digits, zero-padded."""
    return f"{value & 0xFFFFFFFF:08x}"


def file_checksums(path: Path) -> tuple[str, str, int]:
    """Return (adler32, md5, size) of a file, read once in 1 MiB chunks."""
    adler = 1
    md5 = hashlib.md5()
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                adler = zlib.adler32(chunk, adler)
                md5.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return format_adler32(adler), md5.hexdigest(), size


def _check_member_name(name: str) -> str:
    """Normalise a member name; refuse anything that could land outside the extract dir."""
    if not name or name.startswith("/") or "\\" in name:
        raise InputFileError(f"invalid tarball member name {name!r}: use a relative path with '/' separators")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise InputFileError(f"invalid tarball member name {name!r}: '..' is not allowed")
    clean = "/".join(part for part in parts if part != ".")
    if not clean:
        raise InputFileError(f"invalid tarball member name {name!r}")
    return clean


def _expand(arcname: str, source: Path) -> Iterator[tuple[str, Path]]:
    """Yield (name, path) for a member; a directory contributes itself and its contents."""
    yield arcname, source
    if source.is_dir() and not source.is_symlink():
        for child in source.iterdir():
            yield from _expand(f"{arcname}/{child.name}", child)


def _tarinfo(name: str, path: Path) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    st = path.lstat()
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    # Only the executable bit survives, so the umask of the producing job does not leak in.
    executable = bool(st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        info.mode = 0o777
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        info.mode = 0o755 if executable else 0o644
    else:
        raise InputFileError(f"cannot put {path} into a tarball: not a file, directory or link")
    return info


def _is_gzip(dest: Path) -> bool:
    return dest.name.endswith((".tgz", ".tar.gz"))


def write_tar(members: Sequence[tuple[str, Path]], dest: Path) -> TarResult:
    """Write members (archive name, local path) to dest and return its size and checksums.

    Directories are added recursively.  The output is gzip-compressed when dest ends in
    ``.tgz`` or ``.tar.gz`` and a plain tar otherwise.  Members are sorted by name and get a
    fixed mtime, uid/gid 0 and no user names, so the same inputs always give the same bytes.
    The tarball appears at dest only once complete (written to a ``.part`` file first).
    """
    entries: dict[str, Path] = {}
    for arcname, source in members:
        top = _check_member_name(arcname)
        if not source.exists() and not source.is_symlink():
            raise InputFileError(f"cannot put {source} into a tarball: no such file or directory")
        for name, path in _expand(top, source):
            if name in entries:
                raise InputFileError(f"tarball member {name!r} given twice ({entries[name]} and {path})")
            entries[name] = path

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with open(partial, "wb") as raw:
            writer = _ChecksummingWriter(raw)
            sink = cast(BinaryIO, writer)
            if _is_gzip(dest):
                # filename="" and a fixed mtime keep the gzip header identical between runs.
                with (
                    gzip.GzipFile(
                        filename="", mode="wb", fileobj=sink, mtime=FIXED_MTIME, compresslevel=6
                    ) as compressed,
                    tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
                ):
                    _add_members(tar, entries)
            else:
                with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    _add_members(tar, entries)
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return TarResult(path=dest, size=writer.size, adler32=writer.adler32, md5=writer.md5)


def _add_members(tar: tarfile.TarFile, entries: dict[str, Path]) -> None:
    for name in sorted(entries):
        path = entries[name]
        try:
            info = _tarinfo(name, path)
            if info.isreg():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
        except OSError as exc:
            raise InputFileError(f"cannot put {path} into a tarball: {exc.strerror or exc}") from exc
