"""The scheduler: turns a plan into backend submissions, honouring links, conditions and loops.

One loop, run by one process: pick the tasks that may start, submit them (idempotency key
recorded first), poll what is in flight, react to what ended.  Everything it knows is in the
run state, so a killed run resumes where it stopped: tasks in flight are polled again by
their handles, and a task whose key was recorded but whose handle was not is submitted again
with the same key, which the backend recognises.

Loops: the plan holds one templated copy of a loop body (names end in
``.___idds___num_run___``, loop variables are ``___idds___user_<x>___``).  Iteration ``i``
is a concrete copy with those filled in; when its junction(s) end, their ``results.json``
decides whether iteration ``i + 1`` runs (``to_continue``) and with which variable values.
Tasks downstream of a loop are created once the loop is over, against its last iteration.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwlbridge.backends.base import FINAL_PHASES, Backend, TaskSpec, TaskStatus
from cwlbridge.backends.local import lfn_prefix
from cwlbridge.data.datasets import split_dataset_name
from cwlbridge.engine.state import REMOTE_KEY, attempt_dir
from cwlbridge.errors import CwlbridgeError
from cwlbridge.model.conditions import BinOp, Cond, Not, Ref
from cwlbridge.model.plan import Loop, Parent, Plan, Task, short_name

NUM_RUN = "___idds___num_run___"
_USER_VAR = re.compile(r"___idds___user_([A-Za-z0-9_]+)___")

#: Task states kept in the run state.
WAITING, SUBMITTED, RUNNING = "waiting", "submitted", "running"
FINISHED, FAILED, CANCELLED, SKIPPED = "finished", "failed", "cancelled", "skipped"
DONE_STATES = frozenset({FINISHED, FAILED, CANCELLED, SKIPPED})
IN_FLIGHT = frozenset({SUBMITTED, RUNNING})


@dataclass
class EngineOptions:
    """How the scheduler behaves; the command line fills it in."""

    retries: int = 0
    max_iterations: int = 10
    max_tasks: int = 0  # tasks in flight at once; 0: no limit
    poll_min: float = 0.2  # seconds between polls while nothing wakes us
    poll_max: float = 5.0
    env: Mapping[str, str] = field(default_factory=dict)
    #: (scope, file-name prefix, count) -> new task numbers (``DatasetStore.task_numbers``);
    #: without it a task's number is its plan id + 1, the same in every run.
    task_numbers: Callable[[str, str, int], list[int]] | None = None


@dataclass
class Node:
    """One concrete task of this run."""

    task: Task
    backend: str
    iteration: int | None = None
    state: str = WAITING
    attempt: int = 0
    handle: str | None = None
    key: str | None = None
    produced: bool = False
    message: str = ""
    jobs_done: int = 0
    jobs_total: int = 0
    started: float | None = None
    ended: float | None = None
    children: list[str] = field(default_factory=list)
    inputs_open: bool = False  # submitted before a parent ended: tell the backend when all have
    jobs_seen: tuple[Any, ...] = ()  # the jobs as last recorded, to skip unchanged updates
    number: int | None = None  # its $JEDITASKID: in its output file names
    remote: dict[str, Any] | None = None  # what the backend's service last said (kv "remote:<name>")


@dataclass
class LoopState:
    """Where a loop is: its current iteration, variables, and whether it is over."""

    loop: Loop
    iteration: int = 1
    variables: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    failed: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "variables": self.variables,
            "done": self.done,
            "failed": self.failed,
            "reason": self.reason,
        }


def fill_template(text: str, iteration: int, variables: Mapping[str, Any]) -> str:
    """Replace iDDS's loop placeholders with the iteration number and variable values."""
    if "___idds___" not in text:
        return text
    text = text.replace(NUM_RUN, str(iteration))
    return _USER_VAR.sub(lambda m: _format_value(variables.get(m.group(1), m.group(0))), text)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_format_value(v) for v in value)
    return str(value)


