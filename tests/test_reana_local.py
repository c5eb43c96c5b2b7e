"""`cwlbridge reana submit --engine local`: the spec runs on this machine, outputs as for REANA."""

from __future__ import annotations

import tarfile
import textwrap
from pathlib import Path

import pytest

from cwlbridge.reana.local import substitute
from cwlbridge.reana.submitter import EXIT_OUTPUTS, EXIT_WORKFLOW_FAILED
from tests.cli_run import run_cli

SERIAL = textwrap.dedent(
    """\
    version: 0.9.0
    inputs:
      files: [code/count.sh]
      directories: [data]
      parameters:
        did: "VAR_INPUT"
        outdir: results
    workflow:
      type: serial
      specification:
        steps:
          - name: count
            environment: docker.io/library/bash:5
            commands:
              - mkdir -p ${outdir}
              - bash code/count.sh "${did}" ${outdir}
              - echo '$$HOME is not substituted; ${unknown} stays' > ${outdir}/literal.txt
    outputs:
      directories: [results]
    """
)
COUNT = 'printf "%s\\n" "$1" > "$2/dataset.txt"\nls data | wc -l > "$2/count.txt"\n'


def _project(tmp_path: Path, template: str = SERIAL, script: str = COUNT) -> Path:
    project = tmp_path / "project"
    (project / "code").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "reana.yaml").write_text(template)
    (project / "code" / "count.sh").write_text(script)
    for name in ("a.txt", "b.txt", "c.tmp"):
        (project / "data" / name).write_text(name)
    (project / ".gitignore").write_text("*.tmp\n")
    return project


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_substitution_follows_string_template() -> None:
    assert substitute("a ${x} $x $$y ${z}", {"x": 1}) == "a 1 1 $y ${z}"


def test_serial_spec_runs_locally_without_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REANA_SERVER_URL", raising=False)
    project = _project(tmp_path)
    work = tmp_path / "work"
    work.mkdir()

    result = run_cli(
        "reana", "submit", str(project / "reana.yaml"), "--var", "VAR_INPUT=user.jdoe:ds.1",
        "--workdir", str(work), "--tar", "out.tgz",
    )  # fmt: skip

    assert result.code == 0, result.text
    assert "running" in result.out and "locally" in result.out
    # One line per command of the step, each saying which.
    said = [line for line in result.text.splitlines() if "local step count: running" in line]
    assert [line.split("running", 1)[1].strip() for line in said] == [f"command {n} of 3" for n in (1, 2, 3)]
    members = _members(work / "out.tgz")
    assert members["results/dataset.txt"] == b"user.jdoe:ds.1\n"
    assert members["results/count.txt"].strip() == b"2"  # c.tmp is git-ignored
    assert members["results/literal.txt"] == b"$HOME is not substituted; ${unknown} stays\n"


def test_failing_local_step_exits_5_with_the_log_tail(tmp_path: Path) -> None:
    project = _project(tmp_path, script='echo "no events selected" >&2\nexit 4\n')
    result = run_cli(
        "reana", "submit", str(project / "reana.yaml"), "--var", "VAR_INPUT=x", "--engine", "local",
        "--workdir", str(tmp_path), "--tar", "out.tar",
    )  # fmt: skip
    assert result.code == EXIT_WORKFLOW_FAILED, result.text
    assert "exited with code 4" in result.err and "no events selected" in result.err
    assert not (tmp_path / "out.tar").exists()


def test_missing_declared_output_exits_7(tmp_path: Path) -> None:
    template = SERIAL.replace("directories: [results]", "files: [results/never.txt]")
    project = _project(tmp_path, template=template)
    result = run_cli(
        "reana", "submit", str(project / "reana.yaml"), "--var", "VAR_INPUT=x", "--engine", "local",
        "--workdir", str(tmp_path), "--tar", "out.tar",
    )  # fmt: skip
    assert result.code == EXIT_OUTPUTS, result.text
    assert "results/never.txt" in result.err


CWL_TOOL = textwrap.dedent(
    """\
    cwlVersion: v1.2
    class: CommandLineTool
    baseCommand: [bash]
    inputs:
      script: {type: File, inputBinding: {position: 1}}
      did: {type: string, inputBinding: {position: 2}}
    stdout: fit.txt
    outputs:
      fit: {type: stdout}
    """
)
CWL_WORKFLOW = textwrap.dedent(
    """\
    cwlVersion: v1.2
    class: Workflow
    inputs:
      script: File
      did: string
    outputs:
      fit: {type: File, outputSource: run/fit}
    steps:
      run:
        run: fit.cwl
        in: {script: script, did: did}
        out: [fit]
    """
)
CWL_SPEC = textwrap.dedent(
    """\
    version: 0.9.0
    inputs:
      files: [code/fit.sh, job.yaml]
      parameters:
        input: job.yaml
    workflow:
      type: cwl
      file: workflow.cwl
    outputs:
      files: [outputs/fit.txt]
    """
)


def test_cwl_spec_runs_through_cwltool(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "code").mkdir(parents=True)
    (project / "fit.cwl").write_text(CWL_TOOL)
    (project / "workflow.cwl").write_text(CWL_WORKFLOW)
    (project / "reana.yaml").write_text(CWL_SPEC)
    (project / "code" / "fit.sh").write_text('echo "fitted $1"\n')
    (project / "job.yaml").write_text("script: {class: File, location: code/fit.sh}\ndid: VAR_INPUT\n")

    result = run_cli(
        "reana", "submit", str(project / "reana.yaml"), "--var", "VAR_INPUT=mc20:ds", "--engine", "local",
        "--workdir", str(tmp_path), "--tar", "cwl.tar",
    )  # fmt: skip

    assert result.code == 0, result.text
    assert _members(tmp_path / "cwl.tar") == {"outputs/fit.txt": b"fitted mc20:ds\n"}
