"""Dataset stores: named sets of files that chains read from and write to.

A dataset is ``scope:name`` (PanDA/Rucio naming) holding files by name.  Two stores share
one contract, ``DatasetStore``:

- ``LocalStore``: a directory, ``<root>/<scope>/<dataset name>/<file>``.  Each dataset
  directory keeps a metadata file (size, adler32, md5 and mtime per file) so listing never
  re-reads the bytes.  The metadata is a log: each ``add`` appends one line listing the
  files it stored, in one ``write``, after the files are in place, so a reader sees a file
  only once it is whole.  Appending instead of rewriting keeps an ``add`` to a big dataset
  as cheap as to a small one and creates no file per ``add``.  Writers of one dataset take
  an exclusive ``flock`` on the dataset's directory, so two processes (or threads) adding
  at once both end up in the metadata.  Stored files are hard links where possible, made
  read-only; copies are written under a temporary name and renamed.
- ``RucioStore``: datasets in Rucio, files uploaded with the idempotent stage-out and
  downloaded with rucio's ``DownloadClient`` (which verifies checksums).

Both also hand out task numbers (``task_numbers``), PanDA's jediTaskID in output file names,
from a counter per scope kept on this machine: Rucio has no counter to lend.

rucio-clients takes a quarter of a second to import, so this module imports it only when a
Rucio store or a ``DidName`` is actually needed; the local store never pays for it.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import re
import shutil
import stat
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cwlbridge.data.tarball import file_checksums
from cwlbridge.errors import CwlbridgeError, InputFileError, UsageError

if TYPE_CHECKING:
    from rucio.client import Client

    from cwlbridge.data.rucio import DidName

log = logging.getLogger(__name__)

#: Environment variable naming the store when no ``--store`` is given.
STORE_ENV = "CWLBRIDGE_STORE"
#: Where ``open_store("local")`` keeps its data, relative to the working directory.
DEFAULT_LOCAL_ROOT = Path(".cwlbridge") / "data"

_RESERVED_PREFIX = ".cwlbridge"
_META_FILE = ".cwlbridge-dataset.json"
_TMP_PREFIX = ".cwlbridge-tmp-"
_NUMBERS_FILE = ".cwlbridge-task-numbers"  # in a scope's directory; no dataset can have the name
#: Where a Rucio store keeps its task-number counters, one per server and scope.
NUMBERS_ENV = "CWLBRIDGE_NUMBERS_DIR"
# Fields of PanDA/Rucio names for which the scope is the first two fields (ATLAS convention).
_TWO_FIELD_SCOPES = ("user", "group")
_FORBIDDEN_IN_NAME = re.compile(r"[\s:/\x00]")
_MAX_COMPONENT_BYTES = 255
_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
_ADLER32 = re.compile(r"^[0-9a-f]{8}$")
# A hard link is impossible here, but a copy may still work.
_NO_LINK_ERRNOS = frozenset(
    {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
)


@dataclass(frozen=True)
class StoredFile:
    """One file of a dataset: its name in the dataset, size, adler32 and local path if any."""

    name: str
    size: int
    adler32: str
    path: Path | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``path`` as a string or None)."""
        return {
            "name": self.name,
            "size": self.size,
            "adler32": self.adler32,
            "path": str(self.path) if self.path is not None else None,
        }


class DatasetNotFound(CwlbridgeError):
    """The dataset is not in the store; ``dataset`` and ``store`` say which and where."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        dataset: str | None = None,
        store: str | None = None,
    ):
        super().__init__(message, hint=hint)
        self.dataset = dataset
        self.store = store

    @classmethod
    def missing(cls, dataset: str, store: str) -> DatasetNotFound:
        """The standard error for a dataset that ``store`` does not hold."""
        return cls(
            f"dataset {dataset} not found in {store}",
            hint=f"register its files with `cwlbridge data add {dataset} FILE…`, or pick the store that"
            " holds it with --store / $CWLBRIDGE_STORE",
            dataset=dataset,
            store=store,
        )


class FileNotInDataset(DatasetNotFound):
    """A file name asked for is not in the dataset (the dataset itself exists)."""


class DatasetConflict(CwlbridgeError):
    """A file name is already in the dataset (or taken in Rucio) with different content."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        dataset: str | None = None,
        name: str | None = None,
    ):
        super().__init__(message, hint=hint)
        self.dataset = dataset
        self.name = name


@functools.lru_cache(maxsize=4096)
def split_dataset_name(text: str) -> tuple[str, str]:
    """Split a dataset name into (scope, name) the way PanDA and Rucio's ATLAS policy do.

    ``scope:name`` is taken as written; otherwise ``user.<nick>.x`` and ``group.<g>.x`` have
    the scope ``user.<nick>`` / ``group.<g>`` and any other name the scope of its first
    dot-separated field (``mc20_13TeV.x`` -> ``mc20_13TeV``).  One trailing ``/`` (PanDA's
    container spelling ``{task}_{type}/``) is dropped.  Raises UsageError for names that are
    empty, contain whitespace, ``/`` or a second ``:``, or could escape a directory.
    """
    raw = text.strip()
    body = raw[:-1] if raw.endswith("/") else raw
    if ":" in body:
        scope, _, name = body.partition(":")
    else:
        fields = body.split(".")
        scope = ".".join(fields[:2]) if fields[0] in _TWO_FIELD_SCOPES and len(fields) >= 2 else fields[0]
        name = body
    for part, what in ((scope, "scope"), (name, "name")):
        problem = _name_problem(part)
        if problem:
            raise UsageError(
                f"{text!r} is not a valid dataset name: the {what} {problem}",
                hint="write it as scope:name, e.g. user.jdoe:user.jdoe.inputs",
            )
    return scope, name


