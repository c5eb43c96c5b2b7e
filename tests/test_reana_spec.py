"""reana.yaml templates: injection stays one string, checks point at file:line, CWL packs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwlbridge.errors import UsageError
from cwlbridge.reana import spec

TEMPLATE = textwrap.dedent(
    """\
    # analysis template, filled in by cwlbridge
    version: 0.9.0
    inputs:
      parameters:
        input_dataset: "__CWLB_DS1__"   # resolved %{DS1}
        output_dir: results
      files:
        - code/fit.py
    workflow:
      type: serial
      specification:
        steps:
          - name: fit
            environment: docker.io/library/python:3.11
            voms_proxy: true
            rucio: true
            commands:
              - rucio download --dir data VAR_INPUT
              - |
                python code/fit.py data ${output_dir} --tag VAR_INPUT
    outputs:
      directories: [results]
    """
)

NASTY_VALUES = [
    "mc20_13TeV:mc20_13TeV.700320.Sh_2211.DAOD_PHYS.e8351_p5855",
    "a: b",
    "x # not a comment",
    "line1\nnew_key: injected",
    "'single' and \"double\"",
    "}{ ][ & * ! | > % @ `",
    "trailing space ",
    "\u2028\x85 odd breaks",
    "",
]


def make_tree(tmp_path: Path, text: str = TEMPLATE) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "fit.py").write_text("print('fit')\n")
    (tmp_path / "results").mkdir()
    path = tmp_path / "reana.yaml"
    path.write_text(text)
    return path


def reload(doc: object) -> dict[str, object]:
    result = spec.to_plain(spec.loads_spec(spec.dump(doc)))
    assert isinstance(result, dict)
    return result


def test_round_trip_keeps_comments_and_order(tmp_path: Path) -> None:
    path = make_tree(tmp_path)
    doc = spec.load_spec(path)
    text = spec.dump(doc)
    assert "# analysis template, filled in by cwlbridge" in text
    assert "# resolved %{DS1}" in text
    assert list(doc) == ["version", "inputs", "workflow", "outputs"]


@pytest.mark.parametrize("value", NASTY_VALUES)
def test_set_value_keeps_one_string(tmp_path: Path, value: str) -> None:
    doc = spec.load_spec(make_tree(tmp_path))
    spec.set_value(doc, "inputs.parameters.input_dataset", value)
    again = reload(doc)
    params = again["inputs"]["parameters"]  # type: ignore[index]
    assert params == {"input_dataset": value, "output_dir": "results"}
    assert list(again) == ["version", "inputs", "workflow", "outputs"]


@pytest.mark.parametrize("value", NASTY_VALUES)
def test_replace_token_keeps_one_string(tmp_path: Path, value: str) -> None:
    doc = spec.load_spec(make_tree(tmp_path))
    assert spec.replace_token(doc, "VAR_INPUT", value) == 2
    again = reload(doc)
    commands = again["workflow"]["specification"]["steps"][0]["commands"]  # type: ignore[index]
    assert commands[0] == f"rucio download --dir data {value}"
    assert commands[1] == f"python code/fit.py data ${{output_dir}} --tag {value}\n"
    assert len(commands) == 2
    assert set(again["workflow"]["specification"]["steps"][0]) == {  # type: ignore[index]
        "name",
        "environment",
        "voms_proxy",
        "rucio",
        "commands",
    }


@settings(max_examples=150, deadline=None)
@given(value=st.text(max_size=30))
def test_any_text_survives_injection(value: str) -> None:
    doc = spec.loads_spec(TEMPLATE)
    spec.set_value(doc, "inputs.parameters.output_dir", value)
    spec.replace_token(doc, "VAR_INPUT", value)
    again = reload(doc)
    assert again["inputs"]["parameters"]["output_dir"] == value  # type: ignore[index]
    steps = again["workflow"]["specification"]["steps"]  # type: ignore[index]
    assert steps[0]["commands"][0] == f"rucio download --dir data {value}"
    assert list(again["inputs"]["parameters"]) == ["input_dataset", "output_dir"]  # type: ignore[index]


def test_replace_token_leaves_keys_and_numbers_alone() -> None:
    doc = spec.loads_spec("VAR_X: VAR_X\nn: 5\nlist: [VAR_X, 7]\n")
    assert spec.replace_token(doc, "VAR_X", "v") == 2
    assert spec.to_plain(doc) == {"VAR_X": "v", "n": 5, "list": ["v", 7]}


def test_set_value_creates_keys_and_indexes_lists() -> None:
    doc = spec.loads_spec(TEMPLATE)
    spec.set_value(doc, "inputs.options.TARGET", "fit")
    spec.set_value(doc, "workflow.specification.steps[0].commands[0]", "echo hi")
    spec.set_value(doc, "workspace.retention_days.results", 7)
    plain = spec.to_plain(doc)
    assert plain["inputs"]["options"] == {"TARGET": "fit"}
    assert plain["workflow"]["specification"]["steps"][0]["commands"][0] == "echo hi"
    assert plain["workspace"] == {"retention_days": {"results": 7}}


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("", "empty path"),
        ("inputs..files", "segment"),
        ("inputs.files.x", "not a mapping"),
        ("inputs.files.x.y", "cannot look up key"),
        ("inputs.files[5]", "past the end"),
        ("workflow.type.deeper", "not a mapping"),
        ("inputs.parameters[0]", "not a list"),
        ("nothing[0].x", "no such key"),
    ],
)
def test_set_value_bad_paths(path: str, fragment: str) -> None:
    doc = spec.loads_spec(TEMPLATE)
    with pytest.raises(UsageError) as info:
        spec.set_value(doc, path, "v")
    assert fragment in str(info.value)


def test_cli_option_parsing() -> None:
    assert spec.parse_set_option("inputs.parameters.did=mc20:a=b") == (
        "inputs.parameters.did",
        "mc20:a=b",
    )
    assert spec.parse_set_option("a.b=") == ("a.b", "")
    assert spec.parse_var_option("VAR_INPUT=x=y") == ("VAR_INPUT", "x=y")
    for bad in ("novalue", "=x"):
        with pytest.raises(UsageError):
            spec.parse_set_option(bad)
        with pytest.raises(UsageError):
            spec.parse_var_option(bad)
    with pytest.raises(UsageError):
        spec.parse_set_option("a..b=1")


def test_apply_options_then_check_is_clean(tmp_path: Path) -> None:
    path = make_tree(tmp_path)
    doc = spec.load_spec(path)
    spec.apply_options(
        doc,
        sets=[("inputs.parameters.input_dataset", "mc20:ds1")],
        variables=[("VAR_INPUT", "mc20:ds1")],
    )
    assert spec.check_spec(doc, path, tmp_path, tokens=["VAR_INPUT"]) == []


def test_check_reports_leftover_tokens_with_lines(tmp_path: Path) -> None:
    path = make_tree(tmp_path)
    doc = spec.load_spec(path)
    findings = spec.check_spec(doc, path, tmp_path, tokens=["VAR_INPUT"])
    texts = [str(f) for f in sorted(findings, key=lambda f: f.pos.line)]
    assert len(texts) == 3
    assert texts[0].startswith(f"{path}:5:")
    assert "__CWLB_DS1__" in texts[0]
    assert all("VAR_INPUT" in t for t in texts[1:])
    assert {t.split(":")[1] for t in texts[1:]} == {"18", "19"}


def test_check_reports_structure_problems(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        version: 0.9.0
        input:
          files: [a.txt]
        inputs:
          files:
            - /etc/passwd
            - ../outside.txt
            - missing.txt
            - code/fit.py
            - code/fit.py
          directories:
            - code
            - nodir
        workflow:
          type: nextflow
          resources:
            voms_proxy: true
        """
    )
    path = make_tree(tmp_path, text)
    findings = spec.check_spec(spec.load_spec(path), path, tmp_path)
    messages = [str(f) for f in findings]

    def line_of(fragment: str) -> str:
        hits = [m for m in messages if fragment in m]
        assert hits, f"no finding mentions {fragment!r}: {messages}"
        return hits[0].split(":")[1]

    assert line_of("unknown top-level key 'input'") == "2"
    assert line_of("is absolute") == "6"
    assert line_of("contains '..'") == "7"
    assert line_of("'missing.txt' does not exist") == "8"
    assert line_of("listed twice") == "10"
    assert line_of("'nodir' does not exist") == "13"
    assert line_of("'nextflow' is not one of") == "15"
    assert line_of("exists only in REANA 0.95") == "17"
    assert any("needs either 'file' or 'specification'" in m for m in messages)
    assert any("lies inside input directory 'code'" in m for m in messages)
    assert all(f.severity == "error" for f in findings)


