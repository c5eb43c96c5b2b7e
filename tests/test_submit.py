# The grid fixture is imported from test_grid_run; its parameters are that fixture, not a redefinition.
# ruff: noqa: F811
"""`cwlbridge submit` and `cwlbridge workflow` against the PanDA emulator, whose workflow
endpoint converts the chain with panda-server's own converter and runs the tasks it makes
(their jobs for real, against the real Rucio test server), as iDDS would.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cwlbridge.panda.submit import chain_files
from tests.test_grid_run import WORKFLOWS, Grid, _listing, _recast, _secret, grid  # noqa: F401 (grid: fixture)


def _workflow_requests(grid: Grid) -> int:
    return sum(1 for r in grid.panda.requests if r["path"].endswith("/put_workflow_request"))


def _submit(grid: Grid, *args: str) -> subprocess.CompletedProcess[str]:
    return grid.cli("submit", *args, timeout=300)


def _request_id(done: subprocess.CompletedProcess[str]) -> int:
    assert done.returncode == 0, done.stdout + done.stderr
    return int(json.loads(done.stdout)["request_id"])


def test_submit_recast_runs_the_converted_tasks_and_workflow_status_follows_them(
    grid: Grid, reana_server: Any
) -> None:
    _, outds = _recast(grid)
    _secret(grid, "REANA_SERVER_URL", reana_server.url)
    _secret(grid, "REANA_ACCESS_TOKEN", reana_server.token)
    done = _submit(grid, "recast/chain.cwl", "recast/inputs.yaml", "--outds", outds, "--json")
    request_id = _request_id(done)
    assert _workflow_requests(grid) == 1
    # PanDA leaves the top-level %{signal_point} as written (README fix 2): a warning at its place.
    assert "recast/chain.cwl:27:52: warning: step 'skim'" in done.stderr and "(README fix 2)" in done.stderr
    watched = grid.cli("workflow", "status", str(request_id), "--watch", "--interval", "0.3", "--json", timeout=300)
    assert watched.returncode == 0, watched.stdout + watched.stderr + json.dumps(grid.jobs.errors)
    final = json.loads(watched.stdout.split("\n}\n")[-2] + "\n}")
    assert final["status"] == "Finished", final
    names = sorted(t["name"] for t in final["tasks"])
    assert names == [f"{outds}_000_derive", f"{outds}_001_skim", f"{outds}_002_fit"]
    assert all(t["status"] == "done" and t["link"].endswith(f"/task/{t['jediTaskID']}/") for t in final["tasks"])
    # The converter's tasks ran for real: their outputs are in Rucio.
    assert len(_listing(grid, f"{outds}_000_derive_daod.root/")) == 2
    assert len(_listing(grid, f"{outds}_001_skim_ntup.root/")) == 1
    [tar] = _listing(grid, f"{outds}_002_fit_out.tar/")
    assert tar["size"] > 0
    [workflow] = reana_server.workflows()
    assert workflow["status"] == "finished"
    text = grid.cli("workflow", "status", str(request_id))
    assert text.returncode == 0 and f"request {request_id}  Finished  {outds}" in text.stdout
    assert "000_derive" in text.stdout and "4/4" in text.stdout
    assert grid.token not in done.stdout + done.stderr + watched.stdout + text.stdout


def test_workflow_kill_aborts_the_tasks_of_a_second_submission(grid: Grid) -> None:
    _, outds = _recast(grid)
    _secret(grid, "REANA_SERVER_URL", "https://reana.invalid")
    _secret(grid, "REANA_ACCESS_TOKEN", "never-used")
    grid.jobs.hold = True  # jobs wait, so that the kill finds the tasks running
    shown = _submit(grid, "recast/chain.cwl", "recast/inputs.yaml", "--outds", outds)  # as a user sees it
    assert shown.returncode == 0, shown.stdout + shown.stderr
    match = re.search(r"^request (\d+) accepted: PanDA/iDDS runs the chain's tasks$", shown.stdout, re.M)
    assert match, shown.stdout
    first = int(match.group(1))
    # The plan table: the outDS, then a row per task with its parents.
    assert f"{outds}: 3 task(s)" in shown.stdout
    assert all(row in shown.stdout for row in ("000_derive │ prun", "001_skim   │ prun", "002_fit    │ reana"))
    assert "001_skim (processed)" in shown.stdout
    assert f"cwlbridge workflow status {first}" in shown.stdout
    request_id = _request_id(_submit(grid, "recast/chain.cwl", "recast/inputs.yaml", "--outds", outds + "b",
                                     "--json"))
    assert request_id != first
    killed = grid.cli("workflow", "kill", str(request_id))
    assert killed.returncode == 0, killed.stderr
    grid.jobs.hold = False
    watched = grid.cli("workflow", "status", str(request_id), "--watch", "--interval", "0.2", "--json", timeout=120)
    final = json.loads(watched.stdout.split("\n}\n")[-2] + "\n}")
    assert final["status"] == "Cancelled"
    assert final["tasks"] and all(t["status"] in ("aborted", "aborting") for t in final["tasks"]), final
    # The first submission was left alone and runs on.
    untouched = [t for t in grid.panda.tasks.values() if t.name.startswith(outds + "_")]
    assert untouched and not any(t.status in ("aborted", "aborting") for t in untouched)


def test_a_typo_is_refused_with_its_position_and_no_request_is_sent(grid: Grid) -> None:
    shutil.copytree(WORKFLOWS / "simple", grid.cwd / "simple")
    chain = grid.cwd / "simple" / "chain.cwl"
    chain.write_text(chain.read_text().replace("opt_exec", "opt_exce", 1))
    done = _submit(grid, "simple/chain.cwl", "simple/inputs.yaml", "--outds", "user.jdoe.typo")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "simple/chain.cwl:" in done.stderr and "opt_exce" in done.stderr and "nothing was submitted" in done.stderr
    assert grid.panda.requests == []  # not even a credentials check: the chain was wrong first


def test_a_junction_is_refused_because_panda_breaks_on_it(grid: Grid) -> None:
    shutil.copytree(WORKFLOWS / "loop", grid.cwd / "loop")
    done = _submit(grid, "loop/chain.cwl", "loop/inputs.yaml", "--outds", "user.jdoe.loopy")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "loop/refine_body.cwl:21:3: error: step 'decide'" in done.stderr
    assert "--forceStagedSecondary" in done.stderr and "(README fix 8)" in done.stderr
    assert _workflow_requests(grid) == 0


def test_check_mode_prints_the_servers_conversion_log_and_creates_nothing(grid: Grid) -> None:
    shutil.copytree(WORKFLOWS / "simple", grid.cwd / "simple")
    done = _submit(grid, "simple/chain.cwl", "simple/inputs.yaml", "--outds", "user.jdoe.checked", "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "messages from the server" in done.stdout and "converted" in done.stdout
    assert _workflow_requests(grid) == 1 and grid.panda.tasks == {}


def test_a_merge_downstream_of_a_scatter_is_warned_about_with_its_line(grid: Grid) -> None:
    shutil.copytree(WORKFLOWS / "scatter-merge", grid.cwd / "scatter-merge")
    done = _submit(grid, "scatter-merge/chain.cwl", "scatter-merge/inputs.yaml", "--outds", "user.jdoe.merged",
                   "--check")
    assert done.returncode == 0, done.stdout + done.stderr  # a warning, not a refusal
    assert "scatter-merge/chain.cwl:26:17: warning:" in done.stderr and "(README fix 3)" in done.stderr
    assert _workflow_requests(grid) == 1


def test_a_chain_the_server_rejects_exits_non_zero_with_its_message(grid: Grid) -> None:
    shutil.copytree(Path(__file__).parent / "oracle" / "when-nested", grid.cwd / "when-nested")
    args = ("when-nested/chain.cwl", "when-nested/inputs.yaml", "--outds", "user.jdoe.nested")
    refused = _submit(grid, *args)
    assert refused.returncode == 1 and "(README fix 15)" in refused.stderr and _workflow_requests(grid) == 0
    # Sent anyway, PanDA's converter fails on it: the server's answer is the exit code.
    done = _submit(grid, *args, "--allow-pchain-defects")
    assert done.returncode != 0, done.stdout + done.stderr
    assert _workflow_requests(grid) == 1 and grid.panda.tasks == {}
    assert "KeyError" in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_workflow_tarball_holds_exactly_the_chain_files(grid: Grid) -> None:
    recast = grid.cwd / "recast"
    shutil.copytree(WORKFLOWS / "recast", recast)
    (recast / ".git").mkdir()
    (recast / ".git" / "config").write_text("[core]\n")
    (recast / "usercert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (recast / "big.root").write_bytes(b"\0" * (5 * 1024 * 1024 + 1))
    _secret(grid, "REANA_SERVER_URL", "https://reana.invalid")
    _secret(grid, "REANA_ACCESS_TOKEN", "never-used")
    done = _submit(grid, "recast/chain.cwl", "recast/inputs.yaml", "--outds", "user.jdoe.tarball", "--check",
                   "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["workflow_files"] == ["chain.cwl", "inputs.yaml"]
    [conversion] = grid.panda.workflows.conversions
    archive = grid.panda.cache_dir / conversion["data"]["sandbox"]
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["chain.cwl", "inputs.yaml"]
    # The tasks' own sandbox (the templates' -a) holds what the commands name, no more.
    template = conversion["data"]["taskParams"]["container"]
    [sandbox] = [p["value"][3:] for p in template["jobParameters"] if str(p.get("value", "")).startswith("-a ")]
    with tarfile.open(grid.panda.cache_dir / sandbox) as tar:
        names = set(tar.getnames())
    assert {"derive.sh", "skim.sh", "reana-template.yaml"} <= names
    assert not {"usercert.pem", "big.root", ".git/config"} & names


def test_chain_files_of_a_scatter_include_its_sub_workflow() -> None:
    from cwlbridge.model.rules import analyse

    chain = WORKFLOWS / "scatter-merge" / "chain.cwl"
    analysis = analyse(str(chain), str(chain.parent / "inputs.yaml"), "user.jdoe.x")
    files = chain_files(analysis.workflow, chain, chain.parent / "inputs.yaml")
    assert [rel for rel, _ in files.members] == ["chain.cwl", "inputs.yaml", "select.cwl"]
    assert (files.spec_file, files.input_file) == ("chain.cwl", "inputs.yaml")


PANDA_CLIENT_WORKFLOW = """\
import json, sys
from pandaclient import Client
params = json.loads(open(sys.argv[1]).read())
out = {"check": Client.send_workflow_request(params, check=True),
       "status": Client.call_idds_user_workflow_command("get_status", {"request_id": int(sys.argv[2])})}
