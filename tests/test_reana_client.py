"""ReanaClient against the REANA 0.9 emulator: the flow, the quirks, retries and redaction."""

from __future__ import annotations

import base64
import json
import logging
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from cwlbridge.errors import UsageError
from cwlbridge.reana import spec
from cwlbridge.reana.client import (
    ReanaAlreadyStartedError,
    ReanaAuthError,
    ReanaClient,
    ReanaConflictError,
    ReanaDownloadError,
    ReanaError,
    ReanaNotFoundError,
    ReanaProtocolError,
    ReanaRejectedError,
    ReanaServerError,
    ReanaUnavailableError,
    WorkflowStatus,
    safe_workflow_name,
)
from tests.servers.reana_emulator import ReanaEmulator

TEMPLATE = textwrap.dedent(
    """\
    version: 0.9.0
    inputs:
      files: [code/fit.sh]
      parameters:
        input_dataset: "__CWLB_DS1__"
        output_dir: results
    workflow:
      type: serial
      specification:
        steps:
          - name: fit
            environment: docker.io/library/bash:5
            commands:
              - mkdir -p ${output_dir}
              - bash code/fit.sh > ${output_dir}/fit.txt
              - printf '%s' "${input_dataset}" > ${output_dir}/dataset.txt
    outputs:
      directories: [results]
    """
)
FIT_SCRIPT = "echo fitted\nhead -c 300000 /dev/zero | tr '\\0' x\n"
DATASET = "mc20_13TeV:mc20_13TeV.700320.Sh_2211.DAOD_PHYS.e8351_p5855"


def make_client(server: ReanaEmulator, token: str | None = None, **kwargs: Any) -> ReanaClient:
    options: dict[str, Any] = {
        "connect_timeout": 2,
        "read_timeout": 2,
        "max_attempts": 8,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
    }
    options.update(kwargs)
    return ReanaClient(server.url, token or server.token, **options)


