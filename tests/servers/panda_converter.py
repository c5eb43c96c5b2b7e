"""PanDA's own CWL converter (panda-server 1.0.4's ``workflow_utils``) run offline, for tests.

panda-server cannot be installed here (its build hook wants an ``atlpan`` user), but the two
modules that turn a pchain chain into tasks, ``pandaserver/workflow/workflow_utils.py`` and
``pcwl_utils.py``, run on their own with panda-client, idds and cwl-utils (panda.md §11).  This
module keeps them in a venv of their own under ``<repo>/.cache/panda-converter/``, so the
versions PanDA's server runs are exercised independently of cwlbridge's dependencies:

    venv/                     Python 3.11 with panda-client, idds-*, cwl-utils, ruamel.yaml
    downloads/                the panda-server-source wheel the two modules come from
    stub/pandaserver/workflow/__init__.py, workflow_utils.py, pcwl_utils.py
    .installed-<digest>       written last, once everything above is complete

``convert()`` runs ``panda_convert_runner.py`` (beside this file) with that venv's interpreter
in a scratch copy of the chain's directory and returns the runner's JSON document:

    {"ok": bool,                       # the server would accept the chain
     "log": str,                       # what the server logs: the conversion dump or the error
     "workaround_forceStagedSecondary": bool,   # --forceStagedSecondary had to be dropped
     "tasks": [TASK, ...],             # every leaf that became a PanDA task, by id
     "workflows": [WORKFLOW, ...],     # every sub-workflow / scatter element / loop body
     "templates": {"container": {...}, "athena": {...}}}   # the templates used (+userName…)

    TASK = {"id": int, "name": str (no trailing "/"), "type": "prun"|"junction"|"reana"|"phpo"|"gitlab",
            "task_params": {...},      # the full map iDDS would submit for the task
            "in_ds": [str], "secondary_ds": [str], "output_datasets": [str],
            "exec": str|None, "args": str|None,   # as the converter passed them to prun
            "parents": [{"id": int, "name": str, "link": "started"|"processed"|"failed"}],
            "condition": str|None,     # the converted `when`, e.g. "processed(A) && failed(B)"
            "no_wait_parent": bool, "run_on_instant": bool, "use_secrets": bool,
            "in_loop": bool, "is_tail": bool,      # is_tail: named by an outputSource
            # beyond the comparison fields, for an emulator:
            "is_workflow_output": bool,            # the converter's notion (decides noEmail)
            "workflow": int|None,                  # id of the enclosing sub-workflow node
            "idds_condition": COND|None,           # how iDDS releases it in its own level
            "ignored_parents": [{"id", "name"}],   # parents no condition waits for (fix 10)
            "idds_work": "ATLASPandaWork"|"ATLASLocalPandaWork",
            "custom_conditions": {key: value},     # junctions: {"to_exit": true[, "to_continue": true]}
            "prun_args": [str]|None,               # the argument list given to PrunScript.main
            "dropped_prun_options": [str]}         # what workaround 2 took out of it
    WORKFLOW = {"id", "name", "loop", "in_loop", "works": [ids], "workflow", "parents",
                "condition", "idds_condition", "ignored_parents",
                "loop_condition": {"junction": id, "all_of": {...}, "any_of": {...}}|None,
                "loop_parameters": {"user_<x>": default}, "variables": {name: value}}
    COND = {"op": "and"|"or", "terms": [{"work": id, "is_workflow": bool,
            "predicate": "is_started"|"is_processed"|"is_failed"} | COND, ...]}

A parent's link is read off the iDDS condition objects the converter built: the predicate on
the parent's own work, or on the sub-workflow holding it; a head of a sub-workflow has no
predicate of its own on parents outside it (iDDS gives it an empty AndCondition) and inherits
the link of the enclosing sub-workflow's condition.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers.rucio_server import index_unreachable

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "panda-converter"
VENV = CACHE / "venv"
STUB = CACHE / "stub"
DOWNLOADS = CACHE / "downloads"
RUNNER = Path(__file__).with_name("panda_convert_runner.py")

PANDA_CLIENT = "2.2.0"
IDDS = "2.6.21"
CWL_UTILS = "0.45"
SERVER_SOURCE = "1.0.4"
PACKAGES = (
    f"panda-client=={PANDA_CLIENT}",
    f"idds-common=={IDDS}",
    f"idds-workflow=={IDDS}",
    f"idds-atlas=={IDDS}",
    f"cwl-utils=={CWL_UTILS}",
    "ruamel.yaml",
)
# The converter modules in the panda-server-source wheel.
SERVER_FILES = ("pandaserver/workflow/workflow_utils.py", "pandaserver/workflow/pcwl_utils.py")
# Distributions whose installed version must be exactly the pinned one.
PINNED = {"panda-client": PANDA_CLIENT, "idds-common": IDDS, "idds-workflow": IDDS, "idds-atlas": IDDS,
          "cwl-utils": CWL_UTILS}  # fmt: skip
_DIGEST = hashlib.sha256(repr((PACKAGES, SERVER_SOURCE, SERVER_FILES)).encode()).hexdigest()[:12]
MARKER = CACHE / f".installed-{_DIGEST}"


class ConverterUnavailable(Exception):
    """The converter cannot be set up here; ``offline`` when the package index is unreachable
    (the only case in which a test may skip instead of failing)."""

    def __init__(self, reason: str, *, offline: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offline = offline


@dataclass
class InstallReport:
    """What ensure_converter did: the interpreter and how long installing took."""

    python: Path
    installed: bool
    seconds: float


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _is_complete() -> bool:
    return (
        MARKER.is_file()
        and _venv_python().is_file()
        and all((STUB / name).is_file() for name in SERVER_FILES)
        and (STUB / "pandaserver" / "__init__.py").is_file()
    )


def _base_python() -> str:
    """A Python 3.11 to make the venv with (the versions panda.md §11 found to work)."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if found:
        return found
    raise ConverterUnavailable(f"PanDA's converter needs Python 3.11; this is {sys.version.split()[0]}")


