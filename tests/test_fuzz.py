"""Random mutations of the examples never make cwlbridge print a traceback.

Hypothesis mutates the text of every example chain (deleting, duplicating and
swapping lines, changing characters, cutting the file short, injecting YAML
punctuation) and the validator must answer with findings and exit 0 or 1.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli_run import run_cli

ROOT = Path(__file__).resolve().parent.parent
CHAINS = sorted((ROOT / "workflows").glob("*/chain.cwl"))
PUNCTUATION = [":", "- ", "{", "}", "[", "]", "'", '"', "#", "&a", "*a", "!!binary", "\t", "%{DS9}", "$(", "\x00"]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Path, str]:
    chain = draw(st.sampled_from(CHAINS))
    lines = chain.read_text().splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "char", "inject", "truncate", "indent"]))
        at = draw(st.integers(0, len(lines) - 1))
        if kind == "delete":
            del lines[at]
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif kind == "char" and lines[at]:
            col = draw(st.integers(0, len(lines[at]) - 1))
            lines[at] = lines[at][:col] + draw(st.characters(codec="utf-8")) + lines[at][col + 1 :]
        elif kind == "inject":
            col = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:col] + draw(st.sampled_from(PUNCTUATION)) + lines[at][col:]
        elif kind == "truncate":
            lines = lines[:at]
        elif kind == "indent":
            lines[at] = draw(st.sampled_from(["", " ", "   ", "      "])) + lines[at].lstrip()
    return chain, "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_mutated_examples_never_crash(tmp_path_factory, case: tuple[Path, str]) -> None:  # type: ignore[no-untyped-def]
    original, text = case
    work = tmp_path_factory.mktemp("fuzz")
    for sibling in original.parent.iterdir():
        if sibling.is_file():
            (work / sibling.name).write_bytes(sibling.read_bytes())
    (work / "chain.cwl").write_text(text, encoding="utf-8", errors="surrogatepass")
    for command in (["validate"], ["plan", "--outds", "user.fuzz.test"]):
        args = [command[0], str(work / "chain.cwl"), str(work / "inputs.yaml"), *command[1:]]
        result = run_cli(*args)
        assert result.code in (0, 1), result.text
        assert "Traceback" not in result.text, result.text
        assert "internal error" not in result.text, result.text
        if result.code == 1:
            assert ": error: " in result.err, result.err
