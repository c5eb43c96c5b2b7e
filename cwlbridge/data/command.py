"""``cwlbridge data add|ls|get``: the dataset store from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cwlbridge.errors import EXIT_OK, InputFileError, UsageError
from cwlbridge.units import human_size

if TYPE_CHECKING:
    from cwlbridge.data.datasets import DatasetStore, StoredFile

_DESCRIPTION = """\
Datasets are named sets of files (scope:name, as in PanDA and Rucio) that chains read and
write.  By default they live in a local directory store, ./.cwlbridge/data; --store (or
$CWLBRIDGE_STORE) chooses another directory or Rucio (rucio:RSE, configured by RUCIO_CONFIG).
A name without scope gets PanDA's: user.jdoe.x -> user.jdoe, mc20_13TeV.x -> mc20_13TeV."""


def register(subparsers: Any) -> None:
    """Add the ``data`` command family."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "data",
        help="register, list and fetch datasets (local store or Rucio)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_sub.required = True

    add = data_sub.add_parser(
        "add",
        help="register files as (part of) a dataset",
        description="Put files into a dataset, creating it if needed. A file already there with the same"
        " content is left alone; one with the same name but different content is an error.",
    )
    add.add_argument("dataset", metavar="SCOPE:NAME", help="the dataset, e.g. user.jdoe:user.jdoe.inputs")
    add.add_argument("files", metavar="FILE", nargs="+", help="files to add, each under its own base name")
    _add_store_option(add)
    add.set_defaults(handler=run_add)

    ls = data_sub.add_parser(
        "ls",
        help="list datasets, or the files of one dataset",
        description="Without DATASET: every dataset with its file count and size. With DATASET: its files"
        " with size and adler32 (and, in a local store, where they are on disk).",
    )
    ls.add_argument("dataset", metavar="DATASET", nargs="?")
    ls.add_argument("--json", action="store_true", help="machine-readable output (sizes in bytes)")
    _add_store_option(ls)
    ls.set_defaults(handler=run_ls)

    get = data_sub.add_parser(
        "get",
        help="fetch a dataset's files into a directory",
        description="Make the dataset's files appear in DEST (hard links from a local store when"
        " possible, copies otherwise; downloads from Rucio) and print their paths.",
    )
    get.add_argument("dataset", metavar="DATASET")
    get.add_argument("dest", metavar="DEST", nargs="?", default=".", help="target directory (default: .)")
    get.add_argument("--name", action="append", default=None, metavar="FILE", help="fetch only this file (repeatable)")
    _add_store_option(get)
    get.set_defaults(handler=run_get)


def _add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="SPEC",
        default=None,
        help="local (./.cwlbridge/data), a directory (./dir, /abs/dir) or rucio:RSE; default $CWLBRIDGE_STORE or local",
    )


def _open(args: argparse.Namespace) -> DatasetStore:
    from cwlbridge.data.datasets import open_store

    return open_store(args.store)


def _table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def run_add(args: argparse.Namespace) -> int:
    """``cwlbridge data add SCOPE:NAME FILE…``."""
    from cwlbridge.data.datasets import dataset_key

    key = dataset_key(args.dataset)
    files: list[tuple[str, Path]] = []
    for name in args.files:
        path = Path(name)
        if not path.exists():
            raise UsageError(f"{name}: no such file")
        if not path.is_file():
            raise UsageError(f"{name} is not a file (directories cannot be added; tar them first)")
        files.append((path.name, path))
    with _open(args) as store:
        before = {f.name for f in store.list(key)} if store.exists(key) else set()
        stored = store.add(key, files, link=False)
        rows = [["present" if f.name in before else "added", f.name, human_size(f.size), f.adler32] for f in stored]
        sys.stdout.write(_table(rows, right={2}))
        total = store.list(key)
        sys.stdout.write(
            f"{key}: {len(total)} file(s), {human_size(sum(f.size for f in total))} in {store.root_description()}\n"
        )
    return EXIT_OK


def run_ls(args: argparse.Namespace) -> int:
    """``cwlbridge data ls [DATASET] [--json]``."""
    with _open(args) as store:
        if args.dataset is None:
            _list_datasets(store, as_json=args.json)
        else:
            _list_files(store, args.dataset, as_json=args.json)
    return EXIT_OK


def _list_datasets(store: DatasetStore, *, as_json: bool) -> None:
    summary: list[tuple[str, int, int]] = []
    for name in store.datasets():
        files = store.list(name)
        summary.append((name, len(files), sum(f.size for f in files)))
    if as_json:
        document = {
            "store": store.root_description(),
            "kind": store.kind,
            "datasets": [{"dataset": name, "files": count, "bytes": size} for name, count, size in summary],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    if not summary:
        sys.stderr.write(f"no datasets in {store.root_description()}\n")
        return
    rows = [["DATASET", "FILES", "SIZE"]]
    rows += [[name, str(count), human_size(size)] for name, count, size in summary]
    sys.stdout.write(_table(rows, right={1, 2}))
    sys.stdout.write(f"{len(summary)} dataset(s) in {store.root_description()}\n")


def _list_files(store: DatasetStore, dataset: str, *, as_json: bool) -> None:
    from cwlbridge.data.datasets import dataset_key

    key = dataset_key(dataset)
    files = store.list(key)
    total = sum(f.size for f in files)
    if as_json:
        document = {
            "store": store.root_description(),
            "kind": store.kind,
            "dataset": key,
            "bytes": total,
            "files": [f.as_dict() for f in files],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    if files:
        sys.stdout.write(_table(_file_rows(files), right={1}))
    sys.stdout.write(f"{key}: {len(files)} file(s), {human_size(total)} in {store.root_description()}\n")


def _file_rows(files: list[StoredFile]) -> list[list[str]]:
    with_paths = any(f.path is not None for f in files)
    rows = [["NAME", "SIZE", "ADLER32"] + (["PATH"] if with_paths else [])]
    for f in files:
        rows.append([f.name, human_size(f.size), f.adler32] + ([str(f.path or "")] if with_paths else []))
    return rows


def run_get(args: argparse.Namespace) -> int:
    """``cwlbridge data get DATASET [DEST]``: print the fetched paths, one per line."""
    from cwlbridge.data.datasets import dataset_key

    key = dataset_key(args.dataset)
    dest = Path(args.dest)
    if dest.exists() and not dest.is_dir():
        raise InputFileError(f"{dest} exists and is not a directory")
    with _open(args) as store:
        paths = store.fetch(key, dest, args.name)
        for path in paths:
            sys.stdout.write(f"{path}\n")
        sys.stderr.write(f"fetched {len(paths)} file(s) of {key} from {store.root_description()} into {dest}\n")
    return EXIT_OK
