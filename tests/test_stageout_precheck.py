"""The Rucio stage-out of the REANA submitter is checked before the workflow runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from cwlbridge.data.rucio import is_name_resolution_failure
from cwlbridge.reana.submitter import EXIT_STAGEOUT
from tests.cli_run import run_cli
from tests.test_reana_local import _project


def _submit(project: Path, tmp_path: Path, *extra: str) -> Any:
    return run_cli(
        "reana", "submit", str(project / "reana.yaml"), "--var", "VAR_INPUT=x", "--engine", "local",
        "--workdir", str(tmp_path), "--tar", "out.tar", *extra,
    )  # fmt: skip


def _ran(project: Path, tmp_path: Path) -> bool:
    return (tmp_path / "out.tar").exists() or any(tmp_path.glob("**/results/count.txt"))


def test_without_a_rucio_configuration_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path)
    monkeypatch.setenv("RUCIO_CONFIG", str(tmp_path / "no-such-rucio.cfg"))
    monkeypatch.setenv("RUCIO_HOME", str(tmp_path / "nowhere"))
    result = _submit(project, tmp_path, "--rucio-dataset", "user.jdoe:user.jdoe.fit", "--rse", "MOCK")
    assert result.code == 2, result.text
    assert "Rucio" in result.err and "Traceback" not in result.text
    assert not _ran(project, tmp_path), "the workflow must not run when its tar cannot be staged out"
    no_rse = _submit(project, tmp_path, "--rucio-dataset", "user.jdoe:user.jdoe.fit")
    assert no_rse.code == 2 and "--rucio-dataset needs --rse" in no_rse.err
    assert not _ran(project, tmp_path)


def test_a_host_that_does_not_resolve_fails_at_once_without_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "rucio.cfg"
    config.write_text(
        "[client]\nrucio_host = https://no-such-host.invalid:443\nauth_host = https://no-such-host.invalid:443\n"
        "auth_type = userpass\nusername = jdoe\npassword = not-a-secret\naccount = jdoe\n"
        "ca_cert = /etc/ssl/certs/ca-certificates.crt\n"
    )
    monkeypatch.setenv("RUCIO_CONFIG", str(config))
    project = _project(tmp_path)
    start = time.monotonic()
    result = _submit(project, tmp_path, "--rucio-dataset", "user.jdoe:user.jdoe.fit", "--rse", "MOCK")
    assert time.monotonic() - start < 20
    assert result.code == EXIT_STAGEOUT, result.text
    assert "host name does not resolve (DNS)" in result.err and "nothing was submitted" in result.err
    assert "retrying" not in result.err and "not-a-secret" not in result.text
    assert not _ran(project, tmp_path)


def test_name_resolution_errors_are_recognised_through_their_causes() -> None:
    with pytest.raises(requests.ConnectionError) as caught:
        requests.get("https://no-such-host.invalid/", timeout=10)
    assert is_name_resolution_failure(caught.value)
    try:
        try:
            raise caught.value
        except requests.ConnectionError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_name_resolution_failure(outer)
    assert not is_name_resolution_failure(requests.ConnectionError("connection refused"))
