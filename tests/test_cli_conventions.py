"""Conventions every command shares: -v/--debug, runs --json, logs of the latest run, plan without inputs, the nick."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from cwlbridge.cli import build_parser
from cwlbridge.engine.run import default_outds
from tests.cli_run import run_cli
from tests.test_run_commands import Scenario, build_run

Parsers = list[tuple[str, argparse.ArgumentParser]]


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Parsers:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(" ".join(path), parser)]
    found: Parsers = []
    for action in subs:
        for name, sub in action.choices.items():
            found += _leaf_parsers(sub, (*path, name))
    return found


def test_every_command_takes_verbose_and_debug() -> None:
    leaves = _leaf_parsers(build_parser())
    assert {"validate", "plan", "run", "resume", "logs", "data add", "reana job"} <= {name for name, _ in leaves}
    missing = [
        f"{name} {flag}" for name, parser in leaves for flag in ("-v", "--verbose", "--debug")
        if flag not in parser._option_string_actions
    ]
    assert missing == []


def test_debug_before_or_after_the_command_turns_on_tracebacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for argv in (["--debug", "runs", "--base", str(tmp_path)], ["runs", "--base", str(tmp_path), "--debug"]):
        monkeypatch.delenv("CWLBRIDGE_DEBUG", raising=False)
        result = run_cli(*argv)
        assert result.code == 0, result.text
        assert os.environ.get("CWLBRIDGE_DEBUG") == "1"
    monkeypatch.delenv("CWLBRIDGE_DEBUG", raising=False)
    assert run_cli("runs", "-vv", "--base", str(tmp_path)).code == 0
    assert "CWLBRIDGE_DEBUG" not in os.environ


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    made = build_run(tmp_path)
    made.state.close()
    return made


def test_runs_json_lists_each_run(scenario: Scenario) -> None:
    broken = scenario.base / ".cwlbridge" / "runs" / "20240502-000000-dead"
    broken.mkdir(parents=True)
    (broken / "state.sqlite").write_bytes(b"garbage" * 200)
    result = run_cli("runs", "--json", "--base", str(scenario.base))
    assert result.code == 0, result.text
    runs = json.loads(result.out)
    by_id = {r["id"]: r for r in runs}
    good = by_id[scenario.run_id]
    assert good["outds"] == "user.jdoe.example"
    assert good["chain"] == "workflows/scatter-merge/chain.cwl"
    assert good["tasks"]["total"] > 0
    assert by_id["20240502-000000-dead"]["status"] == "unreadable"
    assert "not a readable run state" in by_id["20240502-000000-dead"]["error"]


def test_runs_json_with_no_runs_is_an_empty_list(tmp_path: Path) -> None:
    result = run_cli("runs", "--json", "--base", str(tmp_path))
    assert (result.code, json.loads(result.out)) == (0, [])


def test_logs_and_report_default_to_the_latest_run(scenario: Scenario) -> None:
    from tests.test_run_commands import write_log

    write_log(scenario.run_dir, "004_skim", 1, "000000.1.stdout", "skim job zero\n")
    explicit = run_cli("logs", scenario.run_id, "004_skim", "--base", str(scenario.base))
    latest = run_cli("logs", "004_skim", "--base", str(scenario.base))
    assert explicit.code == latest.code == 0, latest.text
    assert "skim job zero" in latest.out
    assert latest.out == explicit.out
    report = run_cli("report", "--json", "--base", str(scenario.base))
    assert report.code == 0, report.text
    assert json.loads(report.out)["run"]["id"] == scenario.run_id


def _chain(tmp_path: Path, default: bool) -> Path:
    value = "\n    default: mc23.ntuple" if default else ""
    chain = tmp_path / "chain.cwl"
    chain.write_text(
        f"""cwlVersion: v1.0
class: Workflow
requirements:
  MultipleInputFeatureRequirement: {{}}
inputs:
  signal:
    type: string{value}
outputs:
  out:
    type: string
    outputSource: make/outDS
steps:
  make:
    run: prun
    in:
      opt_inDS: signal
      opt_exec:
        default: "echo %IN > out.txt"
      opt_args:
        default: "--outputs out.txt --nFilesPerJob 1"
    out: [outDS]
"""
    )
    return chain


def test_plan_without_an_inputs_file(tmp_path: Path) -> None:
    chain = _chain(tmp_path, default=True)
    result = run_cli("plan", str(chain), "--outds", "user.jdoe.x", "--format", "json")
    assert result.code == 0, result.text
    task = json.loads(result.out)["tasks"][0]
    assert task["name"] == "user.jdoe.x_000_make"
    assert task["in_ds"] == ["mc23.ntuple"]


def test_plan_without_inputs_names_the_input_it_needs(tmp_path: Path) -> None:
    chain = _chain(tmp_path, default=False)
    result = run_cli("plan", str(chain), "--outds", "user.jdoe.x")
    assert result.code == 1
    assert f"{chain}:6:3: error: required input 'signal' has no value (no inputs file given)" in result.err


@pytest.mark.parametrize(
    ("environ", "nick"),
    [
        ({"PANDA_NICKNAME": "jdoe", "RUCIO_ACCOUNT": "atlasprod", "USER": "john"}, "jdoe"),
        ({"RUCIO_ACCOUNT": "jdoe2", "USER": "john"}, "jdoe2"),
        ({"USER": "john"}, "john"),
    ],
)
def test_default_nick(environ: dict[str, str], nick: str) -> None:
    assert default_outds(Path("workflows/recast/chain.cwl"), environ) == f"user.{nick}.recast"