def analysis(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """A filled-in serial spec built with the spec module, and its directory."""
    base = tmp_path / "analysis"
    (base / "code").mkdir(parents=True)
    (base / "code" / "fit.sh").write_text(FIT_SCRIPT)
    doc = spec.loads_spec(TEMPLATE)
    spec.set_value(doc, "inputs.parameters.input_dataset", DATASET)
    assert spec.check_spec(doc, "reana.yaml", base) == []
    return spec.build_submission(doc, base), base


def wait_terminal(client: ReanaClient, wf_id: str, deadline_s: float = 60) -> WorkflowStatus:
    end = time.monotonic() + deadline_s
    while True:
        current = client.status(wf_id)
        if current.is_terminal:
            return current
        assert time.monotonic() < end, f"workflow still {current.status} after {deadline_s} s"
        time.sleep(0.05)


def count_requests(server: ReanaEmulator, method: str, fragment: str) -> int:
    return sum(1 for entry in server.request_log if entry["method"] == method and fragment in entry["path"])


def test_full_serial_flow(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    body, base = analysis(tmp_path)
    client = make_client(reana_server)
    assert client.detect_protocol() == "0.9"
    me = client.you()
    assert me.email == "alice@example.org" and me.server_version == "0.9.4"

    created = client.create_workflow("cwlb-fit-1234abcd", body)
    assert created.name == "cwlb-fit-1234abcd.1" and not created.adopted
    client.upload_file(created.id, "code/fit.sh", base / "code" / "fit.sh")
    started = client.start(created.id)
    assert started.status == "queued" and not started.already_started

    final = wait_terminal(client, created.id)
    assert final.status == "finished" and final.succeeded
    assert final.total_jobs == 3 and final.finished_jobs == 3

    logs = client.logs(created.id)
    assert {job["job_name"] for job in logs["job_logs"].values()} == {"fit"}
    assert "started" in logs["workflow_logs"]

    listing = {f.name: f for f in client.list_workspace(created.id, "results")}
    assert set(listing) == {"results/fit.txt", "results/dataset.txt"}
    out = tmp_path / "out"
    for name, entry in listing.items():
        size = client.download_file(created.id, name, out / name, entry.size)
        assert size == entry.size == (out / name).stat().st_size
    assert (out / "results" / "dataset.txt").read_text() == DATASET
    assert (out / "results" / "fit.txt").read_text().startswith("fitted\nxxx")
    assert not list(out.rglob("*.part"))

    assert client.stop(created.id) is False  # 409 "not running" counts as done
    client.delete(created.id)
    assert client.status(created.id).status == "deleted"
    # Listing always says type=batch, which REANA requires.
    lists = [
        e["path"] for e in reana_server.request_log if e["method"] == "GET" and e["path"].startswith("/api/workflows?")
    ]
    assert lists and all("type=batch" in path for path in lists)


def test_names_runs_and_paging(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    body, _ = analysis(tmp_path)
    client = make_client(reana_server)
    client.page_size = 2
    first = client.create_workflow("fit", body)
    second = client.create_workflow("fit", body)
    client.create_workflow("fitter", body)
    assert (first.name, second.name) == ("fit.1", "fit.2")
    runs = client.find_workflows("fit")
    assert {run.id for run in runs} == {first.id, second.id}
    assert {run.run_number for run in runs} == {"1", "2"}
    assert len(client.list_workflows()) == 3
    assert [r.name for r in client.list_workflows(name_contains="fitter")] == ["fitter.1"]
    assert len(client.list_workflows(status=["created"])) == 3

    for index in range(5):
        source = tmp_path / f"f{index}.txt"
        source.write_text("x" * (index + 1))
        client.upload_file(first.id, f"data/f{index}.txt", source)
    files = client.list_workspace(first.id, "data")
    assert sorted((f.name, f.size) for f in files) == [(f"data/f{i}.txt", i + 1) for i in range(5)]

    logged = len(reana_server.request_log)
    with pytest.raises(UsageError, match="not valid for REANA"):
        client.create_workflow("mc20_13TeV.700320", body)
    assert len(reana_server.request_log) == logged, "a bad name is refused before any call"
    name = safe_workflow_name("mc20_13TeV.700320.Sh:DAOD")
    assert "." not in name and ":" not in name
    assert client.create_workflow(name, body).name == f"{name}.1"


def test_second_start_and_state_errors(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    body, base = analysis(tmp_path)
    body["workflow"]["specification"]["steps"][0]["commands"] = ["sleep 30"]
    client = make_client(reana_server)
    created = client.create_workflow("busy", body)
    client.upload_file(created.id, "code/fit.sh", base / "code" / "fit.sh")
    client.start(created.id)
    with pytest.raises(ReanaAlreadyStartedError) as info:
        client.start(created.id)
    assert info.value.status == 403 and info.value.run_status in ("queued", "running")
    end = time.monotonic() + 20
    while client.status(created.id).status != "running":
        assert time.monotonic() < end
        time.sleep(0.05)
    with pytest.raises(ReanaServerError) as deleting:
        client.delete(created.id)
    assert deleting.value.status == 500 and "stop it first" in str(deleting.value)
    assert client.stop(created.id) is True
    assert client.status(created.id).status == "stopped"
    with pytest.raises(ReanaNotFoundError):
        client.status("no-such-workflow")
    with pytest.raises(ReanaRejectedError) as bad:
        client.create_workflow("bad", {"workflow": {"type": "nextflow", "file": "x"}})
    assert bad.value.status == 400


def test_secrets_quirks(reana_server: ReanaEmulator) -> None:
    client = make_client(reana_server)
    cert = b"-----BEGIN CERTIFICATE-----\nMIIB\x00\xff\n"
    client.add_secrets({"usercert.pem": ("file", cert), "VONAME": ("env", b"atlas")})
    stored = reana_server.secrets()
    assert stored["usercert.pem"] == {"type": "file", "value": cert}
    assert stored["VONAME"] == {"type": "env", "value": b"atlas"}
    posts = [e["path"] for e in reana_server.request_log if e["path"].startswith("/api/secrets/?")]
    assert posts and all("overwrite=true" in p for p in posts)

    client.add_secrets({"VONAME": ("env", b"cms")}, overwrite=True)
    assert reana_server.secrets()["VONAME"]["value"] == b"cms"
    with pytest.raises(ReanaConflictError) as conflict:
        client.add_secrets({"VONAME": ("env", b"lhcb")}, overwrite=False)
    assert conflict.value.status == 409 and "already exists" in str(conflict.value)
    assert reana_server.secrets()["VONAME"]["value"] == b"cms"

    assert {(s.name, s.type) for s in client.list_secrets()} == {
        ("usercert.pem", "file"),
        ("VONAME", "env"),
    }
    # 404 with a bare list: the missing names come back and the others are still deleted.
    assert client.delete_secrets(["VONAME", "NOT_THERE"]) == ["NOT_THERE"]
    assert set(reana_server.secrets()) == {"usercert.pem"}
    assert client.delete_secrets(["usercert.pem"]) == []
    assert reana_server.secrets() == {}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_create_under_seeded_faults_makes_exactly_one(reana_server: ReanaEmulator, tmp_path: Path, seed: int) -> None:
    body, _ = analysis(tmp_path)
    reana_server.fault_timeout_s = 0.5
    client = make_client(reana_server, read_timeout=0.3)
    reana_server.set_faults(0.3, seed, kinds=("500", "502", "503", "504", "429", "timeout", "reset", "reply_lost"))
    created = [client.create_workflow(f"seeded-{n}", body) for n in range(4)]
    reana_server.set_faults(0.0, 0)
    for n, result in enumerate(created):
        runs = [w for w in reana_server.workflows() if w["name"] == f"seeded-{n}"]
        assert [(w["id"], w["full_name"]) for w in runs] == [(result.id, f"seeded-{n}.1")]
    assert reana_server.fault_log, "the seed must inject faults for this test to mean anything"


def test_lost_create_reply_is_adopted_not_duplicated(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    body, _ = analysis(tmp_path)
    client = make_client(reana_server)
    earlier = client.create_workflow("twice", body)  # an older run of the same name
    reana_server.inject_faults(["reply_lost"], method="POST", path=r"^/api/workflows$")
    adopted = client.create_workflow("twice", body)
    assert adopted.adopted and adopted.name == "twice.2" and adopted.id != earlier.id
    assert sorted(w["full_name"] for w in reana_server.workflows()) == ["twice.1", "twice.2"]

    reana_server.inject_faults(["503", "reset"], method="POST", path=r"^/api/workflows$")
    third = client.create_workflow("twice", body)
    assert not third.adopted and third.name == "twice.3"
    assert len(reana_server.workflows()) == 3


def test_lost_start_reply_counts_as_started(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    body, base = analysis(tmp_path)
    client = make_client(reana_server)
    created = client.create_workflow("start-lost", body)
    reana_server.inject_faults(["reset"], method="POST", path="/workspace$")
    client.upload_file(created.id, "code/fit.sh", base / "code" / "fit.sh")
    workspace = Path(reana_server.workflows()[0]["workspace"])
    assert (workspace / "code" / "fit.sh").read_text() == FIT_SCRIPT  # reopened on retry
    reana_server.inject_faults(["reply_lost"], method="POST", path="/start$")
    result = client.start(created.id)
    assert result.already_started and result.status in ("queued", "pending", "running", "finished")
    assert wait_terminal(client, created.id).status == "finished"


def test_full_flow_under_seeded_faults(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    body, base = analysis(tmp_path)
    reana_server.fault_timeout_s = 0.5
    client = make_client(reana_server, read_timeout=0.3)
    reana_server.set_faults(0.25, 42, kinds=("500", "502", "503", "504", "429", "reset"))
    client.add_secrets({"VONAME": ("env", b"atlas")})
    created = client.create_workflow("faulty", body)
    client.upload_file(created.id, "code/fit.sh", base / "code" / "fit.sh")
    client.start(created.id)
    assert wait_terminal(client, created.id).status == "finished"
    files = client.list_workspace(created.id, "results")
    for entry in files:
        client.download_file(created.id, entry.name, tmp_path / "out" / entry.name, entry.size)
    reana_server.set_faults(0.0, 0)
    assert (tmp_path / "out" / "results" / "dataset.txt").read_text() == DATASET
    assert [w["full_name"] for w in reana_server.workflows()] == ["faulty.1"]
    assert reana_server.secrets()["VONAME"]["value"] == b"atlas"
    assert len(reana_server.fault_log) >= 3


def test_retry_limits(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    body, _ = analysis(tmp_path)
    client = make_client(reana_server, max_attempts=4)
    created = client.create_workflow("limits", body)

    reana_server.inject_faults(["429", "429", "503"], method="GET", path="/status$")
    assert client.status(created.id).status == "created"
    assert count_requests(reana_server, "GET", "/status") == 4

    reana_server.inject_faults(["503"] * 4, method="GET", path="/status$")
    with pytest.raises(ReanaUnavailableError) as unavailable:
        client.status(created.id)
    assert unavailable.value.status == 503

    reana_server.inject_faults(["500", "500"], method="GET", path="/logs$")
    assert client.logs(created.id)["job_logs"] == {}
    reana_server.inject_faults(["500", "500", "500"], method="GET", path="/logs$")
    before = count_requests(reana_server, "GET", "/logs")
    with pytest.raises(ReanaServerError) as server_error:
        client.logs(created.id)
    assert server_error.value.status == 500
    assert count_requests(reana_server, "GET", "/logs") - before == 3  # 500 retried twice only


def test_download_refusals(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    body, base = analysis(tmp_path)
    client = make_client(reana_server)
    created = client.create_workflow("dl", body)
    client.upload_file(created.id, "code/fit.sh", base / "code" / "fit.sh")
    client.upload_file(created.id, "code/other.sh", base / "code" / "fit.sh")
    (entry,) = client.list_workspace(created.id, "code/fit.sh")
    dest = tmp_path / "fit.sh"

    with pytest.raises(ReanaDownloadError) as mismatch:
        client.download_file(created.id, "code/fit.sh", dest, entry.size + 1)
    assert "listing says" in str(mismatch.value)
    assert not dest.exists() and not (tmp_path / "fit.sh.part").exists()

    logged = len(reana_server.request_log)
    for bad in ("../etc/passwd", "/etc/passwd", "code/../../x", "code/*.sh", ""):
        with pytest.raises(ReanaDownloadError):
            client.download_file(created.id, bad, dest, None)
    assert len(reana_server.request_log) == logged, "refused paths must never be requested"

    with pytest.raises(ReanaDownloadError) as zipped:
        client.download_file(created.id, "code", tmp_path / "code", None)
    assert "zip" in str(zipped.value)
    assert not (tmp_path / "code").exists()
    with pytest.raises(ReanaNotFoundError):
        client.download_file(created.id, "code/absent.sh", dest, None)

    assert client.download_file(created.id, "code/fit.sh", dest, entry.size) == entry.size
    assert dest.read_text() == FIT_SCRIPT


def test_token_never_leaks(reana_server: ReanaEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    body, _ = analysis(tmp_path)
    token = reana_server.token
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        client = make_client(reana_server, max_attempts=3)
        texts.append(repr(client))
        reana_server.inject_faults(["503", "reset"], method="GET", path="/api/you")
        client.you()
        created = client.create_workflow("redact", body)
        reana_server.inject_faults(["503"] * 3, method="GET", path="/status$")
        with pytest.raises(ReanaError) as unavailable:
            client.status(created.id)
        texts += [str(unavailable.value), repr(unavailable.value.args)]
        assert "access_token=***" in str(unavailable.value)

        reana_server.revoke_token(token)
        with pytest.raises(ReanaAuthError) as revoked:
            client.you()
        texts.append(str(revoked.value))
        assert revoked.value.status == 403 and "revoked" in str(revoked.value)

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        offline = ReanaClient(f"http://127.0.0.1:{closed_port}", token, max_attempts=2, backoff_initial=0.01)
        with pytest.raises(ReanaUnavailableError) as refused:
            offline.status("abc")
        texts += [str(refused.value), repr(offline)]
        assert refused.value.__cause__ is None and refused.value.__context__ is None

    log_text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "access_token" in log_text, "the test must see URLs in the log to mean anything"
    assert token not in log_text
    for text in texts:
        assert token not in text


def test_bad_token_is_an_auth_error(reana_server: ReanaEmulator) -> None:
    client = make_client(reana_server, token="not-a-real-token-1234567")
    with pytest.raises(ReanaAuthError) as info:
        client.you()
    assert info.value.status == 403 and "Token not valid" in str(info.value)
    assert "not-a-real-token-1234567" not in str(info.value)


def test_095_server_is_refused_clearly(reana_server_095: ReanaEmulator) -> None:
    client = make_client(reana_server_095)
    with pytest.raises(ReanaProtocolError) as info:
        client.detect_protocol()
    message = str(info.value)
    assert "0.95 bundle protocol" in message and "does not yet support" in message


def test_cwl_spec_runs(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    base = tmp_path / "cwl"
    (base / "code").mkdir(parents=True)
    (base / "code" / "fit.sh").write_text('printf "fit %s" "$1"\n')
    (base / "wf.cwl").write_text(
        textwrap.dedent(
            """\
            cwlVersion: v1.2
            class: Workflow
            inputs: {ds: string, script: File}
            outputs:
              out: {type: File, outputSource: fit/out}
            steps:
              fit:
                run: fit.cwl
                in: {ds: ds, script: script}
                out: [out]
            """
        )
    )
    (base / "fit.cwl").write_text(
        textwrap.dedent(
            """\
            cwlVersion: v1.2
            class: CommandLineTool
            baseCommand: bash
            inputs:
              script: {type: File, inputBinding: {position: 1}}
              ds: {type: string, inputBinding: {position: 2}}
            outputs:
              out: {type: stdout}
            stdout: fit.txt
            """
        )
    )
    (base / "job.yml").write_text("ds: VAR_DS\nscript: {class: File, location: code/fit.sh}\n")
    doc = spec.loads_spec(
        "inputs:\n  files: [code/fit.sh]\n  parameters: {input: job.yml}\nworkflow: {type: cwl, file: wf.cwl}\n"
    )
    assert spec.check_spec(doc, "reana.yaml", base, tokens=["VAR_DS"]) == []
    body = spec.build_submission(doc, base, replacements={"VAR_DS": DATASET})
    client = make_client(reana_server)
    created = client.create_workflow("cwl-fit", body)
    client.upload_file(created.id, "code/fit.sh", base / "code" / "fit.sh")
    client.start(created.id)
    assert wait_terminal(client, created.id, deadline_s=120).status == "finished"
    stored = client.specification(created.id)
    assert stored["specification"]["inputs"]["parameters"]["ds"] == DATASET
    outputs = client.list_workspace(created.id, "outputs")
    assert [f.name for f in outputs] == ["outputs/fit.txt"]
    dest = tmp_path / "fit.txt"
    client.download_file(created.id, "outputs/fit.txt", dest, outputs[0].size)
    assert dest.read_text() == f"fit {DATASET}"
    assert json.dumps(body)  # plain JSON, as sent


def test_secret_values_are_sent_base64(reana_server: ReanaEmulator) -> None:
    client = make_client(reana_server)
    passphrase = "pass: with # odd chars"
    encoded_once = base64.b64encode(passphrase.encode())
    client.add_secrets({"VOMSPROXY_PASS": ("env", encoded_once)})
    # The server stores what REANA's init container later base64-decodes.
    stored = reana_server.secrets()["VOMSPROXY_PASS"]["value"]
    assert base64.b64decode(stored).decode() == passphrase


def test_client_from_environment(reana_server: ReanaEmulator, tmp_path: Path) -> None:
    env = {"REANA_SERVER_URL": reana_server.url + "/", "REANA_ACCESS_TOKEN": reana_server.token}
    client = ReanaClient.from_env(env, max_attempts=2)
    assert client.server_url == reana_server.url
    assert client.you().email == "alice@example.org"
    assert reana_server.token not in repr(client)
    with pytest.raises(UsageError, match="REANA_ACCESS_TOKEN is not set"):
        ReanaClient.from_env({"REANA_SERVER_URL": reana_server.url})
    with pytest.raises(UsageError, match="CA bundle"):
        ReanaClient.from_env({**env, "REANA_CA_BUNDLE": str(tmp_path / "absent.pem")})
    with pytest.raises(UsageError, match="must start with https://"):
        ReanaClient("reana.cern.ch", reana_server.token)
