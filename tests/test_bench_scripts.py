"""The benchmark scripts run end to end on a small size and print their results (no timing asserted)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH_VALIDATE = ROOT / "scripts" / "bench_validate"


def test_bench_validate_small_run_prints_a_ratio_row() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH_VALIDATE), "--sizes", "10", "--reps", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    row = re.search(r"^\s*10\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)x$", done.stdout, re.M)
    assert row is not None, done.stdout
    assert all(float(value) > 0 for value in row.groups())
    assert "10 steps: cwlbridge median wall" in done.stdout


def test_bench_validate_json_has_both_commands_per_size() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH_VALIDATE), "--sizes", "3", "--reps", "1", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)["sizes"]["3"]
    assert len(result["cwlbridge"]["wall_s"]) == 1
    assert result["cwltool"]["peak_mib"] > 0
    assert result["ratio"] > 0


def test_bench_validate_rejects_bad_sizes() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH_VALIDATE), "--sizes", "ten"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 2
    assert "sizes must be comma-separated integers" in done.stderr


BENCH_ENGINE = ROOT / "scripts" / "bench_engine"


def test_bench_engine_tiny_run_prints_overhead_and_ratio_per_shape() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH_ENGINE), "--sizes", "3", "--reps", "1", "--settle", "0"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for shape in ("chain", "fanout"):
        row = re.search(
            rf"^{shape}\s+3\s+(\d+\.\d+)\s+-?\d+\.\d+\s+(\d+\.\d+)\s+(-?\d+\.\d+)\s+(\d+\.\d+)"
            r"\s+(\d+\.\d+)\s+(-?\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)x$",
            done.stdout,
            re.M,
        )
        assert row is not None, done.stdout
        shell, ours, _, ours_mib, theirs, _, theirs_mib, ratio = (float(v) for v in row.groups())
        assert min(shell, ours, ours_mib, theirs, theirs_mib, ratio) > 0
        assert f"{shape} 3: cwlbridge faster than cwltool" in done.stdout
    assert re.search(r"^creating a directory here: \d+ µs before the cwlbridge runs, \d+ µs after", done.stdout, re.M)
    assert "cwlbridge runs after an untimed `cwlbridge validate` of the chain" in done.stdout


def test_bench_engine_json_without_cwltool_and_with_a_profile(tmp_path: Path) -> None:
    profile = tmp_path / "engine.prof"
    done = subprocess.run(
        [
            sys.executable, str(BENCH_ENGINE), "--sizes", "2,4", "--shapes", "chain", "--reps", "3",
            "--cwltool-max-size", "1", "--profile", str(profile), "--profile-top", "5", "--json", "--cold",
            "--settle", "1",
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert [(c["shape"], c["steps"]) for c in result["cases"]] == [("chain", 2), ("chain", 4)]
    for case in result["cases"]:
        assert "cwltool" not in case and case["ratio_cwltool_over_cwlbridge"] is None
        assert len(case["cwlbridge"]["wall_s"]) == 3 and case["shell"]["median_wall_s"] > 0
        assert len(case["cwlbridge"]["steal_s"]) == 3 and min(case["shell"]["steal_s"]) >= 0  # /proc/stat
        assert case["floor"]["median_wall_s"] > 0 and "floor" in case["overhead_ms_per_step"]
        # Paired: the median of each round's difference to the shell's run of the same round.
        for tool in ("floor", "cwlbridge"):
            differences = [a - b for a, b in zip(case[tool]["wall_s"], case["shell"]["wall_s"])]
            paired = statistics.median(differences) / case["steps"] * 1000.0
            assert case["overhead_ms_per_step"][tool] == pytest.approx(paired)
    assert result["marginal_ms_per_step"]["chain"]["cwlbridge"]["between"] == "2->4"
    assert {"target": "chain 4: cwlbridge faster than cwltool", "result": "n/a"} in result["targets"]
    assert profile.stat().st_size > 0
    assert result["cold_cache"] is True and min(result["mkdir_us"].values()) > 0
    settle = result["settle"]  # waits while a directory costs more than on a quiet disk, here at most ~1 s
    assert 0 <= settle["waited_s"] < 30 and min(settle["mkdir_us_first"], settle["mkdir_us_then"]) > 0
    assert settle["mkdir_us_first"] <= 100 or settle["waited_s"] >= 0.9
    assert result["profile"][0].startswith("profile: cwlbridge run on the 4-step chain")
    assert any("cwlbridge/engine/run.py" in line for line in result["profile"])


def test_bench_engine_rejects_an_unknown_shape() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH_ENGINE), "--shapes", "diamond"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 2
    assert "unknown 'diamond'" in done.stderr


BENCH_PANDA = ROOT / "scripts" / "bench_panda"


def test_bench_panda_small_scatter_submits_every_task_once_and_polls_in_one_request() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH_PANDA), "--points", "6", "--tick", "0.02", "--poll-interval", "0.2", "--json"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout)
    assert figures["tasks_planned"] == figures["tasks_submitted"] == 12
    assert sum(wave["tasks"] for wave in figures["waves"]) == 12 and figures["tasks_per_s"] > 0
    assert figures["poll_cycles"] >= 1 and figures["cycles_within_bound"] is True
    assert 0 < figures["peak_rss_mb"] < 1000
    polling = figures["polling"]
    assert polling["tasks"] == 12
    assert polling["ours_first"]["requests"] == 1 + 12  # the listing, then details of every (new) task
    assert polling["ours_steady"]["requests"] == 1  # nothing changed: the listing alone
    assert polling["per_task"]["requests"] == 12


def test_bench_panda_table_names_the_targets() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH_PANDA), "--points", "2", "--tick", "0.02", "--poll-interval", "0.2"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "target >= 20" in done.stdout and "target <= 300" in done.stdout
    assert re.search(r"per-task get_status cycle\s+4 requests", done.stdout), done.stdout
