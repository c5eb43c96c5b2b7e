"""Broken chains: each mistake gives the right file:line:col message and exit code, never a traceback."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from cwlbridge.model import yamlpos
from tests.cli_run import run_cli

HEAD = "cwlVersion: v1.0\nclass: Workflow\n"

GOOD_STEPS = """\
inputs:
  raw: string
outputs:
  out: {type: string, outputSource: b/outDS}
steps:
  a:
    run: prun
    in:
      opt_inDS: raw
      opt_exec: {default: "a.sh %IN"}
      opt_args: {default: "--outputs a.root"}
    out: [outDS]
  b:
    run: prun
    in:
      opt_inDS: a/outDS
      opt_exec: {default: "b.sh %IN"}
      opt_args: {default: "--outputs b.root"}
    out: [outDS]
"""

B_RUN = "    run: prun\n    in:\n      opt_inDS: a/"

# (id, chain text, inputs text, expected "line:col", expected message part, hint part or None)
CASES = [
    ("unknown-key", GOOD_STEPS.replace("opt_args: {default: \"--outputs a.root\"}", "opt_arg: {default: \"x\"}"),
     "raw: x", "13:7", "step 'a': unknown input parameter opt_arg for prun", "did you mean 'opt_args'?"),
    ("ds0", GOOD_STEPS.replace("b.sh %IN", "b.sh %{DS0}"), "raw: x", "19:33",
     "step 'b': %{DS0} is unresolved in opt_exec", "dataset placeholders are 1-based"),
    ("ds2", GOOD_STEPS.replace("b.sh %IN", "b.sh %{DS2}"), "raw: x", "19:33",
     "%{DS2} is unresolved in opt_exec", "this step has 1 input dataset(s)"),
    ("secds", GOOD_STEPS.replace("b.sh %IN", "b.sh %{SECDS1}"), "raw: x", "19:33",
     "%{SECDS1} is unresolved in opt_exec", "this step has 0 secondary"),
    ("unknown-placeholder", GOOD_STEPS.replace("b.sh %IN", "b.sh %{nope}"), "raw: x", "19:33",
     "%{nope} is unresolved in opt_exec", None),
    ("unknown-run", GOOD_STEPS.replace(B_RUN, B_RUN.replace("prun", "pruun")),
     "raw: x", "16:10", "step 'b': unknown run type 'pruun'", "did you mean 'prun'?"),
    ("missing-subworkflow", GOOD_STEPS.replace(B_RUN, B_RUN.replace("prun", "body.cwl")),
     "raw: x", "16:10", "sub-workflow file 'body.cwl' does not exist", None),
    ("unknown-source", GOOD_STEPS.replace("opt_inDS: a/outDS", "opt_inDS: c/outDS"), "raw: x", "18:17",
     "unknown source step 'c'", None),
    ("unknown-port", GOOD_STEPS.replace("opt_inDS: a/outDS", "opt_inDS: a/result"), "raw: x", "18:17",
     "step 'a' has no output 'result'", "its outputs are outDS"),
    ("unknown-input", GOOD_STEPS.replace("opt_inDS: raw", "opt_inDS: rwa"), "raw: x", "11:17",
     "unknown source 'rwa' (not a workflow input)", "did you mean 'raw'?"),
    ("cycle", GOOD_STEPS.replace("opt_inDS: raw", "opt_inDS: b/outDS"), "raw: x", "15:3",
     "the steps form a cycle: a -> b -> a", None),
    ("bad-prun-option", GOOD_STEPS.replace("--outputs b.root", "--outputs b.root --nFilesPerJobs 3"), "raw: x",
     "20:45", "opt_args: prun rejects it: unrecognized arguments: --nFilesPerJobs 3", "did you mean '--nFilesPerJob'?"),
    ("close-placeholder", GOOD_STEPS.replace("b.sh %IN", "b.sh %{rwa}"), "raw: x", "19:33",
     "%{rwa} is unresolved in opt_exec", "did you mean '%{raw}'?"),
    ("bad-prun-value", GOOD_STEPS.replace("--outputs b.root", "--outputs b.root --nJobs many"), "raw: x",
     "20:27", "invalid int value: 'many'", None),
    ("removed-prun-option", GOOD_STEPS.replace("--outputs b.root", "--outputs b.root --forceStagedSecondary"),
     "raw: x", "20:45", "unrecognized arguments: --forceStagedSecondary", None),
    ("bad-output-name", GOOD_STEPS.replace("--outputs b.root", "--outputs dir/b.root"), "raw: x", "20:27",
     "contains '/'", None),
    ("missing-required-input", GOOD_STEPS, "{}", "4:3", "required input 'raw' has no value", None),
    ("wrong-input-type", GOOD_STEPS, "raw: [1, 2]", "1:6", "input 'raw' must be string, not a list", None),
    ("wrong-literal-type", GOOD_STEPS.replace('opt_args: {default: "--outputs b.root"}', "opt_args: {default: 42}"),
     "raw: x", "20:27", "opt_args must be null or string, not a number", None),
    ("unknown-step-field", GOOD_STEPS.replace("    out: [outDS]\n  b:", "    out: [outDS]\n    scater: [x]\n  b:"),
     "raw: x", "15:5", "unknown step field 'scater'", "did you mean 'scatter'?"),
    ("yaml-syntax", "cwlVersion: v1.0\nclass: Workflow\nsteps:\n  a: {run: prun\n  b: 1\n", None, "5:4",
     "YAML syntax error", None),
    ("top-level-list", "- a\n- b\n", None, "1:1", "the top level is a list", None),
    ("empty-file", "", None, "1:1", "the file is empty", None),
    ("tool-not-workflow", "cwlVersion: v1.0\nclass: CommandLineTool\ninputs: {}\noutputs: {}\n", None, "2:8",
     "class is 'CommandLineTool'", None),
    ("bad-version", "cwlVersion: v0.9\nclass: Workflow\ninputs: {}\noutputs: {}\nsteps: {}\n", None, "1:13",
     "cwlVersion 'v0.9' is not one of", None),
    ("duplicate-key", HEAD + "inputs: {}\ninputs: {}\n", None, "4:1", "duplicate key 'inputs'", None),
    ("inputs-not-mapping", GOOD_STEPS, "- raw\n", "1:1", "the inputs file must be a mapping", None),
    ("inputs-syntax", GOOD_STEPS, "raw: [x\n", "2:1", "YAML syntax error", None),
]


def _write(tmp_path: Path, chain: str, inputs: str | None) -> tuple[Path, Path | None]:
    text = HEAD + chain if chain.startswith("inputs:") else chain
    path = tmp_path / "chain.cwl"
    path.write_text(text)
    inputs_path = None
    if inputs is not None:
        inputs_path = tmp_path / "inputs.yaml"
        inputs_path.write_text(inputs)
    return path, inputs_path


@pytest.mark.parametrize(("case", "chain", "inputs", "where", "message", "hint"), CASES, ids=[c[0] for c in CASES])
def test_broken_chain_is_reported_at_its_position(
    tmp_path: Path, case: str, chain: str, inputs: str | None, where: str, message: str, hint: str | None
) -> None:
    path, inputs_path = _write(tmp_path, chain, inputs)
    args = ["validate", str(path)] + ([str(inputs_path)] if inputs_path else [])
    result = run_cli(*args)
    assert result.code == 1, result.text
    assert "Traceback" not in result.text and "internal error" not in result.text
    target = inputs_path if case.startswith(("wrong-input", "inputs-")) else path
    expected = f"{target}:{where}: error: "
    lines = [line for line in result.err.splitlines() if line.startswith(expected)]
    assert any(message in line for line in lines), f"wanted {expected}…{message}\n{result.err}"
    if hint:
        assert f"hint: {hint}" in result.err, result.err


def test_all_problems_are_reported_in_one_pass(tmp_path: Path) -> None:
    chain = GOOD_STEPS.replace("opt_arg", "opt_arg").replace("a.sh %IN", "a.sh %{DS3}").replace(
        "opt_inDS: a/outDS", "opt_inDS: c/outDS"
    ).replace("--outputs b.root", "--outputs b.root --bogus")
    path, inputs_path = _write(tmp_path, chain, "{}")
    result = run_cli("validate", str(path), str(inputs_path))
    assert result.code == 1
    errors = [line for line in result.err.splitlines() if ": error: " in line]
    assert len(errors) >= 4, result.err
    assert f"{len(errors)} error(s)" in result.err


def test_json_format_lists_the_same_findings(tmp_path: Path) -> None:
    path, inputs_path = _write(tmp_path, GOOD_STEPS.replace("b.sh %IN", "b.sh %{DS0}"), "raw: x")
    result = run_cli("validate", str(path), str(inputs_path), "--format", "json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["valid"] is False
    finding = report["findings"][0]
    assert (finding["line"], finding["col"], finding["step"]) == (19, 33, "b")
    assert finding["message"] == "%{DS0} is unresolved in opt_exec"


def test_warnings_keep_exit_code_zero(tmp_path: Path) -> None:
    path, inputs_path = _write(tmp_path, GOOD_STEPS, "raw: x\nextra: 1\n")
    result = run_cli("validate", str(path), str(inputs_path))
    assert result.code == 0, result.text
    assert f"{inputs_path}:2:1: warning: 'extra' is not an input of the workflow" in result.err


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["validate", "/nonexistent/chain.cwl"],
        ["plan", "x.cwl"],
        ["frobnicate"],
        ["validate", "--format", "xml", "x.cwl"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.code == 2, result.text
    assert "Traceback" not in result.text


def test_binary_and_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    garbage = tmp_path / "garbage.cwl"
    garbage.write_bytes(bytes(range(256)) * 4)
    result = run_cli("validate", str(garbage))
    assert result.code == 1
    assert f"{garbage}:1:1: error: not a text file" in result.err
    latin = tmp_path / "latin.cwl"
    latin.write_bytes(b"cwlVersion: v1.0\nclass: Workflow\n# caf\xe9\n")
    result = run_cli("validate", str(latin))
    assert f"{latin}:3:1: error: not valid UTF-8 text" in result.err
    locked = tmp_path / "locked.cwl"
    locked.write_text(HEAD)
    locked.chmod(0)
    if os.access(locked, os.R_OK):
        # Root reads a mode-000 file anyway, so make the open itself fail the way it would.
        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(yamlpos, "open", refuse, raising=False)
    result = run_cli("validate", str(locked))
    assert result.code == 1 and f"{locked}: permission denied" in result.err
    assert "Traceback" not in result.text


def test_directory_as_chain_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("validate", str(tmp_path))
    assert result.code == 2
    assert "is a directory" in result.err


def test_builtin_run_types_create_no_files(tmp_path: Path) -> None:
    """PanDA touches empty prun/reana/… files next to the chain; cwlbridge must not."""
    path, inputs_path = _write(tmp_path, GOOD_STEPS, "raw: x")
    before = sorted(os.listdir(tmp_path))
    assert run_cli("validate", str(path), str(inputs_path)).code == 0
    assert sorted(os.listdir(tmp_path)) == before


def test_plan_rejects_a_bad_outds(tmp_path: Path) -> None:
    path, inputs_path = _write(tmp_path, GOOD_STEPS, "raw: x")
    result = run_cli("plan", str(path), str(inputs_path), "--outds", "jdoe.test")
    assert result.code == 2
    assert "user.NICKNAME.NAME" in result.err


def test_textwrap_dedent_is_not_needed() -> None:
    # Guard against an accidental indentation change in the shared chain text.
    assert textwrap.dedent(GOOD_STEPS) == GOOD_STEPS


def test_schema_error_in_one_of_many_same_shaped_steps_is_found(tmp_path: Path) -> None:
    """cwl-utils checks each distinct step shape once; a step that differs is still checked."""
    lines = [HEAD.rstrip(), "inputs: {raw: string}", "outputs: {}", "steps:"]
    for i in range(60):
        source = "raw" if i == 0 else f"s{i - 1}/outDS"
        extra = '      opt_exec: {default: "x"}'
        if i == 50:
            extra = "      opt_exec: {default: x, linkMerge: merge_sideways}"
        lines += [f"  s{i}:", "    run: prun", "    in:", f"      opt_inDS: {source}", extra, "    out: [outDS]"]
    path = tmp_path / "chain.cwl"
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "inputs.yaml").write_text("raw: x\n")
    result = run_cli("validate", str(path), str(tmp_path / "inputs.yaml"))
    assert result.code == 1
    line_of_s50 = 6 + 50 * 6 + 4  # steps start on line 6, six lines each; opt_exec is the fifth
    errors = [x for x in result.err.splitlines() if ": error: " in x]
    assert any(f"{path}:{line_of_s50}:" in x and "merge_nested" in x for x in errors), result.err


SCATTERED_CHAIN = """\
cwlVersion: v1.0
class: Workflow
requirements: {ScatterFeatureRequirement: {}, SubworkflowFeatureRequirement: {}}
inputs: {raw: string, points: 'string[]'}
outputs: {}
steps:
  point:
    run: body.cwl
    scatter: mass
    in: {raw: raw, mass: points}
    out: [outDS]
