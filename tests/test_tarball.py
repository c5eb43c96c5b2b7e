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

from cwlbridge.data.tarball import file_checksums, format_adler32, write_tar
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
