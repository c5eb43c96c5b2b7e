"""The Rucio dataset store against a real Rucio server (tests/servers/rucio_server.py)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from rucio.client import Client
from rucio.common.exception import DataIdentifierNotFound

from cwlbridge.data.datasets import (
    DatasetConflict,
    DatasetNotFound,
    FileNotInDataset,
    RucioStore,
    StoredFile,
    open_store,
)
from cwlbridge.data.rucio import rucio_client
from cwlbridge.errors import UsageError
from tests.cli_run import run_cli
from tests.servers.rucio_server import RucioServer

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


def _adler32(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def client(rucio_env: RucioServer) -> Client:
    return rucio_client()


@pytest.fixture
def store(rucio_env: RucioServer, client: Client) -> Iterator[RucioStore]:
    with RucioStore(rucio_env.rse, client=client) as opened:
        assert isinstance(opened, RucioStore)
        yield opened


def _dataset(server: RucioServer, label: str) -> str:
    return f"{server.scope}:{server.scope}.dstore.{label}.{uuid.uuid4().hex[:8]}"


def _file_name(dataset: str, name: str) -> str:
    # Rucio file names are unique per scope, so tests give theirs the dataset's unique suffix.
    return f"{dataset.rsplit('.', 1)[1]}.{name}"


def _replica(server: RucioServer, name: str) -> Path:
    [path] = server.rse_prefix.rglob(name)
    return path


def test_add_list_fetch_round_trip(rucio_env: RucioServer, store: RucioStore, tmp_path: Path) -> None:
    dataset = _dataset(rucio_env, "roundtrip")
    contents = {_file_name(dataset, "b.root"): os.urandom(300_000), _file_name(dataset, "a.root"): os.urandom(777)}
    files = [(name, _write(tmp_path / "src" / name, data)) for name, data in contents.items()]

    added = store.add(dataset, files)

    assert [f.name for f in added] == list(contents)
    expected = [StoredFile(n, len(contents[n]), _adler32(contents[n]), None) for n in sorted(contents)]
    assert store.list(dataset) == expected
    assert store.exists(dataset)
    assert dataset in store.datasets()
    paths = store.fetch(dataset, tmp_path / "dest")
    assert paths == [tmp_path / "dest" / n for n in sorted(contents)]
    for path in paths:
        assert path.read_bytes() == contents[path.name]
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted(contents)


def test_new_dataset_gets_a_rule_on_the_store_rse(
    rucio_env: RucioServer, store: RucioStore, client: Client, tmp_path: Path
) -> None:
    dataset = _dataset(rucio_env, "rule")
    store.add(dataset, [(_file_name(dataset, "f"), _write(tmp_path / "f", b"x"))])

    scope, name = dataset.split(":")
    rules = list(client.list_did_rules(scope, name))
    assert [(r["rse_expression"], r["copies"], r["grouping"]) for r in rules] == [(rucio_env.rse, 1, "DATASET")]
    assert rules[0]["expires_at"] is not None


def test_fetch_only_some_names(rucio_env: RucioServer, store: RucioStore, tmp_path: Path) -> None:
    dataset = _dataset(rucio_env, "subset")
    names = [_file_name(dataset, n) for n in ("one", "two", "three")]
    store.add(dataset, [(n, _write(tmp_path / n, n.encode())) for n in names])

    paths = store.fetch(dataset, tmp_path / "dest", names=[names[2], names[0]])

    assert [p.name for p in paths] == sorted([names[0], names[2]])
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted([names[0], names[2]])
    with pytest.raises(FileNotInDataset, match="no file named nothing-here"):
        store.fetch(dataset, tmp_path / "dest", names=["nothing-here"])


def test_adding_again_is_a_no_op(rucio_env: RucioServer, store: RucioStore, tmp_path: Path) -> None:
    dataset = _dataset(rucio_env, "again")
    name = _file_name(dataset, "data.root")
    source = _write(tmp_path / name, os.urandom(50_000))
    first = store.add(dataset, [(name, source)])
    replica = _replica(rucio_env, name)
    before = (replica.stat().st_ino, replica.stat().st_mtime_ns)

    again = store.add(dataset, [(name, source)])

    assert again == first
    assert store.list(dataset) == first
    assert (replica.stat().st_ino, replica.stat().st_mtime_ns) == before


def test_conflicting_content_is_refused_before_any_upload(
    rucio_env: RucioServer, store: RucioStore, client: Client, tmp_path: Path
) -> None:
    dataset = _dataset(rucio_env, "conflict")
    name = _file_name(dataset, "data.root")
    store.add(dataset, [(name, _write(tmp_path / "v1" / name, b"version 1"))])
    newcomer = _file_name(dataset, "new.root")

    with pytest.raises(DatasetConflict, match="different content") as caught:
        store.add(
            dataset,
            [(newcomer, _write(tmp_path / "v2" / newcomer, b"new")), (name, _write(tmp_path / "v2" / name, b"v2"))],
        )

    assert (caught.value.dataset, caught.value.name) == (dataset, name)
    assert [f.name for f in store.list(dataset)] == [name]
    with pytest.raises(DataIdentifierNotFound):
        client.get_metadata(rucio_env.scope, newcomer)
    [path] = store.fetch(dataset, tmp_path / "dest")
    assert path.read_bytes() == b"version 1"


def test_file_names_are_shared_by_all_datasets_of_a_scope(
    rucio_env: RucioServer, store: RucioStore, tmp_path: Path
) -> None:
    first = _dataset(rucio_env, "first")
    second = _dataset(rucio_env, "second")
    name = _file_name(first, "shared.root")
    store.add(first, [(name, _write(tmp_path / "a" / name, b"shared bytes"))])

    # The same bytes under the same name join the second dataset without a new upload...
    store.add(second, [(name, _write(tmp_path / "b" / name, b"shared bytes"))])
    assert [f.name for f in store.list(second)] == [name]
    # ...other bytes under that name are refused: Rucio never reuses a name in a scope.
    third = _dataset(rucio_env, "third")
    with pytest.raises(DatasetConflict, match=r"already taken in scope user\.jdoe"):
        store.add(third, [(name, _write(tmp_path / "c" / name, b"other bytes"))])


def test_create_exists_and_missing_datasets(rucio_env: RucioServer, store: RucioStore, tmp_path: Path) -> None:
    dataset = _dataset(rucio_env, "empty")
    assert not store.exists(dataset)
    with pytest.raises(DatasetNotFound) as caught:
        store.list(dataset)
    assert dataset in caught.value.message and rucio_env.url in caught.value.message
    assert rucio_env.rse in caught.value.message
    with pytest.raises(DatasetNotFound):
        store.fetch(dataset, tmp_path / "dest")

    store.create(dataset)
    store.create(dataset)

    assert store.exists(dataset)
    assert store.list(dataset) == []
    assert store.fetch(dataset, tmp_path / "dest") == []


def test_containers_are_read_but_not_written(
    rucio_env: RucioServer, store: RucioStore, client: Client, tmp_path: Path
) -> None:
    dataset = _dataset(rucio_env, "inner")
    name = _file_name(dataset, "f.root")
    store.add(dataset, [(name, _write(tmp_path / name, b"inside a container"))])
    container = _dataset(rucio_env, "outer")
    scope, cname = container.split(":")
    client.add_container(scope, cname)
    client.attach_dids(scope, cname, [{"scope": scope, "name": dataset.split(":")[1]}])

    # PanDA spells output containers with a trailing slash; it names the same DID.
    assert store.exists(f"{cname}/")
    assert [f.name for f in store.list(f"{cname}/")] == [name]
    [path] = store.fetch(container, tmp_path / "dest")
    assert path.read_bytes() == b"inside a container"
    with pytest.raises(UsageError, match="is a container"):
        store.add(container, [("x", _write(tmp_path / "x", b"x"))])


def test_open_store_builds_a_rucio_store_from_the_environment(rucio_env: RucioServer, tmp_path: Path) -> None:
    with open_store(f"rucio:{rucio_env.rse}", cwd=tmp_path) as opened:
        assert isinstance(opened, RucioStore) and opened.kind == "rucio"
        assert opened.root_description() == f"rucio {rucio_env.url} RSE {rucio_env.rse}"
        dataset = _dataset(rucio_env, "opened")
        opened.create(dataset)
        assert opened.exists(dataset)


def test_cli_with_a_rucio_store(rucio_env: RucioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CWLBRIDGE_STORE", f"rucio:{rucio_env.rse}")
    dataset = _dataset(rucio_env, "cli")
    name = _file_name(dataset, "hist.root")
    _write(tmp_path / name, b"histograms")

    added = run_cli("data", "add", dataset, name)
    assert added.code == 0, added.text
    assert f"added  {name}" in added.out and f"RSE {rucio_env.rse}" in added.out
    assert f"present  {name}" in run_cli("data", "add", dataset, name).out

    listing = json.loads(run_cli("data", "ls", dataset, "--json").out)
    assert listing["kind"] == "rucio"
    assert listing["files"] == [{"name": name, "size": 10, "adler32": _adler32(b"histograms"), "path": None}]
    summary = json.loads(run_cli("data", "ls", "--json").out)
    assert {"dataset": dataset, "files": 1, "bytes": 10} in summary["datasets"]
    text = run_cli("data", "ls", dataset).out
    assert text.splitlines()[0].split() == ["NAME", "SIZE", "ADLER32"]

    got = run_cli("data", "get", dataset, "dl")
    assert got.code == 0, got.text
    assert got.out.splitlines() == [str(Path("dl") / name)]
    assert (tmp_path / "dl" / name).read_bytes() == b"histograms"

    missing = run_cli("data", "get", f"{rucio_env.scope}:{rucio_env.scope}.dstore.absent")
    assert missing.code == 1 and "not found in rucio" in missing.err and "Traceback" not in missing.text
    foreign = run_cli("data", "add", f"{rucio_env.other_scope}:{rucio_env.other_scope}.x", name)
    assert foreign.code == 1 and "Traceback" not in foreign.text and "jdoe-secret" not in foreign.text


def _run_file_names(store: RucioStore, outds: str) -> list[str]:
    """Every file name in the datasets of one run (all loop iterations), as Rucio lists them."""
    scope = outds.split(".")[0] + "." + outds.split(".")[1]
    names = []
    for dataset in store.datasets():
        if dataset.startswith(f"{scope}:{outds}_"):
            names += [f.name for f in store.list(dataset)]
    return names


def test_loop_iterations_and_two_runs_of_a_chain_write_distinct_file_names_in_rucio(
    rucio_env: RucioServer, store: RucioStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CWLBRIDGE_STORE", f"rucio:{rucio_env.rse}")
    shutil.copytree(WORKFLOWS / "loop", tmp_path / "loop")
    dataset = _dataset(rucio_env, "loopin")
    seed = _write(tmp_path / _file_name(dataset, "seed.txt"), b"seed\n")
    assert run_cli("data", "add", dataset, str(seed)).code == 0
    (tmp_path / "loop" / "inputs.yaml").write_text(f"data: {dataset}\n")
    label = uuid.uuid4().hex[:6]
    names: dict[str, list[str]] = {}
    for run in ("a", "b"):
        # Each run counts on its own, as on two machines (or after the counter file was lost):
        # the numbers already used in the scope are skipped all the same.
        monkeypatch.setenv("CWLBRIDGE_NUMBERS_DIR", str(tmp_path / f"numbers-{run}"))
        outds = f"{rucio_env.scope}.numbers{label}{run}"
        done = run_cli("run", "loop/chain.cwl", "loop/inputs.yaml", "--outds", outds, "-q")
        assert done.code == 0, done.text
        names[run] = _run_file_names(store, outds)
    fits = [n for n in names["a"] if n.endswith(".fit.txt")]
    assert len(fits) == 3  # three loop iterations, each its own number
    assert len(set(fits)) == 3
    assert len(names["a"]) == len(names["b"]) >= 7
    everything = names["a"] + names["b"]
    assert len(set(everything)) == len(everything), sorted(everything)
    # user.jdoe.<8-digit number>._<job>.<file>: a number is never shared by two runs.
    numbers = {run: {n.split(".")[2] for n in names[run]} for run in names}
    assert not numbers["a"] & numbers["b"]
