"""Pre-flight of `cwlbridge run`: input datasets no step makes are looked up before anything starts."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from tests.cli_run import run_cli

CHAIN = """\
cwlVersion: v1.0
class: Workflow
requirements:
  MultipleInputFeatureRequirement: {}
inputs:
  signal: string
  background: string
outputs:
  out: {type: string, outputSource: combine/outDS}
steps:
  skim:
    run: prun
    in:
      opt_inDS: signal
      opt_exec: {default: "cat %IN > skim.txt"}
      opt_args: {default: "--outputs skim.txt"}
    out: [outDS]
  combine:
    run: prun
    in:
      opt_inDS: skim/outDS
      opt_secondaryDSs: [background]
      opt_exec: {default: "cat %IN %IN2 > all.txt"}
      opt_args: {default: "--outputs all.txt --secondaryDSs IN2:1:%{SECDS1}"}
    out: [outDS]
"""


def _chain(tmp_path: Path, signal: str, background: str) -> None:
    (tmp_path / "chain.cwl").write_text(CHAIN)
    (tmp_path / "inputs.yaml").write_text(f"signal: {signal}\nbackground: {background}\n")
    (tmp_path / "f.txt").write_text("one\n")


def _check_refusal(result: Any, missing: str, tmp_path: Path) -> None:
    assert result.code == 2, result.text
    assert f"{missing} (read by 'combine')" in result.err
    assert "input dataset(s) of the chain are not in the" in result.err
    assert f"cwlbridge data add {missing} FILE" in result.err
    assert not (tmp_path / ".cwlbridge" / "runs").exists(), "nothing may start"


def test_a_missing_input_is_named_with_its_step_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CWLBRIDGE_STORE", raising=False)
    _chain(tmp_path, "user.jdoe.sig", "user.jdoe.bkg")
    assert run_cli("data", "add", "user.jdoe.sig", "f.txt").code == 0
    result = run_cli("run", "chain.cwl", "inputs.yaml", "--outds", "user.jdoe.pf", "-q")
    _check_refusal(result, "user.jdoe.bkg", tmp_path)
    assert run_cli("data", "add", "user.jdoe.bkg", "f.txt").code == 0
    ran = run_cli("run", "chain.cwl", "inputs.yaml", "--outds", "user.jdoe.pf", "-q")
    assert ran.code == 0, ran.text


def test_a_missing_input_in_rucio_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rucio_env: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    tag = f"{os.getpid()}{random.randrange(10**6)}"
    signal, background = f"user.jdoe.sig{tag}", f"user.jdoe.bkg{tag}"
    _chain(tmp_path, signal, background)
    store = ["--store", f"rucio:{rucio_env.rse}"]
    assert run_cli("data", "add", signal, "f.txt", *store).code == 0
    result = run_cli("run", "chain.cwl", "inputs.yaml", "--outds", f"user.jdoe.pf{tag}", "-q", *store)
    _check_refusal(result, background, tmp_path)


def test_datasets_made_by_the_chain_are_not_looked_up(tmp_path: Path) -> None:
    from cwlbridge.engine.run import make_plan, outside_inputs

    _chain(tmp_path, "user.jdoe.sig", "user.jdoe.bkg")
    plan = make_plan(tmp_path / "chain.cwl", tmp_path / "inputs.yaml", "user.jdoe.pf")
    assert outside_inputs(plan) == {"user.jdoe.sig": ["skim"], "user.jdoe.bkg": ["combine"]}
