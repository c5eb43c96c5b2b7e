"""Task and dataset names: refused where PanDA or Rucio would refuse them, pchain's spellings."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

from cwlbridge.model import names
from tests.cli_run import run_cli

CHAIN = """\
cwlVersion: v1.0
class: Workflow
requirements: {ScatterFeatureRequirement: {}}
inputs: {raw: string, execs: 'string[]'}
outputs: {}
steps:
  STEP:
    run: prun
    scatter: opt_exec
    in:
      opt_exec: execs
      opt_inDS: raw
      opt_args: {default: "--outputs OUT"}
    out: [outDS]
"""


def _chain(tmp_path: Path, step: str = "fit", outputs: str = "out.txt") -> tuple[Path, Path]:
    chain = tmp_path / "chain.cwl"
    chain.write_text(CHAIN.replace("STEP", step).replace("OUT", outputs), encoding="utf-8")
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text("raw: user.me.data\nexecs: [echo 1, echo 2, echo 3]\n")
    return chain, inputs


def test_the_rules_are_rucios_default_schema() -> None:
    """Our name rules are those of the installed rucio-clients' generic schema (minus '/')."""
    spec = importlib.util.find_spec("rucio")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).parent / "common" / "schema" / "generic.py"
    constants: dict[str, object] = {}
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "NAME_LENGTH":
                constants[name] = ast.literal_eval(node.value)
            elif name == "NAME" and isinstance(node.value, ast.Dict):
                for key, value in zip(node.value.keys, node.value.values):
                    if isinstance(key, ast.Constant) and key.value == "pattern":
                        constants["pattern"] = ast.literal_eval(value)
    assert constants["NAME_LENGTH"] == names.DID_NAME_LENGTH
    assert constants["pattern"] == "^[/A-Za-z0-9][/A-Za-z0-9\\.\\-_]*$"
    assert names.DID_NAME.pattern == str(constants["pattern"]).replace("/", "").replace("\\.", ".")[1:-1]


def test_a_trailing_slash_is_taken_off_and_outDS_is_pchains_spelling(tmp_path: Path) -> None:
    chain, inputs = _chain(tmp_path)
    result = run_cli(
        "plan", "--cwl", str(chain), "--yaml", str(inputs), "--outDS", "user.jdoe.ana/", "--format", "json"
    )
    assert result.code == 0, result.err
    tasks = json.loads(result.out)["tasks"]
    assert [t["name"] for t in tasks] == [f"user.jdoe.ana_00{i}_fit" for i in range(3)]
    assert tasks[0]["output_datasets"] == ["user.jdoe.ana_000_fit_out.txt/"]


def test_a_bad_outds_is_a_usage_error_naming_the_character(tmp_path: Path) -> None:
    chain, inputs = _chain(tmp_path)
    for command in ("validate", "plan", "run"):
        result = run_cli(command, str(chain), str(inputs), "--outds", "user.jdoé.ana")
        assert result.code == 2, (command, result.err)
        assert "the non-ASCII character 'é' (U+00E9)" in result.err
    result = run_cli("validate", str(chain), "--outDS", "user.jdoe.a:b/")
    assert result.code == 2 and "user.jdoe.a:b has the character ':'" in result.err


def test_a_group_outds_needs_official(tmp_path: Path) -> None:
    chain, inputs = _chain(tmp_path)
    refused = run_cli("plan", str(chain), str(inputs), "--outds", "group.phys-higgs.ana")
    assert refused.code == 2 and "add --official" in refused.err
    allowed = run_cli(
        "plan", str(chain), str(inputs), "--outds", "group.phys-higgs.ana", "--official", "--format", "json"
    )
    assert allowed.code == 0, allowed.err
    assert json.loads(allowed.out)["tasks"][0]["name"] == "group.phys-higgs.ana_000_fit"


def test_a_step_name_rucio_refuses_is_an_error_at_the_step_once(tmp_path: Path) -> None:
    chain, inputs = _chain(tmp_path, step="sélection")
    result = run_cli("validate", str(chain), str(inputs), "--outds", "user.jdoe.ana")
    assert result.code == 1
    errors = [line for line in result.err.splitlines() if ": error: " in line]
    # Three scatter elements, one message.
    assert errors == [
        f"{chain}:7:3: error: step 'sélection': the step name has the non-ASCII character 'é' (U+00E9),"
        " which task and dataset names cannot have (Rucio names take letters, digits and . - _ only)"
    ]


def test_an_output_type_rucio_refuses_is_an_error_at_opt_args(tmp_path: Path) -> None:
    chain, inputs = _chain(tmp_path, outputs="h#:out.txt")
    result = run_cli("validate", str(chain), str(inputs))
    assert result.code == 1
    assert (
        f"{chain}:13:27: error: step 'fit': the output type 'h#' (from --outputs) has the character '#'" in result.err
    )


def test_a_container_name_over_rucios_limit_is_an_error_at_the_step(tmp_path: Path) -> None:
    step = "s" * 220
    chain, inputs = _chain(tmp_path, step=step)
    result = run_cli("validate", str(chain), str(inputs), "--outds", "user.jdoe.analysis")
    assert result.code == 1
    found = re.findall(
        r"error: step '\w+': the container name (\S+) has (\d+) characters; Rucio allows at most 250", result.err
    )
    container = f"user.jdoe.analysis_000_{step}_out.txt"
    assert found == [(container, str(len(container)))]
    assert result.err.startswith(f"{chain}:7:3:")
    # A shorter step name fits.
    chain, inputs = _chain(tmp_path, step="s" * 200)
    assert run_cli("validate", str(chain), str(inputs), "--outds", "user.jdoe.analysis").code == 0


def test_pchain_spellings_work_on_validate_plan_and_run(tmp_path: Path) -> None:
    chain, inputs = _chain(tmp_path)
    assert run_cli("validate", "--cwl", str(chain), "--yaml", str(inputs)).code == 0
    assert run_cli("validate", "--yaml", str(inputs), str(chain)).code == 0
    assert run_cli("plan", "--cwl", str(chain), str(inputs), "--outDS", "user.jdoe.x").code == 0
    # run: parsed the same way; a missing inputs file or a second one is a usage error.
    missing = run_cli("run", "--cwl", str(chain), "--outDS", "user.jdoe.x")
    assert missing.code == 2 and "give the inputs file: INPUTS.yaml, or --yaml INPUTS.yaml" in missing.err
    two = run_cli("run", "--cwl", str(chain), str(inputs), "--yaml", str(inputs))
    assert two.code == 2 and "one inputs file only" in two.err
    assert run_cli("validate").code == 2
