"""The panda backend against the PanDA emulator: submit once, poll cheaply, retry, cancel."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from cwlbridge.backends.base import TaskSpec
from cwlbridge.backends.panda import PandaBackend
from cwlbridge.model.plan import Plan
from cwlbridge.model.rules import analyse
from cwlbridge.panda.client import PandaClient
from tests.servers.panda_emulator import EmulatedTask, PandaEmulator

REPO = Path(__file__).resolve().parents[1]
SANDBOX = "jobO.0123.tar.gz"


@pytest.fixture
def panda(tmp_path: Path) -> Iterator[PandaEmulator]:
    with PandaEmulator(tmp_path / "panda", tick_s=0.02) as emulator:
        yield emulator


@pytest.fixture
def plan() -> Plan:
    chain = REPO / "workflows" / "recast" / "chain.cwl"
    analysis = analyse(str(chain), str(chain.parent / "inputs.yaml"), "user.jdoe.recast")
    assert analysis.plan is not None
    return analysis.plan


def backend_for(panda: PandaEmulator, plan: Plan, token: str, **kwargs: object) -> PandaBackend:
    client = PandaClient.from_env(panda.environ(token), backoff_initial=0.01, backoff_max=0.02)
    return PandaBackend(
        client, plan, nickname="jdoe", platform="centos7", sandbox=SANDBOX, source_url=panda.url,
        since=dt.datetime.now(dt.timezone.utc), poll_interval=0.0, say=lambda _: None, **kwargs,  # type: ignore[arg-type]
    )


def spec(plan: Plan, index: int, tmp_path: Path, attempt: int = 1) -> TaskSpec:
    task = plan.tasks[index]
    return TaskSpec(
        task=task, run_id="run1", attempt=attempt, key=f"run1/{task.name}/{attempt}", workdir=tmp_path / task.name,
        sandbox=REPO / "workflows" / "recast", number=index + 1,
    )


def poll_until(backend: PandaBackend, handle: str, phases: tuple[str, ...]) -> str:
    for _ in range(500):
        status = backend.poll([handle])[handle]
        if status.phase in phases:
            return status.message
        backend._sleep(0.01)
    raise AssertionError(f"{handle} never reached {phases}")


def test_a_task_is_submitted_as_prun_builds_it_and_followed(
    panda: PandaEmulator, plan: Plan, tmp_path: Path
) -> None:
    backend = backend_for(panda, plan, panda.add_user("jdoe"))
    handle = backend.submit(spec(plan, 0, tmp_path))
    task = panda.tasks[int(handle)]
    assert task.name == "user.jdoe.recast_000_derive" and task.params["noEmail"] is True
    assert f"-a {SANDBOX}" in [p["value"] for p in task.params["jobParameters"]]
    message = poll_until(backend, handle, ("finished",))
    assert message.startswith(f"jediTaskID {handle} done") and f"/task/{handle}/" in message
    assert backend.outputs(handle) == ["user.jdoe.recast_000_derive_daod.root/"]


def test_a_resubmission_adopts_the_task_and_never_reexecutes_it(
    panda: PandaEmulator, plan: Plan, tmp_path: Path
) -> None:
    token = panda.add_user("jdoe")
    first = backend_for(panda, plan, token).submit(spec(plan, 0, tmp_path))
    panda.wait_for(int(first), ("done",))
    # A crash after the call, before the handle was recorded: a new process submits again.
    again = backend_for(panda, plan, token).submit(spec(plan, 0, tmp_path))
    assert again == first
    (task,) = panda.tasks_named("user.jdoe.recast_000_derive")
    assert task.executions == 1 and task.status == "done"
    submits = [r for r in panda.requests if r["path"] == "/api/v1/task/submit"]
    assert len(submits) == 1


def test_a_lost_reply_is_found_by_name(panda: PandaEmulator, plan: Plan, tmp_path: Path) -> None:
    backend = backend_for(panda, plan, panda.add_user("jdoe"))
    panda.fault_rate, panda.fault_kinds = 1.0, ("reply_lost",)
    original = panda.fault

    def only_submits(path: str) -> str | None:
        return original(path) if path == "task/submit" else None

    panda.fault = only_submits  # type: ignore[method-assign]
    handle = backend.submit(spec(plan, 0, tmp_path))
    assert [t.task_id for t in panda.tasks_named("user.jdoe.recast_000_derive")] == [int(handle)]


def test_a_second_attempt_retries_the_same_task(
    panda: PandaEmulator, plan: Plan, tmp_path: Path
) -> None:
    outcomes = iter([("failed", 4, 1, 3), ("done", 4, 4, 0)])
    panda.outcome = lambda task: next(outcomes)
    backend = backend_for(panda, plan, panda.add_user("jdoe"))
    handle = backend.submit(spec(plan, 0, tmp_path))
    message = poll_until(backend, handle, ("failed",))
    assert "1/4 files done, 3 failed" in message
    assert backend.submit(spec(plan, 0, tmp_path, attempt=2)) == handle
    poll_until(backend, handle, ("finished",))
    task: EmulatedTask = panda.tasks[int(handle)]
    assert task.retries == 1 and task.executions == 1 and len(panda.tasks) == 1


def test_one_request_per_poll_and_details_only_for_changes(
    panda: PandaEmulator, plan: Plan, tmp_path: Path
) -> None:
    panda.tick_s = 3600  # JEDI holds still
    backend = backend_for(panda, plan, panda.add_user("jdoe"))
    handles = [backend.submit(spec(plan, i, tmp_path)) for i in (0,)]
    backend.poll(handles)
    before = backend.client.requests_sent
    backend.poll(handles)
    assert backend.client.requests_sent - before == 1  # nothing changed: no details asked
    panda.set_status(int(handles[0]), "running")
    before = backend.client.requests_sent
    assert backend.poll(handles)[handles[0]].phase == "running"
    assert backend.client.requests_sent - before == 2  # the list, and details of the one that changed


def test_exhausted_is_not_final_and_kill_cancels(
    panda: PandaEmulator, plan: Plan, tmp_path: Path
) -> None:
    backend = backend_for(panda, plan, panda.add_user("jdoe"))
    handle = backend.submit(spec(plan, 0, tmp_path))
    panda.wait_for(int(handle), ("done",))
    panda.set_status(int(handle), "exhausted")  # JEDI gave up on some files: the user must act
    status = backend.poll([handle])[handle]
    assert status.phase == "pending" and "needs you: `cwlbridge retry` it" in status.message
    backend.cancel(handle)
    poll_until(backend, handle, ("cancelled",))
    assert panda.tasks[int(handle)].status == "aborted"
    backend.cancel(handle)  # already ended: nothing to do, no error


def test_the_poll_interval_grows_while_nothing_changes(panda: PandaEmulator, plan: Plan) -> None:
    now = [1000.0]
    slept: list[float] = []
    backend = backend_for(panda, plan, panda.add_user("jdoe"), clock=lambda: now[0], sleep=slept.append)
    backend.poll_interval = 60.0
    assert backend.changed() is None  # never polled: poll now
    backend.poll([])
    assert backend.changed() == ()
    backend.wait(1000)
    assert slept == [60.0]
    for _ in range(10):
        backend.poll([])
    now[0] += 299
    assert backend.changed() == ()
    now[0] += 2
    assert backend.changed() is None  # at most 300 s apart
