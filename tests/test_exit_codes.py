"""Exit codes as the README gives them: naming what does not exist is a usage error (2)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.cli_run import run_cli


@pytest.mark.parametrize(
    "args",
    [
        ["status", "nosuch"],
        ["kill", "nosuch"],
        ["resume", "nosuch"],
        ["logs", "nosuch", "skim"],
        ["report", "nosuch"],
        ["data", "add", "user.jdoe:user.jdoe.x", "/nonexistent"],
    ],
)
def test_naming_what_does_not_exist_is_a_usage_error(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli(*args)
    assert result.code == 2, result.text
    assert "Traceback" not in result.text and "internal error" not in result.text
    assert "nosuch" in result.err or "/nonexistent" in result.err


def test_containers_that_cannot_be_had_stop_the_run_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = tmp_path / "chain.cwl"
    chain.write_text(
        textwrap.dedent(
            """\
            cwlVersion: v1.0
            class: Workflow
            inputs: {}
            outputs:
              out: {type: string, outputSource: make/outDS}
            steps:
              make:
                run: prun
                in:
                  opt_exec: {default: "echo hi > out.txt"}
                  opt_args: {default: "--outputs out.txt"}
                  opt_containerImage: {default: "docker://alpine:3"}
                out: [outDS]
            """
        )
    )
    (tmp_path / "inputs.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no docker, apptainer or singularity
    for engine in ("apptainer", "docker"):
        outds = f"user.jdoe.c{engine}"
        result = run_cli("run", str(chain), "inputs.yaml", "--outds", outds, "--containers", engine, "-q")
        assert result.code == 2, result.text
        assert f"--containers {engine}:" in result.err and "step 'make'" in result.err
    assert not (tmp_path / ".cwlbridge" / "runs").exists(), "refused before any run is recorded"
