"""The structural rules of REANA 0.9's reana.yaml schema, written as plain checks.

REANA validates a reana.yaml against ``reana_analysis_schema.json`` (reana-commons) when the
workflow is created.  These checks reject the same documents, but say what is wrong at the
line of the offending key, which a JSON-schema error path does not.  They are our own code;
tests/test_reana_schema.py feeds one corpus to these checks and to the official schema and
requires the two to agree.  Checks that go beyond the schema (files that must exist, unsafe
paths, leftover tokens) live in ``spec.check_spec``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from cwlbridge.errors import SourcePos

#: Workflow engines a REANA 0.9 server runs.
WORKFLOW_TYPES: tuple[str, ...] = ("cwl", "serial", "yadage", "snakemake")
#: Top-level keys of reana_analysis_schema.json (additionalProperties: false).
TOP_LEVEL_KEYS: tuple[str, ...] = ("version", "inputs", "workflow", "outputs", "tests", "workspace")
#: Compute backends a serial step may name.
COMPUTE_BACKENDS: tuple[str, ...] = ("kubernetes", "htcondorcern", "slurmcern", "compute4punch")

_CVMFS_REPO = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9.\-_]*")

Check = Callable[[Any], bool]
#: A problem: (container, key or None for the container itself, message).
Problem = tuple[Any, Any, str]


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_int(value: Any) -> bool:
    # JSON schema counts 60.0 as an integer but not true/false (which YAML gives as bools).
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_map(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


_TYPE_NAMES: dict[Check, str] = {
    _is_str: "a string",
    _is_bool: "true or false",
    _is_int: "an integer",
    _is_map: "a mapping",
    _is_str_list: "a list of strings",
}

_INPUTS: dict[str, Check] = {
    "files": _is_str_list,
    "directories": _is_str_list,
    "parameters": _is_map,
    "options": _is_map,
}
_OUTPUTS: dict[str, Check] = {"files": _is_str_list, "directories": _is_str_list}
_TESTS: dict[str, Check] = {"files": _is_str_list}
_WORKSPACE: dict[str, Check] = {"root_path": _is_str, "retention_days": _is_map}
_WORKFLOW: dict[str, Check] = {"specification": _is_map, "file": _is_str, "type": _is_str, "resources": _is_map}
_RESOURCES: dict[str, Check] = {"cvmfs": lambda v: isinstance(v, list), "kerberos": _is_bool}
_SERIAL_STEP: dict[str, Check] = {
    "commands": _is_str_list,
    "compute_backend": _is_str,
    "environment": _is_str,
    "htcondor_accounting_group": _is_str,
    "htcondor_max_runtime": _is_str,
    "kerberos": _is_bool,
    "kubernetes_job_timeout": _is_int,
    "kubernetes_cpu_request": _is_str,
    "kubernetes_cpu_limit": _is_str,
    "kubernetes_memory_request": _is_str,
    "kubernetes_memory_limit": _is_str,
    "name": _is_str,
    "rucio": _is_bool,
    "unpacked_img": _is_bool,
    "voms_proxy": _is_bool,
    "c4p_cpu_cores": _is_str,
    "c4p_memory_limit": _is_str,
    "c4p_additional_requirements": _is_str,
}


def _fields(node: Mapping[str, Any], where: str, allowed: Mapping[str, Check]) -> list[Problem]:
    """Unknown keys and values of the wrong type in one closed mapping."""
    problems: list[Problem] = []
    for key, value in node.items():
        check = allowed.get(key)
        if check is None:
            problems.append((node, key, f"unknown key {where}.{key}; allowed: " + ", ".join(allowed)))
        elif not check(value):
            kind = _TYPE_NAMES.get(check, "a list")
            problems.append((node, key, f"{where}.{key} must be {kind}{_hint(check, value)}"))
    return problems


def _hint(check: Check, value: Any) -> str:
    """Why a value that looks right is not: YAML 1.2 reads yes/no/on/off as strings."""
    if check is _is_bool and isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "y", "n"):
        return f" (got the string {value!r}: this YAML reader follows YAML 1.2; write true or false)"
    return ""


def _section(doc: Mapping[str, Any], key: str, allowed: Mapping[str, Check]) -> list[Problem]:
    if key not in doc:
        return []
    node = doc[key]
    if not isinstance(node, Mapping):
        return [(doc, key, f"'{key}' must be a mapping")]
    return _fields(node, key, allowed)


def _workflow(doc: Mapping[str, Any]) -> list[Problem]:
    if "workflow" not in doc:
        return [(doc, None, "missing the required key 'workflow'")]
    workflow = doc["workflow"]
    if not isinstance(workflow, Mapping):
        return [(doc, "workflow", "'workflow' must be a mapping")]
    problems = _fields(workflow, "workflow", _WORKFLOW)
    kind = workflow.get("type")
    if "type" not in workflow:
        problems.append((doc, "workflow", "missing 'workflow.type' (one of " + ", ".join(WORKFLOW_TYPES) + ")"))
    elif isinstance(kind, str) and kind not in WORKFLOW_TYPES:
        problems.append((workflow, "type", f"workflow.type {kind!r} is not one of " + ", ".join(WORKFLOW_TYPES)))
    if "file" not in workflow and "specification" not in workflow:
        problems.append((doc, "workflow", "'workflow' needs either 'file' or 'specification'"))
    resources = workflow.get("resources")
    if isinstance(resources, Mapping):
        problems.extend(_resources(resources))
    spec = workflow.get("specification")
    if kind == "serial" and isinstance(spec, Mapping):
        problems.extend(serial_problems(spec))
    return problems


def _resources(resources: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for key in resources:
        if key in ("voms_proxy", "rucio", "dask"):
            problems.append(
                (
                    resources,
                    key,
                    f"workflow.resources.{key} exists only in REANA 0.95; on 0.9 set "
                    f"'{key}: true' per step (serial step key, CWL step hint "
                    "'reana: {...}', snakemake/yadage step resources)",
                )
            )
    known = _fields(resources, "workflow.resources", _RESOURCES)
    problems.extend(p for p in known if p[1] not in ("voms_proxy", "rucio", "dask"))
    cvmfs = resources.get("cvmfs")
    if isinstance(cvmfs, list):
        for index, repo in enumerate(cvmfs):
            if not isinstance(repo, str) or not 1 <= len(repo) <= 60 or not _CVMFS_REPO.fullmatch(repo):
                problems.append((cvmfs, index, f"CVMFS repository {repo!r} is not a name like atlas.cern.ch"))
            elif repo in cvmfs[:index]:
                problems.append((cvmfs, index, f"CVMFS repository {repo!r} is listed twice"))
    return problems


def serial_problems(spec: Mapping[str, Any]) -> list[Problem]:
    """The schema's rules for a serial specification (inline or loaded from ``workflow.file``)."""
    problems: list[Problem] = [
        (spec, key, f"unknown key {key!r} in a serial specification; only 'steps'") for key in spec if key != "steps"
    ]
    steps = spec.get("steps")
    if "steps" not in spec:
        return problems
    if not isinstance(steps, list):
        return [*problems, (spec, "steps", "a serial specification's 'steps' must be a list")]
    for index, step in enumerate(steps):
        where = f"serial step {index + 1}"
        if not isinstance(step, Mapping):
            problems.append((steps, index, f"{where} must be a mapping"))
            continue
        problems.extend(_fields(step, where, _SERIAL_STEP))
        for required in ("commands", "environment"):
            if required not in step:
                problems.append((steps, index, f"{where} has no '{required}' (REANA requires it)"))
        commands = step.get("commands")
        if isinstance(commands, list) and not commands:
            problems.append((step, "commands", f"{where} has an empty 'commands' list"))
        backend = step.get("compute_backend")
        if isinstance(backend, str) and backend not in COMPUTE_BACKENDS:
            problems.append(
                (step, "compute_backend", f"compute_backend {backend!r} is not one of " + ", ".join(COMPUTE_BACKENDS))
            )
    return problems


