"""What ``cwlbridge run --backend panda`` checks before its first submission, and its set-up.

Everything that can be known before a task is submitted is an error before it, with nothing
sent that changes anything on PanDA (``preflight`` only reads):

1. credentials: PANDA_* settings, an OIDC token that has not expired or an x509 proxy;
2. who the user is on PanDA (PANDA_NICKNAME, else the token's ``preferred_username``, as
   panda-client takes it), and that ``--outds`` is theirs (``user.<nick>.…``);
3. every step's task parameters, made by prun itself, so a bad option never fails half way;
4. a Rucio store where the chain needs one: a junction's ``results.json`` is read through
   Rucio, and a REANA step run from here (``--reana-via direct``) stages its tar out to it;
5. the sandbox: every file a command names can go into it;
6. the server answers, and none of the run's task names exists on it already (PanDA would
   re-execute an ended task whose name is submitted again);
7. the PanDA secrets the chain's tasks read (``--useSecrets``; the REANA submitter in a PanDA
   job needs REANA_SERVER_URL and REANA_ACCESS_TOKEN, and its ``--secret-file`` files).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cwlbridge.errors import CwlbridgeError, UsageError
from cwlbridge.model.plan import Plan, Task
from cwlbridge.panda import sandbox as sandbox_mod
from cwlbridge.panda.client import PandaClient
from cwlbridge.panda.config import CredentialsError, PandaSettings, token_claims
from cwlbridge.panda.taskparams import DEFAULT_BASE_PLATFORM, base_platform, prun_command_line, prun_map

#: Far enough back to see every task of the user (a name lookup before the first submission).
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
#: What the REANA submitter needs from PanDA's secrets when it runs in a PanDA job.
SUBMITTER_SECRETS = ("REANA_SERVER_URL", "REANA_ACCESS_TOKEN")
#: PanDA's prefix of a file secret (pbook stores files base64 under it).
FILE_SECRET_PREFIX = "___file___:"
#: Step types whose task parameters prun builds (phpo and gitlab tasks are made by other tools).
PRUN_BUILT = frozenset({"prun", "junction", "reana"})
#: Where a task is shown (CWLBRIDGE_PANDA_MONITOR_URL changes it; ``{id}`` is the jediTaskID).
DEFAULT_MONITOR_URL = "https://bigpanda.cern.ch/task/{id}/"


@dataclass
class GridSetup:
    """What pre-flight found out, for the panda backend."""

    settings: PandaSettings
    nickname: str
    platform: str  # for container-less tasks (taskparams.base_platform)
    selection: sandbox_mod.SandboxSelection


def nickname_of(settings: PandaSettings, environ: Mapping[str, str]) -> str:
    """The user's PanDA nickname: PANDA_NICKNAME, else the ID token's ``preferred_username``."""
    given = (environ.get("PANDA_NICKNAME") or "").strip()
    if given:
        return given
    if settings.token:
        claim = token_claims(settings.token).get("preferred_username")
        if isinstance(claim, str) and claim.strip():
            return claim.strip()
    raise CredentialsError(
        "cannot tell your PanDA nickname (the `user.<nick>.` of your datasets)",
        hint="export PANDA_NICKNAME=<nick> (your CERN login for most users)",
    )


def uses_rucio(plan: Plan, runs_here: Callable[[Task], bool]) -> list[str]:
    """Why the chain needs a Rucio store: a junction, or a REANA step run from this machine."""
    reasons = []
    for task in plan.tasks:
        if task.type == "junction":
            reasons.append(f"junction '{task.step}' (its results.json is read through Rucio)")
        elif runs_here(task):
            reasons.append(f"REANA step '{task.step}' run from here (its tar is staged out to Rucio)")
    return list(dict.fromkeys(reasons))


def needed_secrets(plan: Plan, via_panda: Callable[[Task], bool]) -> dict[str, list[str]]:
    """The PanDA secrets each step that reads them needs: {step: [names]} (an empty list: any)."""
    from cwlbridge.reana.stepcheck import submitter_words

    wanted: dict[str, list[str]] = {}
    for task in plan.tasks:
        if not via_panda(task):
            continue  # run from here: it reads our environment, not PanDA's secrets
        words = submitter_words(task.exec)
        if words is not None:
            names = list(SUBMITTER_SECRETS)  # a PanDA job has none of our environment
            names += [FILE_SECRET_PREFIX + Path(v).name for v in _option_values(words, "--secret-file")]
            names += [v for v in _option_values(words, "--secret-env") if "=" not in v]
            wanted.setdefault(task.step, names)
        elif task.use_secrets:
            wanted.setdefault(task.step, [])
    return wanted


def _option_values(words: list[str], option: str) -> list[str]:
    found = []
    for i, word in enumerate(words):
        if word == option and i + 1 < len(words):
            found.append(words[i + 1])
        elif word.startswith(option + "="):
            found.append(word.split("=", 1)[1])
    return found


def _probe_task(task: Task) -> Task:
    """A loop task with iteration 1 filled in (what its first submission will carry)."""
    from cwlbridge.engine.scheduler import concrete_task

    return concrete_task(task, 1, {})


def check_task_parameters(plan: Plan, nickname: str, on_panda: Callable[[Task], bool]) -> None:
    """prun's own map for the first task of every step; its refusal, at the step, is an error now."""
    seen: set[str] = set()
    problems = []
    for task in plan.tasks:
        key = re.sub(r"\[\d+\]", "", task.path)
        if key in seen or not on_panda(task) or task.type not in PRUN_BUILT:
            continue
        seen.add(key)
        try:
            prun_map(prun_command_line(_probe_task(task)), nickname=nickname)
        except CwlbridgeError as exc:
            problems.append(f"step '{task.step}': {exc.message}")
    if problems:
        raise UsageError(
            f"{len(problems)} step(s) would be refused by PanDA; nothing was submitted\n" + "\n".join(problems),
            hint="fix the step's opt_args; `cwlbridge validate` shows where",
        )