def test_check_missing_workflow_and_type(tmp_path: Path) -> None:
    path = make_tree(tmp_path, "version: 0.9.0\n")
    (finding,) = spec.check_spec(spec.load_spec(path), path, tmp_path)
    assert "missing the required key 'workflow'" in str(finding)
    doc = spec.loads_spec("workflow:\n  file: wf.yaml\n")
    messages = [str(f) for f in spec.check_spec(doc, "r.yaml", tmp_path)]
    assert any("missing 'workflow.type'" in m for m in messages)
    assert any("workflow file 'wf.yaml' does not exist" in m for m in messages)


def test_bad_yaml_gives_position(tmp_path: Path) -> None:
    path = tmp_path / "reana.yaml"
    path.write_text("workflow:\n  type: serial\n  steps: [a, b\n")
    with pytest.raises(spec.SpecError) as info:
        spec.load_spec(path)
    assert str(info.value).startswith(f"{path}:")


CWL_WORKFLOW = textwrap.dedent(
    """\
    cwlVersion: v1.2
    class: Workflow
    $namespaces:
      reana: http://reana.io
    inputs:
      ds: string
      script: File
    outputs:
      out:
        type: File
        outputSource: fit/out
    steps:
      fit:
        hints:
          reana:
            voms_proxy: true
        run: fit.cwl
        in: {ds: ds, script: script}
        out: [out]
    """
)
CWL_TOOL = textwrap.dedent(
    """\
    cwlVersion: v1.2
    class: CommandLineTool
    baseCommand: python
    inputs:
      script: {type: File, inputBinding: {position: 1}}
      ds: {type: string, inputBinding: {position: 2}}
    outputs:
      out: {type: stdout}
    """
)
CWL_SPEC = textwrap.dedent(
    """\
    version: 0.9.0
    inputs:
      files: [code/fit.py, workflow/wf.cwl, workflow/fit.cwl, job.yml]
      parameters:
        input: job.yml
        extra: from-spec
    workflow:
      type: cwl
      file: workflow/wf.cwl
    outputs:
      files: [out.txt]
    """
)