def _workspace(doc: Mapping[str, Any]) -> list[Problem]:
    problems = _section(doc, "workspace", _WORKSPACE)
    workspace = doc.get("workspace")
    days = workspace.get("retention_days") if isinstance(workspace, Mapping) else None
    if isinstance(days, Mapping):
        if not days:
            problems.append((workspace, "retention_days", "workspace.retention_days must not be empty"))
        for key, value in days.items():
            if not _is_int(value) or value < 0:
                problems.append((days, key, f"retention_days of {key!r} must be a whole number of days >= 0"))
    return problems


def schema_problems(doc: Any) -> list[Problem]:
    """Everything REANA's schema would reject in ``doc``, each with where it is."""
    if not isinstance(doc, Mapping):
        return [(None, None, "a reana.yaml must be a mapping at the top level")]
    problems: list[Problem] = [
        (doc, key, f"unknown top-level key {key!r}; reana.yaml allows " + ", ".join(TOP_LEVEL_KEYS))
        for key in doc
        if key not in TOP_LEVEL_KEYS
    ]
    if "version" in doc and not isinstance(doc["version"], str):
        problems.append((doc, "version", "'version' must be a string (quote it: version: '0.9.0')"))
    problems.extend(_section(doc, "inputs", _INPUTS))
    problems.extend(_workflow(doc))
    problems.extend(_section(doc, "outputs", _OUTPUTS))
    problems.extend(_section(doc, "tests", _TESTS))
    problems.extend(_workspace(doc))
    return problems


def position(container: Any, key: Any, source: str) -> SourcePos:
    """The position of ``container[key]`` in a ruamel document (the container's own for ``None``)."""
    lc = getattr(container, "lc", None)
    if lc is not None:
        try:
            if key is not None:
                line, col = lc.item(key) if isinstance(container, list) else lc.key(key)
                return SourcePos(source, line + 1, col + 1)
        except (KeyError, IndexError, TypeError):
            pass
        if getattr(lc, "line", None) is not None:
            return SourcePos(source, lc.line + 1, lc.col + 1)
    return SourcePos(source, 1)
