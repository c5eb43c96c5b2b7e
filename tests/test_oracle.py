"""PanDA's own converter as the oracle for ``cwlbridge plan``.

Every example chain in ``workflows/*/`` and every small chain in ``tests/oracle/*/`` (each a
``chain.cwl`` with an ``inputs.yaml``) goes through panda-server 1.0.4's converter, run offline
(``tests/servers/panda_converter.py``), and through ``cwlbridge plan … --format json``.  Their
tasks are compared id by id on the fields below.  Every difference must be listed in
``EXPECTED`` with the number of the README's "Deliberate fixes of PanDA defects" item that
explains it; a difference missing from the table fails, and so does an entry that no longer
differs, so the table stays a true account of where cwlbridge departs from PanDA.

For a task whose plan agrees on every field, the task-parameter maps are compared too, key by
key: the one cwlbridge submits (``cwlbridge.panda.taskparams.task_parameters``, what ``run
--backend panda`` sends) and the one PanDA's converter makes for iDDS, both with the sandbox name
and prun's random uuids made equal.  A task whose plan already differs (an EXPECTED entry) has a
different map as a consequence, so its map is not compared.  cwlbridge makes no map of its own
for phpo and gitlab steps (``run`` refuses them, ``submit`` hands the chain to PanDA's
converter), so theirs are not compared.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers.panda_converter import RUNNER, ConverterUnavailable, convert, ensure_converter
from tests.test_panda_taskparams import normal_job_parameters

REPO = Path(__file__).resolve().parents[1]
PRUN_BUILT = ("prun", "junction", "reana")  # the step types cwlbridge makes maps for
OUTDS = "user.jdoe.oracle"
NICKNAME = "jdoe"
FIELDS = (
    "name", "type", "in_ds", "secondary_ds", "output_datasets", "exec", "args", "parents",
    "condition", "use_secrets", "in_loop", "dropped_prun_options",
)  # fmt: skip
#: Map keys not compared, and why.
MAP_IGNORED = {
    "sourceURL": "where each side's sandbox was put (the test's cache, the templates' pandacache)",
    "userName": "PanDA's server writes it from the certificate, for pchain's tasks and ours alike",
}
SANDBOX = "sources.oracle.tar.gz"


def _chain_dirs() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for base in (REPO / "workflows", REPO / "tests" / "oracle"):
        for directory in sorted(base.iterdir()) if base.is_dir() else []:
            if (directory / "chain.cwl").is_file() and (directory / "inputs.yaml").is_file():
                assert directory.name not in found, f"two chains named {directory.name}"
                found[directory.name] = directory
    return found


CHAINS = _chain_dirs()

# Chains both PanDA and cwlbridge refuse, and the README fix about how they refuse them.  A
# chain refused by both sides that is not listed here fails (a broken test chain would
# otherwise agree with PanDA trivially).
REFUSED_BY_BOTH: dict[str, tuple[int, str]] = {
    "bad-option": (7, "a misspelt prun option: cwlbridge reports it at the step, PanDA's worker exits"),
}

# (chain, step, field, README fix number, why).  ``step`` is the step name ("*": the chain as a
# whole); an entry covers every task of the step (all scatter elements).
EXPECTED: list[tuple[str, str, str, int, str]] = [
    # 1: %{SECDS*}
    ("secondary-star", "*", "conversion", 1, "PanDA leaves %{SECDS1},%{SECDS2} and fails its own check"),
    # 2: top-level inputs as %{name}
    ("recast", "skim", "exec", 2, "%{signal_point} is a top-level input: cwlbridge substitutes it, PanDA does not"),
    # 3: downstream of a sub-workflow gets its declared outputs, not every leaf
    ("scatter-merge", "merge", "in_ds", 3, "the body's outputSource (select) only, not skim and cutflow too"),
    ("scatter-merge", "merge", "parents", 3, "waits for the declared outputs, not every leaf of the body"),
    ("nested", "report", "in_ds", 3, "outer's outputSource (audit) only, not every leaf under it"),
    ("nested", "report", "parents", 3, "one parent (audit) instead of every leaf of outer and inner"),
    ("loop-after", "after", "in_ds", 3, "the loop body's outputSource (fit) only, not the junction's results too"),
    ("loop-after", "after", "parents", 3, "waits for fit only, not also for the junction"),
    ("nested-tail", "*", "conversion", 3, "a body's output from a sub-workflow nested in it: PanDA fails (KeyError)"),
    # 4: scatter methods and scattered prun steps
    ("scatter-prun", "merge", "in_ds", 4, "every element's dataset; PanDA's resolver passes on the first one only"),
    ("scatter-cross", "scan", "in_ds", 4, "flat_crossproduct runs every combination; PanDA zips the lists"),
    ("scatter-cross", "scan", "task", 4, "the two combinations PanDA's zip leaves out"),
    ("scatter-unequal", "*", "plan", 4, "unequal dotproduct lists are an error; PanDA cuts them to the shortest"),
    # 5: a scalar opt_inDsType with a list opt_inDS
    ("placeholders", "pair", "in_ds", 5, "one type for both datasets; PanDA pairs each with a character (_s/, _i/)"),
    ("placeholders", "pair", "exec", 5, "%{DS*} of those datasets"),
    # 8: junctions without --forceStagedSecondary
    ("loop", "decide", "dropped_prun_options", 8, "prun 2.2.0 refuses the option PanDA adds to junctions"),
    ("loop-after", "decide", "dropped_prun_options", 8, "prun 2.2.0 refuses the option PanDA adds to junctions"),
    ("placeholders", "check", "dropped_prun_options", 8, "prun 2.2.0 refuses the option PanDA adds to junctions"),
    # 9: phpo with opt_trainingDsType
    ("phpo", "*", "conversion", 9, "PanDA reads opt_inDsType for a phpo step and fails with KeyError"),
    # 10: when and unnamed parents
    ("when-ops", "partial", "parents", 10, "the condition names only opt_inDS; cwlbridge also waits for secondary c"),
    ("when-ops", "partial", "condition", 10, "cwlbridge adds && processed(c) for the parent the condition leaves out"),
    # 11: suffix:file outputs
    ("placeholders", "use_tagged", "in_ds", 11, "tag:tagged.root makes _tag/; PanDA points at _tagged.root/"),
    # 12: list sources and list variables
    ("list-flatten", "*", "conversion", 12, "PanDA nests the scatter's datasets in the list and fails on it"),
    ("nested", "book", "exec", 12, "a list variable is comma-joined; PanDA writes Python's repr ['low', 'high']"),
    # 14: dataset placeholders in opt_args
    ("placeholders", "both", "args", 14, "%{DS2} in opt_args: PanDA splits the args first and leaves it as written"),
    # 15: conditions of three or more terms
    ("when-nested", "*", "conversion", 15, "(a || b) && c: PanDA's converter fails on three or more terms"),
    # 16: scatter: name
    ("scatter-scalar", "*", "conversion", 16, "scatter: opt_inDS (a name): PanDA reads it letter by letter"),
]


# -- the README's numbered fixes --------------------------------------------------------------


def readme_fixes() -> dict[int, str]:
    """Number -> title of each item of the README's "Deliberate fixes of PanDA defects"."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Deliberate fixes of PanDA defects", 1)[1].split("\n## ", 1)[0]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^(\d+)\. \*\*(.+?)\*\*", section, re.M)}