def make_cwl_tree(tmp_path: Path) -> Path:
    path = make_tree(tmp_path, CWL_SPEC)
    (tmp_path / "workflow").mkdir()
    (tmp_path / "workflow" / "wf.cwl").write_text(CWL_WORKFLOW)
    (tmp_path / "workflow" / "fit.cwl").write_text(CWL_TOOL)
    (tmp_path / "job.yml").write_text("ds: __CWLB_DS1__\nscript: {class: File, location: code/fit.py}\n")
    return path


def test_cwl_submission_is_packed_with_job_loaded(tmp_path: Path) -> None:
    path = make_cwl_tree(tmp_path)
    doc = spec.load_spec(path)
    findings = spec.check_spec(doc, path, tmp_path)
    assert [f.pos.path for f in findings] == [str(tmp_path / "job.yml")]
    assert "__CWLB_DS1__" in findings[0].message
    assert spec.check_spec(doc, path, tmp_path, tokens=["__CWLB_DS1__"]) == []

    body = spec.build_submission(doc, tmp_path, replacements={"__CWLB_DS1__": "mc20:a.b"})
    json.dumps(body)  # must be JSON-able as is
    packed = body["workflow"]["specification"]
    assert packed["cwlVersion"] == "v1.2"
    ids = {process["id"] for process in packed["$graph"]}
    assert "#main" in ids and len(ids) == 2
    assert body["inputs"]["parameters"] == {
        "ds": "mc20:a.b",
        "script": {"class": "File", "location": "code/fit.py"},
        "extra": "from-spec",
    }
    assert body["workflow"]["file"] == "workflow/wf.cwl"
    assert spec.credential_usage(body, tmp_path) == spec.CredentialUsage(True, False)