print(json.dumps(out, default=str))
"""


def test_the_real_panda_client_sends_a_workflow_request_to_the_emulator(grid: Grid) -> None:
    """panda-client's own send_workflow_request is understood (gzipped JSON body); its iDDS
    command, a form without Content-Type, has no fields for the server, where ours works."""
    shutil.copytree(WORKFLOWS / "simple", grid.cwd / "simple")
    _secret(grid, "SOME_SECRET", "x")
    request_id = _request_id(_submit(grid, "simple/chain.cwl", "simple/inputs.yaml", "--outds", "user.jdoe.pc",
                                     "--json"))
    params = grid.cwd / "params.json"
    params.write_text(json.dumps(grid.panda.workflows.conversions[0]["data"]))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(grid.cwd), **grid.panda.environ(grid.token)}
    done = subprocess.run(
        [sys.executable, "-c", PANDA_CLIENT_WORKFLOW, str(params), str(request_id)],
        capture_output=True, text=True, env=env, timeout=300, check=False, cwd=grid.cwd,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    status, (accepted, reply) = out["check"]
    assert status == 0 and accepted is True and reply["status"] is True and reply["request_id"] is None
    assert "converted" in reply["log"]
    assert out["status"][0] == 0 and out["status"][1][0] is False and "command_name" in out["status"][1][1]
    ours = grid.cli("workflow", "status", str(request_id), "--json")  # exit 1 once it failed (no input data)
    assert ours.returncode in (0, 1), ours.stderr
    assert json.loads(ours.stdout)["request_id"] == request_id


def test_idds_status_tables_are_read_by_their_rule_line() -> None:
    from cwlbridge.panda.workflows import parse_table
    from tests.servers.panda_workflows import _table

    text = _table(["request_id", "transform_workload_id", "status[Total/OK/Processing]", "errors"],
                  [[7, 123456789, "Finished[4/4/0]", "None"], [7, "None", "New[0/0/0]", "a long error text"]])
    assert parse_table(text) == [
        {"request_id": "7", "transform_workload_id": "123456789", "status[Total/OK/Processing]": "Finished[4/4/0]",
         "errors": "None"},
        {"request_id": "7", "transform_workload_id": "None", "status[Total/OK/Processing]": "New[0/0/0]",
         "errors": "a long error text"},
    ]
    assert parse_table("") == [] and parse_table("no table here") == []


@pytest.mark.parametrize(
    ("chain", "fix"), [("nested-tail", 3), ("placeholders", 14), ("when-nested", 15), ("scatter-scalar", 16)]
)
def test_constructs_pandas_converter_fails_on_are_refused_by_submit(chain: str, fix: int) -> None:
    """The oracle chains PanDA's converter breaks on (tests/test_oracle.py) are breaking deviations."""
    from cwlbridge.model.rules import analyse

    folder = Path(__file__).parent / "oracle" / chain
    analysis = analyse(str(folder / "chain.cwl"), str(folder / "inputs.yaml"), "user.jdoe.oracle")
    assert analysis.plan is not None and not analysis.findings.errors
    assert any(d.fix == fix and d.breaks for d in analysis.plan.deviations), analysis.plan.deviations
