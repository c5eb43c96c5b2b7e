"""``cwlbridge submit``: hand a whole chain to PanDA the pchain way, after checking it offline.

PanDA's server converts the chain (``put_workflow_request``) and iDDS runs its tasks while the
user is logged off.  What pchain sends is kept (panda.md §6): the two task templates made by
prun with ``__dummy_exec_str__``, a workflow tarball holding the chain, and the request fields.
What pchain gets wrong is not:

- every rule of ``cwlbridge validate`` runs first, and an error stops before any network call;
- where PanDA's server builds something other than ``cwlbridge plan`` shows (a deliberate fix
  of the README the chain relies on) a warning names the line; where PanDA rejects the chain
  or makes a task that cannot work, submission is refused (``--allow-pchain-defects`` sends it
  anyway);
- the pre-flight checks of ``run --backend panda`` (credentials, nickname and outDS, prun's
  map of every step, names already on PanDA, PanDA secrets, the sandbox);
- the workflow tarball is an explicit list (the chain, its sub-workflows and the inputs file,
  plus ``--sandbox-include``), and the template sandbox is the one ``run --backend panda``
  uploads, never every small file below the current directory;
- the exit code is the server's answer: 0 only when it accepted the request.

A submitted request is remembered in ``<base>/.cwlbridge/requests/<id>.json`` (outDS, chain,
time), which ``cwlbridge workflow`` uses to find its tasks on PanDA.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from cwlbridge.data.tarball import write_tar
from cwlbridge.errors import EXIT_FAILURE, EXIT_OK, CwlbridgeError, UsageError
from cwlbridge.model.plan import Deviation, Plan
from cwlbridge.panda import sandbox as sandbox_mod

#: Keys pchain deletes from each template (the server's conversion sets them per step).
DROPPED_TEMPLATE_KEYS = ("noInput", "nEvents", "nEventsPerJob")
#: What makes pchain build the ``athena`` template (a line of a chain file using the option).
_ATHENA = re.compile(r"^\s*[^#]\s*opt_useAthenaPackages", re.M)
REQUESTS_DIR = Path(".cwlbridge") / "requests"


class DefectError(CwlbridgeError):
    """The chain uses a construct PanDA's server rejects or breaks on."""


# -- what goes to the server -------------------------------------------------------------------


@dataclass
class WorkflowFiles:
    """The workflow tarball's members: (name in the tarball, file); the chain's and inputs' names."""

    members: list[tuple[str, Path]]
    spec_file: str
    input_file: str


def chain_files(workflow: Any, chain: Path, inputs: Path, includes: Iterable[str] = ()) -> WorkflowFiles:
    """The chain, every sub-workflow file it runs, the inputs file and ``includes`` (globs).

    Names are relative to the chain's directory.  An inputs file kept elsewhere goes in under
    its base name.  A file that is hidden, looks like a credential or is over the size cap is
    refused, as for the sandbox.
    """
    root = chain.resolve().parent
    wanted: dict[str, Path] = {}

    def add(path: Path, why: str) -> str:
        path = path.resolve()
        try:
            rel = PurePosixPath(os.path.relpath(path, root)).as_posix()
        except ValueError:
            rel = "../"
        if rel.startswith("../"):
            if why != "inputs":
                raise UsageError(f"{path}: a {why} outside the chain's directory {root} cannot be sent to PanDA")
            rel = path.name
        problem = _refusal(path, rel)
        if problem:
            raise sandbox_mod.SandboxError(f"{rel} cannot go into the workflow tarball: {problem}")
        wanted[rel] = path
        return rel

    spec = add(chain, "chain")
    for body in _bodies(workflow):
        add(Path(body.path), "sub-workflow")
    given = add(inputs, "inputs")
    for pattern in includes:
        matches = sorted(p for p in root.glob(pattern) if p.is_file())
        if not matches:
            raise sandbox_mod.SandboxError(f"--sandbox-include {pattern}: matches no file in {root}")
        for match in matches:
            add(match, "file")
    return WorkflowFiles(sorted(wanted.items()), spec, given)


def _bodies(workflow: Any) -> Iterable[Any]:
    for step in workflow.steps:
        body = getattr(step, "body", None)
        if body is not None:
            yield body
            yield from _bodies(body)


def _refusal(path: Path, rel: str) -> str | None:
    if any(part.startswith(".") for part in PurePosixPath(rel).parts):
        return "hidden files stay out"
    if sandbox_mod.is_credential(rel):
        return "it looks like a credential"
    if not path.is_file() or path.is_symlink():
        return "not a regular file"
    if path.stat().st_size > sandbox_mod.MAX_FILE_BYTES:
        return f"over the {sandbox_mod.MAX_FILE_BYTES // (1024 * 1024)} MB a file may have"
    return None


