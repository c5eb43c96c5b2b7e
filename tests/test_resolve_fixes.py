"""The PanDA defects cwlbridge fixes rather than copies (README, "Deliberate fixes")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_run import run_cli

OUTDS = "user.jdoe.fix"


def plan(
    tmp_path: Path, chain: str, inputs: str = "{}", files: dict[str, str] | None = None
) -> tuple[int, dict, str]:
    (tmp_path / "chain.cwl").write_text(chain)
    (tmp_path / "inputs.yaml").write_text(inputs)
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    chain_path, inputs_path = str(tmp_path / "chain.cwl"), str(tmp_path / "inputs.yaml")
    result = run_cli("plan", chain_path, inputs_path, "--outds", OUTDS, "--format", "json")
    return result.code, (json.loads(result.out) if result.code == 0 else {}), result.err


def deviations(tmp_path: Path) -> set[int]:
    """The README fix numbers `cwlbridge submit` would warn about for the chain last planned here."""
    from cwlbridge.model.rules import analyse

    analysis = analyse(str(tmp_path / "chain.cwl"), str(tmp_path / "inputs.yaml"), OUTDS)
    assert analysis.plan is not None
    return {d.fix for d in analysis.plan.deviations}


def by_step(doc: dict) -> dict[str, dict]:
    return {t["path"]: t for t in doc["tasks"]}


PRODUCERS = """\
cwlVersion: v1.0
class: Workflow
requirements: {MultipleInputFeatureRequirement: {}}
inputs:
  raw: string
outputs: {}
steps:
  a:
    run: prun
    in:
      opt_exec: {default: "a.sh"}
      opt_args: {default: "--outputs a.root,extra.txt --nJobs 1"}
    out: [outDS]
  b:
    run: prun
    in:
      opt_exec: {default: "b.sh"}
      opt_args: {default: "--outputs b.root --nJobs 1"}
    out: [outDS]
"""


def test_secds_star_expands_to_all_secondaries(tmp_path: Path) -> None:
    chain = PRODUCERS + """\
  c:
    run: prun
    in:
      opt_inDS: raw
      opt_secondaryDSs: [a/outDS, b/outDS]
      opt_exec: {default: "c.sh %{SECDS*}"}
      opt_args: {default: "--outputs c.root"}
    out: [outDS]
"""
    code, doc, err = plan(tmp_path, chain, "raw: data:data.x")
    assert code == 0, err
    assert by_step(doc)["c"]["exec"] == f"c.sh {OUTDS}_000_a_a.root/,{OUTDS}_001_b_b.root/"
    assert 1 in deviations(tmp_path)  # submit warns about it


def test_top_level_input_is_a_placeholder(tmp_path: Path) -> None:
    chain = PRODUCERS + """\
  c:
    run: prun
    in:
      opt_inDS: a/outDS
      opt_exec: {default: "c.sh --tag %{raw} %IN"}
      opt_args: {default: "--outputs c.root"}
    out: [outDS]
"""
    code, doc, err = plan(tmp_path, chain, "raw: v2")
    assert code == 0, err
    assert by_step(doc)["c"]["exec"] == "c.sh --tag v2 %IN"
    assert 2 in deviations(tmp_path)  # submit warns about it


def test_scalar_in_ds_type_applies_to_every_dataset(tmp_path: Path) -> None:
    chain = PRODUCERS + """\
  c:
    run: prun
    in:
      opt_inDS: [a/outDS, b/outDS]
      opt_inDsType: {default: extra.txt}
      opt_exec: {default: "c.sh %{DS1} %{DS2}"}
      opt_args: {default: "--outputs c.root"}
    out: [outDS]
"""
    code, doc, err = plan(tmp_path, chain, "raw: x")
    assert code == 0, err
    # PanDA pairs one *character* of the type with each dataset (…_e/, …_x/).
    assert by_step(doc)["c"]["in_ds"] == [f"{OUTDS}_000_a_extra.txt/", f"{OUTDS}_001_b_extra.txt/"]
    assert 5 in deviations(tmp_path)  # submit warns about it


def test_unequal_scatter_lengths_are_an_error(tmp_path: Path) -> None:
    chain = """\
cwlVersion: v1.0
class: Workflow
requirements: {ScatterFeatureRequirement: {}}
inputs:
  xs: string[]
  ys: string[]
