"""Our reana.yaml structure checks agree with REANA's official schema, and say where.

A corpus of specs, valid and invalid, goes both to ``cwlbridge.reana.schema`` and to
``reana_analysis_schema.json`` from the pinned reana-commons sdist (the REANA 0.9 schema that
reana-client and the server validate with).  For every document both must give the same
verdict; our findings must also point at a line of the document.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cwlbridge.cli import main
from cwlbridge.reana import schema, spec
from tests.servers.reana_artifacts import ReanaArtifacts


def serial(steps: str) -> str:
    """A serial reana.yaml whose steps are the YAML flow list ``steps``."""
    return f"workflow:\n  type: serial\n  specification:\n    steps: {steps}\n"


STEP = "{name: fit, environment: 'python:3.11', commands: ['python fit.py']}"

# (label, reana.yaml text).  Labels starting with "ok" are valid for REANA 0.9.
CORPUS: list[tuple[str, str]] = [
    ("ok serial", f"version: 0.9.0\nworkflow:\n  type: serial\n  specification:\n    steps: [{STEP}]\n"),
    ("ok serial no steps key", "workflow:\n  type: serial\n  specification: {}\n"),
    ("ok serial empty steps", "workflow:\n  type: serial\n  specification: {steps: []}\n"),
    ("ok cwl file", "workflow: {type: cwl, file: wf.cwl}\ninputs: {parameters: {input: job.yml}}\n"),
    ("ok yadage file", "workflow: {type: yadage, file: wf.yml}\n"),
    ("ok snakemake", "workflow: {type: snakemake, file: Snakefile}\ninputs: {options: {cores: 2}}\n"),
    ("ok cwl any spec", "workflow: {type: cwl, specification: {anything: [1, 2]}}\n"),
    (
        "ok everything",
        textwrap.dedent(
            f"""\
            version: '0.9.3'
            inputs:
              files: [a.txt]
              directories: [code]
              parameters: {{n: 5, name: x}}
              options: {{CACHE: 'off'}}
            workflow:
              type: serial
              resources: {{cvmfs: [atlas.cern.ch, sft.cern.ch], kerberos: false}}
              specification:
                steps:
                  - {STEP}
                  - name: more
                    environment: alpine
                    commands: [ls]
                    compute_backend: htcondorcern
                    kubernetes_job_timeout: 600
                    kubernetes_memory_limit: 8Gi
                    voms_proxy: true
                    rucio: true
                    kerberos: false
                    unpacked_img: true
            outputs: {{files: [out.root], directories: [plots]}}
            tests: {{files: [t.feature]}}
            workspace: {{root_path: /var/reana, retention_days: {{'**/*.root': 0, 'plots/*': 7}}}}
            """
        ),
    ),
    (
        "ok integral float timeout",
        "workflow:\n  type: serial\n  specification:\n    steps:\n"
        "      - {environment: a, commands: [x], kubernetes_job_timeout: 60.0}\n",
    ),
    ("no workflow", "version: 0.9.0\n"),
    ("top level list", "- workflow: {type: cwl, file: x}\n"),
    ("unknown top key", "workflow: {type: cwl, file: wf.cwl}\nworkflows: {}\n"),
    ("unknown type", "workflow: {type: nextflow, file: main.nf}\n"),
    ("no type", "workflow: {file: wf.cwl}\n"),
    ("type not a string", "workflow: {type: 7, file: wf.cwl}\n"),
    ("neither file nor spec", "workflow: {type: cwl}\n"),
    ("file not a string", "workflow: {type: cwl, file: [a]}\n"),
    ("spec not a mapping", "workflow: {type: yadage, specification: [a]}\n"),
    ("workflow not a mapping", "workflow: serial\n"),
    ("unknown workflow key", "workflow: {type: cwl, file: x, engine: cwltool}\n"),
    ("version a number", "version: 0.9\nworkflow: {type: cwl, file: x}\n"),
    ("step without commands", serial("[{environment: alpine}]")),
    ("step without environment", serial("[{commands: [ls]}]")),
    ("step empty commands", serial("[{environment: a, commands: []}]")),
    ("step commands a string", serial("[{environment: a, commands: ls}]")),
    ("step command not a string", serial("[{environment: a, commands: [1]}]")),
    ("step unknown key", serial("[{environment: a, commands: [x], cpu: 2}]")),
    ("step bad backend", serial("[{environment: a, commands: [x], compute_backend: lsf}]")),
    ("step yes is not a bool", serial("[{environment: a, commands: [x], voms_proxy: yes}]")),
    ("step timeout a string", serial("[{environment: a, commands: [x], kubernetes_job_timeout: '60'}]")),
    ("step timeout true", serial("[{environment: a, commands: [x], kubernetes_job_timeout: true}]")),
    ("step not a mapping", serial("[ls]")),
    ("steps not a list", "workflow:\n  type: serial\n  specification:\n    steps: {a: 1}\n"),
    ("serial spec extra key", "workflow:\n  type: serial\n  specification:\n    steps: []\n    env: x\n"),
    ("resources voms_proxy (0.95)", "workflow: {type: cwl, file: x, resources: {voms_proxy: true}}\n"),
    ("resources unknown", "workflow: {type: cwl, file: x, resources: {gpu: 1}}\n"),
    ("resources kerberos string", "workflow: {type: cwl, file: x, resources: {kerberos: 'true'}}\n"),
    ("cvmfs bad name", "workflow: {type: cwl, file: x, resources: {cvmfs: ['/cvmfs/atlas.cern.ch']}}\n"),
    ("cvmfs twice", "workflow: {type: cwl, file: x, resources: {cvmfs: [atlas.cern.ch, atlas.cern.ch]}}\n"),
    ("cvmfs not a list", "workflow: {type: cwl, file: x, resources: {cvmfs: atlas.cern.ch}}\n"),
    ("inputs unknown key", "workflow: {type: cwl, file: x}\ninputs: {file: [a]}\n"),
    ("inputs files a string", "workflow: {type: cwl, file: x}\ninputs: {files: a.txt}\n"),
    ("inputs parameters a list", "workflow: {type: cwl, file: x}\ninputs: {parameters: [a]}\n"),
    ("inputs not a mapping", "workflow: {type: cwl, file: x}\ninputs: [a]\n"),
    ("outputs unknown key", "workflow: {type: cwl, file: x}\noutputs: {file: [a]}\n"),
    ("outputs dirs not strings", "workflow: {type: cwl, file: x}\noutputs: {directories: [1]}\n"),
    ("tests unknown key", "workflow: {type: cwl, file: x}\ntests: {dirs: [a]}\n"),
    ("workspace unknown key", "workflow: {type: cwl, file: x}\nworkspace: {path: /x}\n"),
    ("retention empty", "workflow: {type: cwl, file: x}\nworkspace: {retention_days: {}}\n"),
    ("retention negative", "workflow: {type: cwl, file: x}\nworkspace: {retention_days: {'*': -1}}\n"),
    ("retention a string", "workflow: {type: cwl, file: x}\nworkspace: {retention_days: {'*': 'week'}}\n"),
]


def _official_verdict(validator: Any, doc: Any) -> list[str]:
    return [error.message for error in validator.iter_errors(doc)]


@pytest.mark.parametrize(("label", "text"), CORPUS, ids=[label for label, _ in CORPUS])
def test_our_checks_agree_with_the_official_schema(reana_artifacts: ReanaArtifacts, label: str, text: str) -> None:
    validator = jsonschema.Draft7Validator(reana_artifacts.analysis_schema)
    doc = spec.loads_any(text, "reana.yaml")
    official = _official_verdict(validator, doc)
    ours = schema.schema_problems(doc)
    assert label.startswith("ok") == (not official), f"corpus label disagrees with REANA: {official}"
    assert bool(ours) == bool(official), f"ours: {[m for _, _, m in ours]}; REANA's: {official}"
    lines = text.count("\n")
    for container, key, message in ours:
        pos = schema.position(container, key, "reana.yaml")
        assert pos.line is not None and 1 <= pos.line <= max(lines, 1), (message, pos)


def test_messages_name_the_line_of_the_offending_key() -> None:
    text = (
        "version: 0.9.0\nworkflow:\n  type: serial\n  specification:\n    steps:\n      - name: a\n"
        "        environment: alpine\n        commands: [ls]\n      - name: b\n        commands: [ls]\n"
        "        voms_proxy: yes\n"
    )
    doc = spec.loads_any(text, "r.yaml")
    found = {m: schema.position(c, k, "r.yaml").line for c, k, m in schema.schema_problems(doc)}
    assert found == {
        "serial step 2 has no 'environment' (REANA requires it)": 9,
        "serial step 2.voms_proxy must be true or false (got the string 'yes': this YAML reader follows"
        " YAML 1.2; write true or false)": 11,
    }


def test_a_serial_workflow_file_is_checked_as_reana_client_loads_it(
    reana_artifacts: ReanaArtifacts, tmp_path: Path
) -> None:
    """reana-client loads a serial workflow.file into the specification before validating."""
    (tmp_path / "steps.yaml").write_text("steps:\n  - name: a\n    commands: [ls]\n")
    (tmp_path / "reana.yaml").write_text("workflow:\n  type: serial\n  file: steps.yaml\n")
    doc = spec.load_spec(tmp_path / "reana.yaml")
    findings = spec.check_spec(doc, tmp_path / "reana.yaml", tmp_path)
    assert [str(f) for f in findings] == [
        f"{tmp_path / 'steps.yaml'}:2:5: error: serial step 1 has no 'environment' (REANA requires it)"
    ]
    loaded = spec.to_plain(doc)
    loaded["workflow"]["specification"] = spec.to_plain(spec.load_spec(tmp_path / "steps.yaml"))
    assert _official_verdict(jsonschema.Draft7Validator(reana_artifacts.analysis_schema), loaded)


def _project(tmp_path: Path, template: str) -> Path:
    (tmp_path / "reana.yaml").write_text(template)
    return tmp_path / "reana.yaml"


def test_submit_refuses_a_schema_error_with_its_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _project(tmp_path, "workflow:\n  type: serial\n  specification:\n    steps:\n      - commands: [ls]\n")
    code = main(["reana", "submit", str(path), "--engine", "local", "--workdir", str(tmp_path)])
    err = capsys.readouterr()
    assert code == 2
    assert f"{path}:5:9: error: serial step 1 has no 'environment'" in err.out + err.err
    assert not (tmp_path / ".cwlbridge" / "reana").exists() or not any((tmp_path / ".cwlbridge" / "reana").iterdir())


def test_a_leftover_var_token_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _project(
        tmp_path,
        "workflow:\n  type: serial\n  specification:\n    steps:\n"
        "      - environment: alpine\n        commands: ['echo VAR_INPUT $VAR_HOME ${VAR_X}']\n",
    )
    code = main(["reana", "submit", str(path), "--engine", "local", "--workdir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 2
    text = out.out + out.err
    assert f"{path}:6:" in text and "placeholder VAR_INPUT is still in this value" in text
    assert "VAR_HOME" not in text and "VAR_X" not in text


@pytest.mark.parametrize("kind", ["yadage", "snakemake"])
def test_yadage_and_snakemake_are_not_run_locally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    (tmp_path / "wf").write_text("stages: []\n")
    path = _project(tmp_path, f"workflow:\n  file: wf\n  type: {kind}\n")
    code = main(["reana", "submit", str(path), "--engine", "local", "--workdir", str(tmp_path)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2
    assert f"{path}:3:3: error: {kind} workflows are not supported locally" in text
    assert "use a REANA server" in text
    assert text.count("not supported locally") == 1


def test_the_local_engine_says_which_images_it_ignores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _project(
        tmp_path,
        "workflow:\n  type: serial\n  specification:\n    steps:\n"
        "      - {name: a, environment: 'docker.io/library/python:3.11', commands: ['true']}\n"
        "      - {name: b, environment: 'docker.io/library/python:3.11', commands: ['true']}\n"
        "      - {name: c, environment: 'alpine:3.19', commands: ['true']}\n",
    )
    code = main(["reana", "submit", str(path), "--engine", "local", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    (line,) = [line for line in out.splitlines() if "ignoring the image" in line]
    assert line.endswith("steps run on this machine; ignoring the image(s) docker.io/library/python:3.11, alpine:3.19")
