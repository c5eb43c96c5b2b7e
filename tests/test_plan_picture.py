"""``cwlbridge plan -o plan.svg|png``: Graphviz when present, a clear message when not."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from cwlbridge.engine.report import plan_from_json
from cwlbridge.model.plan import Parent, Plan, Task, to_dot, to_mermaid
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


# -- what the picture shows --------------------------------------------------------------------

GOLDEN = ROOT / "tests" / "golden"


def _plan(name: str) -> Plan:
    return plan_from_json(json.loads((GOLDEN / f"{name}.json").read_text()))


def _clusters(dot: str) -> dict[str, str]:
    """cluster id -> its label."""
    return dict(re.findall(r'subgraph (cluster_\w+) \{\n\s*label="([^"]*)"', dot))


def test_scatter_elements_are_clusters_holding_their_tasks() -> None:
    dot = to_dot(_plan("scatter-merge"))
    labels = sorted(_clusters(dot).values())
    assert labels == ["point[0] (scatter element)", "point[1] (scatter element)"]
    first, second = (dot.split(f"subgraph cluster_point_{i}_")[1].split("}")[0] for i in (0, 1))
    assert "000 skim" in first and "002 select" in first and "004 skim" not in first
    assert "004 skim" in second and "006 select" in second and "002 select" not in second
    assert "008 merge" not in first + second and "008 merge" in dot
    mermaid = to_mermaid(_plan("scatter-merge"))
    assert 'subgraph g_point_0__0["point[0] (scatter element)"]' in mermaid


def test_a_loop_body_is_one_dashed_cluster() -> None:
    dot = to_dot(_plan("loop"))
    (label,) = _clusters(dot).values()
    assert label.startswith("refine ⟳ loop body")
    body = dot.split("subgraph cluster_refine")[1].split("}")[0]
    assert 'style="rounded,dashed"' in body and "001 fit" in body and "002 decide" in body
    assert "000 start" not in body


def test_secondary_inputs_are_dashed_edges_and_started_links_dotted() -> None:
    dot = to_dot(_plan("secondary"))
    assert re.search(r't001 -> t002 \[style=dashed[^]]*label="processed, secondary"\]', dot)
    assert re.search(r't003 -> t004 \[style=dashed[^]]*label="started, secondary"\]', dot)
    assert 't000 -> t002 [label="processed"]' in dot  # an ordinary parent stays solid
    assert "style=dashed" not in to_dot(_plan("scatter-merge"))  # no secondaries there
    assert 't000 -> t001 [style=dotted, label="started"]' in to_dot(_plan("scatter-merge"))
    assert "t001 -.->|processed, secondary| t002" in to_mermaid(_plan("secondary"))


def test_a_secondary_from_outside_the_chain_is_a_note() -> None:
    plan = _plan("secondary")
    plan.tasks[0].secondary_ds = ["mc23:mc23.pileup.HITS/"]
    dot = to_dot(plan)
    assert re.search(r'd000 \[label="mc23:mc23.pileup.HITS/", shape=note', dot)
    assert re.search(r"d000 -> t000 \[style=dashed", dot)


def _chain_plan(steps: int) -> Plan:
    tasks = []
    for i in range(steps):
        name = f"user.jdoe.long_{i:03d}_s{i}"
        parents = [Parent(tasks[-1].name, "processed")] if tasks else []
        tasks.append(
            Task(i, name, f"s{i}", f"s{i}", "prun", [], [], "x", None, None, False, [name + "_out/"], parents, None,
                 False)
        )
    return Plan("user.jdoe.long", tasks)


def test_a_long_chain_is_drawn_top_down_within_1000_px() -> None:
    assert "rankdir=LR" in to_dot(_chain_plan(4))
    dot = to_dot(_chain_plan(60))
    assert "rankdir=TB" in dot and 'size="10.4,1000", dpi=96' in dot
    if shutil.which("dot") is None:
        pytest.skip("Graphviz 'dot' is not installed here: the drawn width cannot be measured")
    png = subprocess.run(["dot", "-Tpng"], input=dot.encode(), capture_output=True, check=True).stdout
    width, height = struct.unpack(">II", png[16:24])
    assert width <= 1000 and height > 60 * 30  # tall, not shrunk: every box keeps its size
