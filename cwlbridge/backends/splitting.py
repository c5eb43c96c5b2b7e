"""How prun and JEDI cut a task's input into jobs, and what each job's command becomes.

Pure functions; the local backend feeds them dataset listings.  Sources of each rule
(panda-client 2.2.0, panda-server 9cc3603 which holds JEDI, panda-wnscript 3f0c783):

- option defaults and checks: ``pandaclient/CommonArgs.py``, ``PrunArgs.py`` and
  ``PrunScript.py`` (``--nFilesPerJob`` capped at ``--maxNFilesPerJob`` (200);
  ``--nGBPerJob`` an integer or ``MAX`` and exclusive with ``--nFilesPerJob`` and
  ``--nEventsPerJob``; ``CommonArgs.set_n_files_from_n_jobs`` turns ``--nJobs`` into
  ``nFiles``/``nFilesPerJob``; ``set_events_task_params`` sizes tasks without input);
- input selection: ``PrunScript.py`` always excludes ``\\.log\\.tgz(\\.\\d+)*$``, turns
  ``--match``/``--antiMatch`` wildcards into regular expressions; JEDI
  (``task_complex_module``) keeps a file if any comma-separated pattern ``re.search``-es its
  name, sorts by name, skips ``--nSkipFiles`` and keeps ``--nFiles``;
- splitting: JEDI ``JobSplitter``: ``nFilesPerJob`` if set, else a size limit
  (``nGBPerJob`` GiB, here applied to the input sizes alone) and ``nMaxFilesPerJob``;
- secondary streams ``--secondaryDSs IN2:n:DS[:pattern[:nSkip]]``: n files per job, read on
  from where the previous job stopped, starting over when used up (prun sets
  ``reuseSecOnDemand``);
- job placeholders: JEDI ``JobGenerator.makeJobParameters`` (``%RNDM:n`` -> n + job serial,
  ``ContentsFeeder`` numbers the pseudo files from offset + 1; ``%SKIPEVENTS`` -> the first
  event of the job in its first file, 0 when not splitting by events; ``%MAXEVENTS`` -> events
  in the job, -1 when unknown) and the job wrapper ``runGen.py`` (``%IN`` -> the job's input
  file names comma-joined, by plain replacement when there are no secondary streams, else
  per stream followed by a space, quote, comma or end; ``%CORE_NUMBER``/``%PROC_NUMBER``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cwlbridge.errors import CwlbridgeError

GIB = 1024**3
#: prun's default --maxNFilesPerJob.
DEFAULT_MAX_FILES_PER_JOB = 200
#: Log tarballs are never input (prun's "exclude" for --inDS).
LOG_EXCLUDE = r"\.log\.tgz(\.\d+)*$"


class SplitError(CwlbridgeError):
    """The split options are inconsistent in a way prun itself refuses."""


@dataclass(frozen=True)
class InputFile:
    """One file of an input dataset."""

    dataset: str
    name: str
    size: int


@dataclass(frozen=True)
class SecondaryStream:
    """One ``--secondaryDSs`` entry."""

    stream: str  # e.g. IN2
    dataset: str
    n_files: int  # per job; 0: every file
    pattern: str = ""
    n_skip: int = 0


@dataclass(frozen=True)
class SplitRules:
    """The split-relevant prun options after prun's own adjustments."""

    n_files_per_job: int | None = None
    n_files: int | None = None
    n_gb_per_job: int | None = None
    max_files_per_job: int = DEFAULT_MAX_FILES_PER_JOB
    n_jobs: int | None = None
    n_events: int | None = None
    n_events_per_job: int | None = None
    n_events_per_file: int | None = None
    n_skip_files: int = 0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = (LOG_EXCLUDE,)
    secondaries: tuple[SecondaryStream, ...] = ()

    @property
    def by_events(self) -> bool:
        """Jobs are cut by event ranges (needs --nEventsPerFile locally)."""
        return self.n_events_per_job is not None and self.n_events_per_file is not None


@dataclass
class JobSlice:
    """What one job gets: its primary files, secondary files per stream, and event range."""

    index: int  # 0-based; the job serial is index + 1
    inputs: list[InputFile] = field(default_factory=list)
    secondary: dict[str, list[InputFile]] = field(default_factory=dict)
    skip_events: int = 0
    max_events: int = -1

    @property
    def serial(self) -> int:
        return self.index + 1


