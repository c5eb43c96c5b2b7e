"""The PanDA sandbox: an explicit list of the chain's files, deterministic, uploaded once."""

from __future__ import annotations

import gzip
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cwlbridge.model.rules import analyse
from cwlbridge.panda import sandbox
from cwlbridge.panda.client import PandaClient
from tests.cli_run import run_cli
from tests.servers.panda_emulator import PandaEmulator

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def recast(tmp_path: Path) -> Path:
    """workflows/recast with what a user's directory also holds beside it."""
    work = tmp_path / "recast"
    shutil.copytree(REPO / "workflows" / "recast", work)
    (work / ".git").mkdir()
    (work / ".git" / "config").write_text("[core]\n")
    (work / "usercert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (work / "big.root").write_bytes(b"\0" * (5 * 1024 * 1024 + 1))
    (work / "notes.txt").write_text("private notes\n")
    (work / ".env").write_text("TOKEN=x\n")
    return work


def _selection(chain: Path, includes: tuple[str, ...] = ()) -> sandbox.SandboxSelection:
    analysis = analyse(str(chain), str(chain.parent / "inputs.yaml"), "user.jdoe.recast")
    assert analysis.plan is not None
    return sandbox.select(chain, analysis.plan, includes=includes)


def test_the_recast_sandbox_holds_exactly_the_named_files(recast: Path) -> None:
    selection = _selection(recast / "chain.cwl")
    # derive.sh, skim.sh from opt_exec; the REANA template (--spec) and fit.sh, which it lists.
    assert selection.files == ["derive.sh", "fit.sh", "reana-template.yaml", "skim.sh"]
    assert selection.refused == {}
    archive = sandbox.build(selection, recast / "out")
    with tarfile.open(archive.path) as tar:
        assert tar.getnames() == ["derive.sh", "fit.sh", "reana-template.yaml", "skim.sh"]
        assert {m.mtime for m in tar.getmembers()} == {0}
    assert archive.name.startswith("jobO.") and archive.name.endswith(".tar.gz")
    content = gzip.decompress(archive.path.read_bytes())
    assert archive.crc32 == zlib.crc32(content)
    again = sandbox.build(_selection(recast / "chain.cwl"), recast / "out2")
    assert again.name == archive.name and again.path.read_bytes() == archive.path.read_bytes()


def test_a_named_credential_big_or_hidden_file_is_an_error(recast: Path) -> None:
    chain = recast / "chain.cwl"
    named = "./derive.sh %IN daod.root usercert.pem big.root .env"
    chain.write_text(chain.read_text().replace("./derive.sh %IN daod.root", named))
    selection = _selection(chain)
    assert set(selection.refused) == {"usercert.pem", "big.root", ".env"}
    assert "credential" in selection.refused["usercert.pem"] and "over the 5 MB" in selection.refused["big.root"]
    assert "usercert.pem" not in selection.files and "notes.txt" not in selection.files
    with pytest.raises(sandbox.SandboxError, match="3 file"):
        selection.check()


def test_sandbox_include_adds_files_but_never_credentials(recast: Path) -> None:
    selection = _selection(recast / "chain.cwl", ("*.txt",))
    assert "notes.txt" in selection.files
    refused = _selection(recast / "chain.cwl", ("*.pem",))
    assert "usercert.pem" in refused.refused and "usercert.pem" not in refused.files
    with pytest.raises(sandbox.SandboxError, match="matches no file"):
        _selection(recast / "chain.cwl", ("*.nosuch",))


def test_plan_sandbox_lists_it(recast: Path) -> None:
    result = run_cli(
        "plan", str(recast / "chain.cwl"), str(recast / "inputs.yaml"), "--outds", "user.jdoe.r", "--sandbox"
    )
    assert result.code == 0, result.text
    assert result.out.splitlines()[0].endswith("chain.cwl: 4 file(s)")
    assert "  skim.sh  (" in result.out and "usercert.pem" not in result.out and ".git" not in result.out


@pytest.fixture
def panda(tmp_path: Path) -> Iterator[PandaEmulator]:
    with PandaEmulator(tmp_path / "panda") as emulator:
        yield emulator


def test_a_sandbox_is_uploaded_once(recast: Path, panda: PandaEmulator) -> None:
    archive = sandbox.build(_selection(recast / "chain.cwl"), recast / "out")
    client = PandaClient.from_env(panda.environ(panda.add_user("jdoe")))
    name, source = sandbox.upload(client, archive)
    assert name == archive.name and source == panda.url
    uploads = [r for r in panda.requests if r["path"].endswith("upload_cache_file")]
    again = sandbox.upload(client, sandbox.build(_selection(recast / "chain.cwl"), recast / "out2"))
    assert again == (archive.name, panda.url)
    assert [r for r in panda.requests if r["path"].endswith("upload_cache_file")] == uploads  # not again
    assert (panda.cache_dir / archive.name).read_bytes() == archive.path.read_bytes()
