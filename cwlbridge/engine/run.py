"""``cwlbridge run``, ``resume``, ``retry`` and ``kill``: the commands that move a run."""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cwlbridge.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, CwlbridgeError, UsageError
from cwlbridge.model.command import add_chain_arguments, add_outds_arguments, chain_and_inputs, outds_from

#: Step types the backends here cannot run (they need PanDA's services).
GRID_ONLY_TYPES = {"phpo": "a PanDA HPO service", "gitlab": "a GitLab CI server reached by PanDA"}


def register(subparsers: Any) -> None:
    """Add ``run``, ``resume``, ``retry`` and ``kill``."""
    run = subparsers.add_parser(
        "run",
        help="run a chain: here (default) with REANA steps sent to REANA, or on PanDA (--backend panda)",
        description="Run a pchain chain. Grid steps run on this machine (the local backend),"
        " or as PanDA tasks with --backend panda; a `run: reana` step whose opt_exec is"
        " `cwlbridge reana job …` goes to the REANA submitter (REANA_SERVER_URL, or REANA's"
        " local engine when unset). State lives in .cwlbridge/runs/RUN_ID/; see `cwlbridge"
        " status`. Exit 0 when every task that should run finished, 1 otherwise.",
    )
    add_chain_arguments(run)
    add_outds_arguments(run, help="the pchain --outDS (default user.<nick>.<chain name>)")
    run.add_argument(
        "--backend",
        choices=("auto", "local", "panda"),
        default="auto",
        help="auto: REANA steps to the reana backend, the rest local; local: everything here;"
        " panda: prun and junction steps become PanDA tasks (PANDA_URL_SSL, a token or proxy)",
    )
    run.add_argument(
        "--reana-via",
        choices=("direct", "panda"),
        default="direct",
        help="with --backend panda: run REANA steps' submitter from here (direct, default) or in a PanDA job",
    )
    run.add_argument(
        "--sandbox-include", action="append", default=[], metavar="GLOB",
        help="with --backend panda: also put files matching GLOB (relative to the chain) into the sandbox",
    )
    _add_run_options(run)
    run.set_defaults(handler=run_run)

    resume = subparsers.add_parser("resume", help="continue a run that stopped (crash, Ctrl-C, kill)")
    resume.add_argument("run", metavar="RUN", help="run id (or a unique prefix); see `cwlbridge runs`")
    _add_run_options(resume, defaults=False)
    resume.set_defaults(handler=run_resume)

    retry = subparsers.add_parser("retry", help="run failed or cancelled tasks of a run again")
    retry.add_argument("run", metavar="RUN")
    retry.add_argument("--task", action="append", default=[], help="only this task (name, short name or step)")
    _add_run_options(retry, defaults=False)
    retry.set_defaults(handler=run_retry)

    kill = subparsers.add_parser("kill", help="stop a run: cancel its running tasks and record it")
    kill.add_argument("run", metavar="RUN")
    kill.add_argument("--base", default=".", help="directory holding .cwlbridge/runs (default .)")
    kill.set_defaults(handler=run_kill)