def map_task(task: Task, fill: Callable[[str], str]) -> Task:
    """A copy of ``task`` with ``fill`` applied to every name and command it carries (``task``
    itself when that changes nothing, as for every task outside a loop)."""
    changes: dict[str, Any] = {
        "name": fill(task.name),
        "in_ds": [fill(d) for d in task.in_ds],
        "secondary_ds": [fill(d) for d in task.secondary_ds],
        "exec": fill(task.exec) if task.exec is not None else None,
        "args": fill(task.args) if task.args is not None else None,
        "output_datasets": [fill(d) for d in task.output_datasets],
        "parents": [Parent(fill(p.task), p.link) for p in task.parents],
        "condition": fill(task.condition) if task.condition else None,
        "condition_inputs": {k: [[fill(n) for n in el] for el in v] for k, v in task.condition_inputs.items()},
    }
    if all(value == getattr(task, name) for name, value in changes.items()):
        return task
    return dataclasses.replace(task, **changes)


def concrete_task(task: Task, iteration: int, variables: Mapping[str, Any]) -> Task:
    """A copy of ``task`` with every loop placeholder filled in."""
    return map_task(task, lambda text: fill_template(text, iteration, variables))


# --------------------------------------------------------------------------- conditions


def _parents_of(ref: Ref, task: Task) -> list[str]:
    elements = task.condition_inputs.get(ref.name, [])
    if ref.index is not None:
        return list(elements[ref.index]) if ref.index < len(elements) else []
    return [name for element in elements for name in element]


def evaluate(cond: Cond, task: Task, state_of: Callable[[str], str]) -> bool | None:
    """Three-valued: True/False once decided, None while a parent it depends on runs."""
    if isinstance(cond, Ref):
        states = [state_of(p) for p in _parents_of(cond, task)]
        wanted = FAILED if cond.negated else FINISHED
        if any(s in DONE_STATES and s != wanted for s in states):
            return False
        if all(s == wanted for s in states):
            return True
        return None
    if isinstance(cond, Not):
        inner = evaluate(cond.operand, task, state_of)
        return None if inner is None else not inner
    assert isinstance(cond, BinOp)
    left = evaluate(cond.left, task, state_of)
    right = evaluate(cond.right, task, state_of)
    if cond.op == "&&":
        if left is False or right is False:
            return False
        return True if left and right else None
    if left is True or right is True:
        return True
    return False if left is False and right is False else None


# --------------------------------------------------------------------------- the engine


# The message of a task cancelled by Ctrl-C: `cwlbridge resume` submits such tasks again;
# only `cwlbridge kill` makes a cancellation final.
STOPPED_MESSAGE = "stopped by Ctrl-C; `cwlbridge resume` runs it again"
KILL_REQUESTED = "kill_requested"  # run-state key `cwlbridge kill` sets before it signals the run


class Interrupted(Exception):
    """Ctrl-C (or `cwlbridge kill`) asked the run to stop."""


