"""Deterministic tarballs and their checksums (cwlbridge.data.tarball)."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import time
import zlib
from pathlib import Path

import pytest

from cwlbridge.data.tarball import (
    GZIP_LEVEL,
    TarMemberSizeError,
    TarWriter,
    file_checksums,
    format_adler32,
    write_tar,
)
from cwlbridge.errors import InputFileError


def _outputs(root: Path) -> Path:
    out = root / "outputs"
    (out / "plots").mkdir(parents=True)
    (out / "histos.root").write_bytes(os.urandom(300_000))
    (out / "plots" / "mass.png").write_bytes(b"\x89PNG" + os.urandom(5000))
    (out / "plots" / "empty").mkdir()
    run = out / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o750)
    (out / "latest").symlink_to("histos.root")
    return out


def _reference_checksums(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    return f"{zlib.adler32(data):08x}", hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("suffix", [".tar", ".tgz", ".tar.gz"])
def test_same_inputs_give_identical_bytes_and_correct_checksums(tmp_path: Path, suffix: str) -> None:
    out = _outputs(tmp_path / "src")
    log = tmp_path / "src" / "job.log"
    log.write_text("step finished\n")
    first = write_tar([("outputs", out), ("logs/job.log", log)], tmp_path / "a" / f"o{suffix}")

    # Touch everything and list the members in another order: the bytes must not change.
    later = time.time() + 3600
    for path in [*out.rglob("*"), log]:
        if not path.is_symlink():
            os.utime(path, (later, later))
    second = write_tar([("logs/job.log", log), ("outputs", out)], tmp_path / "b" / f"o{suffix}")

    assert first.path.read_bytes() == second.path.read_bytes()
    assert (first.adler32, first.md5, first.size) == (second.adler32, second.md5, second.size)
    assert (first.adler32, first.md5) == _reference_checksums(first.path)
    assert first.size == first.path.stat().st_size
    assert file_checksums(first.path) == (first.adler32, first.md5, first.size)
    assert not list(first.path.parent.glob("*.part"))

    if suffix != ".tar":
        head = first.path.read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b"
        assert head[4:8] == b"\0\0\0\0"  # gzip header mtime
        assert gzip.decompress(first.path.read_bytes())[257:262] == b"ustar"
    else:
        assert first.path.read_bytes()[:2] != b"\x1f\x8b"


def test_extracted_contents_match_sources(tmp_path: Path) -> None:
    out = _outputs(tmp_path / "src")
    result = write_tar([("outputs", out)], tmp_path / "o.tgz")
    with tarfile.open(result.path) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {
            "outputs",
            "outputs/histos.root",
            "outputs/latest",
            "outputs/plots",
            "outputs/plots/empty",
            "outputs/plots/mass.png",
            "outputs/run.sh",
        }
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members.values())
        assert members["outputs/run.sh"].mode == 0o755
        assert members["outputs/histos.root"].mode == 0o644
        assert members["outputs/latest"].issym()
        assert members["outputs/latest"].linkname == "histos.root"
        tar.extractall(tmp_path / "x", filter="data")
    for name in ("histos.root", "plots/mass.png", "run.sh"):
        assert (tmp_path / "x" / "outputs" / name).read_bytes() == (out / name).read_bytes()


def test_adler32_is_zero_padded(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_checksums(empty) == ("00000001", hashlib.md5(b"").hexdigest(), 0)
    assert format_adler32(0x00AB0001) == "00ab0001"


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside", "a/../../b", "", "a\\b"])
def test_unsafe_member_names_are_refused(tmp_path: Path, name: str) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(InputFileError, match="invalid tarball member name"):
        write_tar([(name, src)], tmp_path / "o.tar")
    assert not (tmp_path / "o.tar").exists()


def test_missing_source_and_duplicate_names_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        write_tar([("a", tmp_path / "missing")], tmp_path / "o.tar")
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(InputFileError, match="given twice"):
        write_tar([("a", src), ("./a", src)], tmp_path / "o.tar")
    with pytest.raises(InputFileError, match="cannot read"):
        file_checksums(tmp_path / "missing")


def _tarfile_reference(members: list[tuple[str, Path]], dest: Path) -> bytes:
    """The same members written by the standard library's tarfile (PAX) and GzipFile."""
    with open(dest, "wb") as raw:
        gz = (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL)
            if dest.suffix == ".tgz"
            else None
        )
        with tarfile.open(fileobj=gz or raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, path in members:
                info = tar.gettarinfo(str(path), arcname=name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
                if info.issym():
                    info.mode = 0o777
                if info.isreg():
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
        if gz is not None:
            gz.close()
    return dest.read_bytes()


@pytest.mark.parametrize("suffix", [".tar", ".tgz"])
def test_bytes_are_those_of_the_standard_tarfile_module(tmp_path: Path, suffix: str) -> None:
    out = _outputs(tmp_path / "src")
    (out / ("long-" + "n" * 120 + ".txt")).write_text("a name longer than 100 characters\n")
    (out / "ümlaut.txt").write_text("non-ASCII name\n")
    mine = write_tar([("outputs", out)], tmp_path / f"mine{suffix}")
    names = sorted(["outputs", *("outputs/" + p.relative_to(out).as_posix() for p in out.rglob("*"))])
    members = [(name, tmp_path / "src" / name) for name in names]
    assert mine.path.read_bytes() == _tarfile_reference(members, tmp_path / f"reference{suffix}")


@pytest.mark.parametrize("suffix", [".tar", ".tgz"])
def test_a_restarted_stream_member_leaves_no_trace(tmp_path: Path, suffix: str) -> None:
    first = os.urandom(3 * 1024 * 1024 + 17)
    second = os.urandom(1000)
    clean = tmp_path / f"clean{suffix}"
    with TarWriter(clean) as tar:
        for name, data in (("a.bin", first), ("b.bin", second)):
            member = tar.add_stream(name, len(data))
            member.write(data)
            member.finish()
        expected = tar.close()

    retried = tmp_path / f"retried{suffix}"
    with TarWriter(retried) as tar:
        member = tar.add_stream("a.bin", len(first))
        member.write(first[: 2 * 1024 * 1024])
        member.restart()  # broken after 2 MiB
        member.write(first[:1024])
        member.restart()  # broken again, early
        for start in range(0, len(first), 1024 * 1024):
            member.write(first[start : start + 1024 * 1024])
        member.finish()
        member = tar.add_stream("b.bin", len(second))
        member.restart()  # broken before any byte arrived
        member.write(second)
        member.finish()
        result = tar.close()

    assert retried.read_bytes() == clean.read_bytes()
    assert (result.adler32, result.md5, result.size) == (expected.adler32, expected.md5, expected.size)
    assert result.checksums == file_checksums(retried)
    with tarfile.open(retried) as archive:
        assert archive.extractfile("a.bin").read() == first  # type: ignore[union-attr]


def test_stream_members_must_deliver_their_announced_size(tmp_path: Path) -> None:
    dest = tmp_path / "o.tar"
    with pytest.raises(TarMemberSizeError, match="more than the announced 4 bytes"), TarWriter(dest) as tar:
        tar.add_stream("a", 4).write(b"12345")
    with pytest.raises(TarMemberSizeError, match="3 of the announced 4 bytes"), TarWriter(dest) as tar:
        member = tar.add_stream("a", 4)
        member.write(b"123")
        member.finish()
    assert not dest.exists() and not list(tmp_path.glob("*.part"))


def test_members_go_in_name_order_once_each(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    for names in (["b", "a"], ["a", "a"], ["a/b", "./a/b"]):
        with pytest.raises(InputFileError, match="name order"), TarWriter(tmp_path / "o.tar") as tar:
            for name in names:
                tar.add_path(name, src)
    assert not (tmp_path / "o.tar").exists()
