"""Convert one pchain CWL chain with panda-server's own converter and print the result as JSON.

This script runs INSIDE the converter venv that ``tests/servers/panda_converter.py`` builds
(panda-client 2.2.0, idds 2.6.21, cwl-utils 0.45 and the two converter modules of
panda-server-source 1.0.4 in a stub ``pandaserver.workflow`` package on ``PYTHONPATH``).  It must
not import cwlbridge or anything from the main venv.

It does what panda-server's ``workflow_processor.core_exec`` does with a chain after unpacking
its sandbox, in the current directory (a scratch copy of the chain's directory: the parser
writes stub files such as ``prun`` next to the CWL):

    parse_workflow_file -> resolve_nodes -> set_workflow_outputs -> get_node_id_map
    -> resolve_params(templates) -> verify -> convert_nodes_to_workflow

with two workarounds (panda.md §11): the converter modules are imported before panda-client
(which otherwise takes over the ``pandaserver`` package name), and ``--forceStagedSecondary``,
which the converter adds to junctions but prun 2.2.0 no longer knows, is taken out of the
arguments given to ``PrunScript.main``.

The task-parameter templates pchain sends (``container`` and, when the chain mentions
``opt_useAthenaPackages``, ``athena``) are read from ``--templates`` or made here the way
pchain makes them.  The server then adds ``userName`` and ``basePlatform`` to each.

One JSON document goes to stdout; everything prun, iDDS or the converter prints goes to stderr.
Its shape is described in ``panda_converter.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any

LINK_OF_PREDICATE = {"is_started": "started", "is_processed": "processed", "is_failed": "failed"}
REMOVED_PRUN_OPTIONS = ("--forceStagedSecondary",)
# pchain's own test of a workflow file for the Athena template (PchainScript.py).
ATHENA_LINE = re.compile(r"^\s*[^#]\s*opt_useAthenaPackages")


class ServerLog:
    """Collects what the server's LogWrapper would: one line per call, level first."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _add(self, level: str, message: object) -> None:
        self.lines.append(f"{level} : {message}")

    def debug(self, message: object) -> None:
        self._add("DEBUG", message)

    def info(self, message: object) -> None:
        self._add("INFO", message)

    def warning(self, message: object) -> None:
        self._add("WARNING", message)

    def error(self, message: object) -> None:
        self._add("ERROR", message)

    def dump(self) -> str:
        return "\n".join(self.lines)


class Capture:
    """What the converter passed to prun for each node (the exact strings it used)."""

    def __init__(self) -> None:
        self.current: list[Any] = []  # the node whose make_task_params is running
        self.args: dict[int, str] = {}  # node id -> the opt_args string split into prun's words
        self.prun_words: dict[int, list[str]] = {}  # node id -> arguments of the step's prun call
        self.filtered = False  # --forceStagedSecondary was taken out at least once
        self.dropped: dict[int, list[str]] = {}  # node id -> the options taken out of its prun call


def _import_converter(capture: Capture) -> tuple[Any, Any, Any]:
    """The converter modules, imported before pandaclient (workaround 1), with the hooks."""
    from pandaserver.workflow import pcwl_utils, workflow_utils  # noqa: I001  (order matters)
    from pandaclient import PrunScript

    original_main = PrunScript.main

    def main_without_removed_options(*args: Any, **kwargs: Any) -> Any:
        # Workaround 2: prun 2.2.0 refuses options the converter still adds.
        positional = list(args)
        if "ext_args" in kwargs:
            words = kwargs["ext_args"]
        elif len(positional) >= 2:
            words = positional[1]
        else:
            words = None
        if words is not None:
            kept = [w for w in words if w not in REMOVED_PRUN_OPTIONS]
            if len(kept) != len(words):
                capture.filtered = True
                if capture.current:
                    capture.dropped[capture.current[-1].id] = [w for w in words if w in REMOVED_PRUN_OPTIONS]
            if "ext_args" in kwargs:
                kwargs["ext_args"] = kept
            else:
                positional[1] = kept
            if capture.current:
                capture.prun_words[capture.current[-1].id] = list(kept)
        return original_main(*positional, **kwargs)

    PrunScript.main = main_without_removed_options

    original_make = workflow_utils.Node.make_task_params

    def make_task_params(self: Any, *args: Any, **kwargs: Any) -> Any:
        capture.current.append(self)
        try:
            return original_make(self, *args, **kwargs)
        finally:
            capture.current.pop()

    workflow_utils.Node.make_task_params = make_task_params

    class RecordingShlex:
        """``shlex`` for workflow_utils: the first split made for a node is its opt_args."""

        def __getattr__(self, name: str) -> Any:
            return getattr(shlex, name)

        @staticmethod
        def split(text: str, *args: Any, **kwargs: Any) -> list[str]:
            if capture.current and capture.current[-1].id not in capture.args:
                capture.args[capture.current[-1].id] = text
            return shlex.split(text, *args, **kwargs)

    workflow_utils.shlex = RecordingShlex()
    return pcwl_utils, workflow_utils, original_main


