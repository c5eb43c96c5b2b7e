"""`cwlbridge reana submit|job` against the REANA 0.9 emulator and a real Rucio server."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from cwlbridge.data.rucio import DidName, download, rucio_client
from cwlbridge.data.tarball import file_checksums, write_tar
from cwlbridge.reana.client import ReanaClient
from cwlbridge.reana.submitter import (
    EXIT_DEADLINE,
    EXIT_OUTPUTS,
    EXIT_SECRETS,
    EXIT_WORKFLOW_FAILED,
    SubmitOptions,
    submit,
)
from tests.cli_run import run_cli
from tests.servers.reana_emulator import ReanaEmulator
from tests.servers.rucio_server import RucioServer

REPO = Path(__file__).resolve().parents[1]

# The script_reana.sh style: a dataset name goes where VAR_INPUT stands.
TEMPLATE = textwrap.dedent(
    """\
    version: 0.9.0
    inputs:
      files: [code/analyse.sh]
      directories: [data]
      parameters:
        did: "VAR_INPUT"
    workflow:
      type: serial
      specification:
        steps:
          - name: analyse
            environment: docker.io/library/bash:5
            voms_proxy: true
            commands:
              - mkdir -p results
              - bash code/analyse.sh "${did}" results
    outputs:
      files: [summary.txt]
      directories: [results]
    """
)
# Checks inside the job that the secrets arrived, without ever printing them.
ANALYSE = textwrap.dedent(
    """\
    set -e
    test -f "$REANA_SECRETS_DIR/usercert.pem"
    test -f "$REANA_SECRETS_DIR/userkey.pem"
    test "$VONAME" = atlas
    test -n "$VOMSPROXY_PASS"
    printf '%s\\n' "$1" > "$2/dataset.txt"
    ls data > "$2/inputs.txt"
    head -c 300000 /dev/urandom > "$2/histograms.bin"
    echo "analysed $1" > summary.txt
    """
)
PASSPHRASE = "correct-horse-" + uuid.uuid4().hex[:12]


def _cert(kind: str) -> bytes:
    body = "\n".join(base64.b64encode(os.urandom(48)).decode() for _ in range(6))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n".encode()


def _project(tmp_path: Path, template: str = TEMPLATE, script: str = ANALYSE) -> dict[str, Path]:
    project = tmp_path / "project"
    (project / "code").mkdir(parents=True)
    (project / "data" / "sub").mkdir(parents=True)
    (project / "reana.yaml").write_text(template)
    (project / "code" / "analyse.sh").write_text(script)
    (project / "data" / "keep.txt").write_text("kept\n")
    (project / "data" / "empty.txt").write_bytes(b"")
    (project / "data" / "sub" / "also.txt").write_text("kept too\n")
    (project / "data" / "skip.log").write_text("ignored by .reanaignore\n")
    (project / "data" / "link.txt").symlink_to(project / "data" / "keep.txt")
    (project / ".reanaignore").write_text("*.log\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "usercert.pem").write_bytes(_cert("CERTIFICATE"))
    (secrets / "userkey.pem").write_bytes(_cert("ENCRYPTED PRIVATE KEY"))
    work = tmp_path / "work"
    work.mkdir()
    return {"project": project, "secrets": secrets, "work": work}


def _reana_env(monkeypatch: pytest.MonkeyPatch, server: ReanaEmulator) -> None:
    monkeypatch.setenv("REANA_SERVER_URL", server.url)
    monkeypatch.setenv("REANA_ACCESS_TOKEN", server.token)
    monkeypatch.setenv("VOMSPROXY_PASS", PASSPHRASE)
    monkeypatch.delenv("REANA_CA_BUNDLE", raising=False)


def _submit_args(paths: dict[str, Path], did: str, *extra: str) -> list[str]:
    return [
        "reana", "submit", str(paths["project"] / "reana.yaml"),
        "--var", f"VAR_INPUT={did}",
        "--secret-file", str(paths["secrets"] / "usercert.pem"),
        "--secret-file", str(paths["secrets"] / "userkey.pem"),
        "--secret-env", "VOMSPROXY_PASS",
        "--secret-env", "VONAME=atlas",
        "--wipe-secret-files",
        "--workdir", str(paths["work"]),
        "--poll-initial", "0.05", "--poll-max", "0.2",
        *extra,
    ]  # fmt: skip


def _forbidden(server: ReanaEmulator, secret_dir: dict[str, bytes]) -> list[str]:
    """Strings that must never be printed: token, passphrase (plain and base64), file lines."""
    found = [server.token, PASSPHRASE, base64.b64encode(PASSPHRASE.encode()).decode()]
    for content in secret_dir.values():
        found.extend(line for line in content.decode().splitlines() if "-----" not in line)
    return found


def _assert_clean(text: str, forbidden: list[str]) -> None:
    for value in forbidden:
        assert value not in text, "a secret leaked into the output"


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_script_reana_scenario_end_to_end(
    reana_server: ReanaEmulator,
    rucio_env: RucioServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    paths = _project(tmp_path)
    _reana_env(monkeypatch, reana_server)
    secret_bytes = {p.name: p.read_bytes() for p in paths["secrets"].iterdir()}
    did = "mc20_13TeV:mc20_13TeV.700320.Sh_2211.DAOD_PHYS.e8351_p5855"
    dataset = f"{rucio_env.scope}:{rucio_env.scope}.reana.{uuid.uuid4().hex[:10]}"

    result = run_cli(
        *_submit_args(paths, did, "--tar", "output_from_reana.tar", "--rucio-dataset", dataset, "--rse", rucio_env.rse)
    )

    assert result.code == 0, result.text
    # Exactly one workflow, named without dots, finished.
    [wf] = reana_server.workflows()
    assert wf["status"] == "finished" and "." not in wf["name"] and wf["name"].startswith("cwlb-")
    assert wf["specification"]["inputs"]["parameters"]["did"] == did
    # Secrets: files uploaded by basename, then wiped locally; VONAME and VOMSPROXY_PASS forwarded.
    stored = reana_server.secrets()
    assert stored["usercert.pem"] == {"type": "file", "value": secret_bytes["usercert.pem"]}
    assert stored["userkey.pem"] == {"type": "file", "value": secret_bytes["userkey.pem"]}
    assert stored["VONAME"] == {"type": "env", "value": b"atlas"}
    assert stored["VOMSPROXY_PASS"] == {"type": "env", "value": base64.b64encode(PASSPHRASE.encode())}
    assert list(paths["secrets"].iterdir()) == []
    # Inputs: .reanaignore honoured, symlinks skipped, the rendered spec uploaded as reana.yaml.
    workspace = Path(wf["workspace"])
    assert (workspace / "data" / "sub" / "also.txt").is_file()
    assert (workspace / "data" / "empty.txt").read_bytes() == b""
    assert not (workspace / "data" / "skip.log").exists() and not (workspace / "data" / "link.txt").exists()
    assert did in (workspace / "reana.yaml").read_text()
    # The tarball holds every declared output, byte for byte.
    tar_path = paths["work"] / "output_from_reana.tar"
    members = _members(tar_path)
    assert set(members) == {"summary.txt", "results/dataset.txt", "results/inputs.txt", "results/histograms.bin"}
    assert members["results/dataset.txt"].decode().strip() == did
    assert members["results/histograms.bin"] == (workspace / "results" / "histograms.bin").read_bytes()
    assert members["results/inputs.txt"].decode().split() == ["empty.txt", "keep.txt", "sub"]
    # Rucio: one file in the dataset, downloaded back identical with the real DownloadClient.
    client = rucio_client()
    ds = DidName.parse(dataset)
    files = list(client.list_files(ds.scope, ds.name))
    assert len(files) == 1
    [fetched] = download(dataset, tmp_path / "rucio-download")
    assert fetched.read_bytes() == tar_path.read_bytes()
    # Nothing secret in stdout, stderr or the log records.
    everything = result.text + "\n".join(r.getMessage() for r in caplog.records)
    _assert_clean(everything, _forbidden(reana_server, secret_bytes))
    assert "DONE" in result.out


def test_rerun_of_a_finished_submission_reuses_the_workflow(
    reana_server: ReanaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _project(tmp_path)
    _reana_env(monkeypatch, reana_server)
    first = run_cli(*_submit_args(paths, "user.jdoe:first", "--tar", "out.tgz"))
    assert first.code == 0, first.text
    before = (paths["work"] / "out.tgz").read_bytes()

    # The secret files are gone now; a finished run needs none of them.
    (paths["work"] / "out.tgz").unlink()
    again = run_cli(*_submit_args(paths, "user.jdoe:first", "--tar", "out.tgz"))

    assert again.code == 0, again.text
    assert "finished: continuing it" in again.out
    assert len(reana_server.workflows()) == 1
    assert (paths["work"] / "out.tgz").read_bytes() == before
    # A different dataset is a different specification and so a new workflow.
    (paths["secrets"] / "usercert.pem").write_bytes(_cert("CERTIFICATE"))
    (paths["secrets"] / "userkey.pem").write_bytes(_cert("ENCRYPTED PRIVATE KEY"))
    other = run_cli(*_submit_args(paths, "user.jdoe:second", "--tar", "out.tgz"))
    assert other.code == 0, other.text
    assert len({wf["name"] for wf in reana_server.workflows()}) == 2


@pytest.mark.parametrize("seed", [20240611, 7])
def test_twenty_submissions_under_faults_give_one_workflow_and_one_rucio_file_each(
    reana_server: ReanaEmulator, rucio_env: RucioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    paths = _project(tmp_path)
    monkeypatch.setenv("VOMSPROXY_PASS", PASSPHRASE)
    dataset = f"{rucio_env.scope}:{rucio_env.scope}.faults.{uuid.uuid4().hex[:10]}"
    reana_server.fault_timeout_s = 0.5
    reana_server.set_faults(
        0.10, seed=seed, kinds=("500", "502", "503", "504", "429", "timeout", "reset", "reply_lost")
    )
    client = ReanaClient(
        reana_server.url, reana_server.token, read_timeout=5, max_attempts=10, backoff_initial=0.05, backoff_max=0.5
    )
    tars: list[Path] = []
    for index in range(20):
        work = tmp_path / f"work{index}"
        work.mkdir()
        options = SubmitOptions(
            template=paths["project"] / "reana.yaml",
            workdir=work,
            variables=[("VAR_INPUT", f"user.jdoe:user.jdoe.input.{index:02d}")],
            secret_files=[paths["secrets"] / "usercert.pem", paths["secrets"] / "userkey.pem"],
            secret_env=["VOMSPROXY_PASS", "VONAME=atlas"],
            tar="output_from_reana.tar",
            rucio_dataset=dataset,
            rse=rucio_env.rse,
            poll_initial=0.05,
            poll_max=0.2,
            timeout=120,
            environ=dict(os.environ),
        )
        result = submit(options, client=client, say=lambda _m: None)
        assert result.tar is not None and result.stageout is not None
        tars.append(result.tar.path)

    faults = {entry["kind"] for entry in reana_server.fault_log}
    assert len(reana_server.fault_log) >= 20 and "reply_lost" in faults
    runs = reana_server.workflows()
    assert len(runs) == 20
    assert len({wf["name"] for wf in runs}) == 20
    assert all(wf["status"] == "finished" and wf["run_number"] == 1 for wf in runs)
    ds = DidName.parse(dataset)
    names = sorted(f["name"] for f in rucio_client().list_files(ds.scope, ds.name))
    assert len(names) == 20 and len(set(names)) == 20
    assert all(path.is_file() for path in tars)


def test_killed_submitter_resumes_the_same_workflow(
    reana_server: ReanaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _project(tmp_path)
    reana_server.queue_delay = 6.0
    env = {
        **os.environ,
        "REANA_SERVER_URL": reana_server.url,
        "REANA_ACCESS_TOKEN": reana_server.token,
        "VOMSPROXY_PASS": PASSPHRASE,
        "PYTHONPATH": str(REPO),
    }
    args = [sys.executable, "-m", "cwlbridge", *_submit_args(paths, "user.jdoe:kill", "--tar", "out.tar")]
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert first.stdout is not None
    deadline = time.monotonic() + 60
    for line in first.stdout:
        lines.append(line)
        if ": queued" in line or time.monotonic() > deadline:
            break
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert any(": queued" in line for line in lines), "".join(lines)
    [running] = reana_server.workflows()
    assert running["status"] in ("queued", "running")
    state_files = list((paths["work"] / ".cwlbridge" / "reana").glob("*.json"))
    assert len(state_files) == 1
    assert json.loads(state_files[0].read_text())["workflow_id"] == running["id"]

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)

    assert again.returncode == 0, again.stdout + again.stderr
    assert f"({running['id']})" in again.stdout and "continuing it" in again.stdout
    [wf] = reana_server.workflows()
    assert wf["id"] == running["id"] and wf["status"] == "finished"
    assert "results/dataset.txt" in _members(paths["work"] / "out.tar")
    _assert_clean(again.stdout + again.stderr + "".join(lines), [reana_server.token, PASSPHRASE])


FAILING_SCRIPT = textwrap.dedent(
    """\
    echo "pass is $VOMSPROXY_PASS"
    echo "token is $REANA_ACCESS_TOKEN"
    cat "$REANA_SECRETS_DIR/userkey.pem"
    echo "the fit did not converge" >&2
    exit 3
    """
)


def test_failed_workflow_exits_5_with_log_tail_and_no_secrets(
    reana_server: ReanaEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    paths = _project(tmp_path, script=FAILING_SCRIPT)
    _reana_env(monkeypatch, reana_server)
    secret_bytes = {p.name: p.read_bytes() for p in paths["secrets"].iterdir()}

    result = run_cli(*_submit_args(paths, "user.jdoe:bad", "--tar", "out.tar", "-v"))

    assert result.code == EXIT_WORKFLOW_FAILED, result.text
    assert "is failed" in result.err and "the fit did not converge" in result.err
    assert "pass is ***" in result.err
    assert list(paths["secrets"].iterdir()) == []  # wiped although the run failed
    assert not (paths["work"] / "out.tar").exists()
    everything = result.text + "\n".join(r.getMessage() for r in caplog.records)
    _assert_clean(everything, _forbidden(reana_server, secret_bytes))


def test_missing_voms_secrets_stop_before_start_and_rerun_continues(
    reana_server: ReanaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _project(tmp_path)
    _reana_env(monkeypatch, reana_server)
    base = [
        "reana", "submit", str(paths["project"] / "reana.yaml"), "--var", "VAR_INPUT=user.jdoe:x",
        "--workdir", str(paths["work"]), "--poll-initial", "0.05", "--poll-max", "0.2",
    ]  # fmt: skip

    missing = run_cli(*base, "--secret-env", "VONAME=atlas")

    assert missing.code == EXIT_SECRETS, missing.text
    assert "usercert.pem" in missing.err and "VOMSPROXY_PASS" in missing.err
    [wf] = reana_server.workflows()
    assert wf["status"] == "created"
    complete = run_cli(*_submit_args(paths, "user.jdoe:x"))
    assert complete.code == 0, complete.text
    [wf] = reana_server.workflows()
    assert wf["status"] == "finished"


def test_traversal_paths_from_the_server_are_refused(
    reana_server: ReanaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _project(tmp_path)
    _reana_env(monkeypatch, reana_server)
    reana_server.serve_hostile_listing(["results/../../../escape.txt"])

    result = run_cli(*_submit_args(paths, "user.jdoe:evil", "--tar", "out.tar"))

    assert result.code == EXIT_OUTPUTS, result.text
    assert "refused" in result.err and "'..'" in result.err
    assert not (tmp_path / "escape.txt").exists() and not (paths["work"] / "out.tar").exists()


@pytest.mark.parametrize(("tar_name", "keep"), [("out.tar", True), ("out.tgz", False)])
def test_downloads_cut_half_way_are_fetched_again_into_an_intact_tarball(
    reana_server: ReanaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tar_name: str, keep: bool
) -> None:
    # Large enough that a download cut half-way has already put a chunk into the tarball.
    paths = _project(tmp_path, script=ANALYSE.replace("head -c 300000", "head -c 3000000"))
    monkeypatch.setenv("VOMSPROXY_PASS", PASSPHRASE)
    # Two outputs each break twice half-way through their body.
    for member in ("histograms.bin", "summary.txt"):
        reana_server.inject_faults(["cut", "cut"], method="GET", path=f"/workspace/(results/)?{member}$")
    client = ReanaClient(reana_server.url, reana_server.token, backoff_initial=0.01, backoff_max=0.05)
    options = SubmitOptions(
        template=paths["project"] / "reana.yaml",
        workdir=paths["work"],
        variables=[("VAR_INPUT", "user.jdoe:cut")],
        secret_files=[paths["secrets"] / "usercert.pem", paths["secrets"] / "userkey.pem"],
        secret_env=["VOMSPROXY_PASS", "VONAME=atlas"],
        tar=tar_name,
        keep_downloads=keep,
        poll_initial=0.05,
        poll_max=0.2,
        environ=dict(os.environ),
    )

    result = submit(options, client=client, say=lambda _m: None)

    assert [entry["kind"] for entry in reana_server.fault_log] == ["cut"] * 4
    assert result.tar is not None
    [wf] = reana_server.workflows()
    workspace = Path(wf["workspace"])
    names = ["results/dataset.txt", "results/histograms.bin", "results/inputs.txt", "summary.txt"]
    assert list(result.outputs) == names
    # Byte for byte the tarball of the workspace files, with checksums of what was written.
    reference = write_tar([(name, workspace / name) for name in names], tmp_path / f"reference{Path(tar_name).suffix}")
    assert result.tar.path.read_bytes() == reference.path.read_bytes()
    assert (result.tar.adler32, result.tar.md5, result.tar.size) == file_checksums(result.tar.path)
    kept = paths["work"] / ".cwlbridge" / "reana" / result.name / "outputs"
    if keep:
        assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()) == names
        assert all((kept / name).read_bytes() == (workspace / name).read_bytes() for name in names)
    else:
        assert not kept.exists()


def test_deadline_exits_6_and_leaves_the_workflow_running(
    reana_server: ReanaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _project(tmp_path)
    _reana_env(monkeypatch, reana_server)
    reana_server.queue_delay = 30

    result = run_cli(*_submit_args(paths, "user.jdoe:slow", "--stall-timeout", "0.5", "--tar", "o.tar"))

    assert result.code == EXIT_DEADLINE, result.text
    assert "queued" in result.err and "re-run" in result.err
    assert [wf["status"] for wf in reana_server.workflows()] == ["queued"]


def test_job_mode_reads_panda_secrets_and_names_the_workflow_after_the_job(
    reana_server: ReanaEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _project(tmp_path)
    for name in ("REANA_SERVER_URL", "REANA_ACCESS_TOKEN", "VOMSPROXY_PASS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PandaID", "6512345678")
    monkeypatch.setenv("PanDA_TaskID", "41234567")
    panda = {
        "REANA_SERVER_URL": reana_server.url,
        "REANA_ACCESS_TOKEN": reana_server.token,
        "VONAME": "atlas",
        "VOMSPROXY_PASS": PASSPHRASE,
        "___file___:usercert.pem": base64.b64encode(_cert("CERTIFICATE")).decode(),
        "___file___:userkey.pem": base64.b64encode(_cert("ENCRYPTED PRIVATE KEY")).decode(),
        "UNRELATED_SECRET": "not-for-reana",
    }
    (paths["work"] / "panda_secrets.json").write_text(json.dumps(panda))
    args = [
        "reana", "job", "--spec", str(paths["project"] / "reana.yaml"), "--var", "VAR_INPUT=user.jdoe:job",
        "--workdir", str(paths["work"]), "--poll-initial", "0.05", "--poll-max", "0.2",
    ]  # fmt: skip

    result = run_cli(*args)

    assert result.code == 0, result.text
    [wf] = reana_server.workflows()
    assert wf["name"].startswith("cwlb-panda-41234567-6512345678-")
    assert (paths["work"] / "output_from_reana.tar").is_file()
    assert set(reana_server.secrets()) == {"VONAME", "VOMSPROXY_PASS", "usercert.pem", "userkey.pem"}
    _assert_clean(result.text, [reana_server.token, PASSPHRASE])


def test_help_documents_the_exit_codes() -> None:
    for command in ("submit", "job"):
        result = run_cli("reana", command, "--help")
        assert result.code == 0
        assert "exit codes:" in result.out and "the REANA workflow failed" in result.out