def build_tarball(files: WorkflowFiles, directory: Path) -> sandbox_mod.SandboxArchive:
    """The workflow tarball, deterministic and named after its md5 (``jobO.<md5>.tar.gz``)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".workflow-") as scratch:
        result = write_tar(files.members, Path(scratch) / "workflow.tar.gz")
        if result.size > sandbox_mod.MAX_SANDBOX_BYTES:
            raise sandbox_mod.SandboxError(f"the workflow tarball is {result.size / 1e6:.1f} MB, over the 10 MB"
                                           " PanDA's cache takes")
        name = f"jobO.{result.md5}.tar.gz"
        final = directory / name
        os.replace(result.path, final)
    with final.open("rb") as stream:
        stream.seek(-8, os.SEEK_END)
        crc32 = int.from_bytes(stream.read(4), "little")
    return sandbox_mod.SandboxArchive(path=final, name=name, size=final.stat().st_size, crc32=crc32)


def uses_athena(files: WorkflowFiles) -> bool:
    """pchain's rule, over every file of the chain: a line that uses ``opt_useAthenaPackages``."""
    for rel, path in files.members:
        if rel.endswith((".cwl", ".yaml", ".yml", ".json")):
            try:
                if _ATHENA.search(path.read_text(encoding="utf-8", errors="replace")):
                    return True
            except OSError:
                continue
    return False


def templates(outds: str, nickname: str, *, athena: bool, sandbox: str, source_url: str) -> dict[str, Any]:
    """``{"container": map, "athena": map}`` as pchain has prun make them, pointed at ``sandbox``."""
    from cwlbridge.panda.taskparams import attach_sandbox, prun_map

    kinds = {"container": ["--containerImage", "__dummy_container__"]}
    if athena:
        kinds["athena"] = ["--useAthenaPackages"]
    made: dict[str, Any] = {}
    for kind, extra in kinds.items():
        params = prun_map(["--exec", "__dummy_exec_str__", "--outDS", outds, *extra], nickname=nickname)
        for key in DROPPED_TEMPLATE_KEYS:
            params.pop(key, None)
        attach_sandbox(params, sandbox, source_url)
        made[kind] = params
    return made


def source_url_of(cache_url: str) -> str:
    """``scheme://host:port`` of the cache, as pchain takes it from ``baseURLCSRVSSL``."""
    parts = urlsplit(cache_url)
    return f"{parts.scheme}://{parts.netloc}"