def _name_problem(part: str) -> str | None:
    if not part:
        return "is empty"
    if _FORBIDDEN_IN_NAME.search(part):
        return "contains whitespace, '/', ':' or a NUL character"
    if part in (".", ".."):
        return f"cannot be {part!r}"
    if part.startswith(_RESERVED_PREFIX):
        return f"cannot start with {_RESERVED_PREFIX!r}"
    if len(part.encode("utf-8")) > _MAX_COMPONENT_BYTES:
        return f"is longer than {_MAX_COMPONENT_BYTES} bytes"
    return None


def dataset_key(text: str) -> str:
    """The canonical ``scope:name`` spelling of a dataset name (see split_dataset_name)."""
    scope, name = split_dataset_name(text)
    return f"{scope}:{name}"


def dataset_did(name: str) -> DidName:
    """The Rucio DID of a dataset name: ``scope:name``, or ``name`` with its derived scope.

    ``user.jdoe.x`` -> ``user.jdoe:user.jdoe.x``; ``mc20_13TeV.x`` -> ``mc20_13TeV:mc20_13TeV.x``;
    a trailing ``/`` is dropped (same dataset) and recorded as ``container_style``.
    """
    from cwlbridge.data.rucio import DidName

    scope, body = split_dataset_name(name)
    return DidName(scope=scope, name=body, container_style=name.strip().endswith("/"))


def check_file_name(name: str) -> str:
    """Return ``name`` if it can be a file name inside a dataset; raise UsageError otherwise."""
    problem = None
    if not name:
        problem = "is empty"
    elif "/" in name or "\x00" in name:
        problem = "contains '/' or a NUL character"
    elif name in (".", ".."):
        problem = f"cannot be {name!r}"
    elif name.startswith(_RESERVED_PREFIX):
        problem = f"cannot start with {_RESERVED_PREFIX!r} (reserved for the store's own files)"
    elif len(name.encode("utf-8")) > _MAX_COMPONENT_BYTES:
        problem = f"is longer than {_MAX_COMPONENT_BYTES} bytes"
    if problem:
        raise UsageError(f"{name!r} cannot be a file name in a dataset: it {problem}")
    return name


@dataclass(frozen=True)
class _Source:
    """A file about to be added: its name in the dataset, where it is, and its checksums."""

    name: str
    path: Path
    size: int
    adler32: str
    md5: str


def _same_adler32(a: str | None, b: str | None) -> bool:
    # Rucio has stored adler32 values with and without leading zeros (rucio#4127).
    return a is not None and b is not None and a.lower().lstrip("0") == b.lower().lstrip("0")


def _checksummed_sources(dataset: str, files: Sequence[tuple[str, Path]]) -> list[_Source]:
    """Checksum each source once; drop repeats of a name with equal content, refuse others."""
    sources: dict[str, _Source] = {}
    for name, raw_path in files:
        check_file_name(name)
        path = Path(raw_path)
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise InputFileError(f"cannot add {path} to {dataset}: it {what}")
        adler32, md5, size = file_checksums(path)
        source = _Source(name=name, path=path, size=size, adler32=adler32, md5=md5)
        earlier = sources.get(name)
        if earlier is None:
            sources[name] = source
        elif (earlier.size, earlier.adler32) != (size, adler32):
            raise DatasetConflict(
                f"{name} is given twice for {dataset} with different content ({earlier.path} and {path})",
                dataset=dataset,
                name=name,
            )
    return list(sources.values())


def _select(files: list[StoredFile], names: Sequence[str] | None, dataset: str, store: str) -> list[StoredFile]:
    if names is None:
        return files
    wanted = set(names)
    present = {f.name for f in files}
    missing = sorted(wanted - present)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotInDataset(
            f"dataset {dataset} in {store} has no file named {shown}",
            hint=f"`cwlbridge data ls {dataset}` lists its {len(files)} file(s)",
            dataset=dataset,
            store=store,
        )
    return [f for f in files if f.name in wanted]


