"""The local dataset store and the ``cwlbridge data`` commands (cwlbridge.data.datasets)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from cwlbridge.data.datasets import (
    DatasetConflict,
    DatasetNotFound,
    FileNotInDataset,
    LocalStore,
    StoredFile,
    dataset_did,
    open_store,
)
from cwlbridge.errors import CwlbridgeError, InputFileError, UsageError
from tests.cli_run import run_cli

REPO = Path(__file__).resolve().parents[1]
DS = "user.jdoe:user.jdoe.inputs"


def _adler32(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".cwlbridge-tmp-*")]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, bytes]:
    contents = {
        "b.root": os.urandom(200_000),
        "a.root": os.urandom(1234),
        "empty.txt": b"",
    }
    for name, data in contents.items():
        _write(tmp_path / "src" / name, data)
    return contents


def test_add_list_fetch_round_trip(tmp_path: Path, store: LocalStore, sources: dict[str, bytes]) -> None:
    src = tmp_path / "src"
    added = store.add(DS, [(name, src / name) for name in sources])

    ds_dir = store.root / "user.jdoe" / "user.jdoe.inputs"
    assert [f.name for f in added] == list(sources)  # the order given
    expected = [StoredFile(n, len(sources[n]), _adler32(sources[n]), ds_dir / n) for n in sorted(sources)]
    assert store.list(DS) == expected
    assert store.exists(DS) and store.exists("user.jdoe.inputs") and store.exists("user.jdoe.inputs/")
    assert store.datasets() == [DS]

    dest = tmp_path / "job" / "in"
    paths = store.fetch(DS, dest)
    assert paths == [dest / n for n in sorted(sources)]
    for path in paths:
        assert path.read_bytes() == sources[path.name]
    # Same file system: the store and the fetched files share the source's inode.
    assert (src / "a.root").stat().st_ino == (ds_dir / "a.root").stat().st_ino == (dest / "a.root").stat().st_ino
    assert not _leftovers(store.root) and not _leftovers(dest)


def test_fetch_only_some_names_in_list_order(tmp_path: Path, store: LocalStore, sources: dict[str, bytes]) -> None:
    store.add(DS, [(n, tmp_path / "src" / n) for n in sources])

    paths = store.fetch(DS, tmp_path / "out", names=["empty.txt", "a.root"])

    assert [p.name for p in paths] == ["a.root", "empty.txt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.root", "empty.txt"]


def test_list_answers_from_metadata_without_reading_the_files(tmp_path: Path, store: LocalStore) -> None:
    data = os.urandom(5000)
    store.add(DS, [("x.bin", _write(tmp_path / "x.bin", data))])
    (store.root / "user.jdoe" / "user.jdoe.inputs" / "x.bin").unlink()

    [entry] = store.list(DS)
    assert (entry.size, entry.adler32) == (5000, _adler32(data))


def test_stored_files_are_made_read_only(tmp_path: Path, store: LocalStore) -> None:
    source = _write(tmp_path / "x.bin", b"payload")
    source.chmod(0o755)

    [stored] = store.add(DS, [("x.bin", source)])

    assert stored.path is not None
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o555  # execute bits kept, write bits gone


def test_adding_again_is_a_no_op(tmp_path: Path, store: LocalStore, sources: dict[str, bytes]) -> None:
    files = [(n, tmp_path / "src" / n) for n in sources]
    first = store.add(DS, files)
    meta = store.root / "user.jdoe" / "user.jdoe.inputs" / ".cwlbridge-dataset.json"
    before = (meta.read_bytes(), meta.stat().st_mtime_ns, meta.stat().st_ino)
    inode = (store.root / "user.jdoe" / "user.jdoe.inputs" / "b.root").stat().st_ino

    # The same content from another place under the same name changes nothing either.
    copy = _write(tmp_path / "elsewhere" / "b.root", sources["b.root"])
    again = store.add(DS, files + [("b.root", copy)])

    assert again == first
    assert (meta.read_bytes(), meta.stat().st_mtime_ns, meta.stat().st_ino) == before
    assert (store.root / "user.jdoe" / "user.jdoe.inputs" / "b.root").stat().st_ino == inode


def test_adding_more_files_keeps_the_earlier_ones(tmp_path: Path, store: LocalStore) -> None:
    store.add(DS, [("one", _write(tmp_path / "one", b"1"))])
    store.add(DS, [("two", _write(tmp_path / "two", b"22"))])

    assert [(f.name, f.size) for f in store.list(DS)] == [("one", 1), ("two", 2)]


def test_metadata_is_appended_to_and_read_by_every_store_object(tmp_path: Path, store: LocalStore) -> None:
    meta = store.root / "user.jdoe" / "user.jdoe.inputs" / ".cwlbridge-dataset.json"
    other = LocalStore(store.root)  # another process's view of the same store
    store.create(DS)
    assert meta.read_bytes() == b"" and other.list(DS) == []
    inode = meta.stat().st_ino
    store.add(DS, [("one", _write(tmp_path / "one", b"1"))])
    assert [f.name for f in other.list(DS)] == ["one"]
    other.add(DS, [("two", _write(tmp_path / "two", b"22")), ("three", _write(tmp_path / "three", b"333"))])
    assert [(f.name, f.size) for f in store.list(DS)] == [("one", 1), ("three", 3), ("two", 2)]
    lines = meta.read_text().splitlines()
    assert meta.stat().st_ino == inode and len(lines) == 2
    assert sorted(json.loads(lines[1])["files"]) == ["three", "two"]
    assert [f.name for f in LocalStore(store.root).list(DS)] == ["one", "three", "two"]


def test_an_add_cut_short_is_left_out_and_cut_off_by_the_next(tmp_path: Path, store: LocalStore) -> None:
    store.add(DS, [("one", _write(tmp_path / "one", b"1"))])
    meta = store.root / "user.jdoe" / "user.jdoe.inputs" / ".cwlbridge-dataset.json"
    whole = meta.read_bytes()
    with open(meta, "ab") as handle:
        handle.write(b'{"files":{"half":{"si')  # what a writer killed in mid-write leaves

    assert [f.name for f in LocalStore(store.root).list(DS)] == ["one"]
    store.add(DS, [("two", _write(tmp_path / "two", b"2"))])

    assert meta.read_bytes().startswith(whole) and b"half" not in meta.read_bytes()
    assert [f.name for f in LocalStore(store.root).list(DS)] == ["one", "two"]


def test_metadata_written_as_one_document_is_read_and_extended(tmp_path: Path, store: LocalStore) -> None:
    ds_dir = store.root / "user.jdoe" / "user.jdoe.inputs"
    stored = _write(ds_dir / "old.root", b"old")
    entry = {"size": 3, "adler32": _adler32(b"old"), "md5": "x", "mtime_ns": stored.stat().st_mtime_ns}
    document = {"format": 1, "dataset": DS, "files": {"old.root": entry}}
    (ds_dir / ".cwlbridge-dataset.json").write_text(json.dumps(document) + "\n")

    store.add(DS, [("new.root", _write(tmp_path / "new.root", b"new"))])

    assert [f.name for f in LocalStore(store.root).list(DS)] == ["new.root", "old.root"]
    assert store.fetch(DS, tmp_path / "out", names=["old.root"])[0].read_bytes() == b"old"


def test_damaged_metadata_is_a_clear_error(tmp_path: Path, store: LocalStore) -> None:
    store.add(DS, [("one", _write(tmp_path / "one", b"1"))])
    meta = store.root / "user.jdoe" / "user.jdoe.inputs" / ".cwlbridge-dataset.json"
    with open(meta, "ab") as handle:
        handle.write(b"not json\n")
    with pytest.raises(CwlbridgeError, match="is damaged"):
        LocalStore(store.root).list(DS)


def test_different_content_under_a_taken_name_is_a_conflict_and_adds_nothing(tmp_path: Path, store: LocalStore) -> None:
    store.add(DS, [("data.root", _write(tmp_path / "v1" / "data.root", b"version 1"))])

    with pytest.raises(DatasetConflict) as caught:
        store.add(
            DS,
            [
                ("new.root", _write(tmp_path / "v2" / "new.root", b"new")),
                ("data.root", _write(tmp_path / "v2" / "data.root", b"version 2")),
            ],
        )

    assert "data.root" in caught.value.message and DS in caught.value.message
    assert (caught.value.dataset, caught.value.name) == (DS, "data.root")
    assert [f.name for f in store.list(DS)] == ["data.root"]
    assert store.fetch(DS, tmp_path / "out")[0].read_bytes() == b"version 1"


def test_one_name_twice_with_different_content_in_one_call_is_a_conflict(tmp_path: Path, store: LocalStore) -> None:
    with pytest.raises(DatasetConflict, match="given twice"):
        store.add(DS, [("f", _write(tmp_path / "a" / "f", b"1")), ("f", _write(tmp_path / "b" / "f", b"2"))])
    assert not store.exists(DS)


def test_a_lost_stored_file_is_restored_by_adding_it_again(tmp_path: Path, store: LocalStore) -> None:
    source = _write(tmp_path / "f.bin", b"content")
    [stored] = store.add(DS, [("f.bin", source)])
    assert stored.path is not None
    stored.path.unlink()

    store.add(DS, [("f.bin", source)])

    assert stored.path.read_bytes() == b"content"


def test_fetch_refuses_a_stored_file_changed_in_place(tmp_path: Path, store: LocalStore) -> None:
    source = _write(tmp_path / "f.bin", b"original")
    store.add(DS, [("f.bin", source)])
    source.chmod(0o644)  # what a careless job (or root) can do to a hard link
    with open(source, "ab") as handle:
        handle.write(b" and more")

    with pytest.raises(CwlbridgeError, match="changed in place"):
        store.fetch(DS, tmp_path / "out")
    # Re-adding the changed file is refused too: the dataset recorded the original.
    with pytest.raises(DatasetConflict):
        store.add(DS, [("f.bin", source)])


def test_fetch_across_file_systems_copies(tmp_path: Path, store: LocalStore) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        reason = "no second file system (/dev/shm) to copy across"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    data = os.urandom(70_000)
    store.add(DS, [("f.bin", _write(tmp_path / "f.bin", data))])

    with tempfile.TemporaryDirectory(dir=shm) as other:
        [path] = store.fetch(DS, Path(other) / "dest")
        assert path.read_bytes() == data
        assert path.stat().st_dev != store.root.stat().st_dev
        # And the other way round: adding from another file system copies into the store.
        far = _write(Path(other) / "far.bin", b"far away")
        [stored] = store.add(DS, [("far.bin", far)])
        assert stored.path is not None and stored.path.read_bytes() == b"far away"
    assert stored.path.read_bytes() == b"far away"  # the copy outlives its source


def test_fetch_replaces_a_stale_file_in_the_destination(tmp_path: Path, store: LocalStore) -> None:
    store.add(DS, [("f.bin", _write(tmp_path / "f.bin", b"current"))])
    stale = _write(tmp_path / "out" / "f.bin", b"stale content")

    [path] = store.fetch(DS, tmp_path / "out")

    assert path == stale and path.read_bytes() == b"current"


def test_a_created_dataset_is_not_read_again_until_someone_writes_it(
    tmp_path: Path, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    import cwlbridge.data.datasets as datasets_module

    opened: list[str] = []

    def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(datasets_module, "open", spy, raising=False)
    store.create(DS)
    assert store.list(DS) == [] and opened == []  # known empty since create: not read
    other = LocalStore(store.root)  # another process adds between two looks of this one
    other.add(DS, [("one", _write(tmp_path / "one", b"1"))])
    opened.clear()
    assert [f.name for f in store.list(DS)] == ["one"] and len(opened) == 1  # changed: read again
    store.create(DS)  # not empty any more: what is known of it stays
    assert [f.name for f in store.list(DS)] == ["one"]


def test_create_makes_an_empty_dataset_idempotently(store: LocalStore) -> None:
    assert not store.exists(DS)
    store.create(DS)
    store.create(DS)
    assert store.exists(DS)
    assert store.list(DS) == []
    assert store.fetch(DS, store.root.parent / "out") == []
    assert store.datasets() == [DS]


def test_missing_dataset_and_file_errors_say_what_and_where(tmp_path: Path, store: LocalStore) -> None:
    with pytest.raises(DatasetNotFound) as caught:
        store.list("user.jdoe.nothing")
    err = caught.value
    assert "user.jdoe:user.jdoe.nothing" in err.message and str(store.root) in err.message
    assert err.hint is not None and "cwlbridge data add user.jdoe:user.jdoe.nothing" in err.hint
    with pytest.raises(DatasetNotFound):
        store.fetch("user.jdoe.nothing", tmp_path / "out")
    assert store.datasets() == []

    store.add(DS, [("f", _write(tmp_path / "f", b"x"))])
    with pytest.raises(FileNotInDataset, match="no file named g"):
        store.fetch(DS, tmp_path / "out", names=["f", "g"])
    assert not (tmp_path / "out" / "f").exists()


def test_bad_inputs_are_clear_errors(tmp_path: Path, store: LocalStore) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        store.add(DS, [("f", tmp_path / "missing")])
    with pytest.raises(InputFileError, match="is a directory"):
        store.add(DS, [("d", tmp_path)])
    for name in ("", "a/b", "..", ".cwlbridge-dataset.json"):
        with pytest.raises(UsageError):
            store.add(DS, [(name, _write(tmp_path / "ok", b"1"))])
    for dataset in ("", "a b", "x:y:z", "s:..", "s:a/b", "../x:y", ":name"):
        with pytest.raises(UsageError):
            store.create(dataset)
    assert not store.root.exists() or store.datasets() == []


@pytest.mark.parametrize(
    ("text", "scope", "name", "container"),
    [
        ("user.jdoe.analysis", "user.jdoe", "user.jdoe.analysis", False),
        ("group.phys-higgs.ntuples.v2", "group.phys-higgs", "group.phys-higgs.ntuples.v2", False),
        ("mc20_13TeV.700320.Sh_2211.deriv.DAOD_PHYS", "mc20_13TeV", "mc20_13TeV.700320.Sh_2211.deriv.DAOD_PHYS", False),
        ("data18_13TeV:data18_13TeV.periodB", "data18_13TeV", "data18_13TeV.periodB", False),
        ("user.jdoe.chain_000_make_outDS/", "user.jdoe", "user.jdoe.chain_000_make_outDS", True),
        ("user.jdoe:user.jdoe.x/", "user.jdoe", "user.jdoe.x", True),
        ("standalone", "standalone", "standalone", False),
    ],
)
def test_dataset_did_derives_the_scope_as_panda_does(text: str, scope: str, name: str, container: bool) -> None:
    did = dataset_did(text)
    assert (did.scope, did.name, did.container_style) == (scope, name, container)
    assert str(did) == f"{scope}:{name}"


def test_container_spelling_names_the_same_dataset(tmp_path: Path, store: LocalStore) -> None:
    store.add("user.jdoe.task_000_a_out/", [("f", _write(tmp_path / "f", b"1"))])
    assert [f.name for f in store.list("user.jdoe:user.jdoe.task_000_a_out")] == ["f"]
    assert store.datasets() == ["user.jdoe:user.jdoe.task_000_a_out"]


_ADDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from cwlbridge.data.datasets import LocalStore

    root, dataset, src, go, tag = sys.argv[1:6]
    store = LocalStore(root)
    files = sorted(Path(src).iterdir())
    while not Path(go).exists():
        time.sleep(0.001)
    for path in files:
        store.add(dataset, [(path.name, path)])
    print("done", tag)
    """
)