def request_params(
    *, task_params: dict[str, Any], source_url: str, tarball: str, files: WorkflowFiles, outds: str,
    workflow_name: str | None = None, environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ``put_workflow_request`` fields pchain sends."""
    from cwlbridge.panda.taskparams import base_platform

    env = os.environ if environ is None else environ
    params: dict[str, Any] = {
        "taskParams": task_params,
        "sourceURL": source_url,
        "sandbox": tarball,
        "workflowSpecFile": files.spec_file,
        "workflowInputFile": files.input_file,
        "language": "cwl",
        "outDS": outds,
        "base_platform": base_platform(env),
    }
    if workflow_name:
        params["workflow_name"] = workflow_name
    return params


# -- the deliberate fixes --------------------------------------------------------------------


def deviation_text(item: Deviation) -> str:
    """``file:line:col: warning|error: step 'x': message (README fix N)``."""
    kind = "error" if item.breaks else "warning"
    return f"{item.pos}: {kind}: step '{item.step}': {item.message} (README fix {item.fix})"


def check_deviations(plan: Plan, *, allow: bool) -> list[str]:
    """Warnings for every place PanDA builds something else; raise for those it breaks on."""
    ordered = sorted(plan.deviations, key=lambda d: (d.pos.path, d.pos.line, d.pos.col, d.fix))
    breaking = [d for d in ordered if d.breaks]
    if breaking and not allow:
        raise DefectError(
            f"PanDA's server would reject or break this chain ({len(breaking)} place(s)); nothing was submitted\n"
            + "\n".join(deviation_text(d) for d in breaking),
            hint="run it with `cwlbridge run --backend panda`, which applies the fixes, or send it as it is"
            " with --allow-pchain-defects",
        )
    return [deviation_text(d).replace(": error: ", ": warning: ", 1) for d in ordered]


# -- the command -----------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    from cwlbridge.model.command import add_chain_arguments, add_outds_arguments

    submit = subparsers.add_parser(
        "submit",
        help="hand the whole chain to PanDA/iDDS, as pchain does, after checking it offline",
        description="Check the chain offline, then send it to PanDA as one workflow request that"
        " PanDA/iDDS runs while you are logged off. Exit 0 only when the server accepted it;"
        " 1 when the chain or the server refused; 2 for a usage error.",
    )
    add_chain_arguments(submit)
    add_outds_arguments(submit, required=True, help="the pchain --outDS, e.g. user.NICK.NAME")
    submit.add_argument("--check", action="store_true", help="ask the server to convert the chain only, and"
                        " print its conversion log (pchain --check)")
    submit.add_argument("--allow-pchain-defects", action="store_true",
                        help="send a chain PanDA's server rejects or breaks on anyway")
    submit.add_argument("--sandbox-include", action="append", default=[], metavar="GLOB",
                        help="also send files matching GLOB (relative to the chain) (repeatable)")
    submit.add_argument("--workflow-name", metavar="NAME", help="name the request (pchain --workflowName)")
    submit.add_argument("--base", metavar="DIR", default=".", help="directory holding .cwlbridge/ (default .)")
    submit.add_argument("--json", action="store_true", help="machine-readable output")
    submit.set_defaults(handler=run_submit)


def run_submit(args: argparse.Namespace) -> int:
    from cwlbridge.engine.run import make_analysis
    from cwlbridge.model.command import chain_and_inputs, outds_from
    from cwlbridge.panda.client import PandaClient
    from cwlbridge.panda.grid import preflight, upload_sandbox

    chain_arg, inputs_arg = chain_and_inputs(args, inputs_required=True)
    outds = outds_from(args) or ""
    chain, inputs = Path(chain_arg), Path(str(inputs_arg))
    analysis = make_analysis(chain, inputs, outds, on_idds=True, what="submitted")
    plan = analysis.plan
    warnings = check_deviations(plan, allow=args.allow_pchain_defects)
    for line in warnings:
        sys.stderr.write(line + "\n")
    files = chain_files(analysis.workflow, chain, inputs, args.sandbox_include)
    environ = dict(os.environ)
    setup = preflight(
        plan, chain=chain, store=None, reana_direct=lambda _t: False,
        environ=environ, includes=list(args.sandbox_include), need_rucio=False, secrets=not args.check,
    )
    base = Path(args.base)
    work = base / ".cwlbridge" / "sandboxes"
    sandbox, source_url = upload_sandbox(setup, work)
    tarball = build_tarball(files, work)
    with PandaClient(setup.settings) as client:
        tarball_name, _ = sandbox_mod.upload(client, tarball)
        params = request_params(
            task_params=templates(outds, setup.nickname, athena=uses_athena(files), sandbox=sandbox,
                                  source_url=source_url),
            source_url=source_url_of(setup.settings.cache_url), tarball=tarball_name, files=files, outds=outds,
            workflow_name=args.workflow_name, environ=environ,
        )
        submitted_at = dt.datetime.now(dt.timezone.utc)
        reply = client.put_workflow_request(params, check=args.check)
    accepted = reply.get("status") is True or reply.get("status") == 1
    request_id = reply.get("request_id")
    log_text = str(reply.get("log") or "")
    if accepted and not args.check and request_id is not None:
        remember(base, int(request_id), outds=outds, chain=str(chain), inputs=str(inputs), submitted=submitted_at)
    if args.json:
        sys.stdout.write(json.dumps({
            "accepted": accepted, "check": args.check, "request_id": request_id, "log": log_text,
            "warnings": warnings, "workflow_files": [rel for rel, _ in files.members], "sandbox": sandbox,
            "plan": plan.to_json(),
        }, indent=2) + "\n")
        return EXIT_OK if accepted else EXIT_FAILURE
    if args.check:
        sys.stdout.write("messages from the server\n\n" + log_text.rstrip() + "\n")
        sys.stdout.write("the server converted the chain\n" if accepted else "the server refused the chain\n")
        return EXIT_OK if accepted else EXIT_FAILURE
    if not accepted:
        sys.stderr.write("the server refused the workflow request:\n" + log_text.rstrip() + "\n")
        return EXIT_FAILURE
    from cwlbridge.model.command import print_table

    sys.stdout.write(f"request {request_id} accepted: PanDA/iDDS runs the chain's tasks\n")
    print_table(plan)
    sys.stdout.write(f"follow it with `cwlbridge workflow status {request_id}`\n")
    return EXIT_OK


def remember(base: Path, request_id: int, *, outds: str, chain: str, inputs: str, submitted: dt.datetime) -> None:
    """Keep what ``cwlbridge workflow`` needs to find the request's tasks."""
    folder = base / REQUESTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    record = {"request_id": request_id, "outds": outds, "chain": chain, "inputs": inputs,
              "submitted": submitted.isoformat()}
    path = folder / f"{request_id}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def recalled(base: Path, request_id: int) -> dict[str, Any] | None:
    """What ``remember`` kept of a request, or None."""
    path = base / REQUESTS_DIR / f"{request_id}.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