def uses_athena(directory: Path) -> bool:
    """pchain's test for the Athena template, applied to every CWL file of the chain."""
    for path in sorted(directory.rglob("*.cwl")):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if any(ATHENA_LINE.search(line) for line in path.read_text().splitlines()):
                return True
    return False


def build_templates(prun_main: Any, outds: str, *, check: bool, athena: bool) -> dict[str, Any]:
    """The templates as pchain makes them: a dummy prun run per template type."""
    kinds = {"container": "--containerImage __dummy_container__"}
    if athena:
        kinds["athena"] = "--useAthenaPackages"
    made: dict[str, Any] = {}
    for kind, option in kinds.items():
        words = shlex.split(f"--exec __dummy_exec_str__ --outDS {outds} {option}")
        kwargs: dict[str, Any] = {"get_taskparams": True, "ext_args": words}
        if check:
            kwargs["dry_mode"] = True
        else:
            words.append("--noSubmit")
        try:
            params = prun_main(**kwargs)
        except SystemExit as exc:
            raise RuntimeError(f"prun could not make the {kind} template (exit {exc.code})") from exc
        if not isinstance(params, dict):
            raise RuntimeError(f"prun made no {kind} template")
        for key in ("noInput", "nEvents", "nEventsPerJob"):
            params.pop(key, None)
        made[kind] = params
    return made


def _walk(nodes: list[Any], enclosing: Any = None) -> list[tuple[Any, Any]]:
    """Every node with its enclosing sub-workflow node, parents before their sub-nodes."""
    found: list[tuple[Any, Any]] = []
    for node in nodes:
        found.append((node, enclosing))
        if not node.is_leaf:
            found += _walk(list(node.sub_nodes), node)
    return found


def _task_name(node: Any) -> str | None:
    if node.task_params and node.task_params.get("taskName"):
        return str(node.task_params["taskName"]).rstrip("/")
    for value in node.outputs.values():
        if "value" in value:
            return str(value["value"])
    return None


class Levels:
    """The iDDS objects the converter made, matched to its nodes, and what they say."""

    def __init__(self, workflow: Any, nodes: list[Any]) -> None:
        self.node_of_work: dict[int, Any] = {}  # id(work or sub-workflow) -> node
        self.work_of_node: dict[int, Any] = {}  # node id -> work or sub-workflow
        self.level_of_node: dict[int, Any] = {}  # node id -> the iDDS workflow it was added to
        self.releasing: dict[int, list[Any]] = {}  # node id -> conditions naming it as a true work
        self._match(workflow, nodes)

    def _match(self, workflow: Any, nodes: list[Any]) -> None:
        works = list(workflow.template.works.values())
        if len(works) != len(nodes):
            raise RuntimeError(f"{len(works)} iDDS works for {len(nodes)} nodes")
        for node, work in zip(nodes, works):
            self.node_of_work[id(work)] = node
            self.work_of_node[node.id] = work
            self.level_of_node[node.id] = workflow
            if not node.is_leaf:
                self._match(work, list(node.sub_nodes))
        for condition in workflow.template.conditions.values():
            for work in condition.true_works:
                target = self.node_of_work.get(id(work))
                if target is not None:
                    self.releasing.setdefault(target.id, []).append(condition)

    def tree(self, condition: Any) -> dict[str, Any]:
        """An iDDS condition as data: its operator and the predicates it ANDs or ORs."""
        from idds.workflowv2.workflow import CompositeCondition, ConditionOperator

        terms: list[dict[str, Any]] = []
        for method in condition.conditions:
            owner = getattr(method, "__self__", None)
            if isinstance(owner, CompositeCondition):
                terms.append(self.tree(owner))
                continue
            node = self.node_of_work.get(id(owner))
            terms.append(
                {
                    "work": node.id if node is not None else None,
                    "is_workflow": bool(node is not None and not node.is_leaf),
                    "predicate": getattr(method, "__name__", str(method)),
                }
            )
        return {"op": "and" if condition.operator == ConditionOperator.And else "or", "terms": terms}

    def condition_of(self, node: Any) -> dict[str, Any] | None:
        """How iDDS releases ``node`` in its level; None: it is an independent work there."""
        conditions = self.releasing.get(node.id, [])
        if not conditions:
            return None
        if len(conditions) == 1:
            return self.tree(conditions[0])
        return {"op": "and", "terms": [self.tree(c) for c in conditions]}

    def predicates(self, node: Any) -> list[tuple[Any, str]]:
        """(node the predicate is on, predicate) for every leaf of ``node``'s condition."""
        found: list[tuple[Any, str]] = []

        def visit(tree: dict[str, Any] | None) -> None:
            for term in (tree or {}).get("terms", []):
                if "op" in term:
                    visit(term)
                elif term["work"] is not None:
                    found.append((term["work"], term["predicate"]))

        visit(self.condition_of(node))
        return found


