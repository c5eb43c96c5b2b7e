"""Passed CWL schema checks are remembered between commands, and only exactly those."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cwlbridge.cache import LoadedChains
from cwlbridge.model import load as load_mod
from cwlbridge.model.steps import Findings

ROOT = Path(__file__).resolve().parent.parent

# Validates a chain in a fresh interpreter; prints the number of errors and whether the CWL
# schema (cwl-utils) had to be loaded for it.
_VALIDATE = """
import json, sys
from cwlbridge.cache import SchemaVerdicts
from cwlbridge.model.rules import analyse
analysis = analyse(sys.argv[1], sys.argv[2], verdicts=SchemaVerdicts.default())
print(json.dumps({
    "errors": [e.text() for e in analysis.findings.errors],
    "schema_loaded": "cwl_utils.parser" in sys.modules,
}))
"""


def _validate(chain: Path, cache: Path) -> dict[str, object]:
    env = dict(os.environ, CWLBRIDGE_CACHE_DIR=str(cache))
    done = subprocess.run(
        [sys.executable, "-c", _VALIDATE, str(chain), str(chain.parent / "inputs.yaml")],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _loop_example(tmp_path: Path) -> Path:
    target = tmp_path / "loop"
    shutil.copytree(ROOT / "workflows" / "loop", target)
    return target / "chain.cwl"


def test_an_unchanged_chain_skips_the_schema_and_a_changed_one_does_not(tmp_path: Path) -> None:
    chain, cache = _loop_example(tmp_path), tmp_path / "cache"
    assert _validate(chain, cache) == {"errors": [], "schema_loaded": True}
    assert len((cache / "schema-verdicts.txt").read_text().split()) == 2  # the chain and its loop body
    assert _validate(chain, cache) == {"errors": [], "schema_loaded": False}
    # Any change of a value counts, not only of the structure: an unknown cwlVersion.
    original = chain.read_text()
    chain.write_text(original.replace("cwlVersion: v1.0", "cwlVersion: v9.9", 1))
    changed = _validate(chain, cache)
    assert changed["schema_loaded"] is True and changed["errors"], changed
    chain.write_text(original)
    assert _validate(chain, cache) == {"errors": [], "schema_loaded": False}


def test_a_broken_sub_workflow_is_found_after_the_chain_passed(tmp_path: Path) -> None:
    chain, cache = _loop_example(tmp_path), tmp_path / "cache"
    assert _validate(chain, cache)["errors"] == []
    body = chain.parent / "refine_body.cwl"
    body.write_text(body.read_text().replace("steps:", "stepz:", 1))
    broken = _validate(chain, cache)
    assert broken["schema_loaded"] is True
    assert any("refine_body.cwl" in str(e) for e in broken["errors"]), broken  # type: ignore[attr-defined]


def test_failures_are_never_remembered(tmp_path: Path) -> None:
    chain, cache = _loop_example(tmp_path), tmp_path / "cache"
    chain.write_text(chain.read_text().replace("cwlVersion: v1.0", "cwlVersion: v9.9", 1))
    first, second = _validate(chain, cache), _validate(chain, cache)
    assert first == second and first["errors"] and second["schema_loaded"] is True
    remembered = (cache / "schema-verdicts.txt").read_text().split()
    assert len(remembered) == 1  # the loop body, which is fine; not the chain


def test_a_damaged_or_unwritable_cache_only_costs_time(tmp_path: Path) -> None:
    chain = _loop_example(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "schema-verdicts.txt").write_bytes(b"\xff\x00not a digest\n12")
    assert _validate(chain, cache) == {"errors": [], "schema_loaded": True}
    assert _validate(chain, cache) == {"errors": [], "schema_loaded": False}
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory should be\n")
    assert _validate(chain, blocked) == {"errors": [], "schema_loaded": True}
    assert _validate(chain, blocked) == {"errors": [], "schema_loaded": True}


# -- chains as loaded ---------------------------------------------------------------------------


def _load_counting(chain: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Findings, int]:
    """Load with a chain cache in ``cache``; the workflow, findings and the YAML files parsed."""
    parsed: list[str] = []
    original = load_mod.load_yaml

    def counting(path: str, text: str | None = None) -> Any:
        parsed.append(path)
        return original(path, text)

    monkeypatch.setattr(load_mod, "load_yaml", counting)
    findings = Findings()
    workflow = load_mod.load_chain(str(chain), findings, chains=LoadedChains(cache))
    monkeypatch.setattr(load_mod, "load_yaml", original)
    return workflow, findings, len(parsed)


def test_a_chain_that_loaded_cleanly_is_not_read_again_until_a_file_of_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain, cache = _loop_example(tmp_path), tmp_path / "chains"
    first, findings, parsed = _load_counting(chain, cache, monkeypatch)
    assert not findings.items and parsed == 2 and len(list(cache.glob("*.pickle"))) == 1  # chain, loop body
    again, findings, parsed = _load_counting(chain, cache, monkeypatch)
    assert not findings.items and parsed == 0
    assert again == first and again is not first
    body = chain.parent / "refine_body.cwl"
    body.write_text(body.read_text().replace("steps:", "stepz:", 1))
    _, findings, parsed = _load_counting(chain, cache, monkeypatch)
    assert parsed == 2 and any("refine_body.cwl" in f.text() for f in findings.errors)
    _, findings, parsed = _load_counting(chain, cache, monkeypatch)
    assert parsed == 2, "a chain with findings is never kept"
    body.write_text(body.read_text().replace("stepz:", "steps:", 1))
    _, findings, parsed = _load_counting(chain, cache, monkeypatch)
    assert not findings.items and parsed == 0  # the same files as when it was kept
    chain.write_text(chain.read_text() + "\n# a comment\n")
    _, findings, parsed = _load_counting(chain, cache, monkeypatch)
    assert not findings.items and parsed == 2


def test_a_damaged_kept_chain_is_loaded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chain, cache = _loop_example(tmp_path), tmp_path / "chains"
    first, _, _ = _load_counting(chain, cache, monkeypatch)
    (kept,) = cache.glob("*.pickle")
    kept.write_bytes(kept.read_bytes()[:100])
    again, findings, parsed = _load_counting(chain, cache, monkeypatch)
    assert (again, findings.items, parsed) == (first, [], 2)
    kept.write_bytes(pickle.dumps(("not", "a chain")))
    again, findings, parsed = _load_counting(chain, cache, monkeypatch)
    assert (again, findings.items, parsed) == (first, [], 2)


def test_a_kept_chain_reports_the_path_typed_this_time(tmp_path: Path) -> None:
    """Validated from one directory, then from another: the messages name the paths as typed now."""
    workflows = tmp_path / "wf"
    workflows.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (workflows / "chain.cwl").write_text(
        "cwlVersion: v1.0\nclass: Workflow\nrequirements: {SubworkflowFeatureRequirement: {}}\n"
        "inputs: {raw: string}\noutputs: {}\n"
        "steps:\n  sub:\n    run: body.cwl\n    in: {raw: raw}\n    out: [outDS]\n"
    )
    # The body loads cleanly (so the chain is kept); its placeholder is found when resolving.
    (workflows / "body.cwl").write_text(
        "cwlVersion: v1.0\nclass: Workflow\ninputs: {raw: string}\noutputs: {}\n"
        "steps:\n  s:\n    run: prun\n    in:\n      opt_inDS: raw\n"
        '      opt_exec: {default: "echo %{nosuch}"}\n      opt_args: {default: "--outputs o.txt"}\n'
        "    out: [outDS]\n"
    )
    (workflows / "inputs.yaml").write_text("extra: 1\n")  # a warning in the inputs file, and raw missing
    env = dict(os.environ, CWLBRIDGE_CACHE_DIR=str(tmp_path / "cache"))

    def validate(cwd: Path, chain: str, inputs: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cwlbridge", "validate", chain, inputs],
            capture_output=True, text=True, env=env, cwd=cwd, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        return done.stderr

    first = validate(tmp_path / "elsewhere", str(Path("..") / "wf" / "chain.cwl"), "../wf/inputs.yaml")
    assert "../wf/body.cwl:10:33: error: step 's': %{nosuch}" in first
    assert list((tmp_path / "cache" / "chains").glob("*.pickle"))  # kept
    second = validate(workflows, "chain.cwl", "inputs.yaml")
    assert "../wf" not in second
    assert "\nbody.cwl:10:33: error: step 's': %{nosuch}" in "\n" + second
    assert "chain.cwl:4:10: error: required input 'raw' has no value" in second
    third = validate(tmp_path, "./wf/chain.cwl", "wf/inputs.yaml")
    assert "wf/body.cwl:10:33:" in third and "./wf/chain.cwl:4:10:" in third
