"""Container command lines for jobs whose task names an image (``opt_containerImage``).

A job's command goes into a payload file beside its working directory; the container engine
runs it with the task attempt's directory (which holds both) bound at the same path and the
job's working directory as the working directory.  Docker containers get a name, so a kill
can ``docker kill`` them (the ``docker run`` client dying does not stop the container);
Apptainer runs as child processes, which the process-tree kill reaches.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: The payload of job JOB is JOB.payload.sh.
PAYLOAD_SUFFIX = ".payload.sh"


def container_command(
    engine: str,
    image: str,
    *,
    bind: Path,
    payload: Path,
    work: Path,
    env_names: Sequence[str],
    name: str | None = None,
) -> list[str]:
    """The command line that runs a job's ``payload`` file inside ``image`` with ``engine``.

    ``bind`` (holding the payload and ``work``) is bound at the same path, the job works in
    ``work``, and the environment variables ``env_names`` are passed by name (values never on
    the command line).
    Docker runs as the calling user so outputs stay the user's; Apptainer does that itself.
    """
    if engine == "docker":
        reference = image[len("docker://") :] if image.startswith("docker://") else image
        argv = ["docker", "run", "--rm", "--init"]
        if name:
            argv += ["--name", name]
        argv += ["--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{bind}:{bind}", "-w", str(work)]
        for env_name in env_names:
            argv += ["-e", env_name]
        return argv + [reference, "/bin/sh", str(payload)]
    if engine == "apptainer":
        reference = image if re.match(r"^[a-z]+://", image) or image.startswith("/") else f"docker://{image}"
        tool = "apptainer" if shutil.which("apptainer") or not shutil.which("singularity") else "singularity"
        return [tool, "exec", "--bind", str(bind), "--pwd", str(work), reference, "/bin/sh", str(payload)]
    raise ValueError(f"unknown container engine {engine!r}")


def find_container_engine(containers: str) -> tuple[str | None, str]:
    """(engine or None, why none) for a ``--containers`` choice on this machine."""
    if containers == "never":
        return None, "--containers never"
    apptainer = shutil.which("apptainer") or shutil.which("singularity")
    docker = shutil.which("docker")
    if containers == "apptainer":
        return ("apptainer", "") if apptainer else (None, "neither apptainer nor singularity is installed")
    if containers == "docker":
        return ("docker", "") if docker else (None, "docker is not installed")
    if apptainer:
        return "apptainer", ""
    if docker:
        problem = _docker_problem(docker)
        return (None, problem) if problem else ("docker", "")
    return None, "neither docker nor apptainer is installed"


def _docker_problem(docker: str) -> str | None:
    try:
        result = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"docker does not answer ({exc})"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return "docker cannot reach its daemon" + (f" ({lines[-1]})" if lines else "")
    return None
