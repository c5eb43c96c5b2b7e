"""The PanDA client against the PanDA emulator: configuration, auth, the task calls, retries.

The emulator (tests/servers/panda_emulator.py) answers as panda-server 1.0.4 does; the last
tests drive it with the real panda-client's own functions, so it is checked against what
panda-client sends, not only against what our client expects.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cwlbridge.errors import UsageError
from cwlbridge.panda.client import (
    PandaAuthError,
    PandaClient,
    PandaRejectedError,
    PandaUnavailableError,
)
from cwlbridge.panda.config import CredentialsError, PandaSettings
from tests.servers.panda_emulator import PandaEmulator, make_token


@pytest.fixture
def panda(tmp_path: Path) -> Iterator[PandaEmulator]:
    emulator = PandaEmulator(tmp_path / "panda", tick_s=0.05).start()
    try:
        yield emulator
    finally:
        emulator.stop()


def client_for(emulator: PandaEmulator, nickname: str = "jdoe", **kwargs: object) -> PandaClient:
    token = emulator.add_user(nickname)
    return PandaClient.from_env(emulator.environ(token), backoff_initial=0.01, backoff_max=0.05, **kwargs)


def task_params(name: str, **extra: object) -> dict[str, object]:
    """The keys of a prun map the emulator reads (a full map comes from taskparams.py)."""
    return {"taskName": name, "uniqueTaskName": True, "vo": "atlas", "prodSourceLabel": "user", **extra}


# ---------------------------------------------------------------- configuration


def test_settings_follow_panda_clients_variables(tmp_path: Path) -> None:
    token = make_token("u", nickname="jdoe")
    env = {
        "PANDA_URL_SSL": "https://pandaserver.example.org:25443/server/panda",
        "PANDACACHE_URL": "https://pandacache.example.org/server/panda/",
        "PANDA_AUTH": "oidc",
        "PANDA_AUTH_VO": "atlas",
        "PANDA_AUTH_ID_TOKEN": token,
    }
    settings = PandaSettings.from_env(env)
    assert settings.api_url == "https://pandaserver.example.org:25443/api/v1"
    assert settings.legacy_url == "https://pandaserver.example.org:25443/server/panda"
    assert settings.cache_api_url == "https://pandacache.example.org/api/v1"
    assert settings.source_url == "https://pandacache.example.org"
    assert settings.token == token and settings.origin == "atlas"
    assert token not in repr(settings)


def test_the_token_sources_in_panda_clients_order(tmp_path: Path) -> None:
    first, second, third, cached = (make_token(n) for n in ("a", "b", "c", "d"))
    (tmp_path / "tok").write_text(second + "\n")
    (tmp_path / ".token").write_text(json.dumps({"id_token": cached, "refresh_token": "r"}))
    base = {"PANDA_AUTH": "oidc", "PANDA_AUTH_VO": "atlas", "PANDA_CONFIG_ROOT": str(tmp_path)}
    order = [
        ({"PANDA_AUTH_ID_TOKEN": first, "OIDC_AUTH_TOKEN_FILE": str(tmp_path / "tok")}, first),
        ({"OIDC_AUTH_TOKEN_FILE": str(tmp_path / "tok"), "OIDC_AUTH_ID_TOKEN": third}, second),
        ({"OIDC_AUTH_ID_TOKEN": third}, third),
        ({}, cached),
    ]
    for extra, expected in order:
        assert PandaSettings.from_env({**base, **extra}).token == expected


def test_an_expired_token_says_how_to_refresh_it(tmp_path: Path) -> None:
    (tmp_path / ".token").write_text(json.dumps({"id_token": make_token("u", lifetime_s=-60)}))
    env = {"PANDA_AUTH": "oidc", "PANDA_AUTH_VO": "atlas", "PANDA_CONFIG_ROOT": str(tmp_path)}
    with pytest.raises(CredentialsError) as info:
        PandaSettings.from_env(env)
    assert "expired" in info.value.message and "pbook" in str(info.value.hint)
    with pytest.raises(CredentialsError, match="no ID token"):
        PandaSettings.from_env({**env, "PANDA_CONFIG_ROOT": str(tmp_path / "empty")})
    with pytest.raises(CredentialsError, match="PANDA_AUTH_VO"):
        PandaSettings.from_env({"PANDA_AUTH": "oidc", "PANDA_AUTH_ID_TOKEN": make_token("u")})


def test_x509_needs_a_proxy_and_http_is_for_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="no x509 proxy at") as info:
        PandaSettings.from_env({"X509_USER_PROXY": str(tmp_path / "none")})
    assert "voms-proxy-init" in str(info.value.hint)
    proxy = tmp_path / "x509up"
    proxy.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = PandaSettings.from_env({"X509_USER_PROXY": str(proxy), "X509_CERT_DIR": str(tmp_path)})
    assert settings.auth == "x509" and settings.proxy == str(proxy) and settings.verify == str(tmp_path)
    with pytest.raises(UsageError, match="https only"):
        PandaSettings.from_env({"X509_USER_PROXY": str(proxy), "PANDA_URL_SSL": "http://pandaserver.cern.ch/x"})
    loopback = PandaSettings.from_env({"X509_USER_PROXY": str(proxy), "PANDA_URL_SSL": "http://127.0.0.1:8/s"})
    assert loopback.api_url == "http://127.0.0.1:8/api/v1"


# ---------------------------------------------------------------- tasks


def test_submit_follow_and_the_codes_of_a_repeated_name(panda: PandaEmulator) -> None:
    with client_for(panda) as client:
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
        first = client.submit(task_params("user.jdoe.run_000_a"))
        assert first.code == 0 and first.message == f"succeeded. new jediTaskID={first.task_id}"
        with pytest.raises(PandaRejectedError) as active:
            client.submit(task_params("user.jdoe.run_000_a"))
        assert active.value.code == 2 and "still active" in active.value.message
        assert panda.wait_for(first.task_id, ("done",)) == "done"
        assert client.status(first.task_id) == "done"
        again = client.submit(task_params("user.jdoe.run_000_a"))
        assert (again.task_id, again.code) == (first.task_id, 3)  # PanDA re-executes an ended name
        assert panda.tasks[first.task_id].executions == 2
        found = client.find_task("user.jdoe.run_000_a/", since)
        assert found is not None and found.task_id == first.task_id
        assert client.find_task("user.jdoe.run_000_b", since) is None


def test_an_unknown_parent_is_code_11(panda: PandaEmulator) -> None:
    with client_for(panda) as client, pytest.raises(PandaRejectedError) as info:
        client.submit(task_params("user.jdoe.run_001_b", parentTaskName="user.jdoe.run_000_nosuch"))
    assert info.value.code == 11 and "parent task name was not found" in info.value.message
    assert info.value.endpoint == "task/submit"


def test_kill_finish_retry_and_details(panda: PandaEmulator) -> None:
    outcomes = iter([("failed", 4, 1, 3), ("done", 4, 4, 0)])
    panda.outcome = lambda task: next(outcomes) if task.name.endswith("_r") else ("done", 0, 0, 0)
    with client_for(panda) as client:
        victim = client.submit(task_params("user.jdoe.run_k")).task_id
        assert "kill is registered" in client.kill(victim)
        assert panda.wait_for(victim, ("aborted",)) == "aborted"
        with pytest.raises(PandaRejectedError, match="the task is in aborted"):
            client.kill(victim)
        retried = client.submit(task_params("user.jdoe.run_r", dsForIN="mc20:in")).task_id
        panda.wait_for(retried, ("failed",))
        info = client.detailed_info(retried)
        assert (info["nFiles"], info["nFilesFinished"], info["nFilesFailed"]) == (4, 1, 3)
        details = client.details(retried)
        assert details["status"] == "failed" and details["inDS"] == "mc20:in"
        assert details["statistics"] == "finished*1,failed*3"
        client.retry(retried)
        assert panda.wait_for(retried, ("done",)) == "done"
        assert client.task_parameters(retried)["taskName"] == "user.jdoe.run_r"
        stopped = client.submit(task_params("user.jdoe.run_f")).task_id
        client.finish(stopped, soft=True)
        assert panda.wait_for(stopped, ("done", "finished")) in ("done", "finished")


def test_modified_since_reads_every_page(panda: PandaEmulator) -> None:
    with client_for(panda) as client:
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
        ids = [client.submit(task_params(f"user.jdoe.many_{i:04d}")).task_id for i in range(1203)]
        sent = client.requests_sent
        rows = client.tasks_modified_since(since, full=True)
        assert client.requests_sent - sent == 3  # 500 + 500 + 203 rows
        sent = client.requests_sent
        short = client.tasks_modified_since(since)
        assert client.requests_sent - sent == 1  # the server caps only a full listing
    assert [r.task_id for r in rows] == ids == [r.task_id for r in short]
    assert {r.name for r in rows} == {f"user.jdoe.many_{i:04d}" for i in range(1203)}


def test_other_users_tasks_are_not_ours(panda: PandaEmulator) -> None:
    with client_for(panda, "alice") as alice, client_for(panda, "bob") as bob:
        task = alice.submit(task_params("user.alice.x")).task_id
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
        assert bob.tasks_modified_since(since) == []
        with pytest.raises(PandaRejectedError, match="not the task owner"):
            bob.kill(task)


# ---------------------------------------------------------------- auth and errors


def test_no_or_wrong_credentials_are_auth_errors_and_the_token_stays_out(
    panda: PandaEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = panda.add_user("jdoe")
    stranger = make_token("x")
    with PandaClient.from_env(panda.environ(stranger)) as client, pytest.raises(PandaAuthError) as info:
        client.submit(task_params("user.jdoe.t"))
    assert "SSL secure connection is required" in info.value.message and "pbook" in str(info.value.hint)
    other_vo = PandaClient.from_env({**panda.environ(token), "PANDA_AUTH_VO": "cms"})
    with other_vo, pytest.raises(PandaAuthError):
        other_vo.status(1)
    assert token not in caplog.text and stranger not in caplog.text
    assert panda.tasks == {}


def test_the_server_protocol_rules(panda: PandaEmulator) -> None:
    """What panda-server does with a wrong method, wrong types and unknown paths."""
    token = panda.add_user("jdoe")
    headers = {"Authorization": f"Bearer {token}", "Origin": "atlas"}
    wrong_method = requests.get(f"{panda.url}/api/v1/task/submit", headers=headers, timeout=5)
    assert wrong_method.status_code == 200 and wrong_method.headers["Content-Type"] == "text/plain"
    assert wrong_method.json() == {"success": False, "message": "expecting POST, received GET", "data": None}
    bad_type = requests.post(f"{panda.url}/api/v1/task/kill", json={"task_id": "12"}, headers=headers, timeout=5)
    assert bad_type.json()["success"] is False and "Type error" in bad_type.json()["message"]
    unknown = requests.post(f"{panda.url}/api/v1/task/kill", json={"task": 1}, headers=headers, timeout=5)
    assert unknown.json()["message"].startswith("Argument error")
    assert requests.get(f"{panda.url}/api/v1/task/nosuch", timeout=5).status_code == 403
    cast = requests.get(f"{panda.url}/api/v1/task/get_status", params={"task_id": "4.0"}, headers=headers, timeout=5)
    assert cast.json() == {"success": False, "message": "Task not found", "data": None}


def test_reads_are_retried_but_a_lost_submit_is_looked_up_by_name(tmp_path: Path) -> None:
    with PandaEmulator(tmp_path, tick_s=0.05, fault_rate=1.0, fault_kinds=("503",)) as panda:
        client = client_for(panda, max_attempts=3)
        with pytest.raises(PandaUnavailableError, match="HTTP 503"):
            client.status(1)
        assert [kind for _, kind in panda.faults_injected] == ["503"] * 3
        panda.fault_kinds = ("reply_lost",)
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
        with pytest.raises(PandaUnavailableError, match="may have reached the server"):
            client.submit(task_params("user.jdoe.lost"))
        assert len(panda.tasks_named("user.jdoe.lost")) == 1  # created once, not submitted again
        panda.fault_rate = 0.0
        found = client.find_task("user.jdoe.lost", since)
        assert found is not None and found.task_id == panda.tasks_named("user.jdoe.lost")[0].task_id


def test_a_refused_connection_is_retried_then_said(tmp_path: Path) -> None:
    token = make_token("u")
    env = {"PANDA_URL_SSL": "http://127.0.0.1:9/server/panda", "PANDA_AUTH": "oidc", "PANDA_AUTH_VO": "atlas",
           "PANDA_AUTH_ID_TOKEN": token}
    client = PandaClient.from_env(env, max_attempts=2, backoff_initial=0.01)
    started = time.monotonic()
    with pytest.raises(PandaUnavailableError) as info:
        client.submit(task_params("user.jdoe.x"))
    assert "no reply" in info.value.message and "may have reached" not in info.value.message
    assert client.requests_sent == 2 and time.monotonic() - started < 5
    assert token not in str(info.value)


# ---------------------------------------------------------------- cache and secrets


def test_sandbox_upload_and_reuse(panda: PandaEmulator, tmp_path: Path) -> None:
    sandbox = tmp_path / "sources.abc.tar.gz"
    sandbox.write_bytes(gzip.compress(b"sandbox bytes"))
    crc = zlib.crc32(b"sandbox bytes")
    with client_for(panda) as client:
        assert client.cached_sandbox(sandbox.stat().st_size, crc) is None
        client.upload_sandbox(sandbox)
        host, name = client.cached_sandbox(sandbox.stat().st_size, crc) or ("", "")
        assert name == sandbox.name and host == panda.url.split("//")[1]
        with pytest.raises(PandaRejectedError, match="already exists"):
            client.upload_sandbox(sandbox)
    assert requests.get(f"{panda.url}/cache/{sandbox.name}", timeout=5).content == sandbox.read_bytes()


def test_secrets(panda: PandaEmulator) -> None:
    with client_for(panda) as client:
        client.set_secret("REANA_ACCESS_TOKEN", "s3cr3t-value")
        client.set_secret("___file___:usercert.pem", "Y2VydA==")
        assert client.secrets() == {"REANA_ACCESS_TOKEN": "s3cr3t-value", "___file___:usercert.pem": "Y2VydA=="}
        client.set_secret("REANA_ACCESS_TOKEN", None)
        assert list(client.secrets()) == ["___file___:usercert.pem"]
        client.set_secret(None, None)
        assert client.secrets() == {}


# ---------------------------------------------------------------- the real panda-client


PANDA_CLIENT_SCRIPT = textwrap.dedent(
    """\
    import json, sys
    from pandaclient import Client
    out = {}
    params = {"taskName": "user.jdoe.pc_000_a", "uniqueTaskName": True, "vo": "atlas",
              "prodSourceLabel": "user"}
    out["insert"] = Client.insertTaskParams(params, properErrorCode=True)
    task_id = int(out["insert"][1][1].split("jediTaskID=")[1])
    out["status"] = Client.getTaskStatus(task_id)
    out["details"] = Client.getJediTaskDetails({"jediTaskID": task_id}, True, True)[1]
    out["kill"] = Client.killTask(task_id)
    out["again"] = Client.insertTaskParams(params, properErrorCode=True)
    out["secret"] = Client.set_user_secret("K", "V")
    out["secrets"] = Client.get_user_secrets()
    out["put"] = Client.putFile(sys.argv[1], reuseSandbox=True, useCacheSrv=True)
    out["reuse"] = Client.putFile(sys.argv[1], reuseSandbox=True, useCacheSrv=True)
    print(json.dumps(out, default=str))
    """
)


def test_the_real_panda_client_drives_the_emulator(panda: PandaEmulator, tmp_path: Path) -> None:
    token = panda.add_user("jdoe")
    sandbox = tmp_path / "sources.pc.tar.gz"
    sandbox.write_bytes(gzip.compress(b"panda-client's sandbox"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **panda.environ(token)}
    done = subprocess.run(
        [sys.executable, "-c", PANDA_CLIENT_SCRIPT, str(sandbox)],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["insert"][0] == 0 and out["insert"][1][0] == 0
    assert out["status"][0] == 0 and out["status"][1] in ("registered", "defined", "ready", "running", "done")
    assert out["details"]["outDS"] == "user.jdoe.pc_000_a"
    assert out["kill"][0] == 0 and out["kill"][1][0] is True
    assert out["again"][1][0] == 2  # still aborting: the name is active
    assert out["secret"][0] == 0 and out["secret"][1][0] is True
    assert out["secrets"] == [0, [True, {"K": "V"}]]
    assert out["put"] == [0, "True"]
    assert out["reuse"] == [0, f"NewFileName:{sandbox.name}"]
    paths = [r["path"] for r in panda.requests]
    assert "/api/v1/task/submit" in paths and "/api/v1/file_server/upload_cache_file" in paths


def test_importing_the_client_touches_no_network() -> None:
    """panda-client resolves hosts at import; ours must not (no socket is opened or resolved)."""
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise SystemExit('network used at import')\n"
        "socket.getaddrinfo = refuse\nsocket.socket.connect = refuse\n"
        "import cwlbridge.panda.client, cwlbridge.panda.config\nprint('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
