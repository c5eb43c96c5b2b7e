"""Hostile YAML is refused fast: alias bombs, integers too long for Python, huge opt_args.

Each case runs the real command in a fresh process under a time bound, so a loader that
expands aliases (minutes, gigabytes) or splits opt_args in quadratic time fails the test by
running out of time rather than by a timing assertion.
"""

from __future__ import annotations

import os
import random
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cwlbridge.model.prunopts import PrunOptionError, split_args

#: Far above what the checks need (a fraction of a second) and far below what expanding
#: the bombs below costs (a minute and gigabytes for 8^7; 9^9 does not end).
BOUND = 20

HEAD = "cwlVersion: v1.0\nclass: Workflow\ninputs: {raw: string}\noutputs: {}\n"
STEP = """\
steps:
  s:
    run: prun
    in:
      opt_inDS: raw
      opt_exec: {default: "echo %IN"}
      opt_args: {default: "--outputs out.txt"}
    out: [outDS]
"""


def _bomb(width: int, levels: int, key: str = "x") -> str:
    """Anchors nested ``levels`` deep, each aliasing the previous ``width`` times."""
    lines = [f"{key}0: &a0 [lol]"]
    lines += [f"{key}{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def _cwlbridge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cwlbridge", *args],
        capture_output=True, text=True, timeout=BOUND, cwd=cwd, env=dict(os.environ),
    )  # fmt: skip


@pytest.mark.parametrize(("width", "levels"), [(8, 7), (9, 9)])
def test_an_alias_bomb_in_a_chain_is_refused_at_once(tmp_path: Path, width: int, levels: int) -> None:
    chain = tmp_path / "chain.cwl"
    # The bomb sits in a step's input, where the loader and cwl-utils would both walk it.
    chain.write_text(HEAD + _bomb(width, levels) + STEP.replace('"--outputs out.txt"', f"*a{levels}"))
    assert len(chain.read_bytes()) < 1300
    done = _cwlbridge("validate", str(chain))
    assert done.returncode == 1, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith(f"{chain}:{5 + levels}:5:")  # the biggest aliased anchor
    assert "YAML aliases expand this document" in first
    assert "internal error" not in done.stderr


@pytest.mark.parametrize("depth", [1, 2])
def test_an_alias_bomb_in_a_sub_workflow_never_reaches_cwl_utils(tmp_path: Path, depth: int) -> None:
    """cwl-utils reads the sub-workflows a chain names (and theirs) itself: not one with a bomb."""
    (tmp_path / "body.cwl").write_text(HEAD + _bomb(8, 7) + STEP)
    calls = "requirements: {SubworkflowFeatureRequirement: {}}\nsteps:\n  sub:\n    run: RUN\n    in: {raw: raw}\n"
    calls += "    out: [outDS]\n"
    (tmp_path / "middle.cwl").write_text(HEAD + calls.replace("RUN", "body.cwl"))
    chain = tmp_path / "chain.cwl"
    chain.write_text(HEAD + calls.replace("RUN", "body.cwl" if depth == 1 else "middle.cwl"))
    done = _cwlbridge("validate", str(chain))
    assert done.returncode == 1, done.stderr
    assert f"{tmp_path / 'body.cwl'}:11:5:" in done.stderr
    assert "YAML aliases expand" in done.stderr


def test_an_alias_bomb_in_an_inputs_file_is_refused(tmp_path: Path) -> None:
    chain = tmp_path / "chain.cwl"
    chain.write_text(HEAD + STEP)
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text("raw: user.me.data\n" + _bomb(9, 6, key="extra"))
    done = _cwlbridge("validate", str(chain), str(inputs))
    assert done.returncode == 1, done.stderr
    assert f"{inputs}:7:" in done.stderr and "YAML aliases expand" in done.stderr
    # Written as JSON, with each anchor right after its key's colon.
    flow = ", ".join(f'"x{i}":&a{i} [' + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 7))
    inputs.write_text('{"raw": "user.me.data", "x0":&a0 [lol], ' + flow + "}\n")
    done = _cwlbridge("validate", str(chain), str(inputs))
    assert done.returncode == 1, done.stderr
    assert f"{inputs}:1:" in done.stderr and "YAML aliases expand" in done.stderr


