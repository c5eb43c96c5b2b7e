"""``cwlbridge plan -o plan.svg|png``: Graphviz when present, a clear message when not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cli_run import run_cli

ROOT = Path(__file__).resolve().parent.parent
CHAIN = ROOT / "workflows" / "conditions" / "chain.cwl"
ARGS = ["plan", str(CHAIN), str(CHAIN.with_name("inputs.yaml")), "--outds", "user.jdoe.pic"]


@pytest.mark.parametrize("ext", ["svg", "png"])
def test_picture_is_drawn_with_graphviz(tmp_path: Path, ext: str) -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz 'dot' is not installed here (scripts/test installs it with apt when it can)")
    out = tmp_path / f"plan.{ext}"
    result = run_cli(*ARGS, "-o", str(out))
    assert result.code == 0, result.text
    data = out.read_bytes()
    if ext == "svg":
        text = data.decode()
        assert "<svg" in text and "rescue" in text and "failed" in text
    else:
        assert data.startswith(b"\x89PNG")


def test_missing_graphviz_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no dot anywhere
    result = run_cli(*ARGS, "-o", str(tmp_path / "plan.png"))
    assert result.code == 1
    assert "Graphviz 'dot' is not installed" in result.err
    assert "apt-get install graphviz" in result.err
    assert not (tmp_path / "plan.png").exists()


def test_unknown_picture_format_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(*ARGS, "-o", str(tmp_path / "plan.gif"))
    assert result.code == 2
    assert "must end in .svg, .png or .pdf" in result.err