def test_two_processes_adding_to_one_dataset_at_once_lose_nothing(tmp_path: Path, store: LocalStore) -> None:
    # Each process adds 40 files one call at a time; 20 names are shared (same content).
    shared = {f"shared_{i:02d}.dat": os.urandom(3000 + i) for i in range(20)}
    own = {tag: {f"{tag}_{i:02d}.dat": os.urandom(2000 + i) for i in range(20)} for tag in ("p1", "p2")}
    expected: dict[str, bytes] = dict(shared)
    for tag, files in own.items():
        expected.update(files)
        for name, data in {**shared, **files}.items():
            _write(tmp_path / tag / name, data)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ADDER, str(store.root), DS, str(tmp_path / tag), str(go), tag],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in own
    ]
    time.sleep(0.5)  # both interpreters are up and waiting
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]

    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    listed = store.list(DS)
    assert [f.name for f in listed] == sorted(expected)
    for entry in listed:
        assert entry.path is not None
        assert entry.path.read_bytes() == expected[entry.name]
        assert (entry.size, entry.adler32) == (len(expected[entry.name]), _adler32(expected[entry.name]))
    assert not _leftovers(store.root)


def test_open_store_specs(tmp_path: Path) -> None:
    local = open_store(None, environ={}, cwd=tmp_path)
    assert isinstance(local, LocalStore) and local.root == tmp_path / ".cwlbridge" / "data"
    assert local.kind == "local" and local.root_description() == f"local store {local.root}"

    from_env = open_store(None, environ={"CWLBRIDGE_STORE": str(tmp_path / "shared")}, cwd=tmp_path / "x")
    assert isinstance(from_env, LocalStore) and from_env.root == tmp_path / "shared"

    relative = open_store("./stores/a", environ={"CWLBRIDGE_STORE": "/elsewhere"}, cwd=tmp_path)
    assert isinstance(relative, LocalStore) and relative.root == tmp_path / "stores" / "a"

    for bad in ("rucio", "rucio:", "mystore"):
        with pytest.raises(UsageError):
            open_store(bad, environ={}, cwd=tmp_path)