class DatasetStore(ABC):
    """Where datasets live: a local directory or Rucio.  Dataset names are ``scope:name``.

    Every method accepts any spelling ``split_dataset_name`` understands (``scope:name``, a
    bare name with a derivable scope, a trailing ``/``).
    """

    kind: str

    @abstractmethod
    def exists(self, dataset: str) -> bool:
        """Whether the dataset exists (an empty one counts)."""

    def existing(self, datasets: Sequence[str]) -> builtins.list[str]:
        """Those of ``datasets`` that exist, in order."""
        return [d for d in datasets if self.exists(d)]

    @abstractmethod
    def create(self, dataset: str) -> None:
        """Make sure the dataset exists, empty if new; a no-op when it is already there."""

    @abstractmethod
    def list(self, dataset: str) -> builtins.list[StoredFile]:
        """The dataset's files sorted by name; raises DatasetNotFound."""

    @abstractmethod
    def add(
        self, dataset: str, files: Sequence[tuple[str, Path]], *, link: bool = True
    ) -> builtins.list[StoredFile]:
        """Add (name in dataset, source file) pairs, creating the dataset if needed.

        Idempotent: a name already present with the same size and adler32 is left alone.
        A name present with different content raises DatasetConflict before anything is
        added.  Returns the stored files in the order given (repeated names once).  ``link``
        lets a local store hard-link the sources (the engine's own job outputs); the command
        line passes False, so a user's files are copied and keep their permissions.
        """

    @abstractmethod
    def fetch(self, dataset: str, dest: Path, names: Sequence[str] | None = None) -> builtins.list[Path]:
        """Make the dataset's files (or only ``names``) appear in directory ``dest``.

        Returns their paths in list() order.  Raises DatasetNotFound, or FileNotInDataset
        (a DatasetNotFound) for a name the dataset does not have.
        """

    @abstractmethod
    def datasets(self) -> builtins.list[str]:
        """Every dataset this store knows, as sorted ``scope:name`` strings."""

    @abstractmethod
    def task_numbers(self, scope: str, prefix: str, count: int) -> builtins.list[int]:
        """``count`` numbers never handed out before for ``scope``: what $JEDITASKID is on the grid.

        A task's output files are named ``<prefix>.<number:08d>._<job:06d>.<file>``, and a file
        name is taken for good in its scope (Rucio never reuses one), so every task of every
        run needs its own number.  The numbers grow; each call takes the next ones.
        """

    @abstractmethod
    def root_description(self) -> str:
        """Where the store is, for messages: ``local store /abs/path`` or ``rucio URL RSE X``."""

    def close(self) -> None:  # noqa: B027  # stores without connections have nothing to close
        """Release connections; the store is not used afterwards."""

    def __enter__(self) -> DatasetStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class _MetaRead:
    """What this process last read of one dataset's metadata log, and when."""

    ino: int
    size: int  # the file's size and mtime when read: unchanged means nothing to read
    mtime_ns: int
    end: int  # offset after the last whole line read
    entries: dict[str, dict[str, Any]]  # never changed once made: readers may hold it
    listing: builtins.list[StoredFile] | None = None


