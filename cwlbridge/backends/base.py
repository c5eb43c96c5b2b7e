"""The backend contract. Handles are strings kept in the run state, so a resumed run polls the
same work; ``submit`` is idempotent per ``TaskSpec.key`` (recorded before the call)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cwlbridge.model.plan import Task

Phase = Literal["pending", "running", "finished", "failed", "cancelled"]
FINAL_PHASES: frozenset[str] = frozenset({"finished", "failed", "cancelled"})


@dataclass(frozen=True)
class TaskSpec:
    """One attempt of one concrete task (loop placeholders filled in)."""

    task: Task
    run_id: str
    attempt: int  # 1-based; `cwlbridge retry` makes a new one
    key: str  # idempotency key
    workdir: Path  # this attempt's own directory
    sandbox: Path  # the chain's directory, as pchain uploads it
    number: int  # stands in for PanDA's jediTaskID in file names
    retries: int = 0  # extra attempts per failed job
    env: Mapping[str, str] = field(default_factory=dict)
    growing: frozenset[str] = frozenset()  # inputs still being filled (`started` link)
    previous: tuple[str, ...] = ()  # handles of earlier attempts: their finished jobs carry over


@dataclass
class JobInfo:
    index: int
    phase: Phase
    attempts: int = 0
    exit_code: int | None = None
    started: float | None = None  # epoch seconds
    ended: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class TaskStatus:
    phase: Phase
    jobs: list[JobInfo] = field(default_factory=list)
    produced: bool = False  # some output exists: enough for a `started` link
    message: str = ""
    # What a remote service says about the task, JSON-ready, for `status` and `report`
    # (the panda backend: {"jediTaskID", "status", "files": {"total", "done", "failed"}, "link"}).
    remote: dict[str, Any] | None = None


class Backend(ABC):
    name: str = "?"

    @abstractmethod
    def submit(self, spec: TaskSpec) -> str: ...  # start, or re-find by key; the handle

    @abstractmethod
    def poll(self, handles: Sequence[str]) -> dict[str, TaskStatus]: ...  # many at once

    @abstractmethod
    def cancel(self, handle: str) -> None: ...  # with every process it started; idempotent

    @abstractmethod
    def outputs(self, handle: str) -> list[str]: ...  # output datasets filled so far

    def inputs_closed(self, handle: str) -> None:  # noqa: B027 - optional: growing inputs are complete
        pass

    def changed(self) -> Collection[str] | None:  # handles that may have changed since polled; None: all may
        return None

    def wait(self, timeout: float) -> None:  # until something may have changed; at once if changed() is not empty
        time.sleep(timeout)

    def close(self) -> None:  # noqa: B027 - optional; remote work keeps running
        pass