def test_broken_cwl_fails_before_submission(tmp_path: Path) -> None:
    path = make_cwl_tree(tmp_path)
    (tmp_path / "workflow" / "fit.cwl").write_text("cwlVersion: v1.2\nclass: Nonsense\n")
    with pytest.raises(spec.SpecError) as info:
        spec.build_submission(spec.load_spec(path), tmp_path)
    assert "wf.cwl" in str(info.value)


def test_serial_file_is_loaded_and_usage_detected(tmp_path: Path) -> None:
    path = make_tree(
        tmp_path,
        "inputs:\n  files: [code/fit.py]\nworkflow:\n  type: serial\n  file: serial.yaml\n",
    )
    (tmp_path / "serial.yaml").write_text(
        "steps:\n  - environment: python:3.11\n    voms_proxy: true\n    commands: [python code/fit.py]\n"
    )
    doc = spec.load_spec(path)
    assert spec.check_spec(doc, path, tmp_path) == []
    body = spec.build_submission(doc, tmp_path)
    assert body["workflow"]["specification"]["steps"][0]["commands"] == ["python code/fit.py"]
    assert spec.credential_usage(body, tmp_path) == spec.CredentialUsage(True, False)

    inline = spec.build_submission(spec.loads_spec(TEMPLATE), tmp_path)
    assert spec.credential_usage(inline, tmp_path) == spec.CredentialUsage(True, True)


def test_yadage_and_snakemake_usage(tmp_path: Path) -> None:
    (tmp_path / "steps.yml").write_text("fit:\n  environment:\n    image: x\n    resources:\n      - rucio: true\n")
    (tmp_path / "flow.yml").write_text("stages:\n  - name: fit\n    scheduler:\n      step: {$ref: 'steps.yml#/fit'}\n")
    yadage = spec.loads_spec("workflow:\n  type: yadage\n  file: flow.yml\n")
    body = spec.build_submission(yadage, tmp_path)
    assert body["workflow"]["specification"] is None
    assert spec.credential_usage(body, tmp_path) == spec.CredentialUsage(False, True)

    (tmp_path / "Snakefile").write_text("rule fit:\n    resources:\n        voms_proxy=True\n")
    snake = {"workflow": {"type": "snakemake", "file": "Snakefile"}}
    assert spec.credential_usage(snake, tmp_path) == spec.CredentialUsage(True, False)
    with pytest.raises(spec.SpecError) as info:
        spec.build_submission(spec.loads_spec("workflow:\n  type: snakemake\n  file: Snakefile\n"), tmp_path)
    assert "snakemake" in str(info.value)


def test_unsafe_output_paths_are_refused_by_the_checks(tmp_path: Path) -> None:
    path = tmp_path / "reana.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            version: 0.9.0
            workflow:
              type: serial
              specification:
                steps:
                  - environment: docker.io/library/python:3.11
                    commands: [echo hi > results/a.txt]
            outputs:
              files:
                - ../x
                - /etc/passwd
                - results/ok.txt
                - ""
                - results\\b.txt
              directories:
                - ..
                - results
            """
        )
    )
    findings = [str(f) for f in spec.check_spec(spec.load_spec(path), path, tmp_path)]
    assert findings == [
        f"{path}:10:7: error: output path '../x' contains '..'; REANA output paths must stay inside the workspace",
        f"{path}:11:7: error: output path '/etc/passwd' is absolute; REANA output paths are relative to the workspace",
        f"{path}:13:7: error: output path '' is empty",
        f"{path}:14:7: error: output path 'results\\\\b.txt' contains a backslash; write output paths with '/'",
        f"{path}:16:7: error: output path '..' contains '..'; REANA output paths must stay inside the workspace",
    ]


def test_unsafe_output_paths_stop_a_local_run_before_it_starts(tmp_path: Path) -> None:
    from tests.cli_run import run_cli

    project = tmp_path / "p"
    project.mkdir()
    (project / "reana.yaml").write_text(
        "version: 0.9.0\nworkflow:\n  type: serial\n  specification:\n    steps:\n"
        "      - environment: docker.io/library/python:3.11\n        commands: [touch ../escaped]\n"
        "outputs:\n  files: [../escaped]\n"
    )
    result = run_cli("reana", "submit", str(project / "reana.yaml"), "--engine", "local", "--workdir", str(tmp_path))
    assert result.code == 2, result.text
    assert "output path '../escaped' contains '..'" in result.err
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.rglob("escaped"))
