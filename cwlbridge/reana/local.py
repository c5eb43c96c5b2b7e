"""Run a reana.yaml on this machine when no REANA server is configured.

Serial steps run as ``bash -c`` commands, one after another, in a fresh workspace
holding the inputs REANA would get, after REANA's ``${param}`` substitution
(``string.Template.safe_substitute``: unknown names stay, ``$$`` becomes ``$``).
CWL workflows run through ``python -m cwltool`` on the packed specification, with
outputs in ``outputs/`` as on REANA; without a ``docker`` command cwltool is told
``--no-container``.  Outputs are then collected, tarred and staged out with the same
deterministic tarball and stage-out as a remote run (``submitter.finish_outputs``), and
the run is recorded like one (``submitter.finish_run``).  Secrets are not used locally: steps see
the caller's environment, where the proxy and Rucio set-up already are.
"""

from __future__ import annotations

import json
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cwlbridge.reana.submitter import (
    STATE_DIR,
    Prepared,
    Say,
    SubmitOptions,
    SubmitResult,
    WorkflowFailed,
    WorkflowTimeout,
    collect_local_outputs,
    finish_outputs,
    finish_run,
    input_files,
    write_state,
)

LOG_TAIL_LINES = 40


def substitute(command: str, parameters: Mapping[str, Any]) -> str:
    """REANA's serial substitution of ``${name}``/``$name`` by the spec's parameters."""
    return string.Template(command).safe_substitute({key: str(value) for key, value in parameters.items()})


def _docker_images(node: Any) -> list[str]:
    """Every ``dockerPull`` of a packed CWL document, in order of appearance."""
    found: list[str] = []
    if isinstance(node, Mapping):
        pull = node.get("dockerPull")
        if isinstance(pull, str):
            found.append(pull)
        for child in node.values():
            found.extend(_docker_images(child))
    elif isinstance(node, list):
        for child in node:
            found.extend(_docker_images(child))
    return found


def ignored_images(workflow: Mapping[str, Any], *, docker: bool) -> list[str]:
    """The container images a local run of ``workflow`` does not use, each said once.

    Serial steps always run on this machine, so every step ``environment`` is ignored;
    cwltool uses a CWL step's ``DockerRequirement`` only when docker is installed.
    """
    if workflow.get("type") == "serial":
        steps = (workflow.get("specification") or {}).get("steps") or []
        images = [str(step["environment"]) for step in steps if isinstance(step, Mapping) and step.get("environment")]
    elif workflow.get("type") == "cwl" and not docker:
        images = _docker_images(workflow.get("specification"))
    else:
        images = []
    return list(dict.fromkeys(images))


def prepare_workspace(prepared: Prepared, workspace: Path) -> None:
    """A fresh workspace with the inputs REANA would receive (same selection as the upload)."""
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    for rel, path in input_files(prepared.submission, prepared.base_dir):
        target = workspace / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join("  | " + line for line in text.splitlines()[-lines:])


def _run(command: list[str], workspace: Path, log_path: Path, deadline: float, env: Mapping[str, str]) -> int:
    with log_path.open("a", encoding="utf-8") as log:
        log.flush()
        process = subprocess.Popen(
            command,
            cwd=workspace,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
        )
        try:
            return process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise WorkflowTimeout(f"the local run passed --timeout; see {log_path}") from None


def run_steps(prepared: Prepared, workspace: Path, log_path: Path, options: SubmitOptions, say: Say) -> None:
    """Run the workflow in ``workspace``; raise ``WorkflowFailed`` with the log tail on failure."""
    deadline = time.monotonic() + options.timeout
    workflow = prepared.submission["workflow"]
    kind = workflow.get("type")
    parameters = dict((prepared.submission.get("inputs") or {}).get("parameters") or {})
    env = dict(options.environ)
    env["REANA_WORKSPACE"] = str(workspace)
    docker = shutil.which("docker", path=env.get("PATH")) is not None
    ignored = ignored_images(workflow, docker=docker)
    if ignored:
        where = "steps run on this machine" if kind == "serial" else "cwltool runs without containers (no docker here)"
        say(f"local run: {where}; ignoring the image(s) " + ", ".join(ignored))
    if kind == "serial":
        steps = (workflow.get("specification") or {}).get("steps") or []
        for index, step in enumerate(steps):
            name = str(step.get("name") or f"step{index}")
            commands = step.get("commands") or []
            for number, command in enumerate(commands, start=1):
                which = f" command {number} of {len(commands)}" if len(commands) > 1 else ""
                say(f"local step {name}: running{which}")
                with log_path.open("a", encoding="utf-8") as log:
                    log.write(f"--- step {name}\n")
                code = _run(["bash", "-c", substitute(str(command), parameters)], workspace, log_path, deadline, env)
                if code != 0:
                    raise WorkflowFailed(
                        f"local step {name} exited with code {code}; last lines of {log_path}:\n{_tail(log_path)}"
                    )
        return
    if kind == "cwl":
        runtime = log_path.parent
        packed = runtime / "workflow.json"
        packed.write_text(json.dumps(workflow["specification"]), encoding="utf-8")
        job = workspace / ".cwlbridge-inputs.json"
        job.write_text(json.dumps(parameters), encoding="utf-8")
        target = ((prepared.submission.get("inputs") or {}).get("options") or {}).get("TARGET") or "main"
        command = [sys.executable, "-m", "cwltool", "--quiet", "--outdir", "outputs"]
        if not docker:
            command.append("--no-container")
        command += [f"{packed}#{target}", str(job)]
        say("local CWL run: cwltool")
        code = _run(command, workspace, log_path, deadline, env)
        job.unlink(missing_ok=True)
        if code != 0:
            raise WorkflowFailed(f"cwltool exited with code {code}; last lines of {log_path}:\n{_tail(log_path)}")
        return
    raise WorkflowFailed(f"the local engine runs serial and cwl workflows, not {kind}")


def run_local(prepared: Prepared, options: SubmitOptions, *, say: Say) -> SubmitResult:
    """Run the spec here, then collect, tar and stage out its outputs like a remote run."""
    run_dir = Path(options.workdir) / STATE_DIR / prepared.name
    workspace = run_dir / "workspace"
    log_path = run_dir / "run.log"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    say(f"no REANA server in use: running {prepared.name} locally in {workspace}")
    write_state(Path(options.workdir), prepared.name, engine="local", spec_digest=prepared.digest, status="running")
    prepare_workspace(prepared, workspace)
    try:
        run_steps(prepared, workspace, log_path, options, say)
    except (WorkflowFailed, WorkflowTimeout):
        write_state(Path(options.workdir), prepared.name, status="failed")
        raise
    members = collect_local_outputs(prepared.submission, workspace)
    say(f"local run finished: {len(members)} output file(s)")
    tar, staged = finish_outputs(members, options, say)
    return finish_run(
        prepared, options, say, outputs=[name for name, _ in members], tar=tar, staged=staged, files_in=workspace
    )