# --- the command line -------------------------------------------------------------------


def test_cli_add_ls_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CWLBRIDGE_STORE", raising=False)
    _write(tmp_path / "hist.root", b"histograms")
    _write(tmp_path / "ntuple.root", os.urandom(4321))

    added = run_cli("data", "add", "user.jdoe.inputs", "hist.root", "ntuple.root")
    assert added.code == 0, added.text
    assert "added  hist.root" in added.out and "added  ntuple.root" in added.out
    assert "user.jdoe:user.jdoe.inputs: 2 file(s)" in added.out

    again = run_cli("data", "add", "user.jdoe:user.jdoe.inputs", "hist.root")
    assert again.code == 0 and "present  hist.root" in again.out

    datasets = run_cli("data", "ls")
    assert datasets.code == 0
    assert datasets.out.splitlines()[1].split() == ["user.jdoe:user.jdoe.inputs", "2", "4.33", "kB"]

    files = run_cli("data", "ls", "user.jdoe.inputs")
    store_dir = tmp_path / ".cwlbridge" / "data" / "user.jdoe" / "user.jdoe.inputs"
    assert files.out.splitlines()[0].split() == ["NAME", "SIZE", "ADLER32", "PATH"]
    assert files.out.splitlines()[1].split() == [
        "hist.root",
        "10",
        "B",
        _adler32(b"histograms"),
        str(store_dir / "hist.root"),
    ]

    as_json = json.loads(run_cli("data", "ls", "user.jdoe.inputs", "--json").out)
    assert as_json["dataset"] == "user.jdoe:user.jdoe.inputs" and as_json["kind"] == "local"
    assert as_json["files"][0] == {
        "name": "hist.root",
        "size": 10,
        "adler32": _adler32(b"histograms"),
        "path": str(store_dir / "hist.root"),
    }
    listing = json.loads(run_cli("data", "ls", "--json").out)
    assert listing["datasets"] == [{"dataset": "user.jdoe:user.jdoe.inputs", "files": 2, "bytes": 4331}]

    got = run_cli("data", "get", "user.jdoe.inputs", "work")
    assert got.code == 0
    assert got.out.splitlines() == [str(Path("work") / "hist.root"), str(Path("work") / "ntuple.root")]
    assert (tmp_path / "work" / "hist.root").read_bytes() == b"histograms"
    only = run_cli("data", "get", "user.jdoe.inputs", "--name", "ntuple.root")
    assert only.out.splitlines() == ["ntuple.root"]


