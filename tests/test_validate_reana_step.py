"""``validate`` checks a `run: reana` step's `cwlbridge reana job …` command as the job would.

Each mistake below would, on the grid, fail the step hours after submission, inside its job
container.  Here it is an error at the chain's (or the template's) file:line:col.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cli_run import run_cli

REPO = Path(__file__).resolve().parents[1]

CHAIN = """\
cwlVersion: v1.0
class: Workflow
inputs:
  aod: string
outputs:
  result: {type: string, outputSource: fit/outDS}
steps:
  skim:
    run: prun
    in:
      opt_inDS: aod
      opt_exec: {default: "./skim.sh %IN ntup.root"}
      opt_args: {default: "--outputs ntup.root"}
    out: [outDS]
  fit:
    run: reana
    in:
      opt_inDS: [skim/outDS]
      opt_exec:
        default: "cwlbridge reana job --spec reana-template.yaml --set inputs.parameters.did=%{DS1} --tar out.tar"
      opt_args: {default: "--outputs out.tar --useSecrets"}
    out: [outDS]
"""
EXEC_LINE = 20  # the line of opt_exec's default
EXEC_TEXT = "cwlbridge reana job --spec reana-template.yaml --set inputs.parameters.did=%{DS1} --tar out.tar"


def _column(word: str, text: str = EXEC_TEXT) -> int:
    """The 1-based column of ``word`` on the opt_exec line (the default's quote is at column 18)."""
    return 18 + text.index(word) + 1


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("reana-template.yaml", "fit.sh", "skim.sh"):
        shutil.copy(REPO / "workflows" / "recast" / name, tmp_path / name)
    (tmp_path / "chain.cwl").write_text(CHAIN)
    (tmp_path / "inputs.yaml").write_text("aod: mc20:aod.1\n")
    return tmp_path


def _validate(project: Path, exec_text: str | None = None) -> tuple[int, str]:
    if exec_text is not None:
        (project / "chain.cwl").write_text(CHAIN.replace(EXEC_TEXT, exec_text))
    result = run_cli("validate", str(project / "chain.cwl"), str(project / "inputs.yaml"))
    assert "internal error" not in result.text and "Traceback" not in result.text
    return result.code, result.text


def test_a_correct_reana_step_is_valid(project: Path) -> None:
    code, text = _validate(project)
    assert code == 0, text
    assert "valid (2 task(s)" in text


def test_an_unknown_option_is_an_error_at_the_option(project: Path) -> None:
    bad = EXEC_TEXT.replace("--tar out.tar", "--tarball out.tar")
    code, text = _validate(project, bad)
    assert code == 1
    expected = f"{project / 'chain.cwl'}:{EXEC_LINE}:{_column('--tarball', bad)}: error: step 'fit': "
    assert expected + "`cwlbridge reana job` would refuse this opt_exec: unrecognized arguments: --tarball" in text


def test_a_missing_spec_option_is_an_error(project: Path) -> None:
    code, text = _validate(project, "cwlbridge reana job --tar out.tar")
    assert code == 1
    assert "the following arguments are required: --spec" in text
    assert f"chain.cwl:{EXEC_LINE}:" in text


def test_a_bad_option_value_is_an_error(project: Path) -> None:
    code, text = _validate(project, EXEC_TEXT + " --timeout soon")
    assert code == 1
    assert "argument --timeout: 'soon' is not a number of seconds" in text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch.yaml", "--spec nosuch.yaml: no such file beside the chain"),
        ("../reana-template.yaml", "--spec ../reana-template.yaml is outside the sandbox"),
        ("/etc/hostname", "--spec /etc/hostname is outside the sandbox"),
    ],
)
def test_the_template_must_be_in_the_sandbox(project: Path, spec: str, message: str) -> None:
    bad = EXEC_TEXT.replace("reana-template.yaml", spec)
    code, text = _validate(project, bad)
    assert code == 1
    assert f":{EXEC_LINE}:{_column('--spec', bad)}: error: step 'fit': {message}" in text


def test_a_template_that_does_not_load_is_an_error(project: Path) -> None:
    (project / "reana-template.yaml").write_text("workflow: [a, b\n")
    code, text = _validate(project)
    assert code == 1
    assert "the --spec template does not load" in text and "not valid YAML" in text


def test_every_set_path_must_exist_in_the_template(project: Path) -> None:
    bad = EXEC_TEXT.replace("inputs.parameters.did", "inputs.paramters.did")
    code, text = _validate(project, bad)
    assert code == 1
    assert (
        f":{EXEC_LINE}:{_column('--set', bad)}: error: step 'fit': --set inputs.paramters.did: reana-template.yaml"
        " has no 'paramters' under inputs (keys: parameters, files)" in text
    )


def test_every_var_token_must_occur_in_the_template(project: Path) -> None:
    code, text = _validate(project, EXEC_TEXT + " --var VAR_INPUT=%{DS1}")
    assert code == 1
    assert "--var VAR_INPUT: the token occurs nowhere in reana-template.yaml" in text
    assert f":{EXEC_LINE}:{_column('--var', EXEC_TEXT + ' --var')}:" in text


def test_a_var_token_used_in_the_template_is_fine(project: Path) -> None:
    template = project / "reana-template.yaml"
    template.write_text(template.read_text().replace("bash fit.sh ${did}", "bash fit.sh VAR_INPUT"))
    good = EXEC_TEXT + " --var VAR_INPUT=%{DS1}"
    code, text = _validate(project, good)
    assert code == 0, text
    # Without the --var the token is left over, which the template check reports at its line.
    code, text = _validate(project, EXEC_TEXT)
    assert code == 1
    assert f"{template}:17:" in text and "placeholder VAR_INPUT is still in this value" in text


def test_the_template_must_pass_the_spec_checks(project: Path) -> None:
    template = project / "reana-template.yaml"
    text = template.read_text().replace("        environment: docker.io/library/python:3.11\n", "")
    template.write_text(text.replace("    - fit.sh", "    - fit.sh\n    - missing.sh"))
    code, out = _validate(project)
    assert code == 1
    assert (
        f"{template}:9:7: error: step 'fit': template reana-template.yaml: input file 'missing.sh' does not exist"
        in out
    )
    assert "serial step 1 has no 'environment' (REANA requires it)" in out
    assert f"{template}:14:9:" in out


def test_run_refuses_the_chain_before_anything_starts(project: Path) -> None:
    (project / "chain.cwl").write_text(CHAIN.replace("--tar out.tar", "--tarr out.tar"))
    base = project / "base"
    result = run_cli("run", str(project / "chain.cwl"), str(project / "inputs.yaml"), "--base", str(base))
    assert result.code != 0
    assert "unrecognized arguments: --tarr" in result.text
    assert not list(base.glob("**/state.sqlite"))


def test_scattered_reana_steps_report_once(project: Path) -> None:
    chain = (
        CHAIN.replace("  aod: string", "  aod: string[]")
        .replace("  skim:\n    run: prun", "  skim:\n    run: prun\n    scatter: opt_inDS")
        .replace("outputSource: fit/outDS}", "outputSource: fit/outDS}\nrequirements:\n  ScatterFeatureRequirement: {}")
    )
    (project / "chain.cwl").write_text(chain.replace("--tar out.tar", "--tarr out.tar"))
    (project / "inputs.yaml").write_text("aod: [mc20:a, mc20:b, mc20:c]\n")
    result = run_cli("validate", str(project / "chain.cwl"), str(project / "inputs.yaml"))
    assert result.code == 1
    assert result.text.count("unrecognized arguments: --tarr") == 1, result.text
