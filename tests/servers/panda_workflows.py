"""The PanDA emulator's workflow endpoints: what panda-server and iDDS do with a pchain request.

* ``/server/panda/put_workflow_request`` (legacy API): the body is pchain's gzipped JSON
  ``{"data": <json of the request>, "sync"|"check": true}``.  As ``workflow_processor.core_exec``
  does, the workflow tarball named by ``sandbox`` is fetched from the cache and unpacked, and
  the chain is converted by **panda-server's own converter** (``panda_converter.convert``, in
  its own venv).  ``check`` answers the conversion log; ``sync`` makes an iDDS request whose
  tasks this module then creates, in the emulator, as iDDS would: a task is submitted once
  every parent is in the state its link asks for (``started``: it runs; ``processed``: done or
  finished; ``failed``: failed, aborted, broken or exhausted), and never when a parent can no
  longer get there.  Loops are not run here (iDDS's loop needs junction results; the loop
  example is run by ``cwlbridge run --backend panda``).
  Reply: ``[true, {"status", "request_id", "log"}]``, or ``[false, message]``.
* ``/server/panda/execute_idds_workflow_command``: a form (``command_name``, ``kwargs`` JSON),
  parsed as werkzeug parses it: a body without a form Content-Type has no fields (panda-client
  sends none; panda.md pitfall 6).  ``get_status`` answers iDDS's text table (tabulate's
  "simple" format; ``with_detail`` one row per transform, ``transform_workload_id`` being the
  jediTaskID); ``abort``, ``suspend``, ``resume``, ``retry``, ``finish`` check that the caller
  owns the request and answer ``[status, message]``.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

#: JEDI statuses that satisfy each link kind, and those after which it can never be satisfied.
SATISFIED = {
    "started": frozenset({"running", "merging", "finishing", "passed", "done", "finished", "throttled"}),
    "processed": frozenset({"done", "finished"}),
    "failed": frozenset({"failed", "aborted", "broken", "exhausted"}),
}
NEVER = {
    "started": frozenset({"failed", "aborted", "broken"}),
    "processed": frozenset({"failed", "aborted", "broken", "exhausted"}),
    "failed": frozenset({"done", "finished"}),
}
ENDED = frozenset({"done", "finished", "failed", "aborted", "broken", "exhausted"})


@dataclass
class WorkflowRequest:
    request_id: int
    caller: Any
    outds: str
    tasks: list[dict[str, Any]]  # the converter's tasks
    status: str = "Transforming"
    created: dict[str, int] = field(default_factory=dict)  # task name -> jediTaskID
    skipped: set[str] = field(default_factory=set)
    suspended: bool = False
    errors: str | None = None


#: The columns of get_status without ``with_detail``.
REQUEST_COLUMNS = ["request_id", "request_workload_id", "scope:name", "status", "errors"]


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    """A table as iDDS's get_status returns it: tabulate's "simple" format."""
    from tabulate import tabulate

    return str(tabulate(rows, headers=headers, tablefmt="simple"))


class WorkflowService:
    """iDDS in the emulator: requests made by ``put_workflow_request`` and their tasks."""

    def __init__(self, emulator: Any, convert: Callable[..., dict[str, Any]] | None = None) -> None:
        self.emulator = emulator
        self._convert = convert
        self.requests: dict[int, WorkflowRequest] = {}
        self.conversions: list[dict[str, Any]] = []  # every request body converted (for tests)
        self._next_request = 1000
        self._lock = threading.Lock()

    def convert(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self._convert is None:
            from tests.servers.panda_converter import convert

            self._convert = convert
        return self._convert(*args, **kwargs)

    # ---------------------------------------------------------------- HTTP

    def handle(self, endpoint: str, raw: bytes, content_type: str, caller: Any) -> Any:
        """The JSON reply of a legacy workflow endpoint."""
        if caller is None:
            return [False, "SSL secure connection is required"]
        if endpoint == "put_workflow_request":
            return self.put_workflow_request(raw, caller)
        fields = {}
        if content_type.startswith("application/x-www-form-urlencoded"):
            fields = {k: v[-1] for k, v in parse_qs(raw.decode(errors="replace")).items()}
        return self.execute_command(fields, caller)

    def put_workflow_request(self, raw: bytes, caller: Any) -> Any:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        try:
            body = json.loads(raw)
            data = json.loads(body["data"])
        except (ValueError, KeyError, TypeError) as exc:
            return [False, f"cannot put request due to {exc} "]
        check = body.get("check") in (True, "True")
        archive = self.emulator.cache_dir / Path(str(data.get("sandbox") or "none")).name
        if not archive.is_file():
            missing = f"downloading sandbox: {archive.name} not found"
            return [True, {"status": False, "request_id": None, "log": missing}]
        with tempfile.TemporaryDirectory(prefix="workflow.") as scratch:
            with tarfile.open(archive) as tar:
                tar.extractall(scratch, filter="data")
            result = self.convert(
                Path(scratch), str(data["workflowSpecFile"]), str(data["workflowInputFile"]), str(data["outDS"]),
                check=check, templates=data.get("taskParams"),
            )
        self.conversions.append({"data": data, "check": check, "result": result})
        log = str(result.get("log") or "")
        if not result.get("ok"):
            return [True, {"status": False, "request_id": None, "log": log}]
        if check:
            return [True, {"status": True, "request_id": None, "log": log}]
        with self._lock:
            self._next_request += 1
            request = WorkflowRequest(self._next_request, caller, str(data["outDS"]), list(result.get("tasks") or []))
        with self.emulator.lock:
            self.requests[request.request_id] = request
            self.advance(request)
        return [True, {"status": True, "request_id": request.request_id, "log": log}]

    def execute_command(self, fields: dict[str, str], caller: Any) -> Any:
        command = fields.get("command_name")
        if not command:
            return [False, "server failed with missing command_name (no form fields in the request)"]
        try:
            kwargs = json.loads(fields.get("kwargs") or "{}")
        except ValueError as exc:
            return [False, f"server failed with {exc}"]
        if command not in ("get_status", "abort", "suspend", "resume", "retry", "finish"):
            return [False, f"{command} is unsupported"]
        with self.emulator.lock:
            request = self.requests.get(int(kwargs.get("request_id") or -1))
            if command == "get_status":
                return [True, self.status_table(request, bool(kwargs.get("with_detail")))]
            if request is None:
                return [False, f"request {kwargs.get('request_id')} is not found"]
            if request.caller.dn != caller.dn:
                return [False, f"request {request.request_id} is not owned by {caller.dn}"]
            return [True, self.command(request, command)]

    # ---------------------------------------------------------------- iDDS

    def status_table(self, request: WorkflowRequest | None, detail: bool) -> str:
        if request is None:
            return _table(REQUEST_COLUMNS, [])
        name = f"{request.outds.split('.')[0]}.{request.outds.split('.')[1]}:{request.outds}"
        if not detail:
            return _table(REQUEST_COLUMNS, [[request.request_id, "None", name, request.status, request.errors]])
        rows = []
        for index, task in enumerate(request.tasks):
            task_id = request.created.get(task["name"])
            jedi = self.emulator.tasks.get(task_id) if task_id is not None else None
            status = "New" if jedi is None else {"done": "Finished", "finished": "SubFinished", "failed": "Failed",
                                                 "aborted": "Cancelled", "broken": "Failed"}.get(jedi.status,
                                                                                                "Transforming")
            if task["name"] in request.skipped:
                status = "Cancelled"
            files = (jedi.n_files, jedi.n_files_finished, 0) if jedi is not None else (0, 0, 0)
            rows.append([request.request_id, index + 1, "None", task_id if task_id is not None else "None",
                         f"{name}_{index}", f"{status}[{files[0]}/{files[1]}/{files[2]}]", None])
        return _table(["request_id", "transform_id", "request_workload_id", "transform_workload_id", "scope:name",
                       "status[Total/OK/Processing]", "errors"], rows)

    def command(self, request: WorkflowRequest, command: str) -> list[Any]:
        emulator = self.emulator
        caller = request.caller
        if command == "abort":
            for task_id in request.created.values():
                if emulator.tasks[task_id].status not in ENDED:
                    emulator.kill(caller, task_id)
            request.status = "Cancelled"
        elif command == "suspend":
            request.suspended, request.status = True, "Suspended"
        elif command == "resume":
            request.suspended, request.status = False, "Transforming"
        elif command == "finish":
            for task_id in request.created.values():
                if emulator.tasks[task_id].status not in ENDED:
                    emulator.finish(caller, task_id, soft=True)
        elif command == "retry":
            for task_id in request.created.values():
                if emulator.tasks[task_id].status in ("failed", "finished", "aborted", "exhausted"):
                    emulator.retry(caller, task_id)
            request.skipped.clear()
            request.status = "Transforming"
        self.advance(request)
        return [0, f"Command {command} registered for request {request.request_id}"]

    def advance_all(self) -> None:
        """One round of iDDS for every request (called by the emulator's clock, under its lock)."""
        for request in list(self.requests.values()):
            self.advance(request)

    def advance(self, request: WorkflowRequest) -> None:
        if request.status == "Cancelled":
            return
        tasks = self.emulator.tasks
        progress = True
        while progress and not request.suspended:
            progress = False
            for task in request.tasks:
                name = task["name"]
                if name in request.created or name in request.skipped:
                    continue
                verdict = self._verdict(request, task)
                if verdict == "skip":
                    request.skipped.add(name)
                    progress = True
                elif verdict == "go":
                    params = dict(task["task_params"])
                    reply = self.emulator.submit(request.caller, params)
                    if reply["success"]:
                        request.created[name] = int(reply["data"])
                    else:
                        request.skipped.add(name)
                        request.errors = str(reply["message"])
                    progress = True
        if request.suspended:
            return
        pending = [t for t in request.tasks if t["name"] not in request.created and t["name"] not in request.skipped]
        states = [tasks[i].status for i in request.created.values()]
        if pending or any(s not in ENDED for s in states):
            request.status = "Transforming"
        elif states and all(s == "done" for s in states) and not request.skipped:
            request.status = "Finished"
        elif any(s in ("done", "finished") for s in states):
            request.status = "SubFinished"
        else:
            request.status = "Failed"

    def _verdict(self, request: WorkflowRequest, task: dict[str, Any]) -> str:
        """``go`` when every parent allows the task, ``skip`` when one never will, else ``wait``."""
        waiting = False
        for parent in task.get("parents") or []:
            name, link = parent["name"], parent.get("link", "processed")
            if name in request.skipped:
                return "skip"
            task_id = request.created.get(name)
            if task_id is None:
                waiting = True
                continue
            status = self.emulator.tasks[task_id].status
            if status in NEVER.get(link, frozenset()):
                return "skip"
            if status not in SATISFIED.get(link, frozenset()):
                waiting = True
        return "wait" if waiting else "go"