# -- the two sides ------------------------------------------------------------------------------


def _step_of(name: str) -> str:
    match = re.fullmatch(re.escape(OUTDS) + r"_\d{3}_(.+?)(\.___idds___num_run___)?", name)
    return match.group(1) if match else name


def _words(args: str | None) -> list[str] | str:
    """``opt_args`` as prun's parser sees them: shlex words, ``--opt=value`` as two words."""
    if not args:
        return []  # no opt_args and empty opt_args give prun the same options
    try:
        words = shlex.split(args)
    except ValueError:
        return args
    split: list[str] = []
    for word in words:
        if word.startswith("--") and "=" in word:
            split += word.split("=", 1)
        else:
            split.append(word)
    return split


def _comparable(task: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": task["name"],
        "type": task["type"],
        "in_ds": list(task["in_ds"]),
        "secondary_ds": list(task["secondary_ds"]),
        "output_datasets": list(task["output_datasets"]),
        "exec": task["exec"],
        "args": _words(task["args"]),
        "parents": sorted((p.get("name", p.get("task")), p["link"]) for p in task["parents"]),
        "condition": task["condition"],
        "use_secrets": bool(task["use_secrets"]),
        "in_loop": bool(task["in_loop"]),
    }


@dataclasses.dataclass
class Side:
    ok: bool
    error: str
    tasks: dict[int, dict[str, Any]]