def parent_links(
    node: Any, enclosing: dict[int, Any], levels: Levels, id_map: dict[int, Any]
) -> tuple[dict[int, str], list[int]]:
    """The link (started/processed/failed) of each parent of ``node``, and the parents no
    condition waits for (a ``when`` that does not name them).

    A parent is covered by a predicate on its own work, or on the sub-workflow at this level
    that holds it.  A parent outside this level (a head of a sub-workflow inherits the
    parents of the sub-workflow step) is waited for by the condition of the enclosing
    sub-workflow, one level up.
    """
    links: dict[int, str] = {}
    ignored: list[int] = []
    here = levels.level_of_node.get(node.id)
    level_ids: set[int] = set()
    for other_id, level in levels.level_of_node.items():
        if level is here:
            other = id_map[other_id]
            level_ids |= other.get_all_sub_node_ids() if not other.is_leaf else {other_id}
    predicates = levels.predicates(node)
    outer = enclosing.get(node.id)
    outer_links = parent_links(outer, enclosing, levels, id_map)[0] if outer is not None else {}
    for parent in sorted(node.parents):
        link = None
        for work_id, predicate in predicates:
            work_node = id_map[work_id]
            covered = {work_id} if work_node.is_leaf else work_node.get_all_sub_node_ids()
            if parent in covered:
                link = LINK_OF_PREDICATE.get(predicate, predicate)
                break
        if link is None and parent not in level_ids:
            link = outer_links.get(parent)
        if link is None:
            ignored.append(parent)
        else:
            links[parent] = link
    return links, ignored


def render_condition(item: Any, names: dict[int, str]) -> str:
    """A converted ``when`` (a ConditionItem over parent ids) in cwlbridge's notation."""
    from pandaserver.workflow.workflow_utils import ConditionItem

    if not isinstance(item.left, ConditionItem) and item.operator in (None, "not"):
        word = "failed" if item.operator == "not" else "processed"
        ids = sorted(item.left) if isinstance(item.left, (set, list, tuple)) else [item.left]
        parts = [f"{word}({names.get(i, f'ID:{i}')})" for i in ids]
        if not parts:
            return f"{word}()"
        return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"
    if item.operator == "not":
        return f"!({render_condition(item.left, names)})"
    if item.operator is None:
        return render_condition(item.left, names)
    left = render_condition(item.left, names)
    right = render_condition(item.right, names)
    if isinstance(item.left, ConditionItem) and item.left.operator in ("and", "or"):
        left = f"({left})"
    if isinstance(item.right, ConditionItem) and item.right.operator in ("and", "or"):
        right = f"({right})"
    return f"{left} {'&&' if item.operator == 'and' else '||'} {right}"


def _secondaries(node: Any, id_map: dict[int, Any]) -> list[str]:
    """The secondary dataset names, resolved exactly as ``Node.resolve_params`` does."""
    inputs = node.convert_dict_inputs()
    if "opt_secondaryDSs" not in inputs:
        return []
    names = inputs["opt_secondaryDSs"]
    types = inputs.get("opt_secondaryDsTypes")
    if "opt_secondaryDsTypes" not in inputs:
        types = []
        for ds_name in names:
            for parent_id in node.parents:
                parent = id_map[parent_id]
                if ds_name in parent.convert_set_outputs():
                    types.append(parent.output_types[0])
                    break
            else:
                types.append(None)
    found = []
    for ds_name, ds_type in zip(names, types):
        if ds_type and "*" in ds_type:
            ds_type = ds_type.replace("*", "XYZ") + ".tgz"
        found.append(f"{ds_name}_{ds_type}/" if ds_type else f"{ds_name}/")
    return found