outputs: {}
steps:
  s:
    run: prun
    scatter: [opt_inDS, opt_exec]
    scatterMethod: dotproduct
    in:
      opt_inDS: xs
      opt_exec: ys
      opt_args: {default: "--outputs o.root"}
    out: [outDS]
"""
    code, _, err = plan(tmp_path, chain, "xs: [a, b, c]\nys: [x, y]\n")
    assert code == 1
    assert f"{tmp_path / 'chain.cwl'}:11:14: error: step 's': scatter inputs have unequal lengths" in err
    assert "opt_inDS has 3, opt_exec has 2" in err


def test_flat_crossproduct_runs_every_combination(tmp_path: Path) -> None:
    chain = """\
cwlVersion: v1.0
class: Workflow
requirements: {ScatterFeatureRequirement: {}}
inputs:
  xs: string[]
  ys: string[]
outputs: {}
steps:
  s:
    run: prun
    scatter: [opt_inDS, opt_exec]
    scatterMethod: flat_crossproduct
    in:
      opt_inDS: xs
      opt_exec: ys
      opt_args: {default: "--outputs o.root"}
    out: [outDS]
"""
    code, doc, err = plan(tmp_path, chain, "xs: [a, b, c]\nys: [x, y]\n")
    assert code == 0, err
    got = [(t["path"], t["in_ds"][0], t["exec"]) for t in doc["tasks"]]
    assert got == [
        ("s[0]", "a", "x"), ("s[1]", "a", "y"), ("s[2]", "b", "x"),
        ("s[3]", "b", "y"), ("s[4]", "c", "x"), ("s[5]", "c", "y"),
    ]  # fmt: skip
    assert [t["id"] for t in doc["tasks"]] == list(range(6))
    assert 4 in deviations(tmp_path)  # submit warns about it


def test_downstream_of_scattered_leaf_gets_every_element(tmp_path: Path) -> None:
    chain = """\
cwlVersion: v1.0
class: Workflow
requirements: {ScatterFeatureRequirement: {}}
inputs:
  xs: string[]
outputs: {}
steps:
  s:
    run: prun
    scatter: opt_inDS
    in:
      opt_inDS: xs
      opt_exec: {default: "s.sh %IN"}
      opt_args: {default: "--outputs o.root"}
    out: [outDS]
  m:
    run: prun
    in:
      opt_inDS: s/outDS
      opt_exec: {default: "m.sh %IN"}
      opt_args: {default: "--outputs m.root"}
    out: [outDS]
"""
    code, doc, err = plan(tmp_path, chain, "xs: [a, b]\n")
    assert code == 0, err
    merge = by_step(doc)["m"]
    assert merge["in_ds"] == [f"{OUTDS}_000_s_o.root/", f"{OUTDS}_001_s_o.root/"]
    assert merge["parents"] == [
        {"task": f"{OUTDS}_000_s", "link": "processed"},
        {"task": f"{OUTDS}_001_s", "link": "processed"},
    ]
    assert 4 in deviations(tmp_path)  # submit warns about it


def test_condition_waits_for_unnamed_parents_and_says_so(tmp_path: Path) -> None:
    chain = PRODUCERS.replace("v1.0", "v1.2") + """\
  c:
    run: prun
    in:
      opt_inDS: a/outDS
      opt_secondaryDSs: [b/outDS]
      opt_exec: {default: "c.sh %IN %IN2"}
      opt_args: {default: "--outputs c.root --secondaryDSs IN2:1:%{SECDS1}"}
    out: [outDS]
    when: $(self.opt_inDS)
"""
    code, doc, err = plan(tmp_path, chain, "raw: x")
    assert code == 0, err
    task = by_step(doc)["c"]
    assert task["parents"] == [
        {"task": f"{OUTDS}_000_a", "link": "processed"},
        {"task": f"{OUTDS}_001_b", "link": "processed"},
    ]
    assert task["condition"] == f"processed({OUTDS}_000_a) && processed({OUTDS}_001_b)"
    assert "does not name parent(s) b" in err
    assert doc["warnings"] and "does not name parent(s) b" in doc["warnings"][0]
    assert 10 in deviations(tmp_path)  # submit warns about it


def test_failed_branch_suppresses_its_input(tmp_path: Path) -> None:
    chain = PRODUCERS.replace("v1.0", "v1.2") + """\
  c:
    run: prun
    in:
      opt_inDS: a/outDS
      opt_exec: {default: "notify.sh"}
      opt_args: {default: "--outputs log.txt --nJobs 1"}
    out: [outDS]
    when: $(!self.opt_inDS)