def _add_run_options(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    def default(value: Any) -> Any:
        return value if defaults else None

    parser.add_argument("--base", default=".", help="directory holding .cwlbridge/runs (default .)")
    parser.add_argument("--store", default=default(None), help="dataset store: local (default), a path, rucio:RSE")
    parser.add_argument("--jobs", type=_positive, default=default(os.cpu_count() or 2), help="jobs at once")
    parser.add_argument("--max-tasks", type=_natural, default=default(0), help="tasks in flight (0: no limit)")
    parser.add_argument("--retries", type=_natural, default=default(0), help="extra attempts per failed job")
    parser.add_argument(
        "--max-iterations", type=_positive, default=default(10), help="loop guard (default 10)"
    )
    parser.add_argument(
        "--containers",
        choices=("never", "auto", "docker", "apptainer"),
        default=default("never"),
        help="run opt_containerImage steps in a container (default never: on the host)",
    )
    parser.add_argument(
        "--poll-interval", type=_seconds, default=default(60.0), metavar="SECONDS",
        help="with --backend panda: ask PanDA this often (default 60, growing to 300 while nothing changes)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")


def _positive(text: str) -> int:
    value = _natural(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


# --------------------------------------------------------------------------- settings


RUN_OPTIONS = (
    "store", "jobs", "max_tasks", "retries", "max_iterations", "containers", "backend", "poll_interval",
    "reana_via", "sandbox_include",
)


@dataclass
class Settings:
    """The options a run was started with; resume/retry reuse them unless overridden."""

    store: str | None
    jobs: int
    max_tasks: int
    retries: int
    max_iterations: int
    containers: str
    backend: str
    poll_interval: float = 60.0
    reana_via: str = "direct"
    sandbox_include: tuple[str, ...] = ()

    @classmethod
    def merge(cls, saved: dict[str, Any], args: argparse.Namespace) -> Settings:
        values = {k: saved.get(k) for k in RUN_OPTIONS}
        for key in RUN_OPTIONS:
            given = getattr(args, key, None)
            if given is not None:
                values[key] = given
        return cls(
            store=values["store"],
            jobs=int(values["jobs"] or os.cpu_count() or 2),
            max_tasks=int(values["max_tasks"] or 0),
            retries=int(values["retries"] or 0),
            max_iterations=int(values["max_iterations"] or 10),
            containers=str(values["containers"] or "never"),
            backend=str(values["backend"] or "auto"),
            poll_interval=float(60.0 if values["poll_interval"] is None else values["poll_interval"]),
            reana_via=str(values["reana_via"] or "direct"),
            sandbox_include=tuple(values["sandbox_include"] or ()),
        )

    def to_json(self) -> dict[str, Any]:
        values = {k: getattr(self, k) for k in RUN_OPTIONS}
        values["sandbox_include"] = list(self.sandbox_include)
        return values

    def reana_here(self, task: Any) -> bool:
        """True when ``task`` is a REANA submitter step run from this machine (the reana backend)."""
        if self.backend == "local" or task.type != "reana" or not is_submitter_command(task.exec):
            return False
        return self.backend != "panda" or self.reana_via == "direct"


def default_outds(chain: Path, environ: dict[str, str]) -> str:
    """``user.<nick>.<chain name>``: the nick from PANDA_NICKNAME, RUCIO_ACCOUNT, USER, else the login name.

    PANDA_NICKNAME comes first because it is the nick PanDA itself puts in user.<nick>.
    (a Rucio account may be a service or group account).
    """
    nick = (
        environ.get("PANDA_NICKNAME") or environ.get("RUCIO_ACCOUNT") or environ.get("USER") or getpass.getuser()
    )
    stem = chain.parent.name if chain.stem in ("chain", "main", "workflow") else chain.stem
    label = re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "chain"
    return f"user.{re.sub(r'[^A-Za-z0-9_-]', '', nick) or 'nobody'}.{label}"


# --------------------------------------------------------------------------- planning


def make_plan(chain: Path, inputs: Path, outds: str) -> Any:
    """The plan of the chain; raise with every error listed when it is not runnable."""
    return make_analysis(chain, inputs, outds).plan


def make_analysis(chain: Path, inputs: Path, outds: str, *, on_idds: bool = False, what: str = "run") -> Any:
    """Analyse the chain; raise with every error listed when it is not runnable.

    phpo and gitlab steps are refused here and under ``--backend panda`` alike: PanDA makes
    their tasks with other tools than prun (phpo, its GitLab service).  ``on_idds``: the chain
    goes to PanDA whole (``cwlbridge submit``), where they are fine.  ``what`` did not happen.
    """
    from cwlbridge.cache import LoadedChains, SchemaVerdicts
    from cwlbridge.model.command import require_file
    from cwlbridge.model.rules import analyse, check_outds

    require_file(str(chain), "chain file")
    require_file(str(inputs), "inputs file")
    problem = check_outds(outds)
    if problem:
        raise UsageError(problem)
    analysis = analyse(str(chain), str(inputs), outds, verdicts=SchemaVerdicts.default(), chains=LoadedChains.default())
    if analysis.findings.errors or analysis.plan is None:
        lines = [f.text() for f in analysis.findings.errors]
        raise CwlbridgeError(
            f"{chain}: {len(analysis.findings.errors)} error(s); nothing was {what}\n" + "\n".join(lines),
            hint=f"see `cwlbridge validate {chain} {inputs}`",
        )
    for task in [] if on_idds else analysis.plan.tasks:
        if task.type in GRID_ONLY_TYPES:
            raise CwlbridgeError(
                f"step '{task.step}' is a `run: {task.type}` step; it needs {GRID_ONLY_TYPES[task.type]}"
                " and cannot run on this machine; nothing was run",
                hint="plan it with `cwlbridge plan`, or run it with pchain on PanDA",
            )
    return analysis


def is_submitter_command(command: str | None) -> bool:
    """True for an opt_exec that is ``cwlbridge reana job …`` (the REANA submitter)."""
    from cwlbridge.reana.stepcheck import submitter_words

    return submitter_words(command) is not None


# --------------------------------------------------------------------------- running


def _open_backends(
    settings: Settings, store: Any, say: Any, run_dir: Path, *, plan: Any = None, options: Any = None
) -> dict[str, Any]:
    from cwlbridge.backends.local import LocalBackend
    from cwlbridge.backends.reana import ReanaBackend
    from cwlbridge.engine.state import SHARED_DIR

    local = LocalBackend(
        store, jobs=settings.jobs, containers=settings.containers, say=say, shared=run_dir / SHARED_DIR
    )
    backends = {"local": local, "reana": ReanaBackend(store, runner=local, say=say)}
    if settings.backend == "panda":
        from cwlbridge.panda.grid import open_backend

        backends["panda"] = open_backend(
            plan, dict((options or {}).get("panda") or {}), poll_interval=settings.poll_interval, say=say
        )
    return backends


def _chooser(settings: Settings) -> Any:
    def choose(task: Any) -> str:
        if settings.reana_here(task):
            return "reana"
        return "panda" if settings.backend == "panda" else "local"

    return choose


def execute(
    run_dir: Path, *, settings: Settings, quiet: bool, retry_tasks: list[str] | None = None, plan: Any = None
) -> int:
    """Run (or continue) the run in ``run_dir`` to its end; returns the exit code."""
    from cwlbridge.data.datasets import open_store
    from cwlbridge.engine.progress import choose_progress
    from cwlbridge.engine.scheduler import (
        KILL_REQUESTED,
        EngineOptions,
        Interrupted,
        Scheduler,
        SignalGuard,
        read_junction_results,
    )
    from cwlbridge.engine.state import RunState

    state = RunState.open(run_dir)
    info = state.info(with_plan=plan is None)
    chain = Path(info.chain)
    if plan is None:
        plan = make_plan(chain, Path(info.inputs or ""), info.outds)
    if info.plan and json.dumps(plan.to_json(), sort_keys=True) != json.dumps(info.plan, sort_keys=True):
        raise CwlbridgeError(
            f"{chain} or its inputs changed since run {info.id} started; its plan is different",
            hint=f"start a new run: cwlbridge run {chain} {info.inputs}",
        )
    _check_containers(plan, settings.containers)
    store = open_store(settings.store, cwd=Path(info.options.get("cwd") or "."))
    progress = choose_progress(info.outds, quiet=quiet)
    backends = _open_backends(settings, store, progress.say, run_dir, plan=plan, options=info.options)
    env = {"CWLBRIDGE_RUN": info.id}
    scheduler = Scheduler(
        plan,
        state,
        backends,
        _chooser(settings),
        sandbox=chain.parent.resolve(),
        read_results=lambda task: read_junction_results(store, task),
        options=EngineOptions(retries=settings.retries, max_iterations=settings.max_iterations,
                              max_tasks=settings.max_tasks, env=env, task_numbers=store.task_numbers),
        on_change=lambda node: progress.update(node),
    )
    scheduler.build()
    if retry_tasks is not None:
        _reset_for_retry(scheduler, retry_tasks)
    elif info.status == "interrupted":
        scheduler.take_back_stopped()
    state.set_value(KILL_REQUESTED, False)
    state.set_run_status("running", pid=os.getpid())
    interrupted = False
    progress.start(scheduler.nodes)
    # The chain, its plan and the scheduler's graph live as long as the run: out of the
    # garbage collector's sight, a full collection no longer stalls a step for 15 ms or more.
    # What the run adds later (a record per task) lives as long too, so full collections,
    # which only walk it, come ten times less often than by default.
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)
    try:
        with SignalGuard(scheduler):
            try:
                scheduler.run()
            except Interrupted:
                interrupted = True
            except KeyboardInterrupt:
                # The second Ctrl-C: no grace period for the jobs.
                interrupted = True
                for backend in backends.values():
                    if hasattr(backend, "kill_grace"):
                        backend.kill_grace = 0.0
                scheduler.cancel_all()
    finally:
        progress.stop()
        for backend in backends.values():
            backend.close()
        store.close()
    try:
        grid = settings.backend == "panda"
        return _conclude(scheduler, state, info, interrupted, quiet=quiet, store=store, grid=grid)
    finally:
        state.close()  # the last checkpoint: no write-ahead log is left beside the state


def _check_containers(plan: Any, containers: str) -> None:
    """``--containers docker|apptainer`` with an image to run and no such engine: refuse at once.

    (``auto`` falls back to the host with a note, ``never`` is the host by choice.)
    """
    from cwlbridge.backends.containers import find_container_engine

    if containers not in ("docker", "apptainer"):
        return
    images = [t for t in plan.tasks if t.container]
    if not images:
        return
    engine, why = find_container_engine(containers)
    if engine is None:
        raise UsageError(
            f"--containers {containers}: {why}, so step '{images[0].step}' (image {images[0].container})"
            " cannot run in its container",
            hint="install it, or run with --containers auto (host when none works) or never",
        )


def _reset_for_retry(scheduler: Any, names: list[str]) -> None:
    wanted = _match_tasks(scheduler, names) if names else None
    if not scheduler.take_back(wanted):
        raise CwlbridgeError("nothing to retry: no failed or cancelled task" + (" of that name" if names else ""))


def _match_tasks(scheduler: Any, names: list[str]) -> set[str]:
    from cwlbridge.model.plan import short_name

    found: set[str] = set()
    outds = scheduler.plan.outds
    for wanted in names:
        hits = [
            n
            for n in scheduler.nodes.values()
            if wanted in (n.task.name, short_name(n.task.name, outds), n.task.step)
        ]
        if not hits:
            raise UsageError(f"--task {wanted}: no such task in this run")
        found |= {n.task.name for n in hits}
    return found


def _conclude(
    scheduler: Any, state: Any, info: Any, interrupted: bool, *, quiet: bool, store: Any, grid: bool = False
) -> int:
    from cwlbridge.engine.scheduler import CANCELLED, FAILED, FINISHED, KILL_REQUESTED, SKIPPED, STOPPED_MESSAGE
    from cwlbridge.model.plan import short_name

    nodes = list(scheduler.nodes.values())
    failed = [n for n in nodes if n.state in (FAILED, CANCELLED)]
    stuck = [n for n in nodes if n.state == SKIPPED and not n.message.startswith(("condition", "runs only if"))]
    done = [n for n in nodes if n.state == FINISHED]
    outds = info.outds
    if interrupted and state.get_value(KILL_REQUESTED):
        with state.transaction():
            for node in nodes:
                if node.state == CANCELLED and node.message == STOPPED_MESSAGE:
                    state.set_task_state(node.task.name, CANCELLED, "killed by `cwlbridge kill`")
        state.set_run_status("cancelled")
        sys.stderr.write(f"cwlbridge: run {info.id} killed: {len(done)} task(s) finished, the rest cancelled\n")
        return EXIT_FAILURE
    if interrupted:
        state.set_run_status("interrupted")
        sys.stderr.write(
            f"cwlbridge: run {info.id} stopped: {len(done)} task(s) finished, running tasks cancelled;"
            f" continue with `cwlbridge resume {info.id}` (`cwlbridge kill {info.id}` makes it final)\n"
        )
        return EXIT_INTERRUPTED
    for ls in scheduler.loops.values():
        if ls.reason.startswith("stopped by"):
            sys.stderr.write(
                f"cwlbridge: warning: loop {ls.loop.path} {ls.reason} after {ls.iteration} iteration(s);"
                " its junction asked to go on\n"
            )
    ok = not failed and not stuck
    state.set_run_status("finished" if ok else "failed", pid=None)
    out = sys.stdout
    if ok:
        if not quiet:
            _print_outputs(scheduler, store, out, grid=grid)
        out.write(f"run {info.id}: {len(done)} task(s) finished, {len(nodes) - len(done)} skipped\n")
        return EXIT_OK
    first = failed[0] if failed else stuck[0]
    names = ", ".join(short_name(n.task.name, outds) for n in failed) or "none"
    sys.stderr.write(
        f"cwlbridge: run {info.id}: {len(failed)} task(s) failed ({names}), {len(stuck)} could not run,"
        f" {len(done)} finished; see why: cwlbridge logs {info.id} {short_name(first.task.name, outds)}\n"
    )
    return EXIT_FAILURE


def final_tasks(scheduler: Any) -> list[Any]:
    """Finished tasks whose outputs nothing else reads: the chain's results.

    Junction outputs (``results.json``) steer loops and are not results; of a loop only its
    last iteration counts.
    """
    from cwlbridge.engine.scheduler import FINISHED

    nodes = list(scheduler.nodes.values())
    consumed = {p.task for n in nodes if n.task.type != "junction" for p in n.task.parents}
    last = {path: ls.iteration for path, ls in scheduler.loops.items()}
    return [
        n
        for n in nodes
        if n.state == FINISHED
        and n.task.type != "junction"
        and n.task.name not in consumed
        and (n.iteration is None or n.iteration == last.get(n.task.loop or "", n.iteration))
    ]


def _print_outputs(scheduler: Any, store: Any, out: Any, *, grid: bool = False) -> None:
    """The final outputs, as `cwlbridge data ls` lists them (on PanDA without a Rucio store:
    their names, which `rucio list-files` lists)."""
    for node in final_tasks(scheduler):
        for dataset in node.task.output_datasets:
            if grid and store.kind != "rucio":
                out.write(f"{dataset}  (in Rucio: rucio list-files {dataset.rstrip('/')})\n")
                continue
            try:
                files = store.list(dataset)
            except CwlbridgeError:
                continue
            out.write(f"{dataset}  ({len(files)} file(s) in the {store.kind} store)\n")
            for f in files:
                out.write(f"  {f.name}  {f.size} B" + (f"  {f.path}" if f.path else "") + "\n")


# --------------------------------------------------------------------------- commands


def run_run(args: argparse.Namespace) -> int:
    """``cwlbridge run CHAIN INPUTS``."""
    from cwlbridge.engine.state import RUNS_DIR, RunState, new_run_id

    chain_path, inputs_path = chain_and_inputs(args, inputs_required=True)
    chain, inputs = Path(chain_path), Path(inputs_path or "")
    outds = outds_from(args) or default_outds(chain, dict(os.environ))
    settings = Settings.merge({}, args)
    if settings.backend == "auto" and os.environ.get("PANDA_URL_SSL"):
        sys.stderr.write(
            "cwlbridge: note: PANDA_URL_SSL is set, but this run stays on this machine;"
            " `--backend panda` sends its grid steps to PanDA\n"
        )
    analysis = make_analysis(chain, inputs, outds)
    plan = analysis.plan
    base = Path(args.base).resolve()
    options: dict[str, Any] = {}
    if settings.backend == "panda":
        options["panda"] = _grid_preflight(chain, analysis, settings, base, quiet=args.quiet)
    else:
        _refuse_used_outds(plan, settings)
    _check_containers(plan, settings.containers)
    run_id = new_run_id()
    run_dir = base / RUNS_DIR / run_id
    options |= settings.to_json() | {"cwd": str(Path.cwd())}
    RunState.create(
        run_dir,
        run_id=run_id,
        chain=chain.resolve(),
        inputs=inputs.resolve(),
        outds=outds,
        options=options,
        plan=plan.to_json(),
    ).close()
    if not args.quiet:
        sys.stdout.write(f"run {run_id}: {len(plan.tasks)} task(s), outDS {outds}, state in {run_dir}\n")
        sys.stdout.flush()
    return execute(run_dir, settings=settings, quiet=args.quiet, plan=plan)


def _grid_preflight(chain: Path, analysis: Any, settings: Settings, base: Path, *, quiet: bool) -> dict[str, Any]:
    """``--backend panda``: every check before the first submission, then the sandbox upload;
    what the run keeps of it (see ``panda.grid``)."""
    import datetime as dt

    from cwlbridge.data.datasets import open_store
    from cwlbridge.panda import grid

    plan = analysis.plan
    if settings.store is None and not os.environ.get("CWLBRIDGE_STORE"):
        store: Any = None
    else:
        store = open_store(settings.store)
        if store.kind != "rucio":
            store.close()
            raise UsageError(
                f"--store {settings.store or os.environ.get('CWLBRIDGE_STORE')}: PanDA tasks read and write"
                " Rucio datasets, not a local store",
                hint="use --store rucio:RSE (an RSE you may write to), or leave --store out",
            )
    since = dt.datetime.now(dt.timezone.utc)
    try:
        setup = grid.preflight(
            plan, chain=chain, store=store,
            reana_direct=settings.reana_here, environ=os.environ, includes=list(settings.sandbox_include),
        )
    finally:
        if store is not None:
            store.close()
    if store is not None:
        _refuse_used_outds(plan, settings)  # the inputs exist, the outputs do not (in Rucio)
    elif not quiet:
        sys.stderr.write(
            "cwlbridge: note: without --store rucio:RSE the input datasets are not checked before submission\n"
        )
    name, source_url = grid.upload_sandbox(setup, base / ".cwlbridge" / "sandboxes")
    return grid.run_options(setup, name, source_url, since)


def _refuse_used_outds(plan: Any, settings: Settings) -> None:
    """Before anything runs: every input the chain reads from outside must be in the store,
    and no output dataset may exist yet (PanDA refuses an outDS that exists; so do we)."""
    from cwlbridge.data.datasets import open_store

    with open_store(settings.store) as store:
        where = store.root_description()
        wanted = outside_inputs(plan)
        present = set(store.existing(list(wanted)))
        missing = [(dataset, steps) for dataset, steps in wanted.items() if dataset not in present]
        used = store.existing([d for t in plan.tasks for d in t.output_datasets if "___idds___" not in d])
    if missing:
        lines = [f"{d} (read by {', '.join(repr(s) for s in steps)})" for d, steps in missing]
        raise UsageError(
            f"{len(missing)} input dataset(s) of the chain are not in the {where}: " + "; ".join(lines),
            hint=f"register the files with `cwlbridge data add {missing[0][0]} FILE…`, or pick the store"
            " that holds them with --store",
        )
    if used:
        raise UsageError(
            f"--outds {plan.outds} was used before: {len(used)} of its output datasets exist already"
            f" ({used[0]}, in the {where})",
            hint="pick a new --outds (e.g. add a version suffix), or continue that run with `cwlbridge resume`",
        )


def outside_inputs(plan: Any) -> dict[str, list[str]]:
    """The datasets the chain reads (inputs and secondaries) that no step of it makes, with the
    steps (their paths in the chain) that read each."""
    made = {d.rstrip("/") for t in plan.tasks for d in t.output_datasets}
    wanted: dict[str, list[str]] = {}
    for task in plan.tasks:
        for entry in [*task.in_ds, *task.secondary_ds]:
            for dataset in (part.strip() for part in entry.split(",")):
                if not dataset or "___idds___" in dataset or dataset.rstrip("/") in made:
                    continue
                steps = wanted.setdefault(dataset, [])
                if task.path not in steps:
                    steps.append(task.path)
    return wanted


def _open_existing(args: argparse.Namespace) -> tuple[Path, Settings]:
    from cwlbridge.engine.state import RunState, find_run
    from cwlbridge.osutil import pid_alive

    run_dir = find_run(args.run, Path(args.base).resolve())
    state = RunState.open(run_dir, readonly=True)
    try:
        info = state.info()
    finally:
        state.close()
    if info.status == "running" and info.pid and pid_alive(info.pid) and info.pid != os.getpid():
        raise CwlbridgeError(
            f"run {info.id} is still being run by process {info.pid}",
            hint=f"stop it first with `cwlbridge kill {info.id}`",
        )
    return run_dir, Settings.merge(dict(info.options), args)


def run_resume(args: argparse.Namespace) -> int:
    """``cwlbridge resume RUN``."""
    run_dir, settings = _open_existing(args)
    return execute(run_dir, settings=settings, quiet=args.quiet)


def run_retry(args: argparse.Namespace) -> int:
    """``cwlbridge retry RUN [--task NAME]``."""
    run_dir, settings = _open_existing(args)
    return execute(run_dir, settings=settings, quiet=args.quiet, retry_tasks=list(args.task))


def run_kill(args: argparse.Namespace) -> int:
    """``cwlbridge kill RUN``: ask the running process to stop; cancel directly if it is gone."""
    from cwlbridge.engine.scheduler import CANCELLED, IN_FLIGHT, KILL_REQUESTED
    from cwlbridge.engine.state import RunState, find_run
    from cwlbridge.osutil import pid_alive

    run_dir = find_run(args.run, Path(args.base).resolve())
    state = RunState.open(run_dir)
    info = state.info()
    if info.status == "interrupted" and not any(row.state in IN_FLIGHT for row in state.tasks()):
        # Stopped by Ctrl-C: nothing runs, but `resume` would run its cancelled tasks again.
        with state.transaction():
            for row in state.tasks():
                if row.state == CANCELLED:
                    state.set_task_state(row.name, CANCELLED, "killed by `cwlbridge kill`")
        state.set_run_status("cancelled")
        state.close()
        sys.stdout.write(f"run {info.id}: cancelled for good; `cwlbridge resume` will not run its tasks again\n")
        return EXIT_OK
    if info.status in ("finished", "failed", "cancelled") and not any(
        row.state in IN_FLIGHT for row in state.tasks()
    ):
        state.close()
        sys.stdout.write(f"run {info.id} has already ended ({info.status}); nothing to kill\n")
        return EXIT_OK
    if info.status == "running" and info.pid and pid_alive(info.pid):
        state.set_value(KILL_REQUESTED, True)  # the run then makes its cancellation final
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and pid_alive(info.pid):
            time.sleep(0.2)
        if pid_alive(info.pid):
            os.kill(info.pid, signal.SIGTERM)  # the second signal: kill at once
        sys.stdout.write(f"run {info.id}: stop requested from process {info.pid}\n")
        state.close()
        return EXIT_OK
    # Nobody runs it: cancel what is still in flight ourselves.
    from cwlbridge.data.datasets import open_store

    settings = Settings.merge(dict(info.options), argparse.Namespace())
    store = open_store(settings.store, cwd=Path(info.options.get("cwd") or "."))
    backends = _open_backends(settings, store, lambda message: None, state.run_dir, options=info.options)
    cancelled = 0
    with state.transaction():
        for row in state.tasks():
            if row.state in IN_FLIGHT:
                if row.handle:
                    backends.get(row.backend, backends["local"]).cancel(row.handle)
                state.set_task_state(row.name, CANCELLED, "killed by `cwlbridge kill`")
                cancelled += 1
    for backend in backends.values():
        backend.close()
    store.close()
    state.set_run_status("cancelled")
    state.close()
    sys.stdout.write(f"run {info.id}: {cancelled} task(s) cancelled\n")
    return EXIT_OK