def test_an_alias_bomb_in_a_reana_template_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "reana.yaml"
    spec.write_text(
        "version: 0.9.0\nworkflow:\n  type: serial\n  specification:\n    steps:\n"
        "      - environment: docker.io/library/python:3.11\n        commands: [echo hi]\n"
        + _bomb(9, 8, key="extra")
    )
    # REANA templates are loaded by ruamel's round-trip loader, then walked by the checks.
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from cwlbridge.reana.spec import SpecError, load_spec, to_plain
        try:
            to_plain(load_spec(Path(sys.argv[1])))
        except SpecError as err:
            print(err)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(spec)], capture_output=True, text=True, timeout=BOUND
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{spec}:15:") and "YAML aliases expand" in done.stdout


def test_a_recursive_alias_is_a_positioned_error(tmp_path: Path) -> None:
    chain = tmp_path / "chain.cwl"
    chain.write_text(HEAD + "loop: &me [*me]\n" + STEP)
    done = _cwlbridge("validate", str(chain))
    assert done.returncode == 1
    assert f"{chain}:5:7: error: a YAML alias refers to a node that contains it" in done.stderr


def test_an_integer_too_long_for_python_is_a_positioned_error(tmp_path: Path) -> None:
    chain = tmp_path / "chain.cwl"
    chain.write_text(HEAD + STEP)
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text("raw: user.me.data\nseed: " + "7" * 5000 + "\n")
    done = _cwlbridge("validate", str(chain), str(inputs))
    assert done.returncode == 1, done.stderr
    assert f"{inputs}:2:7: error: an integer of 5000 digits is longer than Python reads" in done.stderr
    assert "internal error" not in done.stderr
    # In the chain itself too, and in a REANA template (ruamel's loader would fail the same way).
    chain.write_text(HEAD + "seed: -" + "1" * 4400 + "\n" + STEP)
    done = _cwlbridge("validate", str(chain))
    assert f"{chain}:5:7: error: an integer of 4400 digits" in done.stderr
    from cwlbridge.reana.spec import SpecError, loads_spec

    with pytest.raises(SpecError, match="an integer of 4301 digits") as caught:
        loads_spec("version: 0.9.0\nx: " + "1" * 4301 + "\n", "reana.yaml")
    assert str(caught.value.pos) == "reana.yaml:2:4"


def test_an_opt_args_of_50000_placeholders_is_split_in_linear_time(tmp_path: Path) -> None:
    placeholders = ",".join(["%{DS1}"] * 50_000)
    chain = tmp_path / "chain.cwl"
    chain.write_text(HEAD + STEP.replace("--outputs out.txt", f"--outputs out.txt --secondaryDSs {placeholders}"))
    inputs = tmp_path / "inputs.yaml"
    # Each placeholder becomes this name: 3 MB of opt_args for the splitter and prun's parser.
    inputs.write_text("raw: user.jdoe.mc23_13p6TeV.801234.Py8EG_A14NNPDF23LO_jj_JZ2.deriv_DAOD_PHYS\n")
    done = _cwlbridge("validate", str(chain), str(inputs))
    assert done.returncode == 0, done.stderr
    assert "valid (1 task(s)" in done.stdout


def test_opt_args_are_split_exactly_as_shlex_splits_them() -> None:
    pieces = ["a", "b", " ", "\t", "\n", "\r", "\x0b", "'", '"', "\\", "%{x}", "-", "é"]
    rnd = random.Random(14)
    for _ in range(30_000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 14)))
        try:
            expected: object = shlex.split(text)
        except ValueError as err:
            expected = f"cannot split opt_args: {err}"
        try:
            got: object = split_args(text)
        except PrunOptionError as err:
            got = str(err)
        assert got == expected, repr(text)
