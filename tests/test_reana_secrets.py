"""REANA secrets: gathering, PanDA's secret file, VOMSPROXY_PASS encoding, requirements."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from cwlbridge.errors import InputFileError, UsageError
from cwlbridge.reana import secrets as sec

CERT = b"-----BEGIN CERTIFICATE-----\nMIIBsecretcertbody\n-----END CERTIFICATE-----\n"
PASSPHRASE = "s3cr3t pass:phrase"


def write_panda_secrets(workdir: Path, entries: dict[str, str]) -> Path:
    path = workdir / sec.PANDA_SECRETS_FILE
    path.write_text(json.dumps(entries))
    return path


def test_cli_secrets_are_gathered_and_pass_is_encoded(tmp_path: Path) -> None:
    cert = tmp_path / "usercert.pem"
    cert.write_bytes(CERT)
    key = tmp_path / "userkey.pem"
    key.write_bytes(b"key-bytes")
    environ = {"VONAME": "atlas", "VOMSPROXY_PASS": PASSPHRASE}
    found = sec.gather_secrets(
        files=[cert, key],
        env=["VONAME", "VOMSPROXY_PASS", "RUCIO_USERNAME=jdoe"],
        environ=environ,
    )
    upload = found.for_upload()
    assert upload["usercert.pem"] == ("file", CERT)
    assert upload["userkey.pem"] == ("file", b"key-bytes")
    assert upload["VONAME"] == ("env", b"atlas")
    assert upload["RUCIO_USERNAME"] == ("env", b"jdoe")
    # REANA's init container runs `base64 -d` on the stored value.
    assert base64.b64decode(upload["VOMSPROXY_PASS"][1]).decode() == PASSPHRASE
    assert sec.required_secret_problems(True, True, found.names()) == []


def test_pass_already_base64_is_kept() -> None:
    encoded = base64.b64encode(PASSPHRASE.encode()).decode()
    found = sec.gather_secrets(env=[f"VOMSPROXY_PASS={encoded}"], environ={}, voms_pass_is_base64=True)
    assert found.for_upload()["VOMSPROXY_PASS"] == ("env", encoded.encode())
    with pytest.raises(UsageError, match="not valid base64"):
        sec.gather_secrets(env=["VOMSPROXY_PASS=not base64!"], environ={}, voms_pass_is_base64=True)


def test_values_never_show_in_repr_or_errors(tmp_path: Path) -> None:
    cert = tmp_path / "usercert.pem"
    cert.write_bytes(CERT)
    found = sec.gather_secrets(files=[cert], env=[f"VOMSPROXY_PASS={PASSPHRASE}"], environ={})
    shown = repr(found) + "".join(repr(s) for s in found) + str(list(found))
    assert "usercert.pem" in shown and "VOMSPROXY_PASS" in shown
    for value in (PASSPHRASE, "MIIBsecretcertbody", base64.b64encode(PASSPHRASE.encode()).decode()):
        assert value not in shown
    with pytest.raises(UsageError) as info:
        sec.gather_secrets(env=[f"VONAME={PASSPHRASE}", f"VONAME={PASSPHRASE}x"], environ={})
    assert "given twice" in str(info.value)
    assert PASSPHRASE not in str(info.value)


def test_missing_env_and_bad_names_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        sec.gather_secrets(env=["VONAME"], environ={})
    assert "VONAME is not set" in str(info.value)
    with pytest.raises(UsageError, match="may only hold"):
        sec.gather_secrets(env=["BAD NAME=x"], environ={})
    with pytest.raises(UsageError, match="not a REANA secret"):
        sec.gather_secrets(env=["REANA_ACCESS_TOKEN=abc"], environ={})
    with pytest.raises(InputFileError, match="cannot read"):
        sec.gather_secrets(files=[tmp_path / "absent.pem"])


def test_panda_secrets_file_and_env_entries(tmp_path: Path) -> None:
    proxy = b"proxy-bytes\x00\x01"
    write_panda_secrets(
        tmp_path,
        {
            "VONAME": "atlas",
            "VOMSPROXY_FILE": "x509up_u1000",
            "___file___:x509up_u1000": base64.b64encode(proxy).decode(),
            "RUCIO_USERNAME": "jdoe",
            "REANA_ACCESS_TOKEN": "tok-should-stay-out",
            "GITLAB_TOKEN": "unrelated",
        },
    )
    found = sec.load_panda_secrets(tmp_path)
    assert found.names() == {"VONAME", "VOMSPROXY_FILE", "x509up_u1000", "RUCIO_USERNAME"}
    assert found.for_upload()["x509up_u1000"] == ("file", proxy)
    assert sec.local_secret_problems(found) == []
    assert sec.required_secret_problems(True, True, found.names()) == []

    chosen = sec.load_panda_secrets(tmp_path, names=["GITLAB_TOKEN"])
    assert chosen.for_upload() == {"GITLAB_TOKEN": ("env", b"unrelated")}
    with pytest.raises(InputFileError, match="lack VOMSPROXY_PASS"):
        sec.load_panda_secrets(tmp_path, names=["VOMSPROXY_PASS"])


def test_command_line_wins_over_panda(tmp_path: Path) -> None:
    write_panda_secrets(tmp_path, {"VONAME": "cms", "VOMSPROXY_PASS": PASSPHRASE})
    found = sec.gather_secrets(env=["VONAME=atlas"], environ={}, panda_workdir=tmp_path)
    upload = found.for_upload()
    assert upload["VONAME"] == ("env", b"atlas")
    assert base64.b64decode(upload["VOMSPROXY_PASS"][1]).decode() == PASSPHRASE


def test_broken_panda_secrets_do_not_leak(tmp_path: Path) -> None:
    (tmp_path / sec.PANDA_SECRETS_FILE).write_text('{"VONAME": "atl' + PASSPHRASE)
    with pytest.raises(InputFileError) as info:
        sec.load_panda_secrets(tmp_path)
    assert "not valid JSON" in str(info.value)
    assert PASSPHRASE not in str(info.value)
    write_panda_secrets(tmp_path, {"___file___:usercert.pem": "%%%" + PASSPHRASE})
    with pytest.raises(InputFileError) as info:
        sec.load_panda_secrets(tmp_path)
    assert "not valid base64" in str(info.value)
    assert PASSPHRASE not in str(info.value)
    with pytest.raises(InputFileError, match="cannot read PanDA secrets"):
        sec.load_panda_secrets(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("voms", "rucio", "names", "expected"),
    [
        (False, False, set(), []),
        (True, False, {"VONAME", "VOMSPROXY_FILE"}, []),
        (True, False, {"VONAME", "usercert.pem", "userkey.pem", "VOMSPROXY_PASS"}, []),
        (True, False, {"VOMSPROXY_FILE"}, ["VONAME"]),
        (True, False, {"VONAME", "usercert.pem"}, ["VOMSPROXY_PASS, userkey.pem"]),
        (True, True, {"VONAME", "VOMSPROXY_FILE"}, ["RUCIO_USERNAME"]),
        (False, True, {"VONAME", "VOMSPROXY_FILE", "RUCIO_USERNAME"}, ["without 'voms_proxy"]),
        (False, True, {"RUCIO_USERNAME"}, ["without", "VONAME", "VOMSPROXY_FILE"]),
    ],
)
def test_required_secret_problems(voms: bool, rucio: bool, names: set[str], expected: list[str]) -> None:
    problems = sec.required_secret_problems(voms, rucio, names)
    assert len(problems) == len(expected)
    for fragment, problem in zip(expected, problems, strict=True):
        assert fragment in problem


def test_local_problems_point_at_proxy_mistakes() -> None:
    found = sec.gather_secrets(env=["VOMSPROXY_FILE=x509up_u1", "usercert.pem=x"], environ={})
    problems = sec.local_secret_problems(found)
    assert any("no file secret of that name" in p for p in problems)
    assert any("usercert.pem must be a file secret" in p for p in problems)


def test_wipe_files_overwrites_then_removes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert = tmp_path / "usercert.pem"
    cert.write_bytes(CERT * 1000)
    link_target = tmp_path / "keep.txt"
    link_target.write_text("not a secret")
    link = tmp_path / "link.pem"
    link.symlink_to(link_target)
    # A hard link lets the test look at the bytes left behind after the wipe.
    witness = tmp_path / "witness"
    witness.hardlink_to(cert)
    with caplog.at_level(logging.DEBUG, logger="cwlbridge.reana"):
        failed = sec.wipe_files([cert, link, tmp_path / "gone.pem"])
    assert failed == []
    assert not cert.exists() and not link.exists()
    assert link_target.read_text() == "not a secret"
    assert witness.read_bytes() == b"\0" * len(CERT * 1000)