@functools.cache
def panda_side(chain: str) -> Side:
    result = convert(CHAINS[chain], "chain.cwl", "inputs.yaml", OUTDS)
    tasks = {}
    for task in result["tasks"]:
        row = _comparable(task)
        row["dropped_prun_options"] = task["dropped_prun_options"]
        if task["type"] in PRUN_BUILT:
            row["map"] = _normal_map(task["task_params"], task["dropped_prun_options"])
        tasks[task["id"]] = row
    errors = [line for line in result["log"].splitlines() if line.startswith("ERROR")]
    return Side(result["ok"], "\n".join(errors)[-600:], tasks)


def _normal_map(params: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    """``params`` without MAP_IGNORED, the sandbox and prun's uuids made equal; ``dropped``: the
    options workaround 2 took out of prun's words, taken out of PanDA's ``cliParams`` too."""
    normal = {k: v for k, v in params.items() if k not in MAP_IGNORED}
    normal["jobParameters"] = normal_job_parameters(normal.get("jobParameters") or [])
    if dropped and isinstance(normal.get("cliParams"), str):
        normal["cliParams"] = shlex.join(w for w in shlex.split(normal["cliParams"]) if w not in dropped)
    return normal


def _submitted_maps(tasks: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The maps cwlbridge would submit for the planned prun, junction and reana tasks, by id."""
    from cwlbridge.model.plan import Parent, Task
    from cwlbridge.panda.taskparams import TaskParamsError, emailed_paths, task_parameters

    known = {f.name for f in dataclasses.fields(Task)}
    planned = []
    for task in tasks:
        values = {k: v for k, v in task.items() if k in known}
        values["parents"] = [Parent(p["task"], p["link"]) for p in task["parents"]]
        planned.append(Task(**values))
    emailed = emailed_paths(planned)
    maps = {}
    for task in planned:
        if task.type not in PRUN_BUILT:
            continue
        try:
            params = task_parameters(
                task, emailed, nickname=NICKNAME, sandbox=SANDBOX, source_url="https://pandacache.example.org"
            )
        except TaskParamsError as exc:
            params = {"taskName": f"prun refused: {exc}"}
        maps[task.id] = _normal_map(params, [])
    return maps


@functools.cache
def our_side(chain: str) -> Side:
    directory = CHAINS[chain]
    proc = subprocess.run(
        [sys.executable, "-m", "cwlbridge", "plan", str(directory / "chain.cwl"), str(directory / "inputs.yaml"),
         "--outds", OUTDS, "--format", "json"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    if proc.returncode != 0:
        return Side(False, (proc.stderr or proc.stdout).strip()[-600:], {})
    tasks = {}
    planned = json.loads(proc.stdout)["tasks"]
    maps = _submitted_maps(planned)
    for task in planned:
        row = _comparable(task)
        # cwlbridge never emits an option prun no longer knows (fix 8).
        row["dropped_prun_options"] = []
        if task["id"] in maps:
            row["map"] = maps[task["id"]]
        tasks[task["id"]] = row
    return Side(True, "", tasks)


# -- comparing --------------------------------------------------------------------------------


@dataclasses.dataclass
class Difference:
    chain: str
    step: str
    field: str
    ours: Any
    panda: Any
    tasks: list[str]

    def key(self) -> tuple[str, str, str]:
        return (self.chain, self.step, self.field)

    def describe(self) -> str:
        where = f"{self.chain} / {self.step} / {self.field}"
        count = f" ({len(self.tasks)} tasks: {', '.join(self.tasks[:3])}{' …' if len(self.tasks) > 3 else ''})"
        return f"{where}{count}\n      ours:  {self.ours!r:.800}\n      PanDA: {self.panda!r:.800}"


def differences(chain: str) -> list[Difference]:
    """Where the plan and PanDA's conversion of ``chain`` disagree, one entry per step and field."""
    panda, ours = panda_side(chain), our_side(chain)
    if not panda.ok and not ours.ok and chain in REFUSED_BY_BOTH:
        return []
    if not panda.ok or not ours.ok:
        field = {(True, False): "conversion", (False, True): "plan"}.get((ours.ok, panda.ok), "refused")
        return [Difference(chain, "*", field, ours.error or "planned", panda.error or "converted", [])]
    if chain in REFUSED_BY_BOTH:
        return [Difference(chain, "*", "refused", "planned", "converted", [])]
    found: dict[tuple[str, str, str], Difference] = {}
    for task_id in sorted(set(panda.tasks) | set(ours.tasks)):
        mine, theirs = ours.tasks.get(task_id), panda.tasks.get(task_id)
        if mine is None or theirs is None:
            name = (mine or theirs or {}).get("name", str(task_id))
            pairs = [("task", mine and mine["name"], theirs and theirs["name"])]
        else:
            name = theirs["name"]
            pairs = [(f, mine[f], theirs[f]) for f in FIELDS if mine[f] != theirs[f]]
            if all(f == "dropped_prun_options" for f, _, _ in pairs) and "map" in mine and "map" in theirs:
                ours_map, their_map = mine["map"], theirs["map"]
                pairs += [
                    (f"map:{key}", ours_map.get(key), their_map.get(key))
                    for key in sorted(set(ours_map) | set(their_map))
                    if ours_map.get(key) != their_map.get(key)
                ]
        for field, a, b in pairs:
            key = (chain, _step_of(name), field)
            if key in found:
                found[key].tasks.append(name)
            else:
                found[key] = Difference(chain, key[1], field, a, b, [name])
    return list(found.values())


# -- the tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converter() -> Path:
    """PanDA's converter venv, made once (a clear failure, not a skip, unless PyPI is down)."""
    try:
        report = ensure_converter()
    except ConverterUnavailable as exc:
        if exc.offline:
            print(f"PanDA's converter unavailable: {exc.reason}", file=sys.stderr)
            pytest.skip(f"PanDA's converter unavailable: {exc.reason}")
        pytest.fail(f"PanDA's converter could not be set up: {exc.reason}", pytrace=False)
    if report.installed:
        print(f"\nPanDA converter venv made in {report.seconds:.1f} s", file=sys.stderr)
    return report.python


def test_expected_differences_name_readme_fixes() -> None:
    fixes = readme_fixes()
    assert sorted(fixes) == list(range(1, len(fixes) + 1)), fixes
    problems = []
    for chain, step, field, fix, reason in EXPECTED:
        if chain not in CHAINS:
            problems.append(f"{chain}: no such chain")
        if fix not in fixes:
            problems.append(f"{chain}/{step}/{field}: fix {fix} is not one of the README's numbered fixes")
        if not reason.strip():
            problems.append(f"{chain}/{step}/{field}: no reason given")
    for chain, (fix, reason) in REFUSED_BY_BOTH.items():
        if chain not in CHAINS or fix not in fixes or not reason.strip():
            problems.append(f"REFUSED_BY_BOTH[{chain!r}] needs a known chain, a README fix and a reason")
    keys = [entry[:3] for entry in EXPECTED]
    problems += [f"listed twice: {key}" for key in {k for k in keys if keys.count(k) > 1}]
    assert not problems, "\n".join(problems)


def test_converter_converts_simple(converter: Path, tmp_path: Path) -> None:
    """The converter module on its own: tasks, names, links and the full maps of a small chain."""
    source = REPO / "workflows" / "simple"
    before = sorted(p.name for p in source.iterdir())
    result = convert(source, "chain.cwl", "inputs.yaml", OUTDS)
    assert result["ok"], result["log"][-2000:]
    assert sorted(p.name for p in source.iterdir()) == before, "the converter wrote into the chain's directory"
    assert set(result) >= {"ok", "log", "workaround_forceStagedSecondary", "tasks"}
    assert result["workaround_forceStagedSecondary"] is False
    names = {t["name"]: t for t in result["tasks"]}
    assert set(names) == {f"{OUTDS}_000_skim", f"{OUTDS}_001_toys", f"{OUTDS}_002_fit"}
    fit = names[f"{OUTDS}_002_fit"]
    assert fit["type"] == "reana" and fit["run_on_instant"] and fit["use_secrets"]
    assert [(p["id"], p["link"]) for p in fit["parents"]] == [(0, "processed"), (1, "processed")]
    assert fit["task_params"]["taskName"] == fit["name"]
    assert fit["output_datasets"] == [f"{OUTDS}_002_fit_fit.tgz/"]
    assert "the description was internally converted as follows" in result["log"]
    expected_keys = {
        "id", "name", "type", "task_params", "in_ds", "secondary_ds", "output_datasets", "exec", "args",
        "parents", "condition", "no_wait_parent", "run_on_instant", "use_secrets", "in_loop", "is_tail",
    }  # fmt: skip
    assert all(expected_keys <= set(task) for task in result["tasks"])


def test_converter_check_mode_and_loop_workaround(converter: Path) -> None:
    """``check=True`` makes pchain's --check templates (``-a None``); a junction needs workaround 2."""
    result = convert(REPO / "workflows" / "loop", "chain.cwl", "inputs.yaml", OUTDS, check=True)
    assert result["ok"], result["log"][-2000:]
    assert result["workaround_forceStagedSecondary"] is True
    decide = result["tasks"][-1]
    assert decide["type"] == "junction" and decide["in_loop"]
    assert decide["name"] == f"{OUTDS}_002_decide.___idds___num_run___"
    assert decide["custom_conditions"] == {"to_exit": True, "to_continue": True}
    archives = [i["value"] for i in decide["task_params"]["jobParameters"] if str(i["value"]).startswith("-a ")]
    assert archives == ["-a None"]
    (loop,) = result["workflows"]
    assert loop["loop"] and loop["loop_condition"]["junction"] == decide["id"]
    assert loop["loop_parameters"] == {"user_alpha": 0.5}


def test_converter_takes_given_templates(converter: Path) -> None:
    """Templates passed in are used as they are (plus what the server adds to every template)."""
    made = convert(REPO / "workflows" / "two-step", "chain.cwl", "inputs.yaml", OUTDS, check=True)["templates"]
    container = {k: v for k, v in made["container"].items() if k not in ("userName", "basePlatform")}
    container["vo"] = "oracle-test-vo"
    chain = REPO / "workflows" / "two-step"
    result = convert(chain, "chain.cwl", "inputs.yaml", OUTDS, templates={"container": container})
    assert result["ok"], result["log"][-2000:]
    assert {t["task_params"]["vo"] for t in result["tasks"]} == {"oracle-test-vo"}


def test_runner_is_beside_the_module() -> None:
    assert RUNNER.is_file()


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_plan_agrees_with_pandas_converter(converter: Path, chain: str) -> None:
    found = {d.key(): d for d in differences(chain)}
    expected = {entry[:3]: entry for entry in EXPECTED if entry[0] == chain}
    unexplained = [found[k] for k in found if k not in expected]
    stale = [expected[k] for k in expected if k not in found]
    lines = []
    if unexplained:
        lines.append(f"{len(unexplained)} difference(s) from PanDA's converter not in EXPECTED:")
        lines += ["  " + d.describe() for d in unexplained]
    if stale:
        lines.append("EXPECTED lists difference(s) that are no longer seen (remove them):")
        lines += [f"  {c} / {s} / {f} (fix {n}: {why})" for c, s, f, n, why in stale]
    if lines:
        pytest.fail("\n".join(lines), pytrace=False)
