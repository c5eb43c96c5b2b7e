"""Our task-parameter maps against the ones prun itself dumps, for every example chain.

For each task of each chain in workflows/, the same command line goes to our
``task_parameters`` and to prun as a user runs it (``--noSubmit --dumpTaskParams``, in a
separate process, in a directory holding the chain's files).  The maps must agree key by key,
except for the differences listed in ``ALLOWED``, each with its reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cwlbridge.model.rules import analyse
from cwlbridge.panda.taskparams import (
    TaskParamsError,
    differing_keys,
    emailed_paths,
    prun_command_line,
    prun_map,
    task_parameters,
)

REPO = Path(__file__).resolve().parents[1]
NICK = "jdoe"
CACHE = "https://pandacache.example.org"
SANDBOX = "sources.0123abcd.tar.gz"

#: Keys allowed to differ from prun's dump, and why.
ALLOWED = {
    "taskName": "PanDA's converter names tasks without prun's trailing '/'",
    "cliParams": "prun records its own argv; ours is PanDA's command line for the step (without --noBuild)",
    "architecture": "PanDA's server gives a task without a container the base platform (@centos7 here)",
    "parentTaskName": "pchain/PanDA add it for a task with one parent",
    "noWaitParent": "pchain/PanDA add it for a task with one parent",
    "noEmail": "pchain/PanDA add it for a task another task waits for",
    "runOnInstant": "pchain/PanDA add it for junction and reana tasks",
}

PRUN_DUMPS = textwrap.dedent(
    """\
    import json, os, sys
    from pandaclient import PrunScript
    lines = json.load(open(sys.argv[1]))
    for index, words in enumerate(lines):
        dump = os.path.abspath(f"dump-{index}.json")
        sys.argv = ["prun", *words, "--noSubmit", "--dumpTaskParams", dump]
        try:
            PrunScript.main()
        except SystemExit:
            pass
    """
)


def normal_job_parameters(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """jobParameters with the two values that are random per prun call made equal."""
    normal = []
    for item in items:
        item = dict(item)
        if item.get("type") == "constant" and str(item.get("value", "")).startswith("-a "):
            item["value"] = "-a <sandbox>"  # prun's own jobO.<uuid>.tar.gz, ours the uploaded one
        if "consolidate" in item:
            item["consolidate"] = "<uuid>"  # a fresh uuid in every call of prun
        normal.append(item)
    return normal


def _examples() -> list[tuple[str, Path, Path | None]]:
    found = []
    for chain in sorted((REPO / "workflows").glob("*/chain.cwl")):
        inputs = chain.parent / "inputs.yaml"
        found.append((chain.parent.name, chain, inputs if inputs.is_file() else None))
    return found


@pytest.mark.parametrize(("name", "chain", "inputs"), _examples(), ids=[e[0] for e in _examples()])
def test_our_maps_are_prun_own(name: str, chain: Path, inputs: Path | None, tmp_path: Path) -> None:
    analysis = analyse(str(chain), str(inputs) if inputs else None, f"user.{NICK}.{name}")
    assert analysis.plan is not None and not analysis.findings.errors
    emailed = emailed_paths(analysis.plan.tasks)
    tasks = [t for t in analysis.plan.tasks if t.type in ("prun", "junction", "reana")]
    if not tasks:
        pytest.skip(f"{name} has no prun, junction or reana step (its steps: gitlab/phpo builders)")
    ours = [task_parameters(t, emailed, nickname=NICK, sandbox=SANDBOX, source_url=CACHE) for t in tasks]
    work = tmp_path / "work"
    shutil.copytree(chain.parent, work)
    (tmp_path / "lines.json").write_text(json.dumps([prun_command_line(t) for t in tasks]))
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PANDA_BEHIND_REAL_LB": "1", "PANDA_AUTH": "x509_no_grid",
        "PANDA_NICKNAME": NICK, "PANDA_URL_SSL": "https://pandaserver.example.org/server/panda",
        "PANDACACHE_URL": f"{CACHE}/server/panda",
    }
    done = subprocess.run(
        [sys.executable, "-P", "-c", PRUN_DUMPS, str(tmp_path / "lines.json")],  # -P: select.py here is no module
        cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    for index, (task, mine) in enumerate(zip(tasks, ours)):
        dump = work / f"dump-{index}.json"
        assert dump.is_file(), f"prun made no map for {task.name}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        theirs = json.loads(dump.read_text())
        mine = dict(mine, jobParameters=normal_job_parameters(mine["jobParameters"]))
        theirs["jobParameters"] = normal_job_parameters(theirs["jobParameters"])
        unexpected = {k: v for k, v in differing_keys(mine, theirs).items() if k not in ALLOWED}
        assert unexpected == {}, f"{task.name}: {unexpected}"
        assert theirs["taskName"] == task.name + "/" and mine["taskName"] == task.name
        assert f"-a {SANDBOX}" in [p.get("value") for p in ours[index]["jobParameters"]]


def test_what_pchain_adds() -> None:
    chain = REPO / "workflows" / "recast" / "chain.cwl"
    analysis = analyse(str(chain), str(chain.parent / "inputs.yaml"), "user.jdoe.recast")
    assert analysis.plan is not None
    emailed = emailed_paths(analysis.plan.tasks)
    derive, skim, fit = (
        task_parameters(t, emailed, nickname="jdoe", sandbox=SANDBOX, source_url=CACHE) for t in analysis.plan.tasks
    )
    assert "parentTaskName" not in derive and derive["noEmail"] is True
    assert skim["parentTaskName"] == "user.jdoe.recast_000_derive" and skim["noWaitParent"] is True
    assert fit["runOnInstant"] is True and "noEmail" not in fit  # the chain's output
    assert "dsForIN" not in fit  # a reana step gets no --inDS (its opt_inDS only fills %{DS1})
    assert skim["dsForIN"] == "user.jdoe.recast_000_derive_daod.root/"
    assert fit["useSecrets"] is True and skim["sourceURL"] == CACHE


def test_panda_mails_only_about_tasks_nothing_waits_for() -> None:
    chain = REPO / "workflows" / "scatter-merge" / "chain.cwl"
    analysis = analyse(str(chain), str(chain.parent / "inputs.yaml"), "user.jdoe.sm")
    assert analysis.plan is not None
    # The merge waits for the scatter, so every task of every element is quiet (as on PanDA),
    # the body's cutflow too, though the merge reads only the declared output (select).
    assert emailed_paths(analysis.plan.tasks) == {"merge"}
    nested = REPO / "tests" / "oracle" / "nested" / "chain.cwl"
    analysis = analyse(str(nested), str(nested.parent / "inputs.yaml"), "user.jdoe.nested")
    assert analysis.plan is not None
    assert emailed_paths(analysis.plan.tasks) == {"report"}  # analysis/inner/plot is under a waited-for step


def test_command_line_and_platform_as_pandas_converter_sets_them() -> None:
    chain = REPO / "workflows" / "simple" / "chain.cwl"
    analysis = analyse(str(chain), str(chain.parent / "inputs.yaml"), "user.jdoe.simple")
    assert analysis.plan is not None
    skim, _, fit = analysis.plan.tasks
    mine = task_parameters(skim, set(), nickname="jdoe", sandbox=SANDBOX, source_url=CACHE, platform="el9")
    assert mine["architecture"] == "@el9"  # no container: the job runs on the base platform
    assert mine["cliParams"].startswith("prun --outputs ") and "--noBuild" not in mine["cliParams"]
    assert mine["cliParams"].endswith(f"--notExpandInDS --notExpandSecDSs --exec 'skim.sh %IN' --outDS {skim.name}")
    boxed = task_parameters(fit, set(), nickname="jdoe", sandbox=SANDBOX, source_url=CACHE, platform="el9")
    assert fit.container and "@" not in (boxed.get("architecture") or "")  # a container brings its own OS


def test_a_junction_reads_staged_files_as_on_panda() -> None:
    chain = REPO / "workflows" / "loop" / "chain.cwl"
    analysis = analyse(str(chain), str(chain.parent / "inputs.yaml"), "user.jdoe.loop")
    assert analysis.plan is not None
    emailed = emailed_paths(analysis.plan.tasks)
    maps = {t.type: task_parameters(t, emailed, nickname="jdoe", sandbox=SANDBOX, source_url=CACHE)
            for t in analysis.plan.tasks}
    assert maps["junction"]["useLocalIO"] == 1 and maps["junction"]["runOnInstant"] is True
    assert "useLocalIO" not in maps["prun"]  # prun steps keep the site's choice, as on PanDA


def test_prun_refusal_is_an_error_with_prun_message() -> None:
    with pytest.raises(TaskParamsError) as info:
        prun_map(["--exec", "x", "--outDS", "user.jdoe.t", "--nFilesPerJob", "2", "--nGBPerJob", "1", "--noBuild"],
                 nickname="jdoe")
    assert "prun refuses" in info.value.message