def preflight(
    plan: Plan,
    *,
    chain: Path,
    store: Any,
    reana_direct: Callable[[Task], bool],
    environ: Mapping[str, str],
    includes: list[str],
    client_factory: Callable[[PandaSettings], PandaClient] | None = None,
    need_rucio: bool = True,
    secrets: bool = True,
) -> GridSetup:
    """Check everything that can be known before the first submission (see the module doc).

    ``need_rucio=False`` leaves out check 4 (``cwlbridge submit``: iDDS reads a junction's
    results, and REANA steps run in PanDA jobs); ``secrets=False`` check 7 (``submit --check``
    creates no task).
    """
    settings = PandaSettings.from_env(environ)
    nickname = nickname_of(settings, environ)
    outds = plan.outds
    if not (outds.startswith(f"user.{nickname}.") or outds.startswith("group.")):
        raise UsageError(
            f"--outds {outds}: your datasets on PanDA are user.{nickname}.…, so PanDA would refuse it",
            hint=f"use --outds user.{nickname}.<name> (or set PANDA_NICKNAME if {nickname!r} is not you)",
        )

    def on_panda(task: Task) -> bool:
        return not reana_direct(task)

    check_task_parameters(plan, nickname, on_panda)
    reasons = uses_rucio(plan, reana_direct) if need_rucio else []
    if reasons and getattr(store, "kind", "") != "rucio":
        raise UsageError(
            "this chain needs a Rucio store with --backend panda: " + "; ".join(reasons),
            hint="add --store rucio:RSE (an RSE you may write to, e.g. CERN-PROD_SCRATCHDISK) with RUCIO_CONFIG set",
        )
    selection = sandbox_mod.select(chain, plan, includes=includes)
    selection.check()
    client = (client_factory or (lambda s: PandaClient(s)))(settings)
    try:
        rows = client.tasks_modified_since(EPOCH)
        names = {t.name.rstrip("/") for t in plan.tasks}
        taken = sorted(r.name for r in rows if r.name in names or r.name.startswith(f"{outds}_"))
        if taken:
            raise UsageError(
                f"--outds {outds} was used on PanDA before: {len(taken)} task(s) of it exist ({taken[0]});"
                " submitting its names again would re-execute them",
                hint="pick a new --outds (e.g. add a version suffix), or continue that run with `cwlbridge resume`",
            )
        wanted = needed_secrets(plan, on_panda) if secrets else {}
        if wanted:
            have = set(client.secrets())
            missing = {step: [n for n in names if n not in have] for step, names in wanted.items()}
            missing = {s: n for s, n in missing.items() if n or not have}
            if missing:
                lines = [
                    f"step '{step}': " + (", ".join(names) if names else "any secret (it runs with --useSecrets)")
                    for step, names in missing.items()
                ]
                raise UsageError(
                    "PanDA secrets the chain reads are missing; nothing was submitted\n" + "\n".join(lines),
                    hint="store them with `cwlbridge panda secrets set NAME VALUE` (a file: --file PATH)",
                )
    finally:
        client.close()
    return GridSetup(settings=settings, nickname=nickname, platform=base_platform(environ), selection=selection)


def upload_sandbox(setup: GridSetup, directory: Path) -> tuple[str, str]:
    """Build the sandbox into ``directory`` and put it into PanDA's cache: (name, sourceURL)."""
    archive = sandbox_mod.build(setup.selection, directory)
    with PandaClient(setup.settings) as client:
        return sandbox_mod.upload(client, archive)


def run_options(setup: GridSetup, sandbox: str, source_url: str, since: dt.datetime) -> dict[str, Any]:
    """What a run on PanDA keeps in its state for ``resume``, ``retry`` and ``kill``."""
    return {
        "nickname": setup.nickname,
        "platform": setup.platform,
        "sandbox": sandbox,
        "source_url": source_url,
        "since": since.isoformat(),
    }


def open_backend(
    plan: Plan | None,
    saved: Mapping[str, Any],
    *,
    poll_interval: float,
    say: Callable[[str], None],
    environ: Mapping[str, str] | None = None,
) -> Any:
    """The panda backend of a run from what ``run_options`` saved (credentials read afresh)."""
    from cwlbridge.backends.panda import PandaBackend

    if not saved.get("since"):
        raise CwlbridgeError("this run has no PanDA settings in its state; it was not started with --backend panda")
    env = os.environ if environ is None else environ
    client = PandaClient.from_env(env)
    monitor = env.get("CWLBRIDGE_PANDA_MONITOR_URL") or DEFAULT_MONITOR_URL
    return PandaBackend(
        client,
        plan,
        nickname=str(saved["nickname"]),
        platform=str(saved.get("platform", DEFAULT_BASE_PLATFORM)),
        sandbox=str(saved.get("sandbox") or ""),
        source_url=str(saved.get("source_url") or ""),
        since=dt.datetime.fromisoformat(str(saved["since"])),
        poll_interval=poll_interval,
        monitor_url=monitor,
        say=say,
    )