def _inputs(node: Any, id_map: dict[int, Any]) -> list[str]:
    """The input datasets the converter resolved for the node (phpo: its training dataset)."""
    inputs = node.convert_dict_inputs(skip_suppressed=True)
    if node.type == "phpo":
        if not inputs.get("opt_trainingDS"):
            return []
        suffix = None
        for parent_id in node.parents:
            parent = id_map[parent_id]
            if inputs["opt_trainingDS"] in parent.convert_set_outputs():
                suffix = parent.output_types[0]
                break
        return [f"{inputs['opt_trainingDS']}_{suffix}/"]
    if not inputs.get("opt_inDS"):
        return []
    return [str(ds) for ds in node.get_input_ds_list(inputs, id_map)]


def _exec_of(words: list[str] | None) -> str | None:
    """The ``--exec`` the converter appended (the last one: opt_args come first)."""
    if not words:
        return None
    spots = [i for i, word in enumerate(words) if word == "--exec"]
    if not spots or spots[-1] + 1 >= len(words):
        return None
    return str(words[spots[-1] + 1])


def describe(
    nodes: list[Any], id_map: dict[int, Any], levels: Levels | None, capture: Capture
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tasks (leaves with task parameters) and sub-workflows, in node-id order."""
    walked = _walk(nodes)
    enclosing = {node.id: outer for node, outer in walked if outer is not None}
    names = {node.id: _task_name(node) or f"ID:{node.id}" for node, _ in walked}
    tasks: list[dict[str, Any]] = []
    workflows: list[dict[str, Any]] = []
    for node, outer in walked:
        links: dict[int, str] = {}
        ignored: list[int] = []
        if levels is not None:
            links, ignored = parent_links(node, enclosing, levels, id_map)
        parents = [{"id": p, "name": names[p], "link": links[p]} for p in sorted(links)]
        condition = render_condition(node.condition, names) if node.condition else None
        common = {
            "workflow": outer.id if outer is not None else None,
            "condition": condition,
            "idds_condition": levels.condition_of(node) if levels is not None else None,
            "ignored_parents": [{"id": p, "name": names[p]} for p in ignored],
            "in_loop": bool(node.in_loop),
        }
        if not node.is_leaf:
            loop_parameters, variables = node.get_global_parameters()
            loop_condition = None
            if levels is not None and node.loop:
                for sub in node.sub_nodes:
                    if sub.type == "junction":
                        work = levels.work_of_node[sub.id]
                        loop_condition = {
                            "junction": sub.id,
                            "all_of": dict(work.and_custom_conditions),
                            "any_of": dict(work.or_custom_conditions),
                        }
                        break
            workflows.append(
                {
                    "id": node.id,
                    "name": node.name,
                    "loop": bool(node.loop),
                    "works": [sub.id for sub in node.sub_nodes],
                    "parents": parents,
                    **common,
                    "loop_condition": loop_condition,
                    "loop_parameters": {f"user_{k}": v for k, v in (loop_parameters or {}).items()},
                    "variables": variables or {},
                }
            )
            continue
        if node.task_params is None:
            continue
        params = node.task_params
        words = capture.prun_words.get(node.id)
        if node.type in ("prun", "junction", "reana"):
            exec_str = _exec_of(words)
            args = capture.args.get(node.id)
        elif node.type == "phpo":
            exec_str, args = None, capture.args.get(node.id)
        else:
            exec_str, args = None, node.convert_dict_inputs().get("opt_args")
        work = levels.work_of_node.get(node.id) if levels is not None else None
        tasks.append(
            {
                "id": node.id,
                "name": names[node.id],
                "type": node.type,
                "task_params": params,
                "in_ds": _inputs(node, id_map),
                "secondary_ds": _secondaries(node, id_map) if node.type in ("prun", "junction", "reana") else [],
                "output_datasets": [
                    item["dataset"]
                    for item in params.get("jobParameters") or []
                    if isinstance(item, dict) and item.get("type") == "template" and item.get("param_type") == "output"
                ],
                "exec": exec_str,
                "args": args.strip() if isinstance(args, str) else args,
                "parents": parents,
                "no_wait_parent": bool(params.get("noWaitParent", False)),
                "run_on_instant": bool(params.get("runOnInstant", False)),
                "use_secrets": bool(params.get("useSecrets", False)),
                "is_tail": bool(node.is_tail),
                "is_workflow_output": bool(node.is_workflow_output),
                **common,
                "idds_work": type(work).__name__ if work is not None else None,
                "custom_conditions": dict(work.and_custom_conditions) if work is not None else {},
                "prun_args": words,
                "dropped_prun_options": capture.dropped.get(node.id, []),
            }
        )
    tasks.sort(key=lambda t: t["id"])
    workflows.sort(key=lambda w: w["id"])
    return tasks, workflows


def convert(args: argparse.Namespace) -> dict[str, Any]:
    capture = Capture()
    log = ServerLog()
    result: dict[str, Any] = {
        "ok": False,
        "log": "",
        "workaround_forceStagedSecondary": False,
        "tasks": [],
        "workflows": [],
        "templates": None,
    }
    pcwl_utils, workflow_utils, prun_main = _import_converter(capture)
    nodes: list[Any] = []
    id_map: dict[int, Any] = {}
    levels: Levels | None = None
    ok = True
    try:
        if args.templates:
            templates = json.loads(Path(args.templates).read_text())
        else:
            templates = build_templates(prun_main, args.outds, check=args.check, athena=uses_athena(Path.cwd()))
        # What the server's WorkflowProcessor.process adds to every template.
        for params in templates.values():
            params["userName"] = args.user_name
            if args.base_platform:
                params["basePlatform"] = args.base_platform
        result["templates"] = copy.deepcopy(templates)
        log.info("parse workflow")
        parsed, root_inputs = pcwl_utils.parse_workflow_file(args.spec, log)
        if args.input:
            from ruamel.yaml import YAML

            with open(args.input) as stream:
                data = YAML(typ="safe", pure=True).load(stream)
        else:
            data = {}
        _, _, nodes = workflow_utils.resolve_nodes(parsed, root_inputs, data, 0, set(), args.outds, log)
        workflow_utils.set_workflow_outputs(nodes)
        id_map = workflow_utils.get_node_id_map(nodes)
        for node in nodes:
            node.resolve_params(templates, id_map)
        dump = "the description was internally converted as follows\n" + workflow_utils.dump_nodes(nodes)
        log.info(dump)
        for node in nodes:
            good, reason = node.verify()
            if not good:
                log.error(f"Verification failure in ID:{node.id} {reason}")
                ok = False
        if ok:
            workflow, dumps = workflow_utils.convert_nodes_to_workflow(nodes, workflow_name=args.workflow_name)
            if not workflow:
                log.error("workflow is empty")
                ok = False
            else:
                log.debug("\n" + "".join(dumps))
                levels = Levels(workflow, nodes)
    except (Exception, SystemExit) as exc:
        # SystemExit: prun's argument parser exits on a bad option (it ends the server's worker).
        ok = False
        log.error(f"failed to run with {exc!r} {traceback.format_exc()}")
    try:
        result["tasks"], result["workflows"] = describe(nodes, id_map, levels, capture)
    except Exception as exc:
        ok = False
        log.error(f"could not describe the converted nodes: {exc} {traceback.format_exc()}")
    result["ok"] = ok
    result["log"] = log.dump()
    result["workaround_forceStagedSecondary"] = capture.filtered
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the chain's CWL file (relative to the cwd)")
    parser.add_argument("--input", default="", help="the inputs YAML file")
    parser.add_argument("--outds", required=True)
    parser.add_argument("--check", action="store_true", help="templates as pchain --check makes them (-a None)")
    parser.add_argument("--templates", default="", help="a JSON file with the templates to use")
    parser.add_argument("--user-name", default="", help="userName the server sets (default: the nickname)")
    parser.add_argument("--base-platform", default=os.environ.get("ALRB_USER_PLATFORM", "centos7"))
    parser.add_argument("--workflow-name", default=None)
    args = parser.parse_args(argv)
    nickname = args.outds.split(".")[1] if args.outds.count(".") >= 2 else "jdoe"
    args.user_name = args.user_name or nickname
    os.environ.setdefault("PANDA_BEHIND_REAL_LB", "1")
    os.environ.setdefault("PANDA_AUTH", "x509_no_grid")
    os.environ.setdefault("PANDA_NICKNAME", nickname)
    # Only the JSON document goes to the real stdout; prun and iDDS print freely to stderr.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        result = convert(args)
    finally:
        sys.stdout.flush()
    with os.fdopen(real_stdout, "w") as out:
        out.write(json.dumps(result, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
