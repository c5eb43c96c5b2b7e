"""Deterministic tarballs of step outputs, checksummed while they are written.

The stage-out names files after their content and treats "same name, same adler32" as
"already uploaded", so the same inputs must always give the same bytes: members are
sorted and their owner, group and timestamps are fixed.  adler32 and md5 (the two
checksums Rucio records) are computed on the bytes as they go to disk, so a tarball is
read once, when it is written, and never held in memory.  md5 runs on a worker thread:
at about 2 s per GB on one core it is the slowest step of a stage-out, and on its own
thread it overlaps with receiving and writing the next bytes.

``TarWriter`` takes members from disk (``add_path``) or as a stream of known size
(``add_stream``), so a REANA download goes straight into the tarball with no scratch
copy.  A stream member can start again from its first byte (``TarMember.restart``:
the file, the compressor and both checksums are rewound), which lets a broken download
be retried.  The bytes are those ``tarfile`` writes in PAX format (inside
``gzip.GzipFile`` with no name and mtime 0 for ``.tgz``), which the tests check.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import struct
import tarfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cwlbridge.errors import InputFileError

#: Timestamp written for every member (and the gzip header): the Unix epoch.
FIXED_MTIME = 0
#: Chunk size used when reading files.
CHUNK = 1024 * 1024
#: Compression level of ``.tgz`` output (gzip's default).
GZIP_LEVEL = 6
# How many written chunks md5 may lag behind the writer before the writer waits.
_MD5_BACKLOG = 16
_NUL = b"\0"


@dataclass(frozen=True)
class TarResult:
    """A written tarball: its path, size in bytes, adler32 (8 hex digits) and md5."""

    path: Path
    size: int
    adler32: str
    md5: str

    @property
    def checksums(self) -> tuple[str, str, int]:
        """(adler32, md5, size): what ``stage_out(checksums=…)`` takes."""
        return self.adler32, self.md5, self.size


class TarMemberSizeError(InputFileError):
    """A stream member delivered more or fewer bytes than announced."""


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


# --------------------------------------------------------------------------- output layers


@dataclass
class _Mark:
    """A point in the output file to rewind to; the md5 worker fills in ``md5``."""

    offset: int
    adler: int
    md5: Any = None


class _ChecksummedFile:
    """The output file: each byte written is counted, adler32'd inline and md5'd on a thread.

    Chunks are queued to the md5 thread as they are, so callers pass ``bytes`` they
    never change afterwards.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._adler = 1
        self._md5 = hashlib.md5()
        self._failure: BaseException | None = None
        self.size = 0
        self._queue: queue.Queue[bytes | _Mark | None] = queue.Queue(maxsize=_MD5_BACKLOG)
        self._worker = threading.Thread(target=self._hash, name="tarball-md5", daemon=True)
        self._worker.start()

    def _hash(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if isinstance(item, _Mark):
                    item.md5 = self._md5.copy()
                else:
                    self._md5.update(item)
            except BaseException as exc:  # reported by finish(); the queue must keep draining
                self._failure = exc
            finally:
                self._queue.task_done()

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._adler = zlib.adler32(data, self._adler)
        self._raw.write(data)
        self.size += len(data)
        self._queue.put(data)

    def mark(self) -> _Mark:
        point = _Mark(offset=self.size, adler=self._adler)
        self._queue.put(point)
        return point

    def rewind(self, point: _Mark) -> None:
        self._queue.join()  # the md5 thread now waits for work and has filled in point.md5
        self._md5 = point.md5.copy()
        self._adler = point.adler
        self.size = point.offset
        self._raw.seek(point.offset)
        self._raw.truncate()

    def finish(self) -> tuple[int, str, str]:
        """Stop the md5 thread; return (size, adler32, md5) of everything written."""
        self.stop()
        if self._failure is not None:
            raise self._failure
        return self.size, format_adler32(self._adler), self._md5.hexdigest()

    def stop(self) -> None:
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()


@dataclass
class _GzipMark:
    file: _Mark
    deflate: Any
    crc: int
    size: int


class _GzipStream:
    """gzip framing and deflate in front of the output file, as ``gzip.GzipFile`` writes them."""

    def __init__(self, out: _ChecksummedFile, level: int = GZIP_LEVEL) -> None:
        self._out = out
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0)
        self._crc = 0
        self._size = 0
        extra_flags = b"\x02" if level == 9 else b"\x04" if level == 1 else b"\x00"
        # No file name and a fixed mtime keep the header identical between runs.
        out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", FIXED_MTIME) + extra_flags + b"\xff")

    def write(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        compressed = self._deflate.compress(data)
        if compressed:
            self._out.write(compressed)

    def mark(self) -> _GzipMark:
        return _GzipMark(self._out.mark(), self._deflate.copy(), self._crc, self._size)

    def rewind(self, point: _GzipMark) -> None:
        self._out.rewind(point.file)
        self._deflate = point.deflate.copy()
        self._crc = point.crc
        self._size = point.size

    def finish(self) -> None:
        self._out.write(self._deflate.flush())
        self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


# --------------------------------------------------------------------------- tar layer


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


def _fixed_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _tarinfo(name: str, path: Path) -> tarfile.TarInfo:
    info = _fixed_info(name)
    st = path.lstat()
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


class TarMember:
    """A member of a ``TarWriter`` whose bytes arrive as a stream (a REANA download sink).

    ``write`` takes the next chunk, ``restart`` rewinds the tarball to this member's
    first data byte, ``finish`` checks the byte count and closes the member.
    """

    def __init__(self, writer: TarWriter, name: str, size: int) -> None:
        self._writer = writer
        self.name = name
        self.size = size
        self.written = 0
        self._start = writer._mark()

    def write(self, data: bytes, /) -> None:
        if self.written + len(data) > self.size:
            raise TarMemberSizeError(f"{self.name}: more than the announced {self.size} bytes arrived")
        self._writer._write(data)
        self.written += len(data)

    def restart(self) -> None:
        self._writer._rewind(self._start)
        self.written = 0

    def finish(self) -> None:
        if self.written != self.size:
            raise TarMemberSizeError(f"{self.name}: {self.written} of the announced {self.size} bytes arrived")
        self._writer._end_member(self)


class TarWriter:
    """Writes a deterministic tarball to ``dest``, gzip-compressed when it ends in .tgz/.tar.gz.

    Members must be added in name order (that order is part of what makes the bytes
    reproducible).  Use as a context manager and call ``close`` inside it: the tarball
    appears at ``dest`` only then, complete; leaving the block otherwise removes it.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        self._partial = self.dest.with_name(self.dest.name + ".part")
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(self._partial, "wb")  # noqa: SIM115 - closed by close() or abort()
        self._file = _ChecksummedFile(self._raw)
        self._gzip = _GzipStream(self._file) if is_gzip_name(self.dest) else None
        self._offset = 0
        self._last_name: str | None = None
        self._open: TarMember | None = None
        self._done = False

    def __enter__(self) -> TarWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._done:
            self.abort()

    # -- members

    def add_path(self, name: str, path: Path) -> None:
        """Add a file, a directory entry (not its contents) or a symbolic link from disk."""
        try:
            info = _tarinfo(self._next_name(name), path)
            self._header(info)
            if info.isreg():
                with open(path, "rb") as handle:
                    remaining = info.size
                    while remaining:
                        chunk = handle.read(min(CHUNK, remaining))
                        if not chunk:
                            raise InputFileError(f"cannot put {path} into a tarball: it shrank while being read")
                        self._write(chunk)
                        remaining -= len(chunk)
                self._pad(info.size)
        except OSError as exc:
            raise InputFileError(f"cannot put {path} into a tarball: {exc.strerror or exc}") from exc

    def add_stream(self, name: str, size: int, *, mode: int = 0o644) -> TarMember:
        """Start a regular-file member of ``size`` bytes; feed it, then call its ``finish``."""
        info = _fixed_info(self._next_name(name))
        info.type = tarfile.REGTYPE
        info.size = size
        info.mode = mode
        self._header(info)
        self._open = TarMember(self, info.name, size)
        return self._open

    def close(self) -> TarResult:
        """Write the end of the archive, put it at ``dest`` and return its size and checksums."""
        if self._open is not None:
            raise RuntimeError(f"tarball member {self._open.name} was not finished")
        self._write(_NUL * (tarfile.BLOCKSIZE * 2))
        remainder = self._offset % tarfile.RECORDSIZE
        if remainder:
            self._write(_NUL * (tarfile.RECORDSIZE - remainder))
        if self._gzip is not None:
            self._gzip.finish()
        size, adler32, md5 = self._file.finish()
        self._raw.close()
        os.replace(self._partial, self.dest)
        self._done = True
        return TarResult(path=self.dest, size=size, adler32=adler32, md5=md5)

    def abort(self) -> None:
        """Stop writing and remove the partial tarball."""
        self._done = True
        self._file.stop()
        self._raw.close()
        self._partial.unlink(missing_ok=True)

    # -- internals shared with TarMember

    def _next_name(self, name: str) -> str:
        if self._open is not None:
            raise RuntimeError(f"tarball member {self._open.name} was not finished")
        clean = _check_member_name(name)
        if self._last_name is not None and clean <= self._last_name:
            raise InputFileError(
                f"tarball member {clean!r} comes after {self._last_name!r}: members go in name order, once each"
            )
        self._last_name = clean
        return clean

    def _header(self, info: tarfile.TarInfo) -> None:
        self._write(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))

    def _write(self, data: bytes) -> None:
        if self._gzip is not None:
            self._gzip.write(data)
        else:
            self._file.write(data)
        self._offset += len(data)

    def _pad(self, size: int) -> None:
        remainder = size % tarfile.BLOCKSIZE
        if remainder:
            self._write(_NUL * (tarfile.BLOCKSIZE - remainder))

    def _mark(self) -> tuple[int, _Mark | _GzipMark]:
        return self._offset, (self._gzip.mark() if self._gzip is not None else self._file.mark())

    def _rewind(self, point: tuple[int, _Mark | _GzipMark]) -> None:
        offset, where = point
        if isinstance(where, _GzipMark):
            assert self._gzip is not None
            self._gzip.rewind(where)
        else:
            self._file.rewind(where)
        self._offset = offset

    def _end_member(self, member: TarMember) -> None:
        self._pad(member.size)
        self._open = None


def is_gzip_name(dest: Path) -> bool:
    """Whether a tarball name asks for gzip compression (.tgz, .tar.gz)."""
    return dest.name.endswith((".tgz", ".tar.gz"))


def _expand(arcname: str, source: Path) -> Iterator[tuple[str, Path]]:
    """Yield (name, path) for a member; a directory contributes itself and its contents."""
    yield arcname, source
    if source.is_dir() and not source.is_symlink():
        for child in source.iterdir():
            yield from _expand(f"{arcname}/{child.name}", child)


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
    with TarWriter(dest) as tar:
        for name in sorted(entries):
            tar.add_path(name, entries[name])
        return tar.close()
