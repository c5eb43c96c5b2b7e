"""Idempotent stage-out against a real Rucio server (tests/servers/rucio_server.py)."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
from rucio.client import Client
from rucio.client.uploadclient import UploadClient

from cwlbridge.data.rucio import DidName, RucioError, download, rucio_client
from cwlbridge.data.stageout import StageOutConflict, StageOutFailed, stage_out
from cwlbridge.data.tarball import write_tar
from cwlbridge.errors import CwlbridgeError
from tests.servers.rucio_server import RucioServer


@pytest.fixture
def client(rucio_env: RucioServer) -> Client:
    return rucio_client()


def _dataset(server: RucioServer, label: str) -> str:
    return f"{server.scope}:{server.scope}.cwlbridge.{label}.{uuid.uuid4().hex[:8]}"


def _outputs(tmp_path: Path, size: int = 2_000_000) -> Path:
    src = tmp_path / "outputs"
    src.mkdir(parents=True)
    (src / "result.bin").write_bytes(os.urandom(size))
    return src


def _tarball(tmp_path: Path) -> Path:
    return write_tar([("outputs", _outputs(tmp_path))], tmp_path / "outputs.tar").path


def _names_in(client: Client, dataset: str) -> list[str]:
    did = DidName.parse(dataset)
    return [f["name"] for f in client.list_files(did.scope, did.name)]


def test_upload_then_download_gives_identical_bytes(rucio_env: RucioServer, client: Client, tmp_path: Path) -> None:
    tar = write_tar([("outputs", _outputs(tmp_path))], tmp_path / "o.tgz")
    dataset = _dataset(rucio_env, "roundtrip")

    result = stage_out(tar.path, did=None, dataset=dataset, rse=rucio_env.rse, client=client)

    assert result.outcome == "uploaded"
    assert (result.adler32, result.md5, result.bytes) == (tar.adler32, tar.md5, tar.size)
    assert result.name.startswith(DidName.parse(dataset).name + ".")
    assert result.name.endswith(".tgz")
    meta = client.get_metadata(result.scope, result.name)
    assert meta["adler32"].zfill(8) == tar.adler32
    assert meta["md5"] == tar.md5
    assert _names_in(client, dataset) == [result.name]
    ds = DidName.parse(dataset)
    rules = list(client.list_did_rules(ds.scope, ds.name))
    assert [(r["rse_expression"], r["copies"], r["grouping"]) for r in rules] == [(rucio_env.rse, 1, "DATASET")]
    assert rules[0]["expires_at"] is not None

    paths = download(dataset, tmp_path / "dl", rse=rucio_env.rse, client=client)
    assert len(paths) == 1
    assert paths[0].read_bytes() == tar.path.read_bytes()


def test_rerun_is_a_no_op(rucio_env: RucioServer, client: Client, tmp_path: Path) -> None:
    tar = _tarball(tmp_path)
    dataset = _dataset(rucio_env, "rerun")
    did = f"{rucio_env.scope}:{DidName.parse(dataset).name}.outputs.tar"

    first = stage_out(tar, did=did, dataset=dataset, rse=rucio_env.rse, client=client)
    again = stage_out(tar, did=did, dataset=dataset, rse=rucio_env.rse, client=client)

    assert (first.outcome, again.outcome) == ("uploaded", "already-present")
    assert again.name == first.name
    assert _names_in(client, dataset) == [first.name]


def test_registered_but_never_attached_is_recovered(rucio_env: RucioServer, client: Client, tmp_path: Path) -> None:
    tar = _tarball(tmp_path)
    dataset = _dataset(rucio_env, "orphan")
    name = f"{DidName.parse(dataset).name}.outputs.tar"
    # What an interrupted stage-out leaves behind: the file DID registered with its
    # replica, but no dataset and no attachment.
    uploader = UploadClient(_client=client, logger=logging.getLogger("test.upload"))
    uploader.tracing = False
    uploader.upload(
        [
            {
                "path": str(tar),
                "rse": rucio_env.rse,
                "did_scope": rucio_env.scope,
                "did_name": name,
                "register_after_upload": True,
            }
        ]
    )

    result = stage_out(tar, did=f"{rucio_env.scope}:{name}", dataset=dataset, rse=rucio_env.rse, client=client)

    assert result.outcome == "recovered"
    assert _names_in(client, dataset) == [name]
    again = stage_out(tar, did=f"{rucio_env.scope}:{name}", dataset=dataset, rse=rucio_env.rse, client=client)
    assert again.outcome == "already-present"


def test_upload_client_failure_after_registration_is_completed_later(
    rucio_env: RucioServer, client: Client, tmp_path: Path
) -> None:
    tar = _tarball(tmp_path)
    dataset = _dataset(rucio_env, "closed")
    ds = DidName.parse(dataset)
    client.add_dataset(ds.scope, ds.name)
    client.close(ds.scope, ds.name)

    # The upload client registers the file, fails to attach it to the closed dataset and
    # reports NoFilesUploaded; stage_out must say why instead of claiming success.
    with pytest.raises(RucioError, match="closed") as failed:
        stage_out(tar, dataset=dataset, rse=rucio_env.rse, client=client)
    assert failed.value.rucio_class == "UnsupportedOperation"

    rucio_env.run_as_root(
        "import sys; from rucio.client import Client; Client().set_status(sys.argv[1], sys.argv[2], open=True)",
        ds.scope,
        ds.name,
    )
    result = stage_out(tar, dataset=dataset, rse=rucio_env.rse, client=client)
    assert result.outcome == "recovered"
    assert _names_in(client, dataset) == [result.name]


def test_same_name_different_bytes_is_a_conflict(rucio_env: RucioServer, client: Client, tmp_path: Path) -> None:
    dataset = _dataset(rucio_env, "collision")
    did = f"{rucio_env.scope}:{DidName.parse(dataset).name}.outputs.tar"
    stage_out(_tarball(tmp_path / "one"), did=did, dataset=dataset, rse=rucio_env.rse, client=client)

    other = _tarball(tmp_path / "two")
    with pytest.raises(StageOutConflict, match="different content") as conflict:
        stage_out(other, did=did, dataset=dataset, rse=rucio_env.rse, client=client)
    assert "never reuses a name" in str(conflict.value)
    assert len(_names_in(client, dataset)) == 1


def test_foreign_scope_is_refused_with_a_clear_message(rucio_env: RucioServer, client: Client, tmp_path: Path) -> None:
    dataset = f"{rucio_env.other_scope}:{rucio_env.other_scope}.stolen.{uuid.uuid4().hex[:8]}"
    with pytest.raises(RucioError) as refused:
        stage_out(_tarball(tmp_path), dataset=dataset, rse=rucio_env.rse, client=client)
    error = refused.value
    assert isinstance(error, CwlbridgeError)
    assert not isinstance(error, StageOutFailed)
    assert error.rucio_class == "AccessDenied"
    assert error.status == 401
    assert "scopes their account owns" in str(error)
    assert "Traceback" not in str(error)
    assert "jdoe-secret" not in str(error)


def test_database_lock_on_the_server_is_retried(
    rucio_env: RucioServer, client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tar = _tarball(tmp_path)
    dataset = _dataset(rucio_env, "locked")
    # An exclusive lock on the server's SQLite database makes its next queries fail with
    # "database is locked" (DatabaseException, HTTP 500) until the lock is released.
    db = sqlite3.connect(rucio_env.base_dir / "rucio.db", isolation_level=None, check_same_thread=False)
    db.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(6.0, db.rollback)
    release.start()
    try:
        result = stage_out(tar, dataset=dataset, rse=rucio_env.rse, client=client)
    finally:
        release.join()
        db.close()
    assert result.outcome == "uploaded"
    assert _names_in(client, dataset) == [result.name]
    retries = [r.getMessage() for r in caplog.records if r.name == "cwlbridge.data.stageout"]
    assert any("failed (DatabaseException); retrying" in m for m in retries)
