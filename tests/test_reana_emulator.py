"""The REANA 0.9 emulator speaks the protocol: driven with plain requests, checked by the spec."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.servers import reana_artifacts as artifacts_module
from tests.servers.reana_artifacts import ReanaArtifacts, load_reana_artifacts
from tests.servers.reana_emulator import ReanaEmulator

TERMINAL = ("finished", "failed", "stopped", "deleted")
OCTET = {"Content-Type": "application/octet-stream"}


def call(
    server: ReanaEmulator, method: str, path: str, *, token: str | None = "",
    params: dict[str, Any] | None = None, timeout: float = 10, **kwargs: Any,
) -> requests.Response:
    query = dict(params or {})
    if token is not None:
        query["access_token"] = token or server.token
    return requests.request(method, server.url + path, params=query, timeout=timeout, **kwargs)


def serial_spec(*commands: str, parameters: dict[str, Any] | None = None,
                **step_keys: Any) -> dict[str, Any]:
    return {
        "version": "0.9.0",
        "inputs": {"parameters": parameters or {}, "files": ["code/fit.sh"]},
        "workflow": {
            "type": "serial",
            "specification": {"steps": [
                {"name": "fit", "environment": "docker.io/library/bash:5", "commands": list(commands),
                 **step_keys},
            ]},
        },
        "outputs": {"directories": ["results"]},
    }


def create(server: ReanaEmulator, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    reply = call(server, "POST", "/api/workflows", params={"workflow_name": name}, json=spec)
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


def start(server: ReanaEmulator, workflow_id: str, **body: Any) -> requests.Response:
    payload = {"input_parameters": {}, "operational_options": {}, **body}
    return call(server, "POST", f"/api/workflows/{workflow_id}/start", json=payload)


def wait_for(server: ReanaEmulator, workflow_id: str, statuses: tuple[str, ...] = TERMINAL,
             deadline_s: float = 60) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while True:
        body: dict[str, Any] = call(server, "GET", f"/api/workflows/{workflow_id}/status").json()
        if body["status"] in statuses or time.monotonic() > end:
            return body
        time.sleep(0.05)


def job_logs(server: ReanaEmulator, workflow_id: str) -> dict[str, Any]:
    reply = call(server, "GET", f"/api/workflows/{workflow_id}/logs")
    assert reply.status_code == 200
    logs = reply.json()["logs"]
    assert isinstance(logs, str), "REANA sends logs as a JSON document inside a string"
    decoded: dict[str, Any] = json.loads(logs)
    return decoded


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- artifacts --------------------------------------------------------------------------------


def test_artifacts_are_the_pinned_official_files(reana_artifacts: ReanaArtifacts) -> None:
    spec = reana_artifacts.server_spec
    api_paths = {path: item for path, item in spec["paths"].items() if path.startswith("/api/")}
    operations = [(m, p) for p, item in api_paths.items() for m in item if m != "parameters"]
    assert spec["swagger"] == "2.0"
    assert spec["info"]["version"] == "0.9.4"
    assert len(api_paths) == 28 and len(operations) == 34
    assert reana_artifacts.analysis_schema["$schema"].startswith("http://json-schema.org/draft-07")
    assert reana_artifacts.server_spec_path.parent == reana_artifacts.analysis_schema_path.parent


def test_cached_artifacts_need_no_network(
    reana_artifacts: ReanaArtifacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the cache is complete")

    monkeypatch.setattr(artifacts_module.subprocess, "run", no_pip)
    again = load_reana_artifacts()
    assert again.server_spec == reana_artifacts.server_spec


def test_tampered_extract_is_replaced_from_the_pinned_sdist(
    reana_artifacts: ReanaArtifacts, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    sdist = artifacts_module.DEFAULT_CACHE_DIR / artifacts_module.SDIST_NAME
    (cache / sdist.name).write_bytes(sdist.read_bytes())
    (cache / "reana_server.json").write_text('{"swagger": "2.0", "paths": {}}')
    loaded = load_reana_artifacts(cache)
    assert loaded.server_spec == reana_artifacts.server_spec


# --- auth, routing, request checks ------------------------------------------------------------


def test_ping_is_open_and_everything_else_needs_a_valid_token(reana_server: ReanaEmulator) -> None:
    ping = call(reana_server, "GET", "/api/ping", token=None)
    assert ping.status_code == 200 and ping.json() == {"message": "OK", "status": "200"}
    assert "api_capabilities" not in ping.json()

    missing = call(reana_server, "GET", "/api/you", token=None)
    assert (missing.status_code, missing.json()) == (401, {"message": "User not signed in"})
    wrong = call(reana_server, "GET", "/api/you", token="not-a-token")
    assert (wrong.status_code, wrong.json()) == (403, {"message": "Token not valid."})

    me = call(reana_server, "GET", "/api/you")
    assert me.status_code == 200 and me.json()["email"] == "alice@example.org"
    assert call(reana_server, "GET", "/api/info").json()["compute_backends"]["value"] == [
        "kubernetes"]

    other = reana_server.add_user("bob@example.org")
    reana_server.revoke_token(other)
    revoked = call(reana_server, "GET", "/api/workflows", token=other, params={"type": "batch"})
    assert (revoked.status_code, revoked.json()["message"]) == (403, "User access token revoked.")


def test_requests_are_routed_and_checked_against_the_spec(reana_server: ReanaEmulator) -> None:
    assert call(reana_server, "GET", "/api/nothing-here").status_code == 404
    # Only GET /api/secrets exists without the trailing slash.
    assert call(reana_server, "POST", "/api/secrets", json={}).status_code == 405
    assert call(reana_server, "PATCH", "/api/workflows").status_code == 405

    listing = call(reana_server, "GET", "/api/workflows")
    assert listing.status_code == 400 and "type" in listing.json()["message"]
    bad_page = call(reana_server, "GET", "/api/workflows", params={"type": "batch", "page": "x"})
    assert bad_page.status_code == 400

    wf = create(reana_server, "routing", serial_spec("true"))
    status_path = f"/api/workflows/{wf['workflow_id']}/status"
    assert call(reana_server, "PUT", status_path).status_code == 400
    bogus = call(reana_server, "PUT", status_path, params={"status": "pause"})
    assert bogus.status_code == 400 and "pause" in bogus.json()["message"]

    not_json = call(reana_server, "POST", "/api/workflows", params={"workflow_name": "x"},
                    data=b"{not json", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    form = call(reana_server, "POST", "/api/workflows", params={"workflow_name": "x"},
                data={"a": "b"})
    assert form.status_code == 400 and "application/json" in form.json()["message"]

    unimplemented = call(reana_server, "GET", f"/api/workflows/{wf['workflow_id']}/disk_usage")
    assert unimplemented.status_code == 501

    log_text = json.dumps(reana_server.request_log)
    assert reana_server.token not in log_text and "access_token=***" in log_text


# --- a full serial run ------------------------------------------------------------------------


def test_full_serial_workflow(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    secrets = {
        "RUCIO_USERNAME": {"value": b64(b"jdoe"), "type": "env"},
        "token.txt": {"value": b64(b"file-secret\n"), "type": "file"},
    }
    added = call(reana_server, "POST", "/api/secrets/", params={"overwrite": "false"},
                 json=secrets)
    assert (added.status_code, added.json()) == (201, {"message": "Secret(s) successfully added."})

    spec = serial_spec(
        "mkdir -p results/plots && bash code/fit.sh ${dataset} > results/fit.txt",
        "echo user=$RUCIO_USERNAME > results/plots/env.txt",
        "cat $REANA_SECRETS_DIR/token.txt > results/plots/secret.txt",
        "echo done ${nevents}",
        parameters={"dataset": "__CWLB_DS1__", "nevents": 10},
    )
    wf = create(reana_server, "cwlb-fit-0a1b2c3d", spec)
    workflow_id = wf["workflow_id"]
    assert wf["workflow_name"] == "cwlb-fit-0a1b2c3d.1"
    assert re.fullmatch(r"[0-9a-f-]{36}", workflow_id)

    script = b'echo "fitting $1"\n'
    upload = call(reana_server, "POST", f"/api/workflows/{workflow_id}/workspace",
                  params={"file_name": "code/fit.sh"}, data=script, headers=OCTET)
    assert upload.json() == {"message": "code/fit.sh has been successfully uploaded."}
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    with big.open("rb") as stream:
        upload = call(reana_server, "POST", f"/api/workflows/{workflow_id}/workspace",
                      params={"file_name": "/data/big.bin"}, data=stream, headers=OCTET)
    assert upload.status_code == 200

    created = call(reana_server, "GET", f"/api/workflows/{workflow_id}/status").json()
    assert created["status"] == "created"
    started = start(reana_server, workflow_id, input_parameters={"dataset": "user.jdoe:ds1"})
    assert started.status_code == 200
    assert started.json()["status"] == "queued" and started.json()["message"] == (
        "Workflow submitted.")

    final = wait_for(reana_server, workflow_id)
    assert final["status"] == "finished", final
    progress = final["progress"]
    assert progress["total"]["total"] == 4 and progress["finished"]["total"] == 4
    assert progress["failed"]["total"] == 0 and progress["run_finished_at"]

    logs = job_logs(reana_server, workflow_id)
    outputs = [job["logs"] for job in logs["job_logs"].values()]
    commands = [job["cmd"] for job in logs["job_logs"].values()]
    assert outputs[-1] == "done 10\n"
    assert "bash code/fit.sh user.jdoe:ds1" in commands[0]

    listing = call(reana_server, "GET", f"/api/workflows/{workflow_id}/workspace").json()
    sizes = {item["name"]: item["size"]["raw"] for item in listing["items"]}
    assert sizes["code/fit.sh"] == len(script)
    assert sizes["data/big.bin"] == 3 * 1024 * 1024
    assert sizes["results/fit.txt"] == len(b"fitting user.jdoe:ds1\n")
    only_results = call(reana_server, "GET", f"/api/workflows/{workflow_id}/workspace",
                        params={"file_name": "results"}).json()
    assert sorted(item["name"] for item in only_results["items"]) == [
        "results/fit.txt", "results/plots/env.txt", "results/plots/secret.txt"]

    single = call(reana_server, "GET", f"/api/workflows/{workflow_id}/workspace/results/fit.txt")
    assert single.headers["Content-Type"] == "application/octet-stream"
    assert single.content == b"fitting user.jdoe:ds1\n"
    streamed = call(reana_server, "GET", f"/api/workflows/{workflow_id}/workspace/data/big.bin",
                    stream=True)
    assert b"".join(streamed.iter_content(65536)) == big.read_bytes()

    directory = call(reana_server, "GET", f"/api/workflows/{workflow_id}/workspace/results")
    assert directory.headers["Content-Type"] == "application/zip"
    assert re.search(r"filename=download_cwlb-fit-0a1b2c3d\.1_results_[\d-]+\.zip",
                     directory.headers["Content-Disposition"])
    with zipfile.ZipFile(io.BytesIO(directory.content)) as archive:
        assert archive.read("results/plots/env.txt") == b"user=jdoe\n"
        assert archive.read("results/plots/secret.txt") == b"file-secret\n"
    globbed = call(reana_server, "GET",
                   f"/api/workflows/{workflow_id}/workspace/results/plots/*.txt")
    assert globbed.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(globbed.content)) as archive:
        assert sorted(archive.namelist()) == ["results/plots/env.txt", "results/plots/secret.txt"]
    missing = call(reana_server, "GET", f"/api/workflows/{workflow_id}/workspace/nope/*.root")
    assert missing.status_code == 404

    specification = call(reana_server, "GET",
                         f"/api/workflows/{workflow_id}/specification").json()
    assert specification["specification"] == spec

    (record,) = reana_server.workflows()
    assert (record["id"], record["name"], record["run_number"], record["status"]) == (
        workflow_id, "cwlb-fit-0a1b2c3d", 1, "finished")
    assert (record["workspace"] / "results" / "fit.txt").is_file()


def test_failing_command_fails_the_workflow_and_stops_the_step(
    reana_server: ReanaEmulator,
) -> None:
    wf = create(reana_server, "fails", serial_spec("echo before", "echo oops >&2; exit 3",
                                                   "touch never-here"))
    assert start(reana_server, wf["workflow_id"]).status_code == 200
    final = wait_for(reana_server, wf["workflow_id"])
    assert final["status"] == "failed"
    assert final["progress"]["failed"]["total"] == 1 and final["progress"]["finished"]["total"] == 1
    logs = list(job_logs(reana_server, wf["workflow_id"])["job_logs"].values())
    assert [job["status"] for job in logs] == ["finished", "failed"]
    assert logs[1]["logs"] == "oops\n"
    assert not (reana_server.workflows()[0]["workspace"] / "never-here").exists()


def test_operational_options_select_steps(reana_server: ReanaEmulator) -> None:
    spec = serial_spec("true")
    spec["workflow"]["specification"]["steps"] = [
        {"name": name, "environment": "img", "commands": [f"echo {name} >> order.txt"]}
        for name in ("prepare", "fit", "plot")
    ]
    wf = create(reana_server, "targets", spec)
    rejected = start(reana_server, wf["workflow_id"], operational_options={"toplevel": "x"})
    assert rejected.status_code == 400
    assert start(reana_server, wf["workflow_id"],
                 operational_options={"TARGET": "fit"}).status_code == 200
    assert wait_for(reana_server, wf["workflow_id"])["status"] == "finished"
    order = reana_server.workflows()[0]["workspace"] / "order.txt"
    assert order.read_text() == "prepare\nfit\n"


def test_voms_and_rucio_secrets_reach_the_job_and_missing_ones_fail_silently(
    reana_server: ReanaEmulator,
) -> None:
    commands = ('echo "proxy=${X509_USER_PROXY:+set} rucio=${RUCIO_CONFIG:+set}"',)
    bare = create(reana_server, "no-secrets", serial_spec(*commands, voms_proxy=True, rucio=True))
    start(reana_server, bare["workflow_id"])
    assert wait_for(reana_server, bare["workflow_id"])["status"] == "finished"
    (job,) = job_logs(reana_server, bare["workflow_id"])["job_logs"].values()
    assert "[ERROR]" in job["logs"] and "proxy= rucio=" in job["logs"]

    added = call(reana_server, "POST", "/api/secrets/", params={"overwrite": "true"}, json={
        "VOMSPROXY_FILE": {"value": b64(b"x509up_u1000"), "type": "env"},
        "x509up_u1000": {"value": b64(b"PROXY PEM"), "type": "file"},
        "RUCIO_USERNAME": {"value": b64(b"jdoe"), "type": "env"},
        "RUCIO_RUCIO_HOST": {"value": b64(b"https://127.0.0.1:1"), "type": "env"},
    })
    assert added.status_code == 201
    wired = create(reana_server, "with-secrets", serial_spec(
        *commands, "cat $X509_USER_PROXY; grep rucio_host $RUCIO_CONFIG",
        voms_proxy=True, rucio=True))
    start(reana_server, wired["workflow_id"])
    assert wait_for(reana_server, wired["workflow_id"])["status"] == "finished"
    first, second = job_logs(reana_server, wired["workflow_id"])["job_logs"].values()
    assert first["logs"] == "proxy=set rucio=set\n"
    assert second["logs"] == "PROXY PEMrucio_host = https://127.0.0.1:1\n"


# --- lifecycle quirks -------------------------------------------------------------------------


def test_second_start_is_403_and_a_queued_run_can_be_deleted(
    reana_server: ReanaEmulator,
) -> None:
    reana_server.queue_delay = 30
    wf = create(reana_server, "twice", serial_spec("true"))
    assert start(reana_server, wf["workflow_id"]).status_code == 200
    again = start(reana_server, wf["workflow_id"])
    assert (again.status_code, again.json()["message"]) == (
        403, "Workflow twice.1 is already queued and cannot be started again.")
    not_running = call(reana_server, "PUT", f"/api/workflows/{wf['workflow_id']}/status",
                       params={"status": "stop"})
    assert (not_running.status_code, not_running.json()["message"]) == (
        409, f"Workflow {wf['workflow_id']} is not running.")
    keep = call(reana_server, "PUT", f"/api/workflows/{wf['workflow_id']}/status",
                params={"status": "deleted"}, json={"all_runs": False, "workspace": False})
    assert keep.status_code == 400
    deleted = call(reana_server, "PUT", f"/api/workflows/{wf['workflow_id']}/status",
                   params={"status": "deleted"}, json={"all_runs": False, "workspace": True})
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    (record,) = reana_server.workflows()
    assert record["status"] == "deleted" and not record["workspace"].exists()


def test_stop_kills_the_job_and_delete_of_a_running_run_is_500(
    reana_server: ReanaEmulator,
) -> None:
    wf = create(reana_server, "sleepy", serial_spec("echo $BASHPID > pid; exec sleep 60", "touch late"))
    workflow_id = wf["workflow_id"]
    start(reana_server, workflow_id)
    assert wait_for(reana_server, workflow_id, ("running",) + TERMINAL)["status"] == "running"
    pid_file = reana_server.workflows()[0]["workspace"] / "pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pid = int(pid_file.read_text())

    busy = call(reana_server, "PUT", f"/api/workflows/{workflow_id}/status",
                params={"status": "deleted"}, json={"all_runs": False, "workspace": True})
    assert busy.status_code == 500
    stopped = call(reana_server, "PUT", f"/api/workflows/{workflow_id}/status",
                   params={"status": "stop"})
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    final = wait_for(reana_server, workflow_id)
    assert final["status"] == "stopped" and final["progress"]["run_stopped_at"]
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "the stopped job's process is still alive"
        time.sleep(0.02)
    assert not (reana_server.workflows()[0]["workspace"] / "late").exists()
    again = call(reana_server, "PUT", f"/api/workflows/{workflow_id}/status",
                 params={"status": "stop"})
    assert again.status_code == 409


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                           text=True, check=False).stdout
    return bool(state.strip()) and not state.strip().startswith("Z")


def test_names_run_numbers_lookups_and_listing_filters(reana_server: ReanaEmulator) -> None:
    ids = [create(reana_server, "ana", serial_spec("true"))["workflow_id"] for _ in range(3)]
    other = create(reana_server, "other-analysis", serial_spec("true"))
    assert [w["run_number"] for w in reana_server.workflows()] == [1, 2, 3, 1]

    def status_of(ref: str) -> requests.Response:
        return call(reana_server, "GET", f"/api/workflows/{ref}/status")

    assert status_of("ana").json()["id"] == ids[2]
    assert status_of("ana.2").json()["id"] == ids[1]
    assert status_of(ids[0]).json()["name"] == "ana.1"
    assert status_of("ana.9").status_code == 404

    def listed(**params: Any) -> list[str]:
        reply = call(reana_server, "GET", "/api/workflows", params={"type": "batch", **params})
        assert reply.status_code == 200, reply.text
        return [item["name"] for item in reply.json()["items"]]

    assert sorted(listed()) == ["ana.1", "ana.2", "ana.3", "other-analysis.1"]
    assert sorted(listed(workflow_id_or_name="ana")) == ["ana.1", "ana.2", "ana.3"]
    assert listed(workflow_id_or_name=other["workflow_id"]) == ["other-analysis.1"]
    assert listed(search=json.dumps({"name": ["analy"]})) == ["other-analysis.1"]
    assert listed(status="running,finished") == []
    assert len(listed(status="created", page=1, size=2)) == 2
    assert call(reana_server, "GET", "/api/workflows",
                params={"type": "batch", "search": "{oops"}).status_code == 400

    bob = reana_server.add_user("bob@example.org")
    foreign = call(reana_server, "GET", f"/api/workflows/{ids[0]}/status", token=bob)
    assert foreign.status_code == 403
    assert call(reana_server, "GET", "/api/workflows/ana/status", token=bob).status_code == 404


def test_workflow_name_rules(reana_server: ReanaEmulator) -> None:
    spec = serial_spec("true")
    dotted = call(reana_server, "POST", "/api/workflows",
                  params={"workflow_name": "mc20_13TeV.700320"}, json=spec)
    assert dotted.status_code == 403
    uuid_like = call(reana_server, "POST", "/api/workflows",
                     params={"workflow_name": "3f2b8a1e-6c3d-4e5f-9a7b-0c1d2e3f4a5b"}, json=spec)
    assert uuid_like.status_code == 400
    nameless = call(reana_server, "POST", "/api/workflows", json=spec)
    assert nameless.status_code == 400, "workflow_name is a required parameter"
    empty = call(reana_server, "POST", "/api/workflows", params={"workflow_name": ""}, json=spec)
    assert empty.json()["workflow_name"] == "workflow.1"
    from_url = call(reana_server, "POST", "/api/workflows",
                    params={"workflow_name": "x", "spec": "https://example.org/r.yaml"})
    assert from_url.status_code == 501


def test_specs_are_checked_with_the_official_schema(reana_server: ReanaEmulator) -> None:
    def submit(spec: Any) -> requests.Response:
        return call(reana_server, "POST", "/api/workflows", params={"workflow_name": "s"},
                    json=spec)

    no_workflow = submit({"version": "0.9.0", "inputs": {"parameters": {}}})
    assert no_workflow.status_code == 400 and "'workflow' is a required property" in (
        no_workflow.json()["message"])
    wrong_engine = submit({"workflow": {"type": "nextflow", "file": "main.nf"}})
    assert wrong_engine.status_code == 400
    neither = submit({"workflow": {"type": "serial"}})
    assert neither.status_code == 400
    not_an_object = submit(["workflow"])
    assert not_an_object.status_code == 400

    future = serial_spec("true")
    future["workflow"]["resources"] = {"voms_proxy": True}
    accepted = submit(future)
    assert accepted.status_code == 201
    assert any("voms_proxy" in w and "Additional properties" in w for w in reana_server.warnings)

    unpacked = submit({"workflow": {"type": "cwl", "specification": {
        "cwlVersion": "v1.2", "class": "Workflow", "inputs": [], "outputs": [], "steps": []}}})
    assert unpacked.status_code == 400 and "$graph" in unpacked.json()["message"]


def test_cwl_workflow_runs_through_cwltool(reana_server: ReanaEmulator) -> None:
    packed = {
        "cwlVersion": "v1.2",
        "$graph": [
            {"class": "CommandLineTool", "id": "#count.cwl", "baseCommand": ["wc", "-c"],
             "inputs": [{"id": "#count.cwl/src", "type": "File", "inputBinding": {}}],
             "stdout": "count.txt",
             "outputs": [{"id": "#count.cwl/out", "type": "stdout"}]},
            {"class": "Workflow", "id": "#main",
             "inputs": [{"id": "#main/src", "type": "File"}],
             "outputs": [{"id": "#main/out", "type": "File", "outputSource": "#main/count/out"}],
             "steps": [{"id": "#main/count", "run": "#count.cwl",
                        "in": [{"id": "#main/count/src", "source": "#main/src"}],
                        "out": [{"id": "#main/count/out"}]}]},
        ],
    }
    spec = {"inputs": {"parameters": {"src": {"class": "File", "location": "data/in.txt"}}},
            "workflow": {"type": "cwl", "specification": packed},
            "outputs": {"files": ["outputs/count.txt"]}}
    wf = create(reana_server, "cwl", spec)
    call(reana_server, "POST", f"/api/workflows/{wf['workflow_id']}/workspace",
         params={"file_name": "data/in.txt"}, data=b"12345", headers=OCTET)
    assert start(reana_server, wf["workflow_id"]).status_code == 200
    final = wait_for(reana_server, wf["workflow_id"], deadline_s=120)
    (job,) = job_logs(reana_server, wf["workflow_id"])["job_logs"].values()
    assert final["status"] == "finished", job["logs"]
    result = call(reana_server, "GET",
                  f"/api/workflows/{wf['workflow_id']}/workspace/outputs/count.txt")
    assert result.content.split()[0] == b"5"


# --- uploads ----------------------------------------------------------------------------------


def test_upload_rules(reana_server: ReanaEmulator) -> None:
    wf = create(reana_server, "uploads", serial_spec("true"))
    path = f"/api/workflows/{wf['workflow_id']}/workspace"
    as_json = call(reana_server, "POST", path, params={"file_name": "a.txt"}, json={"x": 1})
    assert as_json.status_code == 400 and "octet-stream" in as_json.json()["message"]
    nameless = call(reana_server, "POST", path, data=b"x", headers=OCTET)
    assert nameless.status_code == 400
    escaping = call(reana_server, "POST", path, params={"file_name": "../../etc/x"}, data=b"x",
                    headers=OCTET)
    assert escaping.status_code == 400
    for content in (b"first", b"second"):
        ok = call(reana_server, "POST", path, params={"file_name": "/deep/er/a.txt"},
                  data=content, headers=OCTET)
        assert ok.status_code == 200
    workspace = reana_server.workflows()[0]["workspace"]
    assert (workspace / "deep" / "er" / "a.txt").read_bytes() == b"second"
    chunked = call(reana_server, "POST", path, params={"file_name": "gen.bin"},
                   data=iter([b"ab", b"cd"]), headers=OCTET)
    assert chunked.status_code == 200 and (workspace / "gen.bin").read_bytes() == b"abcd"
    escaping_download = call(reana_server, "GET", f"{path}/..%2F..%2Fetc%2Fpasswd")
    assert escaping_download.status_code in (400, 404)


def test_empty_upload_stores_an_empty_file(reana_server: ReanaEmulator) -> None:
    # reana-server hands the body stream to RWC, which writes it out as it is: an empty
    # body gives an empty file. The spec's `required: true` on the body is not enforced.
    wf = create(reana_server, "empty", serial_spec("true"))
    path = f"/api/workflows/{wf['workflow_id']}/workspace"
    empty = call(reana_server, "POST", path, params={"file_name": "data/empty.txt"}, data=b"",
                 headers=OCTET)
    assert (empty.status_code, empty.json()) == (
        200, {"message": "data/empty.txt has been successfully uploaded."})
    workspace = reana_server.workflows()[0]["workspace"]
    assert (workspace / "data" / "empty.txt").read_bytes() == b""
    listing = call(reana_server, "GET", path, params={"file_name": "data"}).json()
    assert [(i["name"], i["size"]["raw"]) for i in listing["items"]] == [("data/empty.txt", 0)]
    downloaded = call(reana_server, "GET", f"{path}/data/empty.txt")
    assert (downloaded.status_code, downloaded.content) == (200, b"")
    # A required JSON body is still required.
    bodiless = call(reana_server, "POST", "/api/secrets/", params={"overwrite": "false"})
    assert bodiless.status_code == 400 and "Missing request body" in bodiless.json()["message"]


def test_hostile_listing_names_unsafe_paths_on_request(reana_server: ReanaEmulator) -> None:
    wf = create(reana_server, "hostile", serial_spec("true"))
    path = f"/api/workflows/{wf['workflow_id']}/workspace"
    call(reana_server, "POST", path, params={"file_name": "results/ok.txt"}, data=b"ok",
         headers=OCTET)
    evil = ["results/../../../escape.txt", "/etc/passwd"]

    reana_server.serve_hostile_listing(evil)
    listing = call(reana_server, "GET", path, params={"file_name": "results"}).json()
    assert [i["name"] for i in listing["items"]] == ["results/ok.txt", *evil]
    assert listing["total"] == 3
    fetched = call(reana_server, "GET", f"{path}/results/..%2F..%2F..%2Fescape.txt")
    assert fetched.status_code in (400, 404)

    reana_server.serve_hostile_listing([])
    listing = call(reana_server, "GET", path, params={"file_name": "results"}).json()
    assert [i["name"] for i in listing["items"]] == ["results/ok.txt"]


def test_cut_fault_breaks_a_download_half_way(reana_server: ReanaEmulator) -> None:
    wf = create(reana_server, "cut", serial_spec("true"))
    path = f"/api/workflows/{wf['workflow_id']}/workspace"
    payload = os.urandom(600_000)
    call(reana_server, "POST", path, params={"file_name": "results/big.bin"}, data=payload,
         headers=OCTET)

    reana_server.inject_faults(["cut"], method="GET", path="/workspace/results/big.bin$")
    broken = call(reana_server, "GET", f"{path}/results/big.bin", stream=True)
    assert broken.status_code == 200 and broken.headers["Content-Length"] == str(len(payload))
    received = bytearray()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in broken.iter_content(65536):
            received += chunk
    assert 0 < len(received) < len(payload) and payload.startswith(bytes(received))
    assert reana_server.fault_log[-1]["kind"] == "cut"

    whole = call(reana_server, "GET", f"{path}/results/big.bin")
    assert whole.content == payload


# --- secrets ----------------------------------------------------------------------------------


def test_secret_quirks(reana_server: ReanaEmulator) -> None:
    one = {"VONAME": {"value": b64(b"atlas"), "type": "env"}}
    missing = call(reana_server, "POST", "/api/secrets/", json=one)
    assert missing.status_code == 500
    pythonic = call(reana_server, "POST", "/api/secrets/", params={"overwrite": True}, json=one)
    assert (pythonic.status_code, pythonic.json()) == (403, {"message": "Token is not valid."})
    assert reana_server.secrets() == {}

    assert call(reana_server, "POST", "/api/secrets/", params={"overwrite": "false"},
                json=one).status_code == 201
    both = {**one, "CERN_USER": {"value": b64(b"jdoe"), "type": "env"}}
    clash = call(reana_server, "POST", "/api/secrets/", params={"overwrite": "false"}, json=both)
    assert clash.status_code == 409 and "VONAME already exists" in clash.json()["message"]
    assert set(reana_server.secrets()) == {"VONAME"}, "a refused batch adds nothing"
    replaced = {"VONAME": {"value": b64(b"cms"), "type": "env"},
                "userkey.pem": {"value": b64(b"\x00KEY"), "type": "file"}}
    assert call(reana_server, "POST", "/api/secrets/", params={"overwrite": "true"},
                json=replaced).status_code == 201
    assert reana_server.secrets() == {"VONAME": {"type": "env", "value": b"cms"},
                                      "userkey.pem": {"type": "file", "value": b"\x00KEY"}}

    listing = call(reana_server, "GET", "/api/secrets").json()
    assert listing == [{"name": "VONAME", "type": "env"}, {"name": "userkey.pem", "type": "file"}]

    absent = call(reana_server, "DELETE", "/api/secrets/", json=["VONAME", "NOPE"])
    assert (absent.status_code, absent.json()) == (404, ["NOPE"])
    removed = call(reana_server, "DELETE", "/api/secrets/", json=["VONAME"])
    assert (removed.status_code, removed.json()) == (200, ["VONAME"])
    assert set(reana_server.secrets()) == {"userkey.pem"}
    bad_type = call(reana_server, "POST", "/api/secrets/", params={"overwrite": "true"},
                    json={"X": {"value": b64(b"x"), "type": "kerberos"}})
    assert bad_type.status_code == 400


# --- rate limits and faults -------------------------------------------------------------------


def test_rate_limit_and_scripted_429_burst(reana_server: ReanaEmulator) -> None:
    reana_server.inject_faults(["429", "429", "503"], method="GET", path=r"^/api/you$")
    assert call(reana_server, "GET", "/api/ping", token=None).status_code == 200
    codes = [call(reana_server, "GET", "/api/you").status_code for _ in range(4)]
    assert codes == [429, 429, 503, 200]

    reana_server.set_rate_limit(5, per_seconds=600)
    codes = [call(reana_server, "GET", "/api/ping", token=None).status_code for _ in range(7)]
    assert codes == [200] * 5 + [429, 429]
    assert call(reana_server, "GET", "/api/ping", token=None).json()["message"].startswith(
        "Too many requests")
    reana_server.set_rate_limit(None)
    assert call(reana_server, "GET", "/api/ping", token=None).status_code == 200


def _outcomes(server: ReanaEmulator, count: int) -> list[str]:
    seen = []
    for _ in range(count):
        try:
            reply = call(server, "GET", "/api/you", timeout=0.3)
            seen.append(str(reply.status_code))
        except requests.exceptions.ReadTimeout:
            seen.append("timeout")
        except requests.exceptions.ConnectionError:
            seen.append("reset")
    return seen


def test_seeded_faults_repeat_exactly(reana_server: ReanaEmulator) -> None:
    reana_server.fault_timeout_s = 1.0
    reana_server.set_faults(0.5, seed=11)
    first = _outcomes(reana_server, 24)
    first_log = [entry["kind"] for entry in reana_server.fault_log]
    reana_server.set_faults(0.5, seed=11)
    second = _outcomes(reana_server, 24)
    assert first == second
    assert [entry["kind"] for entry in reana_server.fault_log[len(first_log):]] == first_log
    assert first.count("200") < 24 and set(first) - {"200"}, "the seed must inject some faults"
    assert [kind for kind in first if kind != "200"] == first_log
    reana_server.set_faults(0.5, seed=12)
    assert _outcomes(reana_server, 24) != first
    reana_server.set_faults(0.0, seed=0)
    assert _outcomes(reana_server, 5) == ["200"] * 5
    with pytest.raises(ValueError, match="unknown fault kinds"):
        reana_server.set_faults(0.1, seed=1, kinds=("418",))


def test_lost_reply_still_creates_the_workflow(reana_server: ReanaEmulator) -> None:
    reana_server.inject_faults(["503"], method="POST", path=r"^/api/workflows$")
    refused = call(reana_server, "POST", "/api/workflows", params={"workflow_name": "lost"},
                   json=serial_spec("true"))
    assert refused.status_code == 503 and reana_server.workflows() == []

    reana_server.inject_faults(["reply_lost"], method="POST", path=r"^/api/workflows$")
    with pytest.raises(requests.exceptions.ConnectionError):
        call(reana_server, "POST", "/api/workflows", params={"workflow_name": "lost"},
             json=serial_spec("true"))
    assert [(w["name"], w["status"]) for w in reana_server.workflows()] == [("lost", "created")]
    found = call(reana_server, "GET", "/api/workflows",
                 params={"type": "batch", "workflow_id_or_name": "lost"}).json()
    assert [(item["name"], item["status"]) for item in found["items"]] == [("lost.1", "created")]
    assert reana_server.request_log[-2]["fault"] == "reply_lost"


# --- 0.95 variant and self-checks -------------------------------------------------------------


def test_095_variant_advertises_bundles_and_refuses_the_rest(
    reana_server_095: ReanaEmulator,
) -> None:
    ping = call(reana_server_095, "GET", "/api/ping", token=None).json()
    assert ping["api_capabilities"] == ["workflow-specification-bundles-v1"]
    refused = call(reana_server_095, "GET", "/api/you")
    assert refused.status_code == 501 and "0.95" in refused.json()["message"]


def test_responses_that_break_the_spec_are_recorded(reana_artifacts: ReanaArtifacts) -> None:
    strict = json.loads(json.dumps(reana_artifacts.server_spec))
    ping_schema = strict["paths"]["/api/ping"]["get"]["responses"]["200"]["schema"]
    ping_schema["properties"]["status"] = {"type": "integer"}
    with ReanaEmulator(strict, reana_artifacts.analysis_schema) as emulator:
        assert requests.get(emulator.url + "/api/ping", timeout=10).status_code == 200
        assert len(emulator.violations) == 1 and "status" in emulator.violations[0]