def test_cli_store_option_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "f.txt", b"x")
    monkeypatch.setenv("CWLBRIDGE_STORE", str(tmp_path / "envstore"))

    assert run_cli("data", "add", "user.jdoe:ds", "f.txt").code == 0
    assert run_cli("data", "add", "user.jdoe:other", "f.txt", "--store", "./optstore").code == 0

    assert LocalStore(tmp_path / "envstore").datasets() == ["user.jdoe:ds"]
    assert LocalStore(tmp_path / "optstore").datasets() == ["user.jdoe:other"]
    assert "user.jdoe:other" in run_cli("data", "ls", "--store", "./optstore").out


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CWLBRIDGE_STORE", raising=False)
    _write(tmp_path / "f.txt", b"one")

    empty = run_cli("data", "ls")
    assert empty.code == 0 and "no datasets in local store" in empty.err

    missing = run_cli("data", "ls", "user.jdoe.nothing")
    assert missing.code == 1
    assert "dataset user.jdoe:user.jdoe.nothing not found in local store" in missing.err
    assert "hint: register its files with `cwlbridge data add user.jdoe:user.jdoe.nothing FILE…`" in missing.err

    assert run_cli("data", "get", "user.jdoe.nothing").code == 1
    no_file = run_cli("data", "add", "user.jdoe:ds", "nope.txt")
    assert no_file.code == 2 and "nope.txt: no such file" in no_file.err
    a_dir = run_cli("data", "add", "user.jdoe:ds", ".")
    assert a_dir.code == 2 and "is not a file" in a_dir.err
    bad_name = run_cli("data", "add", "user.jdoe:a b", "f.txt")
    assert bad_name.code == 2 and "not a valid dataset name" in bad_name.err
    bad_store = run_cli("data", "ls", "--store", "nowhere")
    assert bad_store.code == 2 and "unknown dataset store 'nowhere'" in bad_store.err

    assert run_cli("data", "add", "user.jdoe:ds", "f.txt").code == 0
    _write(tmp_path / "new" / "f.txt", b"two")
    conflict = run_cli("data", "add", "user.jdoe:ds", "new/f.txt")
    assert conflict.code == 1 and "f.txt is already in user.jdoe:ds with different content" in conflict.err
    not_there = run_cli("data", "get", "user.jdoe:ds", "out", "--name", "g.txt")
    assert not_there.code == 1 and "has no file named g.txt" in not_there.err

    for result in (missing, no_file, a_dir, bad_name, bad_store, conflict, not_there):
        assert "Traceback" not in result.text and "internal error" not in result.text