class LocalStore(DatasetStore):
    """Datasets in a directory: ``<root>/<scope>/<dataset name>/<file>`` plus metadata.

    Files are hard-linked in and out when source and destination share a file system, and
    copied otherwise.  A hard link shares its bytes (and mode) with the original, so stored
    files are made read-only, as DVC and git-annex do with theirs: the file given to ``add``
    and the files ``fetch`` produces become read-only too, and a job that opens an input for
    writing fails instead of silently changing the dataset.  Root ignores file modes, so
    the size and mtime of each file are recorded as well and ``fetch`` refuses a stored file
    that was changed in place.

    The metadata file (``.cwlbridge-dataset.json``) holds one JSON object a line, each with
    a ``files`` mapping of name to entry; later lines add names or replace their entries.
    A last line without its newline is an ``add`` cut short: readers leave it out and the
    next writer cuts it off.  The metadata read is kept per dataset and read again only when
    the file changed (by inode, size and mtime), and then only the lines appended since.
    """

    kind = "local"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self._root = str(self.root)
        self._meta: dict[str, _MetaRead] = {}

    def root_description(self) -> str:
        return f"local store {self.root}"

    def dataset_path(self, dataset: str) -> Path:
        """The directory holding the dataset's files (it may not exist yet)."""
        return Path(self._dir(dataset))

    def _dir(self, dataset: str) -> str:
        scope, name = split_dataset_name(dataset)
        return os.path.join(self._root, scope, name)

    def exists(self, dataset: str) -> bool:
        return os.path.isfile(os.path.join(self._dir(dataset), _META_FILE))

    def existing(self, datasets: Sequence[str]) -> builtins.list[str]:
        # One listing per scope instead of a look per dataset: a chain's outputs are many.
        listed: dict[str, set[str]] = {}
        found: builtins.list[str] = []
        for dataset in datasets:
            scope, name = split_dataset_name(dataset)
            if scope not in listed:
                try:
                    listed[scope] = set(os.listdir(os.path.join(self._root, scope)))
                except OSError:
                    listed[scope] = set()
            if name in listed[scope] and self.exists(dataset):
                found.append(dataset)
        return found

    def create(self, dataset: str) -> None:
        directory = self._dir(dataset)
        key = dataset_key(dataset)
        # Opening with O_CREAT leaves an existing metadata file as it is: no lock needed.
        meta_path = os.path.join(directory, _META_FILE)
        try:
            try:
                fd = os.open(meta_path, os.O_WRONLY | os.O_CREAT, 0o666)
            except FileNotFoundError:
                os.makedirs(directory, exist_ok=True)
                fd = os.open(meta_path, os.O_WRONLY | os.O_CREAT, 0o666)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise CwlbridgeError(f"cannot write {key} in {self.root_description()}: {exc.strerror or exc}") from exc
        if st.st_size == 0 and directory not in self._meta:
            # Known to be empty: the first add (a job's end, often) need not read it.
            self._meta[directory] = _MetaRead(st.st_ino, 0, st.st_mtime_ns, 0, {})

    def _entries(self, dataset: str) -> tuple[str, str, dict[str, dict[str, Any]]]:
        key = dataset_key(dataset)
        directory = self._dir(dataset)
        entries = self._read_meta(directory, key)
        if entries is None:
            raise DatasetNotFound.missing(key, self.root_description())
        return key, directory, entries

    def list(self, dataset: str) -> builtins.list[StoredFile]:
        _, directory, _ = self._entries(dataset)
        cached = self._meta[directory]
        if cached.listing is None:
            cached.listing = [
                StoredFile(name=name, size=entry["size"], adler32=entry["adler32"], path=Path(directory, name))
                for name, entry in sorted(cached.entries.items())
            ]
        return builtins.list(cached.listing)

    def add(
        self, dataset: str, files: Sequence[tuple[str, Path]], *, link: bool = True
    ) -> builtins.list[StoredFile]:
        key = dataset_key(dataset)
        directory = self._dir(dataset)
        # Checksums are computed before taking the lock, so concurrent writers to the same
        # dataset wait only for each other's links and metadata updates.
        sources = _checksummed_sources(key, files)
        with self._locked(directory, key):
            existing = self._read_meta(directory, key)
            entries = existing or {}
            for source in sources:
                have = entries.get(source.name)
                if have is not None and (have["size"], have["adler32"]) != (source.size, source.adler32):
                    raise DatasetConflict(
                        f"{source.name} is already in {key} with different content (stored: {have['size']} bytes,"
                        f" adler32 {have['adler32']}; {source.path}: {source.size} bytes, adler32 {source.adler32})",
                        hint="a dataset's files never change; add the new content under another name"
                        " or into a new dataset",
                        dataset=key,
                        name=source.name,
                    )
            added: dict[str, dict[str, Any]] = {}
            for source in sources:
                target = os.path.join(directory, source.name)
                have = entries.get(source.name)
                if have is not None and _unchanged(target, have):
                    continue
                # New, or the stored copy went missing or was changed: (re)place it.
                if link:
                    placed = self._place(source.path, target, key, protect=True)
                else:  # the caller's own file: a copy, so its permissions stay as they are
                    placed = self._place_via_tmp(source.path, target, key, protect=True, allow_link=False)
                if placed.st_size != source.size:
                    with contextlib.suppress(OSError):
                        os.unlink(target)
                    raise InputFileError(f"{source.path} changed while it was being added to {key}")
                added[source.name] = {
                    "size": source.size,
                    "adler32": source.adler32,
                    "md5": source.md5,
                    "mtime_ns": placed.st_mtime_ns,
                }
            if added or existing is None:
                self._append_meta(directory, key, entries, added)
        return [StoredFile(s.name, s.size, s.adler32, Path(directory, s.name)) for s in sources]

    def fetch(self, dataset: str, dest: Path, names: Sequence[str] | None = None) -> builtins.list[Path]:
        key, directory, entries = self._entries(dataset)
        if names is None:
            chosen = sorted(entries)
        else:
            wanted = set(names)
            missing = sorted(wanted - entries.keys())
            if missing:
                shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                raise FileNotInDataset(
                    f"dataset {key} in {self.root_description()} has no file named {shown}",
                    hint=f"`cwlbridge data ls {key}` lists its {len(entries)} file(s)",
                    dataset=key,
                    store=self.root_description(),
                )
            chosen = sorted(wanted)
        try:
            if not os.path.isdir(dest):
                os.makedirs(dest, exist_ok=True)
        except OSError as exc:
            raise CwlbridgeError(f"cannot create {dest}: {exc.strerror or exc}") from exc
        paths: list[Path] = []
        for name in chosen:
            source = os.path.join(directory, name)
            try:
                source_stat = os.stat(source)
            except FileNotFoundError:
                raise CwlbridgeError(
                    f"{source} is listed in {key} but missing from {self.root_description()}",
                    hint=f"add the file again with `cwlbridge data add {key} FILE`",
                ) from None
            entry = entries[name]
            if not _stat_matches(source_stat, entry):
                raise CwlbridgeError(
                    f"{source} was changed in place after it was added to {key}"
                    f" (now {source_stat.st_size} bytes, added with {entry['size']})",
                    hint="a hard link to it was probably written to; add the original content again"
                    f" with `cwlbridge data add {key} FILE`, or the new content under a new name",
                )
            target = os.path.join(dest, name)
            self._place(source, target, key, protect=False, source_stat=source_stat)
            paths.append(Path(target))
        return paths

    def datasets(self) -> builtins.list[str]:
        found: list[str] = []
        try:
            scopes = [p for p in self.root.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CwlbridgeError(f"cannot read {self.root_description()}: {exc.strerror or exc}") from exc
        for scope_dir in scopes:
            with contextlib.suppress(OSError):
                found.extend(f"{scope_dir.name}:{d.name}" for d in scope_dir.iterdir() if (d / _META_FILE).is_file())
        return sorted(found)

    def task_numbers(self, scope: str, prefix: str, count: int) -> builtins.list[int]:
        # A local store keeps file names per dataset, so no other check is needed: the counter
        # only gives runs here the same names they would get from Rucio.
        split_dataset_name(f"{scope}:x")  # refuses a scope that could leave the store
        path = Path(self._root, scope, _NUMBERS_FILE)
        return take_numbers(path, count, lambda number: False, where=self.root_description())

    @contextlib.contextmanager
    def _locked(self, directory: str, key: str) -> Iterator[None]:
        """Hold the dataset's exclusive lock (creating its directory) for the block.

        The lock is a ``flock`` on the directory itself: a lock file would be one more file
        to create per dataset.
        """
        try:
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                os.makedirs(directory, exist_ok=True)
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise CwlbridgeError(f"cannot write {key} in {self.root_description()}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _read_meta(self, directory: str, key: str) -> dict[str, dict[str, Any]] | None:
        """The dataset's file entries, or None when the dataset does not exist."""
        meta_path = os.path.join(directory, _META_FILE)
        try:
            st = os.stat(meta_path)
        except FileNotFoundError:
            self._meta.pop(directory, None)
            return None
        except OSError as exc:
            raise CwlbridgeError(f"cannot read {meta_path}: {exc.strerror or exc}") from exc
        cached = self._meta.get(directory)
        if cached is not None and (cached.ino, cached.size, cached.mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns):
            return cached.entries
        # Only what was appended since, if the file is the one read before and still
        # ends a line where the last read stopped.
        start = cached.end if cached is not None and cached.ino == st.st_ino and st.st_size >= cached.end else 0
        try:
            with open(meta_path, "rb") as handle:
                st = os.fstat(handle.fileno())
                if start:
                    handle.seek(start - 1)
                    if handle.read(1) != b"\n":
                        start = 0
                        handle.seek(0)
                raw = handle.read()
        except FileNotFoundError:
            self._meta.pop(directory, None)
            return None
        except OSError as exc:
            raise CwlbridgeError(f"cannot read {meta_path}: {exc.strerror or exc}") from exc
        entries = dict(cached.entries) if start and cached is not None else {}
        whole = raw.rfind(b"\n") + 1
        try:
            for line in raw[:whole].split(b"\n")[:-1]:
                if not line.strip():
                    continue
                files = json.loads(line)["files"]
                if not isinstance(files, dict):
                    raise TypeError("files is not a mapping")
                for name, entry in files.items():
                    if not (
                        isinstance(entry.get("size"), int)
                        and isinstance(entry.get("adler32"), str)
                        and _ADLER32.match(entry["adler32"])
                    ):
                        raise TypeError(f"bad entry for {name!r}")
                    entries[name] = entry
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CwlbridgeError(
                f"the metadata of {key} ({meta_path}) is damaged: {exc}",
                hint="re-add the dataset's files into a new dataset",
            ) from exc
        self._meta[directory] = _MetaRead(st.st_ino, start + len(raw), st.st_mtime_ns, start + whole, entries)
        return entries

    def _append_meta(
        self,
        directory: str,
        key: str,
        entries: dict[str, dict[str, Any]],
        added: dict[str, dict[str, Any]],
    ) -> None:
        """Append one line with the ``added`` entries (none: just make the file); under the lock."""
        meta_path = os.path.join(directory, _META_FILE)
        line = b""
        if added:
            document = {"files": {n: dict(added[n]) for n in sorted(added)}}
            line = (json.dumps(document, separators=(",", ":")) + "\n").encode("utf-8")
        try:
            fd = os.open(meta_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                st = os.fstat(fd)
                cached = self._meta.get(directory)
                whole = cached.end if cached is not None and cached.ino == st.st_ino else st.st_size
                if st.st_size > whole:
                    os.ftruncate(fd, whole)  # an add cut short left an unfinished line
                if line and os.write(fd, line) != len(line):
                    raise OSError(errno.EIO, "the metadata line was written in part")
                after = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise CwlbridgeError(f"cannot write {meta_path}: {exc.strerror or exc}") from exc
        if after.st_size == whole + len(line):
            merged = {**entries, **added}
            self._meta[directory] = _MetaRead(after.st_ino, after.st_size, after.st_mtime_ns, after.st_size, merged)
        else:
            self._meta.pop(directory, None)

    def _place(
        self,
        source: Path | str,
        target: str,
        key: str,
        *,
        protect: bool,
        source_stat: os.stat_result | None = None,
    ) -> os.stat_result:
        """Make ``target`` a hard link to (or else a copy of) ``source``, appearing at once.

        With ``protect`` the file loses its write permissions first; a hard link whose mode
        cannot be changed (someone else's file) is replaced by a copy.  An existing
        ``target`` is replaced, unless it already is ``source`` (``source_stat``).  Returns
        the stat of ``target``.
        """
        try:
            # A new hard link appears whole, so it needs no temporary name.
            os.link(source, target)
        except FileExistsError:
            if source_stat is not None:
                with contextlib.suppress(OSError):
                    if os.path.samestat(source_stat, os.stat(target)):
                        return source_stat
            return self._place_via_tmp(source, target, key, protect=protect)
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise CwlbridgeError(f"cannot put {source} at {target} ({key}): {exc.strerror or exc}") from exc
            return self._place_via_tmp(source, target, key, protect=protect, allow_link=False)
        try:
            if protect:
                try:
                    _drop_write_permission(target)
                except PermissionError:
                    os.unlink(target)
                    return self._place_via_tmp(source, target, key, protect=True, allow_link=False)
            return os.stat(target)
        except OSError as exc:
            raise CwlbridgeError(f"cannot put {source} at {target} ({key}): {exc.strerror or exc}") from exc

    def _place_via_tmp(
        self, source: Path | str, target: str, key: str, *, protect: bool, allow_link: bool = True
    ) -> os.stat_result:
        """``_place`` where a link cannot go straight to ``target``: a temporary name, renamed."""
        tmp = os.path.join(os.path.dirname(target), f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            linked = _link_or_copy(source, tmp, allow_link=allow_link)
            if protect:
                try:
                    _drop_write_permission(tmp)
                except PermissionError:
                    if not linked:
                        raise
                    os.unlink(tmp)
                    _link_or_copy(source, tmp, allow_link=False)
                    _drop_write_permission(tmp)
            os.replace(tmp, target)
            return os.stat(target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise CwlbridgeError(f"cannot put {source} at {target} ({key}): {exc.strerror or exc}") from exc


def take_numbers(path: Path, count: int, used: Callable[[int], bool], *, where: str) -> builtins.list[int]:
    """The next ``count`` numbers of the counter in file ``path`` (made at 1), skipping ``used`` ones.

    The file holds the next number to hand out.  An exclusive ``flock`` on it makes the read
    and the update one step, so two runs started at once never get the same number.  The
    number is written over the old one at a fixed width: truncating the file first would cost
    30 times more (0.3 ms, per scheduling round).
    """
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise CwlbridgeError(f"cannot keep task numbers in {path} ({where}): {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        number = int(text) if text.isdigit() and int(text) > 0 else 1
        taken: builtins.list[int] = []
        while len(taken) < count:
            if not used(number):
                taken.append(number)
            number += 1
        os.pwrite(fd, f"{number:020d}\n".encode(), 0)
        return taken
    except OSError as exc:
        raise CwlbridgeError(f"cannot keep task numbers in {path} ({where}): {exc.strerror or exc}") from exc
    finally:
        os.close(fd)  # releases the lock


def _link_or_copy(source: Path | str, target: str, *, allow_link: bool = True) -> bool:
    """Hard-link ``source`` to ``target`` when possible, else copy it; True if linked."""
    if allow_link:
        try:
            os.link(source, target)
            return True
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
    shutil.copyfile(source, target)
    shutil.copymode(source, target)
    return False


def _drop_write_permission(path: str) -> None:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & _WRITE_BITS:
        os.chmod(path, mode & ~_WRITE_BITS)


def _stat_matches(st: os.stat_result, entry: Mapping[str, Any]) -> bool:
    """Whether a stored file still looks as it did when added (size, and mtime if recorded)."""
    if st.st_size != entry["size"]:
        return False
    recorded = entry.get("mtime_ns")
    return not isinstance(recorded, int) or st.st_mtime_ns == recorded


def _unchanged(path: str, entry: Mapping[str, Any]) -> bool:
    try:
        return _stat_matches(os.stat(path), entry)
    except OSError:
        return False


class RucioStore(DatasetStore):
    """Datasets in Rucio: files uploaded with the stage-out onto ``rse``, read from anywhere.

    ``add`` stages each file out as DID ``<dataset scope>:<name>`` into the dataset (a new
    dataset gets a rule of one copy on ``rse`` lasting ``lifetime_days``).  ``fetch`` uses
    rucio's DownloadClient, which picks a replica on any RSE and verifies the checksum.
    ``datasets()`` lists the collections in ``scopes`` (default: the account's scopes).
    Without ``client`` one is built from ``config`` or $RUCIO_CONFIG (and closed by close()).
    """

    kind = "rucio"

    def __init__(
        self,
        rse: str,
        *,
        client: Client | None = None,
        config: Path | None = None,
        lifetime_days: int | None = 14,
        scopes: Sequence[str] | None = None,
    ) -> None:
        from cwlbridge.data.rucio import rucio_client

        if not rse or _FORBIDDEN_IN_NAME.search(rse):
            raise UsageError(f"{rse!r} is not an RSE name")
        self.rse = rse
        self._owns_client = client is None
        self.client: Client = client if client is not None else rucio_client(config)
        self.lifetime_days = lifetime_days
        self.scopes = list(scopes) if scopes else None

    def root_description(self) -> str:
        from cwlbridge.data.rucio import server_url

        return f"rucio {server_url(self.client) or '(unknown server)'} RSE {self.rse}"

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        from cwlbridge.data.rucio import rucio_errors, server_url

        with rucio_errors(action, url=server_url(self.client)):
            yield

    def _did_info(self, did: DidName) -> dict[str, Any] | None:
        from rucio.common import exception as rucio_exc

        with self._errors(f"cannot look up {did}"):
            try:
                info: dict[str, Any] = self.client.get_did(did.scope, did.name)
            except (rucio_exc.DataIdentifierNotFound, rucio_exc.ScopeNotFound):
                return None
        return info

    @staticmethod
    def _did_type(info: Mapping[str, Any]) -> str:
        return str(info.get("type", "")).upper()

    def exists(self, dataset: str) -> bool:
        info = self._did_info(dataset_did(dataset))
        return info is not None and self._did_type(info) in ("DATASET", "CONTAINER")

    def create(self, dataset: str) -> None:
        from rucio.common import exception as rucio_exc

        did = dataset_did(dataset)
        info = self._did_info(did)
        if info is not None:
            self._require_collection(did, info)
            return
        lifetime = self.lifetime_days * 86400 if self.lifetime_days else None
        rule = {
            "account": self.client.account,
            "copies": 1,
            "rse_expression": self.rse,
            "grouping": "DATASET",
            "lifetime": lifetime,
        }
        # Already there means created concurrently: that is the goal.
        with (
            self._errors(f"cannot create dataset {did}"),
            contextlib.suppress(rucio_exc.DataIdentifierAlreadyExists),
        ):
            self.client.add_dataset(did.scope, did.name, rules=[rule])

    def _require_collection(self, did: DidName, info: Mapping[str, Any]) -> None:
        if self._did_type(info) == "FILE":
            raise DatasetConflict(
                f"{did} is a file in {self.root_description()}, not a dataset",
                hint="choose another dataset name",
                dataset=str(did),
            )

    def _rows(self, did: DidName) -> builtins.list[dict[str, Any]]:
        """list_files of an existing dataset or container; DatasetNotFound otherwise."""
        info = self._did_info(did)
        if info is None or self._did_type(info) not in ("DATASET", "CONTAINER"):
            raise DatasetNotFound.missing(str(did), self.root_description())
        with self._errors(f"cannot list the files of {did}"):
            rows = list(self.client.list_files(did.scope, did.name))
        return sorted(rows, key=lambda row: str(row["name"]))

    @staticmethod
    def _stored(row: Mapping[str, Any]) -> StoredFile:
        adler32 = row.get("adler32")
        return StoredFile(
            name=str(row["name"]),
            size=int(row.get("bytes") or 0),
            adler32=str(adler32).lower().zfill(8) if adler32 else "",
            path=None,
        )

    def list(self, dataset: str) -> builtins.list[StoredFile]:
        return [self._stored(row) for row in self._rows(dataset_did(dataset))]

    def add(
        self, dataset: str, files: Sequence[tuple[str, Path]], *, link: bool = True
    ) -> builtins.list[StoredFile]:
        from rucio.common import exception as rucio_exc

        from cwlbridge.data.stageout import StageOutConflict, stage_out

        did = dataset_did(dataset)
        key = str(did)
        sources = _checksummed_sources(key, files)
        info = self._did_info(did)
        present: dict[str, StoredFile] = {}
        if info is not None:
            self._require_collection(did, info)
            if self._did_type(info) != "DATASET":
                raise UsageError(
                    f"{key} is a container: files can only be added to datasets",
                    hint="add them to one of its datasets, or to a new dataset",
                )
            present = {f.name: f for f in self.list(key)}
        # Every conflict is found before the first upload, as in the local store.
        for source in sources:
            have = present.get(source.name)
            if have is not None:
                if have.size != source.size or not _same_adler32(have.adler32, source.adler32):
                    raise self._conflict(key, source, have.size, have.adler32)
                continue
            with self._errors(f"cannot look up {did.scope}:{source.name}"):
                try:
                    meta = self.client.get_metadata(did.scope, source.name)
                except rucio_exc.DataIdentifierNotFound:
                    continue
            if str(meta.get("did_type", "FILE")).upper() != "FILE" or not _same_adler32(
                meta.get("adler32"), source.adler32
            ):
                raise self._conflict(key, source, meta.get("bytes"), meta.get("adler32"), taken=True)
        if info is None:
            self.create(key)
        for source in sources:
            if source.name in present:
                continue
            try:
                result = stage_out(
                    source.path,
                    did=f"{did.scope}:{source.name}",
                    dataset=key,
                    rse=self.rse,
                    lifetime_days=self.lifetime_days,
                    client=self.client,
                )
            except StageOutConflict as exc:
                raise DatasetConflict(exc.message, hint=exc.hint, dataset=key, name=source.name) from exc
            log.info("%s: %s %s", key, source.name, result.outcome)
        return [StoredFile(s.name, s.size, s.adler32, None) for s in sources]

    def _conflict(
        self, key: str, source: _Source, size: object, adler32: object, *, taken: bool = False
    ) -> DatasetConflict:
        where = f"already taken in scope {key.partition(':')[0]}" if taken else f"already in {key}"
        return DatasetConflict(
            f"{source.name} is {where} with different content (Rucio: {size} bytes, adler32 {adler32};"
            f" {source.path}: {source.size} bytes, adler32 {source.adler32})",
            hint="Rucio never reuses a file name, even after deletion; add the new content under another name",
            dataset=key,
            name=source.name,
        )

    def fetch(self, dataset: str, dest: Path, names: Sequence[str] | None = None) -> builtins.list[Path]:
        from rucio.client.downloadclient import DownloadClient

        from cwlbridge.data.rucio import RucioError, server_url

        did = dataset_did(dataset)
        rows = self._rows(did)
        selected = _select([self._stored(r) for r in rows], names, str(did), self.root_description())
        if not selected:
            return []
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CwlbridgeError(f"cannot create {dest}: {exc.strerror or exc}") from exc
        common = {"base_dir": str(dest), "no_subdir": True}
        if names is None:
            items = [{"did": str(did), **common}]
        else:
            scope_of = {str(r["name"]): str(r["scope"]) for r in rows}
            items = [{"did": f"{scope_of[f.name]}:{f.name}", **common} for f in selected]
        with self._errors(f"download of {did} failed"):
            downloader = DownloadClient(
                client=self.client, logger=logging.getLogger("cwlbridge.rucio.download"), tracing=False
            )
            results = downloader.download_dids(items, num_threads=1)
        failed = [r for r in results if r.get("clientState") not in ("DONE", "ALREADY_DONE")]
        if failed:
            raise RucioError(
                f"download of {did} failed for {len(failed)} file(s), e.g. {failed[0].get('name')}:"
                f" state {failed[0].get('clientState')}",
                url=server_url(self.client),
            )
        paths = [dest / f.name for f in selected]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise RucioError(
                f"download of {did} reported success but {missing[0]} is missing", url=server_url(self.client)
            )
        return paths

    def datasets(self) -> builtins.list[str]:
        with self._errors("cannot list datasets"):
            scopes = self.scopes or list(self.client.list_scopes_for_account(self.client.account))
            found: set[str] = set()
            for scope in scopes:
                for entry in self.client.list_dids(scope, [{"name": "*"}], did_type="collection"):
                    name = entry["name"] if isinstance(entry, Mapping) else entry
                    found.add(f"{scope}:{name}")
        return sorted(found)

    def task_numbers(self, scope: str, prefix: str, count: int) -> builtins.list[int]:
        # Rucio has no counter to draw from, so the counter is a file on this machine, one per
        # server and scope; a number whose file names exist in the scope already (another
        # machine's run, or a counter file lost) is skipped, so the catalogue stays the judge.
        import hashlib

        from cwlbridge.data.rucio import server_url

        url = server_url(self.client) or ""
        label = hashlib.sha256(f"{url}\n{scope}".encode()).hexdigest()[:16]
        path = numbers_dir() / f"{re.sub(r'[^A-Za-z0-9._-]', '_', scope)}-{label}"

        def used(number: int) -> bool:
            pattern = f"{prefix}.{number:08d}._*"
            with self._errors(f"cannot look up {scope}:{pattern}"):
                found = self.client.list_dids(scope, [{"name": pattern}], did_type="file")
                return next(iter(found), None) is not None

        return take_numbers(path, count, used, where=self.root_description())

    def close(self) -> None:
        if self._owns_client:
            session = getattr(self.client, "session", None)
            if session is not None:
                session.close()


def numbers_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where Rucio stores keep their task-number counters: $CWLBRIDGE_NUMBERS_DIR, else
    ``$XDG_STATE_HOME/cwlbridge/task-numbers`` (``~/.local/state/…``), shared by the runs of
    one user (on lxplus the home directory is the same on every node)."""
    env = os.environ if environ is None else environ
    if env.get(NUMBERS_ENV):
        return Path(env[NUMBERS_ENV]).expanduser()
    state = env.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(state) / "cwlbridge" / "task-numbers"


def open_store(
    spec: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> DatasetStore:
    """Open the store that ``spec`` names; without one, $CWLBRIDGE_STORE, else ``local``.

    ``local`` is ``<cwd>/.cwlbridge/data``; a path (containing ``/`` or starting with ``.`` or
    ``~``) is a local store there, relative paths taken from ``cwd``; ``rucio:RSE`` is Rucio,
    configured by $RUCIO_CONFIG (from ``environ`` when given) and writing onto RSE.
    """
    env = os.environ if environ is None else environ
    text = (spec if spec is not None else env.get(STORE_ENV) or "local").strip()
    base = Path(os.path.abspath(cwd if cwd is not None else Path.cwd()))
    if text == "local":
        return LocalStore(base / DEFAULT_LOCAL_ROOT)
    if text.startswith("rucio:"):
        rse = text.partition(":")[2].strip()
        if not rse:
            raise UsageError("store 'rucio:' names no RSE", hint="write rucio:RSE, e.g. rucio:CERN-PROD_SCRATCHDISK")
        config_text = env.get("RUCIO_CONFIG") if environ is not None else None
        config = Path(config_text) if config_text and config_text != os.environ.get("RUCIO_CONFIG") else None
        return RucioStore(rse, config=config)
    if text == "rucio":
        raise UsageError("store 'rucio' needs an RSE", hint="write rucio:RSE, e.g. rucio:CERN-PROD_SCRATCHDISK")
    if "/" in text or text.startswith((".", "~")):
        path = Path(text).expanduser()
        return LocalStore(path if path.is_absolute() else base / path)
    raise UsageError(
        f"unknown dataset store {text!r}",
        hint="use local, a directory (./store, /data/store) or rucio:RSE; a bare directory name needs ./",
    )
