"""The REANA submitter: one flow from a reana.yaml template to a tarball in Rucio.

``submit`` replaces the script_reana.sh pattern (sed a dataset into a template,
``reana-client create/secrets-add/upload/start``, poll, ``download``, ``tar czf``):

1. fill in the template (``--var``/``--set``), check it and build the submission;
2. name the workflow deterministically (``cwlb-<readable>-<sha8>``), so running the
   same command again finds the same workflow instead of creating another;
3. reuse a run of that name when that is safe (same specification: queued or
   running means resume polling, finished means go straight to the download,
   created means upload and start), otherwise create one;
4. upload the secrets (overwriting), wipe the local secret files when asked, and
   check the secrets a ``voms_proxy``/``rucio`` step needs exist on the server;
5. upload the inputs and start; poll with a growing interval, an overall deadline
   and a watchdog for runs stuck before ``running``;
6. list the declared outputs, refuse server paths that are absolute or contain
   ``..``, stream each file straight into the tarball (size checked, adler32 and
   md5 computed on the way) and optionally stage it out to Rucio with those checksums.

A small state file (``<workdir>/.cwlbridge/reana/<name>.json``: workflow id and name,
never secrets) lets a killed submitter resume the same workflow.  The local engine
(``cwlbridge.reana.local``) shares steps 1, 2 and 6.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from cwlbridge.data.stageout import StageOutResult
from cwlbridge.data.tarball import TarMemberSizeError, TarResult, TarWriter, write_tar
from cwlbridge.errors import EXIT_FAILURE, CwlbridgeError, RemoteError, UsageError
from cwlbridge.reana import spec as spec_mod
from cwlbridge.reana.client import (
    DownloadSink,
    PartFile,
    ReanaAlreadyStartedError,
    ReanaClient,
    ReanaDownloadError,
    ReanaError,
    ReanaNotFoundError,
    WorkflowStatus,
    WorkflowSummary,
    check_relative_path,
)
from cwlbridge.reana.redact import redact, register_secret
from cwlbridge.reana.secrets import (
    PANDA_SECRETS_FILE,
    SecretSet,
    gather_secrets,
    local_secret_problems,
    required_secret_problems,
    wipe_files,
)

log = logging.getLogger("cwlbridge.reana")

# Exit codes live in a module without heavy imports so that --help and the CLI start fast.
from cwlbridge.reana.exitcodes import (  # noqa: E402
    EXIT_CODES,
    EXIT_DEADLINE,
    EXIT_OUTPUTS,
    EXIT_REMOTE,
    EXIT_SECRETS,
    EXIT_STAGEOUT,
    EXIT_WORKFLOW_FAILED,
)


class MissingSecrets(CwlbridgeError):
    """The spec needs VOMS/Rucio secrets that neither the server nor the command line has."""

    exit_code = EXIT_SECRETS


class WorkflowFailed(CwlbridgeError):
    """The workflow ended failed, stopped or deleted."""

    exit_code = EXIT_WORKFLOW_FAILED


class WorkflowTimeout(CwlbridgeError):
    """The overall deadline or the no-progress watchdog fired; the workflow may still run."""

    exit_code = EXIT_DEADLINE


class OutputsIncomplete(CwlbridgeError):
    """A declared output did not arrive intact, or the server named an unsafe path."""

    exit_code = EXIT_OUTPUTS


class SpecRejected(UsageError):
    """The filled-in template has errors; the findings are in the message."""


# --------------------------------------------------------------------------- options


Engine = Literal["auto", "remote", "local"]
Say = Callable[[str], None]

#: Where the state file, rendered spec and downloads live, under the work directory.
STATE_DIR = Path(".cwlbridge") / "reana"
#: Environment variables of a PanDA job that identify it (pilot spellings vary).
PANDA_JOB_VARS: tuple[str, ...] = ("PandaID", "PANDAID", "PANDA_ID")
PANDA_TASK_VARS: tuple[str, ...] = ("PanDA_TaskID", "PANDA_TASK_ID", "JEDI_TASK_ID", "PANDA_TASKID")
LOG_TAIL_LINES = 40


@dataclass
class SubmitOptions:
    """Everything one submission needs; the command line fills it in."""

    template: Path
    workdir: Path = field(default_factory=Path.cwd)
    sets: Sequence[tuple[str, str]] = ()
    variables: Sequence[tuple[str, str]] = ()
    secret_files: Sequence[Path] = ()
    secret_env: Sequence[str] = ()
    panda_secrets: bool = False
    voms_pass_is_base64: bool = False
    wipe_secret_files: bool = False
    name: str | None = None
    tar: str | None = None
    rucio_dataset: str | None = None
    rse: str | None = None
    rucio_lifetime_days: int | None = 14
    timeout: float = 24 * 3600
    stall_timeout: float = 6 * 3600
    poll_initial: float = 5.0
    poll_max: float = 60.0
    engine: Engine = "auto"
    ca_bundle: str | None = None
    keep_downloads: bool = False
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass(frozen=True)
class Prepared:
    """A template filled in, checked and turned into a submission body."""

    doc: Any
    submission: dict[str, Any]
    base_dir: Path
    digest: str
    name: str


@dataclass(frozen=True)
class SubmitResult:
    """What a successful submission produced."""

    name: str
    workflow_id: str | None
    workflow_name: str | None
    engine: Literal["remote", "local"]
    outputs: tuple[str, ...]
    tar: TarResult | None
    stageout: StageOutResult | None
    reused: bool = False


def default_say(message: str) -> None:
    """Print one timestamped, redacted line to stdout (a grid log reader sees them in order)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stdout.write(f"{stamp} cwlbridge-reana: {redact(message)}\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- preparation


def spec_digest(submission: Mapping[str, Any]) -> str:
    """sha256 of the submission body with sorted keys (what the server will store)."""
    text = json.dumps(submission, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def panda_job_label(environ: Mapping[str, str]) -> str | None:
    """``panda-<task>-<job>`` when running inside a PanDA job, else None."""
    job = next((environ[v] for v in PANDA_JOB_VARS if environ.get(v, "").strip()), None)
    if job is None:
        return None
    task = next((environ[v] for v in PANDA_TASK_VARS if environ.get(v, "").strip()), None)
    return f"panda-{task.strip()}-{job.strip()}" if task else f"panda-{job.strip()}"


def workflow_name(template: Path, digest: str, *, name: str | None, environ: Mapping[str, str]) -> str:
    """The REANA workflow name: ``cwlb-<readable>-<sha8>``, legal for REANA (no dots).

    The readable part comes from ``--name``, else the PanDA job identifiers, else the
    template's file name.  The hash covers that label and the specification, so the
    same command gives the same name (a re-run resumes) and a changed spec a new one.
    """
    label = name or panda_job_label(environ) or _template_label(template)
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-_")[:40].strip("-_") or "workflow"
    sha8 = hashlib.sha256(f"{label}\0{digest}".encode()).hexdigest()[:8]
    return f"cwlb-{readable}-{sha8}"


def _template_label(template: Path) -> str:
    stem = template.name.split(".", 1)[0]
    if stem.lower() in ("reana", "template", "spec") and template.resolve().parent.name:
        return template.resolve().parent.name
    return stem


def prepare(options: SubmitOptions, engine: Literal["remote", "local"] = "remote") -> Prepared:
    """Load the template, apply ``--var``/``--set``, check it and build the submission.

    For the ``local`` engine a workflow type it cannot run is refused here, before
    anything is created or run.
    """
    template = Path(options.template)
    if not template.is_file():
        raise UsageError(f"template {template} does not exist or is not a file")
    base_dir = template.resolve().parent
    doc = spec_mod.load_spec(template)
    spec_mod.apply_options(doc, options.sets, options.variables)
    findings = spec_mod.check_spec(doc, template, base_dir, tokens=[t for t, _ in options.variables])
    for finding in findings:
        if finding.severity == "warning":
            log.warning("%s", finding)
    errors = spec_mod.errors_only(findings)
    if errors:
        raise SpecRejected(
            f"the template has {len(errors)} error(s):\n" + "\n".join(f"  {e}" for e in errors),
        )
    kind = doc["workflow"]["type"]
    if engine == "local" and kind not in spec_mod.LOCAL_WORKFLOW_TYPES:
        raise SpecRejected(
            pos=spec_mod.position(doc["workflow"], "type", str(template)),
            message=f"{kind} workflows are not supported locally (the local engine runs serial and cwl); "
            "use a REANA server",
            hint="set REANA_SERVER_URL and REANA_ACCESS_TOKEN (or pass --engine remote)",
        )
    submission = spec_mod.build_submission(doc, base_dir, replacements=dict(options.variables))
    digest = spec_digest(submission)
    name = workflow_name(template, digest, name=options.name, environ=options.environ)
    return Prepared(doc=doc, submission=submission, base_dir=base_dir, digest=digest, name=name)


def choose_engine(options: SubmitOptions) -> Literal["remote", "local"]:
    """``remote`` when asked or when ``REANA_SERVER_URL`` is set; ``local`` otherwise."""
    if options.engine == "auto":
        return "remote" if options.environ.get("REANA_SERVER_URL", "").strip() else "local"
    return options.engine


# --------------------------------------------------------------------------- inputs


def _ignore_spec(base_dir: Path) -> Any:
    import pathspec

    lines: list[str] = []
    for name in (".gitignore", ".reanaignore"):
        path = base_dir / name
        if path.is_file():
            lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def input_files(submission: Mapping[str, Any], base_dir: Path) -> list[tuple[str, Path]]:
    """(workspace path, local path) of every input REANA should get, as reana-client uploads.

    ``inputs.files`` as listed; every regular file under ``inputs.directories`` that
    ``.gitignore``/``.reanaignore`` (in the template's directory) do not exclude.
    Symbolic links are skipped, as reana-client does.
    """
    inputs = submission.get("inputs") or {}
    found: dict[str, Path] = {}
    for entry in inputs.get("files") or []:
        rel = check_relative_path(str(entry), "inputs.files entry")
        path = base_dir / rel
        if path.is_symlink():
            log.warning("inputs.files: %s is a symbolic link; not uploaded", rel)
            continue
        if not path.is_file():
            raise UsageError(f"inputs.files: {rel} is not a file under {base_dir}")
        found[rel] = path
    ignore = _ignore_spec(base_dir)
    for entry in inputs.get("directories") or []:
        rel_dir = check_relative_path(str(entry), "inputs.directories entry")
        root = base_dir / rel_dir
        if not root.is_dir():
            raise UsageError(f"inputs.directories: {rel_dir} is not a directory under {base_dir}")
        for current, dirnames, filenames in os.walk(root):
            here = Path(current)
            dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
            for filename in sorted(filenames):
                path = here / filename
                if path.is_symlink() or not path.is_file():
                    continue
                rel = path.relative_to(base_dir).as_posix()
                if ignore is not None and ignore.match_file(rel):
                    continue
                found[rel] = path
    return sorted(found.items())


# --------------------------------------------------------------------------- outputs


def declared_outputs(submission: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(files, directories) from the spec's ``outputs``, checked to be safe relative paths."""
    outputs = submission.get("outputs") or {}
    try:
        files = [check_relative_path(str(f), "outputs.files entry") for f in outputs.get("files") or []]
        dirs = [
            check_relative_path(str(d), "outputs.directories entry").rstrip("/")
            for d in outputs.get("directories") or []
        ]
    except ReanaDownloadError as exc:
        raise SpecRejected(exc.message) from None
    return files, dirs


def _matches_file(declared: str, name: str) -> bool:
    if any(char in declared for char in "*?["):
        return PurePosixPath(name).match(declared) and name.count("/") == declared.count("/")
    return name == declared


def _safe_output_name(name: str) -> str:
    try:
        return check_relative_path(name, "output path from the server")
    except ReanaDownloadError as exc:
        raise OutputsIncomplete(f"refused: {exc.message}") from None


def list_remote_outputs(client: ReanaClient, wf_id: str, submission: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(workspace path, size) of every file of the declared outputs, in name order.

    Directories are listed file by file (never fetched as the server's zip) and every
    path the server names is checked: ``OutputsIncomplete`` when it is absolute,
    contains ``..`` or lies outside the declared output, or when an output is missing.
    """
    files, dirs = declared_outputs(submission)
    wanted: dict[str, int] = {}
    for declared in files:
        listed = client.list_workspace(wf_id, declared)
        hits = []
        for item in listed:
            name = _safe_output_name(item.name)
            if not _matches_file(declared, name):
                raise OutputsIncomplete(f"refused: the server listed {name!r} for output file {declared!r}")
            hits.append((name, item.size))
        if not hits:
            raise OutputsIncomplete(f"declared output file {declared} is not in the workspace")
        wanted.update(hits)
    for declared in dirs:
        listed = client.list_workspace(wf_id, declared)
        if not listed:
            raise OutputsIncomplete(f"declared output directory {declared} is missing or empty in the workspace")
        for item in listed:
            name = _safe_output_name(item.name)
            if not name.startswith(declared + "/"):
                raise OutputsIncomplete(f"refused: the server listed {name!r} for output directory {declared!r}")
            wanted[name] = item.size
    return sorted(wanted.items())


class _Tee:
    """One download feeding several sinks (the tarball and a kept copy)."""

    def __init__(self, sinks: Sequence[DownloadSink]) -> None:
        self._sinks = sinks

    def write(self, data: bytes, /) -> None:
        for sink in self._sinks:
            sink.write(data)

    def restart(self) -> None:
        for sink in self._sinks:
            sink.restart()


def fetch_remote_outputs(
    client: ReanaClient,
    wf_id: str,
    outputs: Sequence[tuple[str, int]],
    say: Say,
    *,
    tar: Path | None,
    keep_dir: Path | None = None,
) -> TarResult | None:
    """Stream each listed output straight into the tarball ``tar`` and/or into ``keep_dir``.

    No scratch copy: the bytes go from the HTTP stream into the tarball, checksummed on
    the way (adler32 and md5 of the tarball come with the result).  Each file must have
    the size the listing gave; a transfer broken half-way is fetched again from its
    first byte, with the tarball rewound to match.  With ``keep_dir`` (``--keep-downloads``,
    or no tarball) every file is also written there.  Failures raise ``OutputsIncomplete``.
    """
    if tar is None and keep_dir is None:
        raise ValueError("fetch_remote_outputs needs a tarball, a directory or both")
    root: Path | None = None
    if keep_dir is not None:
        if keep_dir.exists():
            shutil.rmtree(keep_dir)
        keep_dir.mkdir(parents=True)
        root = keep_dir.resolve()
    say(f"downloading {len(outputs)} output file(s), {sum(size for _, size in outputs)} bytes")
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(TarWriter(tar)) if tar is not None else None
        for name, size in outputs:
            with contextlib.ExitStack() as member_stack:
                sinks: list[DownloadSink] = []
                member = writer.add_stream(name, size) if writer is not None else None
                if member is not None:
                    sinks.append(member)
                kept: PartFile | None = None
                if root is not None:
                    dest = (root / name).resolve()
                    if root not in dest.parents:
                        raise OutputsIncomplete(f"refused: output path {name!r} would land outside {root}")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    kept = member_stack.enter_context(PartFile(dest))
                    sinks.append(kept)
                try:
                    client.stream_file(wf_id, name, sinks[0] if len(sinks) == 1 else _Tee(sinks), size)
                    if member is not None:
                        member.finish()
                except (ReanaDownloadError, TarMemberSizeError) as exc:
                    raise OutputsIncomplete(f"output {name}: {exc.message}") from None
                if kept is not None:
                    kept.commit()
        if writer is None:
            return None
        result = writer.close()
    _say_written(result, say)
    return result


def _say_written(tar: TarResult, say: Say) -> None:
    say(f"wrote {tar.path} ({tar.size} bytes, adler32 {tar.adler32}, md5 {tar.md5})")


def collect_local_outputs(submission: Mapping[str, Any], workspace: Path) -> list[tuple[str, Path]]:
    """(workspace path, local path) of every declared output in a local workspace."""
    files, dirs = declared_outputs(submission)
    members: dict[str, Path] = {}
    for declared in files:
        hits = (
            [p for p in workspace.glob(declared) if p.is_file()]
            if any(c in declared for c in "*?[")
            else [workspace / declared]
            if (workspace / declared).is_file()
            else []
        )
        if not hits:
            raise OutputsIncomplete(f"declared output file {declared} was not produced")
        members.update((p.relative_to(workspace).as_posix(), p) for p in hits)
    for declared in dirs:
        root = workspace / declared
        listed = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()] if root.is_dir() else []
        if not listed:
            raise OutputsIncomplete(f"declared output directory {declared} was not produced or is empty")
        members.update((p.relative_to(workspace).as_posix(), p) for p in listed)
    return sorted(members.items())


def tar_destination(options: SubmitOptions) -> Path | None:
    """Where the tarball goes, or None when no tarball is wanted.

    ``--tar`` (relative to the work directory), else ``output_from_reana.tar`` when
    ``--rucio-dataset`` asks for a stage-out.
    """
    tar_name = options.tar
    if tar_name is None and options.rucio_dataset:
        tar_name = "output_from_reana.tar"
    if tar_name is None:
        return None
    tar_path = Path(tar_name)
    return tar_path if tar_path.is_absolute() else Path(options.workdir) / tar_path


def finish_outputs(
    members: Sequence[tuple[str, Path]], options: SubmitOptions, say: Say
) -> tuple[TarResult | None, StageOutResult | None]:
    """Tar outputs that are on disk (``--tar``) and stage the tarball out (``--rucio-dataset``)."""
    tar_path = tar_destination(options)
    if tar_path is None:
        return None, None
    result = write_tar(list(members), tar_path)
    _say_written(result, say)
    return result, stage_out_tar(result, options, say)


def check_stage_out(options: SubmitOptions) -> None:
    """Before the workflow runs: a ``--rucio-dataset`` needs ``--rse``, a valid name and a
    Rucio that answers with this configuration (its client authenticates), and the RSE.

    Hours of REANA work are not spent only to learn that the tar cannot be uploaded.
    """
    if not options.rucio_dataset:
        return
    if not options.rse:
        raise UsageError("--rucio-dataset needs --rse")
    from cwlbridge.data.rucio import DidName, rucio_client

    DidName.parse(options.rucio_dataset)
    try:
        client = rucio_client()
        client.get_rse(options.rse)
    except UsageError:
        raise
    except CwlbridgeError as exc:
        exc.exit_code = EXIT_STAGEOUT
        exc.message = f"--rucio-dataset: {exc.message}; nothing was submitted"
        raise
    except Exception as exc:  # rucio's own exceptions: RSENotFound, AccessDenied, …
        from cwlbridge.data.rucio import rucio_error

        error = rucio_error(exc, f"--rucio-dataset: Rucio refused RSE {options.rse}; nothing was submitted")
        error.exit_code = EXIT_STAGEOUT
        raise error from exc


def stage_out_tar(tar: TarResult | None, options: SubmitOptions, say: Say) -> StageOutResult | None:
    """Stage the tarball out to ``--rucio-dataset`` on ``--rse`` with the checksums it was written with."""
    if tar is None or not options.rucio_dataset:
        return None
    from cwlbridge.data.stageout import stage_out

    if not options.rse:
        raise UsageError("--rucio-dataset needs --rse")
    try:
        staged = stage_out(
            tar.path,
            dataset=options.rucio_dataset,
            rse=options.rse,
            lifetime_days=options.rucio_lifetime_days,
            checksums=tar.checksums,
        )
    except CwlbridgeError as exc:
        exc.exit_code = EXIT_STAGEOUT
        raise
    say(f"staged out {staged.scope}:{staged.name} into {staged.dataset} on {options.rse} ({staged.outcome})")
    return staged


def finish_run(
    prepared: Prepared,
    options: SubmitOptions,
    say: Say,
    *,
    outputs: Sequence[str],
    tar: TarResult | None,
    staged: StageOutResult | None,
    files_in: Path,
    workflow: WorkflowSummary | None = None,
    reused: bool = False,
) -> SubmitResult:
    """Record a finished run in its state file and build its result (local and remote runs).

    ``files_in`` is where the output files are when there is no tarball; ``workflow``
    is the REANA run (None for a local run).
    """
    if tar is None:
        say(f"outputs are in {files_in}")
    write_state(Path(options.workdir), prepared.name, status="finished", outputs=list(outputs))
    return SubmitResult(
        name=prepared.name,
        workflow_id=workflow.id if workflow else None,
        workflow_name=workflow.name if workflow else None,
        engine="remote" if workflow else "local",
        outputs=tuple(outputs),
        tar=tar,
        stageout=staged,
        reused=reused,
    )


# --------------------------------------------------------------------------- state file


def state_path(workdir: Path, name: str) -> Path:
    """The state file of workflow ``name`` under ``workdir``."""
    return Path(workdir) / STATE_DIR / f"{name}.json"


def read_state(workdir: Path, name: str) -> dict[str, Any] | None:
    """The saved state of ``name``, or None when there is none or it is unreadable."""
    path = state_path(workdir, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(workdir: Path, name: str, **fields: Any) -> None:
    """Merge ``fields`` into the state file of ``name`` (atomically; never secrets)."""
    path = state_path(workdir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = read_state(workdir, name) or {}
    data.update(fields)
    data["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


# --------------------------------------------------------------------------- secrets


def _register_secret_values(secrets: SecretSet) -> None:
    for secret in secrets:
        text = secret.value.decode("utf-8", errors="replace")
        register_secret(text)
        if secret.name == "VOMSPROXY_PASS":
            # Stored as base64(passphrase); the plain passphrase must be masked as well.
            with contextlib.suppress(ValueError):
                register_secret(base64.b64decode(secret.value).decode("utf-8", errors="replace"))
        for line in text.splitlines():
            if len(line.strip()) >= 12:
                register_secret(line.strip())


def gather(options: SubmitOptions) -> SecretSet:
    """The secrets of this submission (command line, then PanDA's when asked)."""
    panda_dir: Path | None = None
    if options.panda_secrets and (Path(options.workdir) / PANDA_SECRETS_FILE).is_file():
        panda_dir = Path(options.workdir)
    secrets = gather_secrets(
        files=options.secret_files,
        env=options.secret_env,
        panda_workdir=panda_dir,
        environ=options.environ,
        voms_pass_is_base64=options.voms_pass_is_base64,
    )
    _register_secret_values(secrets)
    problems = local_secret_problems(secrets)
    if problems:
        raise UsageError("secrets are inconsistent:\n" + "\n".join(f"  {p}" for p in problems))
    return secrets


def _wipe(options: SubmitOptions, say: Say) -> None:
    if not options.wipe_secret_files or not options.secret_files:
        return
    present = [p for p in options.secret_files if Path(p).exists()]
    if not present:
        return
    failed = wipe_files(present)
    removed = [Path(p).name for p in present if Path(p) not in failed]
    if removed:
        say("wiped local secret file(s): " + ", ".join(removed))
    if failed:
        say("WARNING: could not remove secret file(s): " + ", ".join(str(p) for p in failed))


# --------------------------------------------------------------------------- remote flow


def submit(
    options: SubmitOptions,
    *,
    client: ReanaClient | None = None,
    say: Say = default_say,
) -> SubmitResult:
    """Run one submission end to end; raise a ``CwlbridgeError`` (with its exit code) on failure.

    ``client`` overrides the client built from ``REANA_SERVER_URL`` etc. (tests use it to
    tune retries).  Secret files given with ``wipe_secret_files`` are removed after their
    upload and on any failure.
    """
    try:
        engine = "remote" if client is not None else choose_engine(options)
        prepared = prepare(options, engine)
        check_stage_out(options)
        if engine == "local":
            from cwlbridge.reana.local import run_local

            _wipe(options, say)
            return run_local(prepared, options, say=say)
        if client is None:
            client = ReanaClient.from_env(options.environ, ca_bundle=options.ca_bundle)
        try:
            return _submit_remote(prepared, options, client, say)
        except RemoteError as exc:
            # A server refusal keeps its message; only the exit code says "remote".
            if exc.exit_code == EXIT_FAILURE:
                exc.exit_code = EXIT_REMOTE
            raise
    finally:
        _wipe(options, say)


def _find_reusable(client: ReanaClient, prepared: Prepared, workdir: Path, say: Say) -> tuple[str, str, str] | None:
    """(id, full name, status) of a run of this name that can be continued, or None."""
    saved = read_state(workdir, prepared.name)
    if saved and saved.get("spec_digest") == prepared.digest and saved.get("workflow_id"):
        try:
            status = client.status(str(saved["workflow_id"]))
        except ReanaNotFoundError:
            status = None
        if status is not None and status.status in ("created", "queued", "pending", "running", "finished"):
            return status.id, str(saved.get("workflow_name") or status.name), status.status
    runs: list[WorkflowSummary] = client.find_workflows(prepared.name)
    if not runs:
        return None
    newest = runs[0]
    if newest.status not in ("created", "queued", "pending", "running", "finished"):
        say(f"the last run {newest.name} is {newest.status}; creating a new run")
        return None
    server_spec = client.specification(newest.id).get("specification")
    if isinstance(server_spec, dict) and spec_digest(server_spec) == prepared.digest:
        return newest.id, newest.name, newest.status
    say(f"workflow {newest.name} has a different specification; creating a new run")
    return None


def _submit_remote(prepared: Prepared, options: SubmitOptions, client: ReanaClient, say: Say) -> SubmitResult:
    workdir = Path(options.workdir)
    client.detect_protocol()
    reusable = _find_reusable(client, prepared, workdir, say)
    reused = reusable is not None
    if reusable is None:
        created = client.create_workflow(prepared.name, prepared.submission)
        wf_id, wf_name, status = created.id, created.name, "created"
    else:
        wf_id, wf_name, status = reusable
    write_state(
        workdir,
        prepared.name,
        workflow_id=wf_id,
        workflow_name=wf_name,
        spec_digest=prepared.digest,
        server=redact(client.server_url),
        engine="remote",
    )
    if reusable is None:
        say(f"created REANA workflow {wf_name} ({wf_id})")
    else:
        say(f"found REANA workflow {wf_name} ({wf_id}), {status}: continuing it")
    if status == "created":
        _upload_and_start(client, wf_id, wf_name, prepared, options, say)
    final = poll(client, wf_id, options, say)
    if not final.succeeded:
        tail = log_tail(client, wf_id)
        raise WorkflowFailed(
            f"REANA workflow {wf_name} ({wf_id}) is {final.status}"
            + (f"; last lines of its logs:\n{tail}" if tail else "; it left no logs"),
        )
    outputs = list_remote_outputs(client, wf_id, prepared.submission)
    tar_path = tar_destination(options)
    downloads = workdir / STATE_DIR / prepared.name / "outputs"
    keep_dir = downloads if tar_path is None or options.keep_downloads else None
    tar = fetch_remote_outputs(client, wf_id, outputs, say, tar=tar_path, keep_dir=keep_dir)
    staged = stage_out_tar(tar, options, say)
    return finish_run(
        prepared,
        options,
        say,
        outputs=[name for name, _ in outputs],
        tar=tar,
        staged=staged,
        files_in=downloads,
        workflow=WorkflowSummary(id=wf_id, name=wf_name, status=final.status),
        reused=reused,
    )


def _upload_and_start(
    client: ReanaClient, wf_id: str, wf_name: str, prepared: Prepared, options: SubmitOptions, say: Say
) -> None:
    secrets = gather(options)
    if len(secrets):
        client.add_secrets(secrets.for_upload(), overwrite=True)
        say(f"uploaded {len(secrets)} secret(s): " + ", ".join(sorted(secrets.names())))
    _wipe(options, say)
    usage = spec_mod.credential_usage(prepared.submission, prepared.base_dir)
    if usage.voms_proxy or usage.rucio:
        on_server = {s.name for s in client.list_secrets()} | secrets.names()
        problems = required_secret_problems(usage.voms_proxy, usage.rucio, on_server)
        if problems:
            raise MissingSecrets(
                f"workflow {wf_name} was created but not started: REANA would fail silently later:\n"
                + "\n".join(f"  {p}" for p in problems),
                hint="add them with --secret-env/--secret-file (or pbook set_secret in a PanDA job) and re-run",
            )
    uploads = input_files(prepared.submission, prepared.base_dir)
    rendered = Path(options.workdir) / STATE_DIR / prepared.name / "reana.yaml"
    rendered.parent.mkdir(parents=True, exist_ok=True)
    rendered.write_text(spec_mod.dump(prepared.doc), encoding="utf-8")
    uploads = [(rel, path) for rel, path in uploads if rel != "reana.yaml"] + [("reana.yaml", rendered)]
    for rel, path in uploads:
        client.upload_file(wf_id, rel, path)
    say(f"uploaded {len(uploads)} input file(s)")
    options_body = (prepared.submission.get("inputs") or {}).get("options") or {}
    try:
        started = client.start(wf_id, operational_options=options_body)
        say(f"started {wf_name}: {started.status}")
    except ReanaAlreadyStartedError as exc:
        say(f"{wf_name} was already started ({exc.run_status}); following it")


def _signature(status: WorkflowStatus) -> tuple[Any, ...]:
    return (
        status.status,
        status.finished_jobs,
        status.failed_jobs,
        status.running_jobs,
        status.total_jobs,
        status.current_step_name,
    )


def _describe(name: str, status: WorkflowStatus) -> str:
    text = f"{name}: {status.status}"
    if status.total_jobs:
        text += f", {status.finished_jobs}/{status.total_jobs} job(s) finished"
    if status.failed_jobs:
        text += f", {status.failed_jobs} failed"
    if status.current_step_name and not status.is_terminal:
        text += f", step {status.current_step_name}"
    return text


def poll(
    client: ReanaClient,
    wf_id: str,
    options: SubmitOptions,
    say: Say,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WorkflowStatus:
    """Poll until the workflow is terminal; one line per change of state.

    The interval starts at ``poll_initial`` and grows by half each poll up to
    ``poll_max``; it drops back to the start after a change.  Raises
    ``WorkflowTimeout`` after ``timeout`` seconds, or when the run stays created,
    queued or pending (REANA's known stuck states) ``stall_timeout`` seconds.
    """
    start = clock()
    deadline = start + options.timeout
    interval = options.poll_initial
    last: tuple[Any, ...] | None = None
    since = start
    while True:
        status = client.status(wf_id)
        now = clock()
        signature = _signature(status)
        if signature != last:
            say(_describe(status.name or wf_id, status))
            last, since = signature, now
            interval = options.poll_initial
        if status.is_terminal:
            return status
        if status.status in ("created", "queued", "pending") and now - since > options.stall_timeout:
            raise WorkflowTimeout(
                f"workflow {status.name or wf_id} has been {status.status} for {now - since:.0f} s "
                f"(--stall-timeout {options.stall_timeout:.0f}); it is left as it is",
                hint="re-run the same command to keep waiting, or stop it on the REANA server",
            )
        if now >= deadline:
            raise WorkflowTimeout(
                f"workflow {status.name or wf_id} is still {status.status} after --timeout {options.timeout:.0f} s; "
                "it keeps running on REANA",
                hint="re-run the same command to resume waiting for it",
            )
        sleep(max(0.0, min(interval, deadline - now)))
        interval = min(options.poll_max, interval * 1.5)


def log_tail(client: ReanaClient, wf_id: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a workflow's logs (workflow then jobs), redacted."""
    try:
        logs = client.logs(wf_id)
    except ReanaError as exc:
        return f"(logs unavailable: {exc.message})"
    parts: list[str] = []
    if logs.get("workflow_logs"):
        parts.append(str(logs["workflow_logs"]))
    jobs = logs.get("job_logs") or {}
    if isinstance(jobs, Mapping):
        ordered = sorted(jobs.values(), key=lambda j: str(j.get("started_at") or "") if isinstance(j, Mapping) else "")
        for job in ordered:
            if isinstance(job, Mapping) and job.get("logs"):
                parts.append(f"--- job {job.get('job_name', '?')} ({job.get('status', '?')})\n{job['logs']}")
    text = "\n".join(parts)
    tail = text.splitlines()[-lines:]
    return redact("\n".join("  | " + line for line in tail))


def describe_exit(code: int) -> str:
    """The meaning of an exit code, for the last line of a grid log."""
    return EXIT_CODES.get(code, "unexpected exit code")
