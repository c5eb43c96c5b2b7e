"""A local job gets the caller's environment, as a grid job gets the user's, not cwlbridge's venv."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

from cwlbridge.backends.reana import with_name

REPO = Path(__file__).resolve().parent.parent


def test_a_job_sees_the_callers_python_and_dot_first_on_path(tmp_path: Path) -> None:
    venv_bin = os.path.dirname(sys.executable)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.abspath(p) != venv_bin]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CWLBRIDGE_", "REANA_", "VIRTUAL_ENV"))}
    env.update(PATH=os.pathsep.join(path), PYTHONPATH=str(REPO))  # as a shell without `activate`
    chain = tmp_path / "chain.cwl"
    chain.write_text(
        textwrap.dedent(
            """\
            cwlVersion: v1.0
            class: Workflow
            inputs: {}
            outputs:
              out: {type: string, outputSource: look/outDS}
            steps:
              look:
                run: prun
                in:
                  opt_exec:
                    default: "python3 -c 'import sys; print(sys.prefix)' > env.txt; echo $PATH >> env.txt"
                  opt_args: {default: "--outputs env.txt"}
                out: [outDS]
            """
        )
    )
    (tmp_path / "inputs.yaml").write_text("{}\n")
    done = subprocess.run(
        [sys.executable, "-m", "cwlbridge", "run", "chain.cwl", "inputs.yaml", "--outds", "user.jdoe.env", "-q"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [out] = list((tmp_path / ".cwlbridge" / "data").glob("user.jdoe/*env.txt*/*env.txt"))
    prefix, job_path = out.read_text().splitlines()
    assert prefix != sys.prefix, "the job's python3 must be the user's, not cwlbridge's virtualenv"
    assert prefix == subprocess.run(
        ["python3", "-c", "import sys; print(sys.prefix)"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert job_path.split(os.pathsep) == [".", *path]


def test_the_reana_submitter_step_runs_this_interpreter_not_whatever_is_on_path() -> None:
    command = with_name("cwlbridge reana job --spec reana.yaml --tar out.tar", "fit-1")
    assert shlex.split(command) == [
        sys.executable, "-m", "cwlbridge", "reana", "job", "--spec", "reana.yaml", "--tar", "out.tar",
        "--name", "fit-1",
    ]
    assert with_name("echo not the submitter", "x") == "echo not the submitter --name x"