def _run(command: list[str], what: str, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ConverterUnavailable(f"{what} took more than {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise ConverterUnavailable(f"{what} failed (exit {proc.returncode}):\n{(proc.stderr or proc.stdout)[-3000:]}")
    return proc.stdout


def _extract_server_files(wheel: Path) -> None:
    """The two converter modules into a stub ``pandaserver.workflow`` package."""
    staging = Path(tempfile.mkdtemp(prefix="stub-", dir=CACHE))
    staging.chmod(0o755)
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = set(archive.namelist())
            for name in SERVER_FILES:
                if name not in members:
                    raise ConverterUnavailable(f"{wheel.name} has no {name}")
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
        (staging / "pandaserver" / "__init__.py").write_text("")
        (staging / "pandaserver" / "workflow" / "__init__.py").write_text("")
        if STUB.exists():
            shutil.rmtree(STUB)
        staging.rename(STUB)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def ensure_converter() -> InstallReport:
    """Make the converter venv and stub package unless they are complete already.

    A file lock serialises concurrent test sessions; the marker is written last, so a
    half-made venv is never taken as ready.  Raises ConverterUnavailable with the reason.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_complete():
            return InstallReport(_venv_python(), installed=False, seconds=0.0)
        reason = index_unreachable("panda-client", "PanDA's converter")
        if reason:
            raise ConverterUnavailable(reason, offline=True)
        started = time.monotonic()
        for old in CACHE.glob(".installed-*"):
            old.unlink()
        if not _venv_python().exists():
            _run([_base_python(), "-m", "venv", str(VENV)], "creating the converter venv")
        pip = [str(_venv_python()), "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "install", "-q", *PACKAGES], "pip install of PanDA's converter dependencies")
        read_versions = (
            "import json, sys, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
        )
        versions = json.loads(_run([str(_venv_python()), "-c", read_versions, *PINNED], "reading the versions"))
        wrong = {name: got for name, got in versions.items() if got != PINNED[name]}
        if wrong:
            raise ConverterUnavailable(f"the converter venv has {wrong}, expected {PINNED}")
        DOWNLOADS.mkdir(parents=True, exist_ok=True)
        _run(
            [*pip, "download", "-q", "--no-deps", f"panda-server-source=={SERVER_SOURCE}", "-d", str(DOWNLOADS)],
            "pip download of panda-server-source",
        )
        wheels = sorted(DOWNLOADS.glob(f"panda_server_source-{SERVER_SOURCE}-*.whl"))
        if not wheels:
            raise ConverterUnavailable(f"pip download left no panda-server-source {SERVER_SOURCE} wheel in {DOWNLOADS}")
        _extract_server_files(wheels[-1])
        MARKER.write_text(json.dumps({**versions, "panda-server-source": SERVER_SOURCE}) + "\n")
        return InstallReport(_venv_python(), installed=True, seconds=time.monotonic() - started)


def converter_python() -> Path:
    """The converter venv's interpreter (made on first use)."""
    return ensure_converter().python


def runner_environment() -> dict[str, str]:
    """What the runner gets: offline panda-client settings, the stub package first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PANDA_"))}
    env.update(
        {
            "PYTHONPATH": str(STUB),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PANDA_BEHIND_REAL_LB": "1",
            "PANDA_AUTH": "x509_no_grid",
            # Nothing may leave the machine: any proxy-using client goes nowhere.
            "http_proxy": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "no_proxy": "",
        }
    )
    return env


def convert(
    workdir: Path,
    spec_file: str,
    input_file: str,
    outds: str,
    *,
    check: bool = False,
    templates: dict[str, Any] | None = None,
    timeout: float = 300,
) -> dict[str, Any]:
    """Convert ``workdir/spec_file`` (with ``input_file``) as panda-server would, for ``outds``.

    The runner works in a scratch copy of ``workdir`` (the parser writes stub files such as
    ``prun`` next to the CWL); ``templates`` are the ``container``/``athena`` task-parameter
    templates pchain would send, or None to let the runner make them as pchain does.
    """
    python = converter_python()
    with tempfile.TemporaryDirectory(prefix="panda-convert-") as scratch:
        copy = Path(scratch) / "chain"
        shutil.copytree(workdir, copy, symlinks=True)
        command = [str(python), str(RUNNER), "--spec", spec_file, "--input", input_file, "--outds", outds]
        if check:
            command.append("--check")
        if templates is not None:
            template_file = Path(scratch) / "templates.json"
            template_file.write_text(json.dumps(templates))
            command += ["--templates", str(template_file)]
        env = runner_environment()
        env["TMPDIR"] = scratch
        proc = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"the converter runner failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"the converter runner printed no JSON ({exc}):\n{proc.stdout[-2000:]}") from exc
    return result