"""
    code, doc, err = plan(tmp_path, chain, "raw: x")
    assert code == 0, err
    task = by_step(doc)["c"]
    assert task["in_ds"] == []
    assert task["parents"] == [{"task": f"{OUTDS}_000_a", "link": "failed"}]
    assert task["condition"] == f"failed({OUTDS}_000_a)"


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("$(self.opt_inDS == 1)", "unknown token '=='"),
        ("$(self.opt_inDS &&)", "ends too early"),
        ("$(self.opt_inDS self.opt_inDS)", "join terms with && or ||"),
        ("$(!(self.opt_inDS && self.opt_inDS))", "PanDA cannot negate a parenthesised group"),
        ("$(self.nothing)", "unresolved parameter nothing in the condition string"),
        ("$(self.opt_inDS[3])", "out of range"),
        ("$(self.opt_exec)", "is not fed by another step"),
    ],
)
def test_bad_conditions(tmp_path: Path, when: str, message: str) -> None:
    chain = PRODUCERS.replace("v1.0", "v1.2") + f"""\
  c:
    run: prun
    in:
      opt_inDS: a/outDS
      opt_exec: {{default: "c.sh"}}
      opt_args: {{default: "--outputs c.root"}}
    out: [outDS]
    when: {when}
"""
    code, _, err = plan(tmp_path, chain, "raw: x")
    assert code == 1
    assert f"{tmp_path / 'chain.cwl'}:27:11: error: step 'c': when: " in err
    assert message in err


def test_reserved_loop_parameter(tmp_path: Path) -> None:
    body = """\
cwlVersion: v1.0
class: Workflow
inputs:
  seed: string
  param_i: {type: int, default: 1}
outputs:
  outDS: {type: string, outputSource: j/outDS}
steps:
  j:
    run: junction
    in:
      opt_inDS: seed
      opt_exec: {default: "decide.sh %{i}"}
    out: []
"""
    chain = PRODUCERS.replace("outputs: {}", "outputs: {}").replace(
        "requirements: {MultipleInputFeatureRequirement: {}}",
        "requirements: {SubworkflowFeatureRequirement: {}}",
    ) + """\
  loop:
    run: body.cwl
    in:
      seed: a/outDS
    out: [outDS]
    hints: [loop]
"""
    code, _, err = plan(tmp_path, chain, "raw: x", {"body.cwl": body})
    assert code == 1
    assert f"{tmp_path / 'body.cwl'}:5:3: error: step 'loop': parameter i cannot be used" in err


def test_suffix_outputs_and_wildcards_name_datasets_like_prun(tmp_path: Path) -> None:
    outputs = "--outputs hist:hist.root,log*.txt --nJobs 1"
    chain = PRODUCERS.replace("--outputs a.root,extra.txt --nJobs 1", outputs) + """\
  c:
    run: prun
    in:
      opt_inDS: a/outDS
      opt_exec: {default: "c.sh %IN"}
      opt_args: {default: "--outputs c.root"}
    out: [outDS]
"""
    code, doc, err = plan(tmp_path, chain, "raw: x")
    assert code == 0, err
    steps = by_step(doc)
    assert steps["a"]["output_datasets"] == [f"{OUTDS}_000_a_hist/", f"{OUTDS}_000_a_logXYZ.txt.tgz/"]
    # the first output type is the suffix, so the child reads the dataset that exists
    assert steps["c"]["in_ds"] == [f"{OUTDS}_000_a_hist/"]


def test_junction_always_outputs_results_json(tmp_path: Path) -> None:
    chain = PRODUCERS + """\
  j:
    run: junction
    in:
      opt_inDS: a/outDS
      opt_exec: {default: "decide.sh %{DS1}"}
      opt_args: {default: "--outputs summary.txt"}
    out: [outDS]
"""
    code, doc, err = plan(tmp_path, chain, "raw: x")
    assert code == 0, err
    junction = by_step(doc)["j"]
    assert junction["args"] == "--outputs=summary.txt,results.json"
    assert junction["output_datasets"] == [f"{OUTDS}_002_j_summary.txt/", f"{OUTDS}_002_j_results.json/"]
    assert junction["parents"] == [{"task": f"{OUTDS}_000_a", "link": "processed"}]
    assert 8 in deviations(tmp_path)  # submit warns about it