class Scheduler:
    """Runs one plan to the end (or until interrupted); state goes to ``state`` as it happens."""

    def __init__(
        self,
        plan: Plan,
        state: Any,  # cwlbridge.engine.state.RunState
        backends: Mapping[str, Backend],
        choose_backend: Callable[[Task], str],
        *,
        sandbox: Path,
        read_results: Callable[[Task], dict[str, Any] | None],
        options: EngineOptions,
        on_change: Callable[[Node], None] = lambda node: None,
    ) -> None:
        self.plan = plan
        self.state = state
        self.backends = backends
        self.choose_backend = choose_backend
        self.sandbox = sandbox
        self.read_results = read_results
        self.options = options
        self.on_change = on_change
        self.nodes: dict[str, Node] = {}
        self.order: list[str] = []
        self._rank: dict[str, int] = {}
        self._flying: dict[str, Node] = {}  # nodes in IN_FLIGHT states, kept by _track
        self._by_handle: dict[str, Node] = {}  # those of them with a handle, by handle
        self._handle_of: dict[str, str] = {}  # task name -> its key in _by_handle
        self.loops: dict[str, LoopState] = {}
        self._loop_of: dict[str, str] = {}  # templated task name -> loop path
        self._deferred: dict[str, list[Task]] = {}  # loop path -> downstream tasks waiting for it
        self._dirty: set[str] = set()
        self._held: set[str] = set()  # ready, but the concurrency limit is reached
        self.stop_requested = False
        self.kill_requested = False

    # -- building nodes --------------------------------------------------------------------

    def build(self) -> None:
        """Create the nodes the run starts with (or had, when resuming)."""
        for loop in self.plan.loops:
            saved = self.state.get_value(f"loop:{loop.path}")
            ls = LoopState(loop, variables=dict(loop.variables))
            if saved:
                ls.iteration = int(saved["iteration"])
                ls.variables = dict(saved["variables"])
                ls.done, ls.failed, ls.reason = bool(saved["done"]), bool(saved["failed"]), str(saved["reason"])
            self.loops[loop.path] = ls
            for name in loop.tasks:
                self._loop_of[name] = loop.path
        with self.state.transaction():
            for task in self.plan.tasks:
                self._add_plan_task(task)
            for ls in self.loops.values():
                # Resuming: recreate every iteration that was started, in order.
                for iteration in range(1, ls.iteration + 1):
                    variables = self._iteration_variables(ls, iteration)
                    self._add_iteration(ls, iteration, variables)
                if ls.done:
                    self._release_downstream(ls)
        self._restore_from_state()

    def _iteration_variables(self, ls: LoopState, iteration: int) -> dict[str, Any]:
        if iteration == ls.iteration:
            return ls.variables
        history = self.state.get_value(f"loop:{ls.loop.path}:vars:{iteration}")
        return dict(history) if history else dict(ls.loop.variables)

    def _loop_dependencies(self, task: Task) -> set[str]:
        return {self._loop_of[p.task] for p in task.parents if p.task in self._loop_of}

    def _add_plan_task(self, task: Task) -> None:
        if task.loop is not None and task.name in self._loop_of:
            return  # instantiated per iteration
        blocking = self._loop_dependencies(task)
        if blocking:
            for path in blocking:
                self._deferred.setdefault(path, []).append(task)
            return
        self._add_node(concrete_task(task, 1, {}), None)

    def _add_iteration(self, ls: LoopState, iteration: int, variables: Mapping[str, Any]) -> None:
        self.state.set_value(f"loop:{ls.loop.path}:vars:{iteration}", dict(variables))
        members = set(ls.loop.tasks)
        for task in self.plan.tasks:
            if task.name in members:
                node = self._add_node(concrete_task(task, iteration, variables), iteration)
                node.task = dataclasses.replace(node.task, loop=ls.loop.path)

    def _release_downstream(self, ls: LoopState) -> None:
        for task in self._deferred.pop(ls.loop.path, []):
            if self._loop_dependencies(task) - {ls.loop.path} and any(
                not self.loops[p].done for p in self._loop_dependencies(task) - {ls.loop.path}
            ):
                continue  # still waits for another loop
            self._add_node(self._after_loops(task), None)

    def _after_loops(self, task: Task) -> Task:
        """A task downstream of loops, reading each loop's last iteration."""

        def fill(text: str) -> str:
            for name, path in self._loop_of.items():
                if name in text:
                    ls = self.loops[path]
                    text = text.replace(name, fill_template(name, ls.iteration, ls.variables))
            return text

        return concrete_task(map_task(task, fill), 1, {})

    def _add_node(self, task: Task, iteration: int | None) -> Node:
        if task.name in self.nodes:
            return self.nodes[task.name]
        node = Node(task=task, backend=self.choose_backend(task), iteration=iteration)
        self.nodes[task.name] = node
        self._rank[task.name] = len(self.order)
        self.order.append(task.name)
        for parent in task.parents:
            if parent.task in self.nodes:
                self.nodes[parent.task].children.append(task.name)
        self.state.add_task(
            task.name,
            step=task.step,
            type=task.type,
            backend=node.backend,
            plan_id=task.id,
            iteration=iteration,
            loop=task.loop,
        )
        self._dirty.add(task.name)
        return node

    def _restore_from_state(self) -> None:
        for row in self.state.tasks():
            node = self.nodes.get(row.name)
            if node is None:
                continue
            node.state = row.state
            node.attempt = row.attempt
            node.handle = row.handle
            node.message = row.message or ""
            node.started, node.ended = row.started, row.ended
            node.jobs_done, node.jobs_total = row.jobs_done, row.jobs_total
            # Whether the backend was told that its growing inputs are complete is not
            # recorded; telling it again is harmless.
            node.inputs_open = row.state in IN_FLIGHT
            if row.attempt:
                attempts = self.state.attempts(row.name)
                if attempts:
                    last = attempts[-1]
                    node.key = last.key
                    if row.state == WAITING and last.state == "submitting" and last.handle is None:
                        # Begun, then the engine died before the submission was recorded: the
                        # backend may have the task.  The same key again finds it (``_advance``);
                        # a new attempt would run the same work a second time.
                        node.state = SUBMITTED
                        self.state.set_task_state(row.name, SUBMITTED)
            self._track(node)
            self._dirty.add(row.name)

    # -- the main loop ---------------------------------------------------------------------

    def run(self) -> None:
        """Run until nothing can move; raises Interrupted after a Ctrl-C has been handled."""
        delay = self.options.poll_min
        first = True
        while True:
            if self.stop_requested:
                self.cancel_all(STOPPED_MESSAGE)
                raise Interrupted()
            with self.state.transaction():
                self._advance()
                in_flight = list(self._flying.values())
                changed = self._poll(in_flight, everything=first) if in_flight else False
                first = False
                if changed and self._dirty:
                    # Start what the poll made ready in the same round (and commit): a chain's
                    # next step then costs one transaction less.
                    self._advance()
                    fresh = [n for n in self._flying.values() if n.state == SUBMITTED]
                    if fresh:
                        self._poll(fresh)
                    in_flight = list(self._flying.values())
            if not in_flight:
                if not self._dirty and not self._held:
                    break
                continue
            if changed:
                delay = self.options.poll_min
                continue
            self._wait(in_flight, delay)
            delay = min(delay * 1.5, self.options.poll_max)
        with self.state.transaction():
            for node in self.nodes.values():
                if node.state == WAITING:
                    self._set_state(node, SKIPPED, "its inputs can never be ready")
            for ls in self.loops.values():
                for task in self._deferred.pop(ls.loop.path, []):
                    self.state.add_task(
                        task.name, step=task.step, type=task.type, backend="-", plan_id=task.id, loop=None
                    )
                    self.state.set_task_state(task.name, SKIPPED, f"loop {ls.loop.path} did not end well")

    def _wait(self, in_flight: list[Node], delay: float) -> None:
        backends = {n.backend for n in in_flight}
        if len(backends) == 1:
            self.backends[next(iter(backends))].wait(delay)
        else:
            # Several backends: let the local one (event-driven) wake us, bounded by delay.
            waiter = self.backends.get("local") if "local" in backends else None
            if waiter is not None:
                waiter.wait(delay)
            else:
                time.sleep(delay)

    def _advance(self) -> None:
        """Start or skip every dirty waiting node whose fate is decided."""
        self._dirty |= self._held
        self._held.clear()
        while self._dirty:
            dirty = sorted(self._dirty, key=self._rank.__getitem__)
            self._dirty.clear()
            ready: list[Node] = []
            for name in dirty:
                node = self.nodes[name]
                if node.state == WAITING:
                    if self._consider(node, len(ready)):
                        ready.append(node)
                elif node.state in IN_FLIGHT and node.handle is None:
                    ready.append(node)  # key recorded, handle not: same key again
            self._submit_all(ready)

    def _in_flight_count(self) -> int:
        return len(self._flying)

    def _track(self, node: Node) -> None:
        name = node.task.name
        old = self._handle_of.pop(name, None)
        if old is not None:
            self._by_handle.pop(old, None)
        if node.state in IN_FLIGHT:
            self._flying[name] = node
            if node.handle is not None:
                self._by_handle[node.handle] = node
                self._handle_of[name] = node.handle
        else:
            self._flying.pop(name, None)

    def _state_of(self, name: str) -> str:
        node = self.nodes.get(name)
        return node.state if node else WAITING

    def _consider(self, node: Node, pending: int) -> bool:
        """Skip ``node``, leave it waiting, or say it is ready (True); ``pending``: others ready."""
        task = node.task
        named: set[str] = set()
        if task.condition_tree is not None:
            named = {p for ref_parents in task.condition_inputs.values() for el in ref_parents for p in el}
            verdict = evaluate(task.condition_tree, task, self._state_of)
            if verdict is False:
                self._skip(node, f"condition {task.condition} is false")
                return False
            if verdict is None:
                return False
        for parent in task.parents:
            if parent.task in named:
                continue
            state = self._state_of(parent.task)
            p = self.nodes.get(parent.task)
            if parent.link == "failed":
                if state == FAILED:
                    continue
                if state in DONE_STATES:
                    self._skip(node, f"runs only if {short_name(parent.task, self.plan.outds)} fails")
                    return False
                return False
            if state == FINISHED:
                continue
            if state in DONE_STATES:
                self._skip(node, f"parent {short_name(parent.task, self.plan.outds)} {state}")
                return False
            if parent.link == "started" and p is not None and p.produced and p.state in IN_FLIGHT:
                continue
            return False
        if self.options.max_tasks and self._in_flight_count() + pending >= self.options.max_tasks:
            self._held.add(node.task.name)
            return False
        node.attempt += 1
        return True

    def _skip(self, node: Node, why: str) -> None:
        self._set_state(node, SKIPPED, why)

    def _growing_inputs(self, node: Node) -> frozenset[str]:
        growing: set[str] = set()
        for parent in node.task.parents:
            p = self.nodes.get(parent.task)
            if p is not None and p.state in IN_FLIGHT:
                datasets = set(node.task.in_ds) | set(node.task.secondary_ds)
                growing |= {d for d in p.task.output_datasets if d in datasets}
        node.inputs_open = bool(growing)
        return frozenset(growing)

    def _key(self, node: Node) -> str:
        """The idempotency key of the node's current attempt."""
        return f"{self.state.run_id}/{node.task.name}/{node.attempt}"

    def _submit_all(self, nodes: list[Node]) -> None:
        """Submit nodes, their attempts' keys recorded first with one commit for all."""
        new = [n for n in nodes if n.key != self._key(n)]
        if new:
            with self.state.transaction():  # the numbers are committed with the attempts
                self._number(new)
                # Committed first; fsync'd when a remote service (REANA, PanDA) gets the key.
                remote = any(n.backend != "local" for n in new)
                self.state.begin_attempts([(n.task.name, n.attempt, self._key(n)) for n in new], durable=remote)
            for node in new:
                node.key = self._key(node)
        for node in nodes:
            self._submit(node)

    def _number(self, nodes: list[Node]) -> None:
        """Give the nodes their task numbers: the one recorded, else new ones from the store.

        A task keeps its number over its attempts, resumes and retries, as a PanDA task keeps
        its jediTaskID: finished jobs' outputs and their retried neighbours' share a name.
        """
        allocate = self.options.task_numbers
        wanted: dict[tuple[str, str], list[Node]] = {}
        for node in nodes:
            if node.number is None:
                node.number = self.state.get_value(f"number:{node.task.name}")
            if node.number is None:
                outputs = node.task.output_datasets
                if allocate is None or not outputs:
                    node.number = node.task.id + 1  # names no file
                    continue
                scope = split_dataset_name(outputs[0])[0]
                wanted.setdefault((scope, lfn_prefix(node.task.name)), []).append(node)
        for (scope, prefix), group in wanted.items():
            assert allocate is not None  # groups are made only with it
            numbers = allocate(scope, prefix, len(group))
            for node, number in zip(group, numbers, strict=True):
                node.number = number
                self.state.set_value(f"number:{node.task.name}", number)

    def _recorded_number(self, node: Node) -> int:
        """The node's task number; a resumed attempt finds it in the run state."""
        if node.number is None:
            node.number = self.state.get_value(f"number:{node.task.name}") or node.task.id + 1
        return node.number

    def _submit(self, node: Node) -> None:
        """Hand the node to its backend; its attempt's key is recorded (``_submit_all``)."""
        task = node.task
        key = self._key(node)
        spec = TaskSpec(
            task=task,
            run_id=self.state.run_id,
            attempt=node.attempt,
            key=key,
            workdir=attempt_dir(self.state.run_dir, task.name, node.attempt),
            sandbox=self.sandbox,
            number=self._recorded_number(node),
            retries=self.options.retries,
            env=self.options.env,
            growing=self._growing_inputs(node),
            previous=tuple(
                a.handle for a in self.state.attempts(task.name) if a.attempt < node.attempt and a.handle
            )
            if node.attempt > 1
            else (),
        )
        try:
            handle = self.backends[node.backend].submit(spec)
        except CwlbridgeError as err:
            node.started = node.ended = time.time()
            self._set_state(node, FAILED, f"not submitted: {err.message}")
            return
        node.handle = handle
        self._track(node)
        self.state.record_handle(task.name, node.attempt, handle)
        if node.state != SUBMITTED:
            self._set_state(node, SUBMITTED)

    def _close_inputs(self, in_flight: list[Node]) -> None:
        for node in in_flight:
            if not node.inputs_open or node.handle is None:
                continue
            if all(self._state_of(p.task) in DONE_STATES for p in node.task.parents):
                self.backends[node.backend].inputs_closed(node.handle)
                node.inputs_open = False

    def _poll(self, in_flight: list[Node], *, everything: bool = False) -> bool:
        """Apply what the backends report; only about tasks they say changed, unless ``everything``.

        The first round asks about everything: a resumed run's backends know nothing yet.
        """
        self._close_inputs(in_flight)
        changed = False
        for backend_name, backend in self.backends.items():
            hint = None if everything else backend.changed()
            if hint is None:  # ask about everything in flight there
                nodes = [n for n in in_flight if n.backend == backend_name and n.handle is not None]
            else:
                nodes, stale = [], []
                for handle in hint:
                    node = self._by_handle.get(handle)
                    if node is None:
                        stale.append(handle)
                    elif node.backend == backend_name:
                        nodes.append(node)
                if stale:  # tasks no longer in flight here: acknowledge, so that ``wait`` does not return at once
                    backend.poll(stale)
            if not nodes:
                continue
            statuses = backend.poll([n.handle for n in nodes if n.handle])
            for node in nodes:
                status = statuses.get(node.handle or "")
                if status is not None and self._apply(node, status):
                    changed = True
        return changed

    def _apply(self, node: Node, status: TaskStatus) -> bool:
        done = sum(1 for j in status.jobs if j.phase == "finished")
        progress = (done, len(status.jobs), status.produced)
        before = (node.jobs_done, node.jobs_total, node.produced)
        node.jobs_done, node.jobs_total, node.produced = progress
        seen = tuple((j.index, j.phase, j.attempts, j.exit_code, j.bytes_out) for j in status.jobs)
        if status.jobs and seen != node.jobs_seen:
            self.state.update_jobs(node.task.name, node.attempt, status.jobs)
            node.jobs_seen = seen
        changed = progress != before
        if status.remote is not None and status.remote != node.remote:
            self.state.set_value(REMOTE_KEY + node.task.name, status.remote)
            node.remote = status.remote
        if status.phase == "running" and node.state == SUBMITTED:
            self._set_state(node, RUNNING)
            changed = True
        if node.produced and not before[2]:
            self._dirty.update(node.children)
        if status.phase in FINAL_PHASES:
            self._finish(node, status)
            changed = True
        elif changed:
            self.on_change(node)
        return changed

    def _finish(self, node: Node, status: TaskStatus) -> None:
        state = {"finished": FINISHED, "failed": FAILED, "cancelled": CANCELLED}[status.phase]
        self._set_state(node, state, status.message)
        if node.task.type == "junction" and node.task.loop in self.loops:
            self._junction_ended(node)

    # -- loops -----------------------------------------------------------------------------

    def _junction_ended(self, node: Node) -> None:
        ls = self.loops[node.task.loop or ""]
        if node.iteration != ls.iteration or ls.done:
            return
        siblings = [
            self.nodes[fill_template(j, ls.iteration, ls.variables)]
            for j in ls.loop.junctions
            if fill_template(j, ls.iteration, ls.variables) in self.nodes
        ]
        if any(s.state not in DONE_STATES for s in siblings):
            return
        if any(s.state != FINISHED for s in siblings):
            ls.done, ls.failed, ls.reason = True, True, f"a junction of iteration {ls.iteration} failed"
        else:
            answers = [self.read_results(s.task) for s in siblings]
            go_on = bool(answers) and all(a is not None and a.get("to_continue") is True for a in answers)
            if go_on and ls.iteration >= self.options.max_iterations:
                ls.done, ls.reason = True, f"stopped by --max-iterations {self.options.max_iterations}"
            elif go_on:
                updates: dict[str, Any] = {}
                for answer in answers:
                    for key, value in (answer or {}).items():
                        name = key[len("param_") :] if key.startswith("param_") else key
                        if name in ls.variables:
                            updates[name] = value
                ls.iteration += 1
                ls.variables = {**ls.variables, **updates}
                self.state.set_value(f"loop:{ls.loop.path}", ls.to_json())
                self._add_iteration(ls, ls.iteration, ls.variables)
                return
            else:
                ls.done, ls.reason = True, "the junction said to stop"
        self.state.set_value(f"loop:{ls.loop.path}", ls.to_json())
        if not ls.failed:
            self._release_downstream(ls)

    # -- bookkeeping -----------------------------------------------------------------------

    def _set_state(self, node: Node, state: str, message: str = "") -> None:
        now = time.time()
        if state in IN_FLIGHT and node.started is None:
            node.started = now
        if state in DONE_STATES:
            node.ended = now
        node.state = state
        node.message = message
        self._track(node)
        self.state.set_task_state(node.task.name, state, message)
        self._dirty.update(node.children)
        self.on_change(node)

    def cancel_all(self, message: str = "cancelled by the user") -> None:
        """Cancel every task in flight and record it, with ``message``."""
        with self.state.transaction():
            for node in self.nodes.values():
                if node.state in IN_FLIGHT:
                    if node.handle is not None:
                        try:
                            self.backends[node.backend].cancel(node.handle)
                        except CwlbridgeError as err:
                            node.message = f"cancel failed: {err.message}"
                    self._set_state(node, CANCELLED, message)

    def take_back(self, names: set[str] | None) -> int:
        """Make failed/cancelled tasks (all, or those in ``names``) wait again, for a retry.

        Tasks skipped because of them (not by a condition) get their chance too.  Returns how
        many failed or cancelled tasks were taken back; 0 changes nothing.
        """
        again = [
            n for n in self.nodes.values() if n.state in (FAILED, CANCELLED) and (names is None or n.task.name in names)
        ]
        if not again:
            return 0
        held_back = [n for n in self.nodes.values() if n.state == SKIPPED and not n.message.startswith("condition")]
        with self.state.transaction():
            for node in again + held_back:
                if node.state != SKIPPED:
                    node.handle = None
                node.state, node.message = WAITING, ""
                node.started = node.ended = None
                self._track(node)
                self.state.set_task_state(node.task.name, WAITING, "retry requested")
                self._dirty.add(node.task.name)
        return len(again)

    def take_back_stopped(self) -> int:
        """After a Ctrl-C: the tasks it cancelled wait again (their finished jobs are kept)."""
        stopped = {n.task.name for n in self.nodes.values() if n.state == CANCELLED and n.message == STOPPED_MESSAGE}
        return self.take_back(stopped) if stopped else 0

    def request_stop(self) -> None:
        """First Ctrl-C: stop launching, cancel what runs, record it."""
        self.stop_requested = True


@dataclass
class SignalGuard:
    """First SIGINT/SIGTERM: ask the scheduler to stop; a second one: raise at once."""

    scheduler: Scheduler
    hits: int = 0
    _previous: dict[int, Any] = field(default_factory=dict)

    def _handle(self, signum: int, frame: Any) -> None:
        self.hits += 1
        if self.hits == 1:
            self.scheduler.request_stop()
            return
        self.scheduler.kill_requested = True
        raise KeyboardInterrupt

    def __enter__(self) -> SignalGuard:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def read_junction_results(store: Any, task: Task) -> dict[str, Any] | None:
    """The junction's results.json from its output dataset, or None when absent/unreadable."""
    for dataset in task.output_datasets:
        if not dataset.rstrip("/").endswith("results.json"):
            continue
        with tempfile.TemporaryDirectory(prefix="cwlbridge-junction-") as tmp:
            try:
                paths = store.fetch(dataset, Path(tmp))
            except CwlbridgeError:
                return None
            for path in paths:
                if path.name.endswith("results.json"):
                    try:
                        value = json.loads(path.read_text(encoding="utf-8"))
                    except (OSError, ValueError):
                        return None
                    return value if isinstance(value, dict) else None
    return None

