"""The official REANA 0.9 artifacts (OpenAPI spec and reana.yaml schema), fetched and pinned.

Both files ship in the reana-commons 0.9.11 sdist on PyPI (MIT). They are downloaded once with
pip into ``<repo>/.cache/reana-commons/`` (git-ignored), checked against sha256 pins and parsed.
A second call finds the verified cache and does no network I/O.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REANA_COMMONS_VERSION = "0.9.11"
SDIST_NAME = f"reana_commons-{REANA_COMMONS_VERSION}.tar.gz"
SDIST_SHA256 = "c812468c6549cba50174f2792b972d87b533725f1f963a5ed51013cdedc6fd63"

_MEMBER_PREFIX = f"reana_commons-{REANA_COMMONS_VERSION}/reana_commons/"
SERVER_SPEC_MEMBER = _MEMBER_PREFIX + "openapi_specifications/reana_server.json"
SERVER_SPEC_SHA256 = "0b0523b1c4e5147426824ae2cd8e7b5a3528329d2d159eee78afa1daf71d7d82"
ANALYSIS_SCHEMA_MEMBER = _MEMBER_PREFIX + "validation/schemas/reana_analysis_schema.json"
ANALYSIS_SCHEMA_SHA256 = "c496e7b69ae4106a3a2b9436df1564cf1228dc034c7b5dff19ecf9823f57df42"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "reana-commons"

# pip builds sdist metadata in an isolated env (fetching setuptools), so allow a few minutes.
_PIP_TIMEOUT_S = 300


class ArtifactsUnavailable(Exception):
    """The artifacts could not be fetched (no PyPI access); tests needing them should skip."""


class ArtifactsCorrupt(Exception):
    """A downloaded or cached artifact does not match its sha256 pin."""


@dataclass(frozen=True)
class ReanaArtifacts:
    """Paths and parsed contents of the two official REANA 0.9 files."""

    server_spec_path: Path
    analysis_schema_path: Path
    server_spec: dict[str, Any]
    analysis_schema: dict[str, Any]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_sdist(cache_dir: Path) -> Path:
    """Fetch the sdist with pip into a scratch dir, then move it into the cache atomically."""
    target = cache_dir / SDIST_NAME
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="download-") as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--disable-pip-version-check", "--quiet",
            f"reana-commons=={REANA_COMMONS_VERSION}", "-d", scratch,
        ]
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ArtifactsUnavailable(
                f"pip download of reana-commons=={REANA_COMMONS_VERSION} timed out after "
                f"{_PIP_TIMEOUT_S}s (is PyPI reachable?)"
            ) from exc
        downloaded = Path(scratch) / SDIST_NAME
        if completed.returncode != 0 or not downloaded.is_file():
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
            raise ArtifactsUnavailable(
                f"pip download of reana-commons=={REANA_COMMONS_VERSION} failed "
                f"(exit {completed.returncode}; is PyPI reachable?): {' | '.join(tail)}"
            )
        actual = _file_sha256(downloaded)
        if actual != SDIST_SHA256:
            raise ArtifactsCorrupt(
                f"{SDIST_NAME} from PyPI has sha256 {actual}, expected {SDIST_SHA256}"
            )
        downloaded.replace(target)
    return target


def _extract_member(sdist: Path, member: str, expected_sha256: str, destination: Path) -> None:
    with tarfile.open(sdist, "r:gz") as archive:
        stream = archive.extractfile(member)
        if stream is None:
            raise ArtifactsCorrupt(f"{member} is not a regular file in {sdist.name}")
        data = stream.read()
    actual = _sha256(data)
    if actual != expected_sha256:
        raise ArtifactsCorrupt(f"{member} has sha256 {actual}, expected {expected_sha256}")
    partial = destination.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(destination)


def _verified(path: Path, expected_sha256: str) -> bool:
    return path.is_file() and _file_sha256(path) == expected_sha256


def load_reana_artifacts(cache_dir: Path = DEFAULT_CACHE_DIR) -> ReanaArtifacts:
    """Return the pinned REANA artifacts, downloading and extracting them on first use.

    Raises ArtifactsUnavailable when pip cannot reach PyPI and ArtifactsCorrupt when a file does
    not match its pin. A file lock makes concurrent test processes share one download.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    spec_path = cache_dir / "reana_server.json"
    schema_path = cache_dir / "reana_analysis_schema.json"
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (
                _verified(spec_path, SERVER_SPEC_SHA256)
                and _verified(schema_path, ANALYSIS_SCHEMA_SHA256)
            ):
                sdist = cache_dir / SDIST_NAME
                if not _verified(sdist, SDIST_SHA256):
                    sdist.unlink(missing_ok=True)
                    sdist = _download_sdist(cache_dir)
                _extract_member(sdist, SERVER_SPEC_MEMBER, SERVER_SPEC_SHA256, spec_path)
                _extract_member(sdist, ANALYSIS_SCHEMA_MEMBER, ANALYSIS_SCHEMA_SHA256, schema_path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return ReanaArtifacts(
        server_spec_path=spec_path,
        analysis_schema_path=schema_path,
        server_spec=json.loads(spec_path.read_text(encoding="utf-8")),
        analysis_schema=json.loads(schema_path.read_text(encoding="utf-8")),
    )


def describe_cache(cache_dir: Path = DEFAULT_CACHE_DIR) -> str:
    """One line naming the cache directory and what it holds, for skip messages."""
    held = sorted(p.name for p in cache_dir.iterdir()) if cache_dir.is_dir() else []
    return f"{cache_dir} holds {held or 'nothing'}"


__all__ = [
    "ANALYSIS_SCHEMA_SHA256",
    "DEFAULT_CACHE_DIR",
    "SDIST_SHA256",
    "SERVER_SPEC_SHA256",
    "ArtifactsCorrupt",
    "ArtifactsUnavailable",
    "ReanaArtifacts",
    "describe_cache",
    "load_reana_artifacts",
]
