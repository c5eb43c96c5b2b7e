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
from rucio.common import exception as rucio_exc
from rucio.rse import rsemanager

from cwlbridge.data.rucio import DidName, RucioError, download, rucio_client
from cwlbridge.data.stageout import ReplicaMismatch, StageOutConflict, StageOutFailed, stage_out
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

    result = stage_out(tar.path, did=None, dataset=dataset, rse=rucio_env.rse, client=client, checksums=tar.checksums)

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


def test_attach_failure_after_registration_is_completed_later(
    rucio_env: RucioServer, client: Client, tmp_path: Path
) -> None:
    tar = _tarball(tmp_path)
    dataset = _dataset(rucio_env, "closed")
    ds = DidName.parse(dataset)
    client.add_dataset(ds.scope, ds.name)
    client.close(ds.scope, ds.name)

    # The file is copied and registered, but attaching it to the closed dataset fails;
    # stage_out must say why instead of claiming success.
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


def _place_on_rse(did: str, rse: str) -> Path:
    """Where a file DID lives on the test RSE (its POSIX path), from the RSE's own naming."""
    scope, name = did.split(":")
    settings = rsemanager.get_rse_info(rse)
    pfn = next(iter(rsemanager.lfns2pfns(settings, [{"scope": scope, "name": name}], operation="write").values()))
    return Path(pfn.removeprefix("file://localhost"))


def test_the_copy_on_the_rse_is_checked_against_the_given_adler32(
    rucio_env: RucioServer, client: Client, tmp_path: Path
) -> None:
    tar = write_tar([("outputs", _outputs(tmp_path))], tmp_path / "o.tar")
    dataset = _dataset(rucio_env, "mismatch")
    did = f"{rucio_env.scope}:{DidName.parse(dataset).name}.o.tar"
    wrong = f"{(int(tar.adler32, 16) ^ 1):08x}"

    with pytest.raises(ReplicaMismatch, match=f"has adler32 [0-9a-f]+ instead of {wrong}"):
        stage_out(
            tar.path, did=did, dataset=dataset, rse=rucio_env.rse, client=client, checksums=(wrong, tar.md5, tar.size)
        )

    with pytest.raises(rucio_exc.DataIdentifierNotFound):
        client.get_metadata(*did.split(":"))
    place = _place_on_rse(did, rucio_env.rse)
    assert not place.exists() and not place.with_name(place.name + ".rucio.upload").exists()
    # With the right checksums the same name goes through.
    assert stage_out(tar.path, did=did, dataset=dataset, rse=rucio_env.rse, client=client).outcome == "uploaded"


def test_checksums_for_another_size_are_refused_before_any_upload(
    rucio_env: RucioServer, client: Client, tmp_path: Path
) -> None:
    tar = write_tar([("outputs", _outputs(tmp_path))], tmp_path / "o.tar")
    dataset = _dataset(rucio_env, "size")
    with pytest.raises(CwlbridgeError, match=f"checksums given are for {tar.size + 1} bytes"):
        stage_out(
            tar.path, dataset=dataset, rse=rucio_env.rse, client=client, checksums=(tar.adler32, tar.md5, tar.size + 1)
        )
    ds = DidName.parse(dataset)
    with pytest.raises(rucio_exc.DataIdentifierNotFound):
        client.get_did(ds.scope, ds.name)


def test_leftovers_of_an_unregistered_copy_are_replaced(rucio_env: RucioServer, client: Client, tmp_path: Path) -> None:
    tar = _tarball(tmp_path)
    dataset = _dataset(rucio_env, "leftover")
    did = f"{rucio_env.scope}:{DidName.parse(dataset).name}.outputs.tar"
    # A crash after the copy but before the registration leaves bytes at the file's place
    # (and maybe a half-written temporary copy) that Rucio knows nothing about.
    place = _place_on_rse(did, rucio_env.rse)
    place.parent.mkdir(parents=True, exist_ok=True)
    place.write_bytes(b"stale bytes of an interrupted attempt")
    place.with_name(place.name + ".rucio.upload").write_bytes(b"half")

    result = stage_out(tar, did=did, dataset=dataset, rse=rucio_env.rse, client=client)

    assert result.outcome == "uploaded"
    assert place.read_bytes() == tar.read_bytes()
    assert not place.with_name(place.name + ".rucio.upload").exists()
    [fetched] = download(dataset, tmp_path / "dl", rse=rucio_env.rse, client=client)
    assert fetched.read_bytes() == tar.read_bytes()


_SIGNING_RSE = """
import sys
from rucio.client import Client
from rucio.common.exception import Duplicate

rse, prefix, account = sys.argv[1:4]
c = Client()
for call, args in ((c.add_rse, (rse,)), (c.add_protocol, (rse, {
        'scheme': 'file', 'hostname': 'localhost', 'port': 0, 'prefix': prefix,
        'impl': 'rucio.rse.protocols.posix.Default',
        'domains': {'lan': {'read': 1, 'write': 1, 'delete': 1},
                    'wan': {'read': 1, 'write': 1, 'delete': 1}}}))):
    try:
        call(*args)
    except Duplicate:
        pass
c.add_rse_attribute(rse, 'sign_url', 'gcs')
c.set_local_account_limit(account, rse, 10**12)
"""


def test_an_rse_that_signs_urls_goes_through_the_upload_client(
    rucio_env: RucioServer, client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rse = "SIGNING_SCRATCHDISK"
    rucio_env.run_as_root(_SIGNING_RSE, rse, str(rucio_env.base_dir / "rse" / rse), rucio_env.account)
    tar = _tarball(tmp_path)
    dataset = _dataset(rucio_env, "signing")
    caplog.set_level(logging.INFO, logger="cwlbridge.rucio.upload")

    result = stage_out(tar, dataset=dataset, rse=rse, client=client)

    assert result.outcome == "uploaded"
    assert any("Preparing upload for file" in r.getMessage() for r in caplog.records)
    assert _names_in(client, dataset) == [result.name]
    [fetched] = download(dataset, tmp_path / "dl", rse=rse, client=client)
    assert fetched.read_bytes() == tar.read_bytes()


def test_an_empty_file_is_staged_out(rucio_env: RucioServer, client: Client, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    dataset = _dataset(rucio_env, "empty")

    result = stage_out(empty, dataset=dataset, rse=rucio_env.rse, client=client)

    assert (result.outcome, result.bytes, result.adler32) == ("uploaded", 0, "00000001")
    [fetched] = download(dataset, tmp_path / "dl", rse=rucio_env.rse, client=client)
    assert fetched.read_bytes() == b""