def test_cli_add_copies_and_leaves_the_users_file_writable(tmp_path: Path) -> None:
    from tests.cli_run import run_cli

    source = tmp_path / "mine.root"
    source.write_text("my events\n")
    before = source.stat()
    result = run_cli("data", "add", "user.jdoe:user.jdoe.mine", str(source), "--store", str(tmp_path / "store"))
    assert result.code == 0, result.err
    after = source.stat()
    assert after.st_mode == before.st_mode and after.st_nlink == 1
    source.write_text("still mine\n")  # the stored copy is not changed by this
    stored = tmp_path / "store" / "user.jdoe" / "user.jdoe.mine" / "mine.root"
    assert stored.read_text() == "my events\n"


def test_existing_lists_the_datasets_that_exist_as_exists_says(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.create("user.jdoe:user.jdoe.a")
    store.create("user.jdoe.b_out/")  # PanDA's container spelling, scope from the name
    (tmp_path / "store" / "user.jdoe" / "user.jdoe.c").mkdir()  # a directory, no dataset
    asked = ["user.jdoe.a", "user.jdoe:user.jdoe.b_out", "user.jdoe.c", "user.jdoe.d", "user.other.a", "mc20.x"]
    assert store.existing(asked) == [d for d in asked if store.exists(d)] == asked[:2]


def test_task_numbers_grow_per_scope_across_store_objects_and_processes(tmp_path: Path) -> None:
    first = LocalStore(tmp_path / "store")
    assert first.task_numbers("user.jdoe", "user.jdoe", 3) == [1, 2, 3]
    # Another store object (another run) continues the same counter; another scope has its own.
    assert LocalStore(tmp_path / "store").task_numbers("user.jdoe", "user.jdoe", 2) == [4, 5]
    assert first.task_numbers("user.alice", "user.alice", 1) == [1]
    # Processes taking numbers at once never get the same one (the counter is locked).
    script = (
        "import sys; from cwlbridge.data.datasets import LocalStore;"
        " print(*LocalStore(sys.argv[1]).task_numbers('user.jdoe', 'user.jdoe', 20))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "store")], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    taken = [int(n) for p in procs for n in p.communicate()[0].split()]
    assert sorted(taken) == list(range(6, 86))
    assert first.datasets() == []  # the counter is no dataset
    with pytest.raises(UsageError):
        first.task_numbers("../x", "user.jdoe", 1)