"""

SCATTERED_BODY = """\
cwlVersion: v1.0
class: Workflow
inputs: {raw: string, mass: string}
outputs: {}
steps:
  fit:
    run: prun
    in:
      opt_inDS: raw
      opt_exec: {default: "fit.sh --mass %{mas} %{DS1}"}
      opt_args: {default: "--outputs out.txt --nFilesPerJobb 2"}
    out: [outDS]
"""


def test_an_error_in_a_scattered_sub_workflow_is_reported_once_with_its_element(tmp_path: Path) -> None:
    (tmp_path / "chain.cwl").write_text(SCATTERED_CHAIN)
    (tmp_path / "body.cwl").write_text(SCATTERED_BODY)
    (tmp_path / "inputs.yaml").write_text("raw: user.me.x\npoints: [m100, m200, m300]\n")
    result = run_cli("validate", str(tmp_path / "chain.cwl"), str(tmp_path / "inputs.yaml"))
    assert result.code == 1
    body = tmp_path / "body.cwl"
    assert result.err.splitlines() == [
        # The column is the placeholder's and the option's own, not the string's start.
        f"{body}:10:42: error: step 'fit' in point[0] and 2 more elements: %{{mas}} is unresolved in opt_exec",
        "  hint: did you mean '%{mass}'? (only %{DSn}, %{SECDSn}, workflow inputs and sub-workflow inputs"
        " are replaced)",
        f"{body}:11:46: error: step 'fit' in point[0] and 2 more elements: opt_args: prun rejects it:"
        " unrecognized arguments: --nFilesPerJobb 2",
        "  hint: did you mean '--nFilesPerJob'?",
        f"{tmp_path / 'chain.cwl'}: 2 error(s), 0 warning(s)",
    ]


def test_an_error_in_one_scatter_element_names_that_element(tmp_path: Path) -> None:
    (tmp_path / "chain.cwl").write_text(SCATTERED_CHAIN)
    # Only the second element's value leaves a placeholder behind.
    (tmp_path / "body.cwl").write_text(SCATTERED_BODY.replace("--mass %{mas}", "--mass %{mass}").replace("Jobb", "Job"))
    (tmp_path / "inputs.yaml").write_text("raw: user.me.x\npoints: [m100, '%{oops}', m300]\n")
    result = run_cli("validate", str(tmp_path / "chain.cwl"), str(tmp_path / "inputs.yaml"), "--format", "json")
    findings = json.loads(result.out)["findings"]
    assert [(f["message"], f["element"]) for f in findings] == [("%{oops} is unresolved in opt_exec", "point[1]")]


def test_an_input_without_a_value_is_one_warning_not_an_error_at_each_use() -> None:
    """validate without an inputs file: %{signal_point} is not 'unresolved', its input has no value yet."""
    result = run_cli("validate", str(Path(__file__).resolve().parents[1] / "workflows" / "recast" / "chain.cwl"))
    assert result.code == 0, result.text
    assert "unresolved" not in result.text
    assert result.text.count("has no value (no inputs file given)") == 2
