"""The sandbox a chain's PanDA tasks run: an explicit list of files, one tarball per content.

pchain tars every file under 1 MB below the current directory: ``.git``, a ``usercert.pem``
and private notes go to the PanDA cache with the chain (pchain.md lists it as a defect).  Here
the sandbox holds only:

- the files beside the chain (in its directory or below) that a task's ``opt_exec`` or
  ``opt_args`` names, as a word or part of one (``./skim.sh``, ``--spec=reana.yaml``,
  ``a.py,b.py``);
- for a ``run: reana`` step, its ``--spec`` template and the files the template names
  (``inputs.files``, the files under ``inputs.directories``, ``workflow.file``, a CWL job file):
  the REANA submitter needs them inside the job;
- whatever ``--sandbox-include GLOB`` adds (relative to the chain's directory).

Never: hidden files or directories, symbolic links, files that look like credentials
(certificates, keys, proxies, tokens), files over ``MAX_FILE_BYTES``.  A file a command names
that is refused is an error, so a job never fails on the grid for a file left behind.

The tarball is deterministic (``data.tarball.write_tar``: sorted members, fixed times and
owners), so the same files give the same bytes; it is named after its md5,
``jobO.<md5>.tar.gz``.  Before an upload the cache is asked for an identical file
(``validate_cache_file``), so running a chain again uploads nothing.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import stat
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cwlbridge.data.tarball import write_tar
from cwlbridge.errors import UsageError
from cwlbridge.model.plan import Plan

#: The largest file put into a sandbox (PanDA's cache takes at most 10 MB per upload).
MAX_FILE_BYTES = 5 * 1024 * 1024
#: The largest sandbox PanDA's cache accepts under a name that does not start with "sources.".
MAX_SANDBOX_BYTES = 10 * 1024 * 1024
#: File names that hold credentials (matched case-insensitively against the base name).
CREDENTIAL_PATTERNS = (
    "usercert.pem", "userkey.pem", "x509up*", "*.p12", "*.pfx", "*.key", "*.keytab", "id_rsa*",
    "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.token", "token", "panda_secrets.json", "*.kdbx", "krb5cc*",
)
_SPLIT = re.compile(r"[=,:;|&<>()]")


class SandboxError(UsageError):
    """A file the chain needs cannot go into the sandbox (the message says which and why)."""


@dataclass
class SandboxSelection:
    """What goes into the sandbox, and what was refused (with the reason)."""

    root: Path
    files: list[str] = field(default_factory=list)  # relative POSIX paths, sorted
    refused: dict[str, str] = field(default_factory=dict)  # relative path -> why

    def check(self) -> None:
        """Raise ``SandboxError`` when a needed file was refused."""
        if self.refused:
            lines = "\n".join(f"  {rel}: {why}" for rel, why in sorted(self.refused.items()))
            raise SandboxError(
                f"{len(self.refused)} file(s) the chain names cannot go into the PanDA sandbox:\n{lines}",
                hint="rename or move the file, or leave it out of the step's command",
            )


@dataclass(frozen=True)
class SandboxArchive:
    """A written sandbox tarball."""

    path: Path
    name: str
    size: int
    crc32: int  # from the gzip trailer, which validate_cache_file compares


def is_credential(rel: str) -> bool:
    """True for a file name that looks like a certificate, a key, a proxy or a token."""
    name = PurePosixPath(rel).name.lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in CREDENTIAL_PATTERNS)


def _candidates(root: Path) -> dict[str, os.stat_result]:
    """Regular, not hidden files below ``root`` (symbolic links left out)."""
    found: dict[str, os.stat_result] = {}
    for current, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            path = os.path.join(current, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found[PurePosixPath(os.path.relpath(path, root)).as_posix()] = st
    return found


def _words(text: str | None) -> set[str]:
    """The words of a command and their parts, as relative paths (``./x`` is ``x``)."""
    if not text:
        return set()
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    found: set[str] = set()
    for word in words:
        for part in [word, *_SPLIT.split(word)]:
            if part and not part.startswith("/"):
                found.add(os.path.normpath(part))
    return found


def _template_files(root: Path, template: str) -> set[str]:
    """The template and the files it names, relative to ``root``."""
    from cwlbridge.reana import spec as spec_mod

    path = root / template
    found = {template}
    try:
        doc = spec_mod.load_spec(path)
    except Exception:  # validate reports a template that does not load
        return found
    base = PurePosixPath(template).parent
    inputs = doc.get("inputs") if isinstance(doc.get("inputs"), dict) else {}
    named: list[Any] = list(inputs.get("files") or []) if isinstance(inputs, dict) else []
    workflow = doc.get("workflow") if isinstance(doc.get("workflow"), dict) else {}
    named.append(workflow.get("file") if isinstance(workflow, dict) else None)
    named.append(spec_mod.job_file_name(doc))
    for entry in named:
        if isinstance(entry, str) and entry.strip():
            found.add(os.path.normpath((base / entry).as_posix()))
    for directory in (inputs.get("directories") or []) if isinstance(inputs, dict) else []:
        if isinstance(directory, str) and directory.strip():
            found.add(os.path.normpath((base / directory).as_posix()) + "/")
    return found


def select(chain: Path, plan: Plan, *, includes: Sequence[str] = ()) -> SandboxSelection:
    """The files of ``chain``'s directory that go into its PanDA sandbox (see the module)."""
    from cwlbridge.reana.stepcheck import submitter_words

    root = Path(chain).resolve().parent
    candidates = _candidates(root)
    wanted: set[str] = set()
    named: set[str] = set()
    for task in plan.tasks:
        words = _words(task.exec) | _words(task.args)
        named |= words
        submitter = submitter_words(task.exec)
        if submitter and "--spec" in submitter[:-1]:
            template = os.path.normpath(submitter[submitter.index("--spec") + 1])
            for rel in _template_files(root, template):
                if rel.endswith("/"):
                    wanted |= {c for c in candidates if c.startswith(rel)}
                else:
                    named.add(rel)
    wanted |= named & (set(candidates) | {n for n in named if (root / n).is_file()})
    for pattern in includes:
        matches = [p for p in root.glob(pattern) if p.is_file()]
        if not matches:
            raise SandboxError(f"--sandbox-include {pattern}: matches no file in {root}")
        wanted |= {PurePosixPath(os.path.relpath(p, root)).as_posix() for p in matches}
    selection = SandboxSelection(root)
    for rel in sorted(wanted):
        why = _refusal(root, rel, candidates)
        if why is None:
            selection.files.append(rel)
        elif rel in named or any(fnmatch.fnmatch(rel, p) for p in includes):
            selection.refused[rel] = why
    return selection


