"""The benchmark scripts run end to end on a small size and print their results (no timing asserted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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