def _positive(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _wildcard_patterns(text: str) -> tuple[str, ...]:
    # PrunScript: "." -> "\." and "*" -> ".*"; JEDI splits the result at commas.
    if not text:
        return ()
    converted = text.replace(".", r"\.").replace("*", ".*")
    return tuple(p for p in converted.split(",") if p)


def parse_secondary(text: str) -> tuple[SecondaryStream, ...]:
    """``--secondaryDSs`` as prun reads it (``MiscUtils.parse_secondary_datasets_opt``)."""
    streams = []
    for item in (text or "").split(","):
        if not item:
            continue
        parts = item.split("#") if "#" in item else item.split(":")
        if not 3 <= len(parts) <= 6:
            raise SplitError(
                f"wrong format {item} in --secondaryDSs; must be"
                " StreamName:nFiles:DatasetName[:Pattern[:nSkipFiles[:FileNameList]]]"
            )
        if len(parts) == 6 and parts[5]:
            raise SplitError(f"--secondaryDSs {item}: a file name list is not supported by the local backend")
        try:
            n_files = int(parts[1])
            n_skip = int(parts[4]) if len(parts) >= 5 and parts[4] else 0
        except ValueError:
            raise SplitError(f"--secondaryDSs {item}: nFiles and nSkipFiles must be integers") from None
        streams.append(
            SecondaryStream(
                stream=parts[0],
                dataset=parts[2].replace("^", ","),
                n_files=max(0, n_files),
                pattern=parts[3] if len(parts) >= 4 else "",
                n_skip=max(0, n_skip),
            )
        )
    return tuple(streams)


def split_rules(namespace: Mapping[str, Any]) -> SplitRules:
    """SplitRules from prun's parsed options, with prun's checks and adjustments applied."""
    max_files = _positive(namespace.get("maxNFilesPerJob")) or DEFAULT_MAX_FILES_PER_JOB
    n_files_per_job = _positive(namespace.get("nFilesPerJob"))
    if n_files_per_job is not None and n_files_per_job > max_files:
        n_files_per_job = max_files
    n_gb: int | None = None
    raw_gb = namespace.get("nGBPerJob", -1)
    if raw_gb not in (-1, "-1", None, "", "MAX"):
        try:
            n_gb = int(raw_gb)
        except (TypeError, ValueError):
            raise SplitError("--nGBPerJob must be an integer or MAX") from None
        if n_gb <= 0:
            raise SplitError("--nGBPerJob must be positive")
        if n_files_per_job is not None:
            raise SplitError("--nFilesPerJob and --nGBPerJob must be used exclusively")
    n_events_per_job = _positive(namespace.get("nEventsPerJob"))
    if n_events_per_job is not None and raw_gb not in (-1, "-1", None, ""):
        raise SplitError("split by events and split by file size can not be used simultaneously")
    n_jobs = _positive(namespace.get("nJobs"))
    n_files = _positive(namespace.get("nFiles"))
    n_events_per_file = _positive(namespace.get("nEventsPerFile"))
    n_files, n_files_per_job = files_from_n_jobs(n_jobs, n_files, n_files_per_job, n_events_per_job, n_events_per_file)
    return SplitRules(
        n_files_per_job=n_files_per_job,
        n_files=n_files,
        n_gb_per_job=n_gb,
        max_files_per_job=max_files,
        n_jobs=n_jobs,
        n_events=_positive(namespace.get("nEvents")),
        n_events_per_job=n_events_per_job,
        n_events_per_file=n_events_per_file,
        n_skip_files=max(0, int(namespace.get("nSkipFiles") or 0)),
        include=_wildcard_patterns(str(namespace.get("match") or "")),
        exclude=(LOG_EXCLUDE, *_wildcard_patterns(str(namespace.get("antiMatch") or ""))),
        secondaries=parse_secondary(str(namespace.get("secondaryDSs") or "")),
    )


def files_from_n_jobs(
    n_jobs: int | None,
    n_files: int | None,
    n_files_per_job: int | None,
    n_events_per_job: int | None,
    n_events_per_file: int | None,
) -> tuple[int | None, int | None]:
    """(nFiles, nFilesPerJob) after prun's ``set_n_files_from_n_jobs`` (None = not set)."""
    if not n_jobs:
        return n_files, n_files_per_job
    if n_events_per_job and n_events_per_file:
        n_files = max(1, (n_events_per_job * n_jobs) // n_events_per_file)
    if n_files_per_job and not n_files:
        n_files = n_files_per_job * n_jobs
    if not n_files_per_job and n_files:
        n_files_per_job = max(1, n_files // n_jobs)
    return n_files, n_files_per_job


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(re.search(p, name) is not None or p == name for p in patterns)


def select_files(files: Sequence[InputFile], rules: SplitRules) -> list[InputFile]:
    """The files of one dataset a task reads: filtered, sorted, offset and limited."""
    kept = [
        f
        for f in files
        if (not rules.include or _matches(f.name, rules.include)) and not _matches(f.name, rules.exclude)
    ]
    kept.sort(key=lambda f: f.name)
    kept = kept[rules.n_skip_files :]
    if rules.n_files is not None:
        kept = kept[: rules.n_files]
    return kept


def chunk_files(files: Sequence[InputFile], rules: SplitRules, *, final: bool = True) -> list[list[InputFile]]:
    """Cut one dataset's selected files into the file lists of jobs (file-based splitting).

    With ``final`` False (the dataset still grows), a chunk that more files could still
    extend is held back: a short ``--nFilesPerJob`` chunk, the last ``--nGBPerJob`` chunk.
    """
    if rules.n_files_per_job is not None:
        size = rules.n_files_per_job
        chunks = [list(files[i : i + size]) for i in range(0, len(files), size)]
        if not final and chunks and len(chunks[-1]) < size:
            chunks.pop()
        return chunks
    limit = rules.n_gb_per_job * GIB if rules.n_gb_per_job is not None else None
    chunks = []
    current: list[InputFile] = []
    current_size = 0
    for f in files:
        full = len(current) >= rules.max_files_per_job
        too_big = limit is not None and current and current_size + f.size > limit
        if current and (full or too_big):
            chunks.append(current)
            current, current_size = [], 0
        current.append(f)
        current_size += f.size
    if current:
        chunks.append(current)
    if not final and limit is not None and chunks:
        chunks.pop()
    return chunks


@dataclass(frozen=True)
class EventChunk:
    """A job's part of the event stream: the files it touches and its event range."""

    files: list[InputFile]
    skip_events: int
    max_events: int


def chunk_events(files: Sequence[InputFile], rules: SplitRules) -> list[EventChunk]:
    """Cut files of ``--nEventsPerFile`` events into jobs of ``--nEventsPerJob`` events.

    The events of the files in name order form one stream; a job takes the next
    ``nEventsPerJob`` of them (``--nEvents`` caps the total), so a job may take part of a
    file or span several.
    """
    per_job = rules.n_events_per_job
    per_file = rules.n_events_per_file
    if per_job is None or per_file is None:
        raise ValueError("chunk_events needs nEventsPerJob and nEventsPerFile")
    total = len(files) * per_file
    if rules.n_events is not None:
        total = min(total, rules.n_events)
    chunks = []
    for start in range(0, total, per_job):
        count = min(per_job, total - start)
        first, last = start // per_file, (start + count - 1) // per_file
        chunks.append(EventChunk(list(files[first : last + 1]), start % per_file, count))
    return chunks


def no_input_jobs(rules: SplitRules) -> list[tuple[int, int]]:
    """(skip events, max events) of each job of a task without input, as JEDI sizes it.

    From ``set_events_task_params(no_input=True)``: nEvents and nEventsPerJob come from
    --nEvents, --nJobs and --nEventsPerJob, defaulting to --nJobs (or 1) jobs of one event.
    """
    if rules.n_events is not None:
        n_events = rules.n_events
        per_job = max(1, n_events // rules.n_jobs) if rules.n_jobs is not None else rules.n_events_per_job or n_events
    elif rules.n_events_per_job is not None:
        per_job = rules.n_events_per_job
        n_events = per_job * max(1, rules.n_jobs or 1)
    else:
        n_events = rules.n_jobs or 1
        per_job = 1
    count = math.ceil(n_events / per_job)
    return [(k * per_job, min(per_job, n_events - k * per_job)) for k in range(count)]


def secondary_files(stream: SecondaryStream, files: Sequence[InputFile], job_index: int) -> list[InputFile]:
    """The files of a secondary stream for job ``job_index``: the next n, starting over when used up."""
    kept = [f for f in files if not stream.pattern or _matches(f.name, (stream.pattern,))]
    kept.sort(key=lambda f: f.name)
    kept = kept[stream.n_skip :]
    if not kept:
        return []
    if stream.n_files == 0:
        return kept
    start = job_index * stream.n_files
    return [kept[(start + i) % len(kept)] for i in range(min(stream.n_files, len(kept)))]


_RNDM = re.compile(r"%RNDM(:|=)(\d+)%?")
_CORE = re.compile(r"%CORE_NUMBER")
_PROC = re.compile(r"%PROC_NUMBER")


def job_command(exec_text: str, job: JobSlice, *, core_number: str = "1", proc_number: str = "1") -> str:
    """``exec_text`` with the job's placeholders filled in, as JEDI and runGen would.

    Placeholders this does not know (``%FIRSTEVENT``, ``%OUT``, ``%{…}``) are left as they are.
    """
    text = exec_text
    # JEDI takes the offset of the first %RNDM and uses it for every occurrence.
    rndm = _RNDM.search(text)
    if rndm is not None:
        text = _RNDM.sub(str(int(rndm.group(2)) + job.serial), text)
    text = text.replace("%SKIPEVENTS", str(job.skip_events)).replace("%MAXEVENTS", str(job.max_events))
    streams: list[tuple[str, list[InputFile]]] = []
    if job.inputs:
        streams.append(("IN", job.inputs))
    streams += list(job.secondary.items())
    if job.secondary:
        for token, files in streams:
            names = ",".join(f.name for f in files)
            pattern = re.compile("%" + re.escape(token) + "(?P<end> |$|\"|'|,)")
            text = pattern.sub(lambda m: names + m.group("end"), text)  # noqa: B023 (used at once)
    elif job.inputs:
        text = text.replace("%IN", ",".join(f.name for f in job.inputs))
    text = _CORE.sub(core_number, text)
    return _PROC.sub(proc_number, text)