def _refusal(root: Path, rel: str, candidates: dict[str, os.stat_result]) -> str | None:
    parts = PurePosixPath(rel).parts
    if rel.startswith("..") or any(part.startswith(".") for part in parts):
        return "hidden files and files outside the chain's directory stay out"
    if is_credential(rel):
        return "it looks like a credential (certificate, key, proxy or token); pass secrets with --useSecrets"
    st = candidates.get(rel)
    if st is None:
        return "not a regular file (a symbolic link, a device or a directory)"
    if st.st_size > MAX_FILE_BYTES:
        return f"{st.st_size / 1e6:.1f} MB is over the {MAX_FILE_BYTES // (1024 * 1024)} MB a sandbox file may have"
    return None


def build(selection: SandboxSelection, directory: Path) -> SandboxArchive:
    """Write the tarball of ``selection`` into ``directory``, named after its md5."""
    directory.mkdir(parents=True, exist_ok=True)
    members = [(rel, selection.root / rel) for rel in selection.files]
    with tempfile.TemporaryDirectory(dir=directory, prefix=".sandbox-") as scratch:
        result = write_tar(members, Path(scratch) / "sandbox.tar.gz")
        if result.size > MAX_SANDBOX_BYTES:
            raise SandboxError(
                f"the sandbox is {result.size / 1e6:.1f} MB, over the 10 MB PanDA's cache takes",
                hint="leave big files out (put them into a dataset and read them as a secondary input)",
            )
        name = f"jobO.{result.md5}.tar.gz"
        final = directory / name
        os.replace(result.path, final)
    with final.open("rb") as stream:
        stream.seek(-8, os.SEEK_END)
        crc32 = struct.unpack("<II", stream.read(8))[0]
    return SandboxArchive(path=final, name=name, size=final.stat().st_size, crc32=crc32)


def upload(client: Any, archive: SandboxArchive) -> tuple[str, str]:
    """Put the sandbox into PanDA's cache unless an identical upload is there; (name, sourceURL)."""
    found = client.cached_sandbox(archive.size, archive.crc32)
    if found is not None:
        host, name = found
        scheme = client.settings.source_url.split("://", 1)[0]
        return name, f"{scheme}://{host}"
    client.upload_sandbox(archive.path)
    return archive.name, str(client.settings.source_url)


def describe(selection: SandboxSelection) -> Iterable[str]:
    """Lines for ``cwlbridge plan --sandbox``."""
    for rel in selection.files:
        yield f"  {rel}  ({(selection.root / rel).stat().st_size} bytes)"
    for rel, why in sorted(selection.refused.items()):
        yield f"  refused: {rel}: {why}"
