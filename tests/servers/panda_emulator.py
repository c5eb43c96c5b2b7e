# The handlers keep panda-server's own signatures (typing.Dict, "int = None"), which the
# emulator reads to cast and check arguments as the server does.
# ruff: noqa: RUF013, UP006
"""A PanDA server emulator on loopback that speaks what panda-server 1.0.4 speaks.

Protocol, as ``pandaserver/server/panda.py`` and ``api/v1/common.py::request_validation`` do it
(see shared/reference/panda.md §1, §2):

* Routing: ``/api/v1/<module>/<function>`` to the public handlers below (``TaskApi`` …);
  ``/cache/<name>`` serves uploaded files; the legacy ``/server/panda/put_workflow_request``
  and ``execute_idds_workflow_command`` go to ``panda_workflows`` (panda-server's converter,
  and iDDS); anything else is HTTP 403.
* Each handler has the server function's signature.  A wrong HTTP method gets HTTP 200 with
  ``success: false`` ("expecting POST, received GET"); GET values are cast from the type hints
  as the server casts them (``"None"`` to None where the default is None, bools true for
  ``true``/``1``, ints through float); JSON values are type-checked strictly; an unknown
  argument is an "Argument error".  Replies are JSON sent as ``text/plain``, datetimes as
  ``{"__datetime__": iso}``.
* "Secure" endpoints need a caller: a bearer ID token (a JWT whose ``exp`` has not passed,
  registered with ``add_user``) together with ``Origin: <vo>``; without one the reply is
  ``success: false`` with "SSL secure connection is required", as from a server without a
  client certificate.  The user is the DN the server synthesizes,
  ``<name>/CN=nickname:<nickname>``, and every task, upload and secret is that user's.
* ``task/submit`` follows ``insertTaskParamsPanda``: with ``uniqueTaskName`` an active task of
  the same name is code 2, an ended one (finished, failed, aborted, done, exhausted) is
  re-executed (code 3, "reactivation accepted"); an unknown ``parentTaskName`` is code 11.
* Tasks move through JEDI's statuses on a clock (``tick_s``): registered, defined, ready,
  running, then to the end ``run_task`` decides; ``kill`` (aborting, aborted), ``finish``
  (finishing, done or finished) and ``retry`` (toretry, ready, running) as JEDI moves them.
* The cache: ``file_server/upload_cache_file`` (multipart field ``file``; 10 MB, or 768 MB for
  ``sources.*``; an existing name is never overwritten) and ``validate_cache_file`` (our
  identical upload by size and gzip CRC32, as ``FOUND:<host>:<name>``).
* ``creds/set_user_secrets`` / ``get_user_secrets`` (the latter answers a JSON string).
* A seeded fault mode: HTTP 500/503, replies lost after the request was processed, and read
  timeouts, each with probability ``rate``.

``requests`` lists every request (method, path, query, monotonic time, user), so a test can
prove nothing was sent.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import inspect
import json
import random
import re
import struct
import threading
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import UnionType
from typing import Any, Dict, List, Union  # noqa: UP035 - the server's own annotations
from urllib.parse import parse_qs, urlsplit

MESSAGE_SSL = "SSL secure connection is required"
MESSAGE_TASK_ID = "jediTaskID must be an integer"
MESSAGE_TASK_OWNER = "not the task owner or no production role"
ENDED = ("finished", "failed", "aborted", "done", "exhausted")
FINAL = ("finished", "failed", "done", "broken", "aborted")
NO_BUILD_LIMIT = 10 * 1024 * 1024
SOURCES_LIMIT = 768 * 1024 * 1024
ROWS_CAP = 500
FAULT_KINDS = ("500", "503", "reply_lost", "timeout")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_encode(v) for v in value]
    return value


def response(success: bool, message: str = "", data: Any = None) -> dict[str, Any]:
    """The server's ``generate_response``."""
    return {"success": success, "message": message, "data": data}


def make_token(subject: str, *, lifetime_s: float = 3600, nickname: str | None = None, name: str = "") -> str:
    """An unsigned JWT with the claims PanDA reads (``exp``, ``preferred_username``, ``name``)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims = {"sub": subject, "exp": int(time.time() + lifetime_s), "name": name or subject}
    claims["preferred_username"] = nickname or subject
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


@dataclass
class Caller:
    """Who made a request (None for an anonymous one)."""

    dn: str
    nickname: str


@dataclass
class EmulatedTask:
    """One JEDI task and what the emulator knows of it."""

    task_id: int
    name: str
    user: str
    params: dict[str, Any]
    parent_id: int | None
    status: str = "registered"
    created: datetime = field(default_factory=_utcnow)
    modified: datetime = field(default_factory=_utcnow)
    next_at: float = 0.0
    executions: int = 1  # 1 + the times a submit of its name re-executed it
    retries: int = 0
    n_files: int = 0
    n_files_finished: int = 0
    n_files_failed: int = 0
    panda_ids: list[int] = field(default_factory=list)
    final: str | None = None  # the end run_task chose, reached after "running"

    def row(self) -> dict[str, Any]:
        """A row of ``get_tasks_modified_since``."""
        return {
            "jediTaskID": self.task_id, "modificationTime": self.modified, "status": self.status,
            "processingType": self.params.get("processingType"), "transUses": self.params.get("transUses"),
            "transHome": self.params.get("transHome"), "architecture": self.params.get("architecture"),
            "reqID": self.task_id, "creationDate": self.created, "site": self.params.get("site"),
            "cloud": None, "taskName": self.name,
        }


#: Decides how a running task ends: ``(final status, files, finished files, failed files)``.
TaskOutcome = Callable[[EmulatedTask], tuple[str, int, int, int]]


def every_task_succeeds(task: EmulatedTask) -> tuple[str, int, int, int]:
    """The default end of a task: done, no files counted."""
    return "done", task.n_files, task.n_files, 0


class _Refusal(Exception):
    """A request the server answers with ``success: false`` before the handler runs."""


def _cast_get(value: Any, expected: Any, default: Any) -> Any:
    """What ``request_validation`` does to a query-string value."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if isinstance(value, list) and not (origin is list or expected in (list, List)):
        value = value[-1]
    if value == "None" and default is None:
        return None
    if expected is str:
        return value
    if expected is bool:
        return str(value).lower() in ("true", "1")
    if expected is int:
        return int(float(value))
    if origin is list and args:
        items = value if isinstance(value, list) else [value]
        return [int(float(i)) if args[0] is int else i for i in items]
    return value


def _type_ok(value: Any, expected: Any) -> bool:
    """The strict JSON type check of ``request_validation``."""
    if expected is Any:
        return True
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (Union, UnionType):
        return any(_type_ok(value, a) for a in args)
    if expected in (dict, Dict) or origin is dict:
        return isinstance(value, dict)
    if expected in (list, List) or origin is list:
        return isinstance(value, list)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True


@dataclass
class _Endpoint:
    function: Callable[..., dict[str, Any]]
    method: str
    secure: bool = True


class PandaEmulator:
    """The server: ``start()`` it, point ``PANDA_URL_SSL`` at ``url + "/server/panda"``."""

    def __init__(
        self,
        root: Path,
        *,
        tick_s: float = 0.05,
        outcome: TaskOutcome = every_task_succeeds,
        fault_rate: float = 0.0,
        fault_seed: int = 0,
        fault_kinds: tuple[str, ...] = FAULT_KINDS,
        first_task_id: int = 4000,
        jobs: Any = None,
        convert: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.cache_dir = self.root / "cache"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.tick_s = tick_s
        self.outcome = outcome
        self.fault_rate = fault_rate
        self.fault_kinds = fault_kinds
        self._faults = random.Random(fault_seed)
        self.lock = threading.RLock()
        self.tasks: dict[int, EmulatedTask] = {}
        self.users: dict[str, tuple[str, Caller]] = {}  # token -> (vo, caller)
        self.secrets: dict[str, dict[str, str]] = {}
        self.uploads: dict[str, str] = {}  # cache file name -> uploader's DN
        self.requests: list[dict[str, Any]] = []
        self.faults_injected: list[tuple[str, str]] = []
        self._next_id = first_task_id
        self._next_panda_id = 9_000_000
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.jobs = jobs  # a panda_jobs.JobRunner: tasks' jobs run for real
        from tests.servers.panda_workflows import WorkflowService

        # put_workflow_request and iDDS; ``convert`` stands in for panda-server's converter
        self.workflows = WorkflowService(self, convert)
        self._working: dict[int, threading.Thread] = {}
        self.endpoints: dict[str, _Endpoint] = {
            "task/submit": _Endpoint(self.submit, "POST"),
            "task/get_status": _Endpoint(self.get_status, "GET"),
            "task/get_details": _Endpoint(self.get_details, "GET"),
            "task/get_detailed_info": _Endpoint(self.get_detailed_info, "GET"),
            "task/get_task_parameters": _Endpoint(self.get_task_parameters, "GET", secure=False),
            "task/get_tasks_modified_since": _Endpoint(self.get_tasks_modified_since, "GET"),
            "task/kill": _Endpoint(self.kill, "POST"),
            "task/finish": _Endpoint(self.finish, "POST"),
            "task/retry": _Endpoint(self.retry, "POST"),
            "file_server/validate_cache_file": _Endpoint(self.validate_cache_file, "POST"),
            "file_server/upload_cache_file": _Endpoint(self.upload_cache_file, "POST"),
            "creds/set_user_secrets": _Endpoint(self.set_user_secrets, "POST"),
            "creds/get_user_secrets": _Endpoint(self.get_user_secrets, "GET"),
        }

    # ---------------------------------------------------------------- life cycle

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def environ(self, token: str, vo: str = "atlas") -> dict[str, str]:
        """The environment that points panda-client (and cwlbridge) at this server with ``token``."""
        return {
            "PANDA_URL_SSL": f"{self.url}/server/panda",
            "PANDA_URL": f"{self.url}/server/panda",
            "PANDACACHE_URL": f"{self.url}/server/panda",
            "PANDA_BEHIND_REAL_LB": "1",
            "PANDA_AUTH": "oidc",
            "PANDA_AUTH_VO": vo,
            "PANDA_AUTH_ID_TOKEN": token,
        }

    def add_user(self, nickname: str, *, vo: str = "atlas", lifetime_s: float = 3600) -> str:
        """Register a user; return an ID token for them."""
        token = make_token(f"sub-{nickname}", lifetime_s=lifetime_s, nickname=nickname, name=nickname.title())
        with self.lock:
            self.users[token] = (vo, Caller(dn=f"{nickname.title()}/CN=nickname:{nickname}", nickname=nickname))
        return token

    def start(self) -> PandaEmulator:
        emulator = self

        class Handler(_RequestHandler):
            server_emulator = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        for target in (self._server.serve_forever, self._clock):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> PandaEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- JEDI's clock

    def _clock(self) -> None:
        while not self._stop.wait(self.tick_s / 2):
            with self.lock:
                for task in list(self.tasks.values()):
                    self._advance(task)
                self.workflows.advance_all()

    def _set(self, task: EmulatedTask, status: str) -> None:
        task.status = status
        task.modified = _utcnow()
        task.next_at = time.monotonic() + self.tick_s

    def _advance(self, task: EmulatedTask) -> None:
        if time.monotonic() < task.next_at:
            return
        following = {
            "registered": "defined", "defined": "ready", "toretry": "ready", "toincexec": "ready",
            "aborting": "aborted", "finishing": None, "ready": "running",
        }
        if task.status == "ready" and task.parent_id is not None and not task.params.get("noWaitParent"):
            parent = self.tasks.get(task.parent_id)
            if parent is not None and parent.status not in ("done", "finished"):
                if parent.status in ("failed", "aborted", "broken"):
                    self._set(task, "failed")
                return
        if task.status in following:
            nxt = following[task.status]
            if nxt is None:  # finishing: done when nothing failed, else finished
                nxt = "finished" if task.n_files_failed else "done"
            if nxt == "running":
                self._next_panda_id += 1
                task.panda_ids.append(self._next_panda_id)
            self._set(task, nxt)
        elif task.status == "running" and self.jobs is not None:
            if task.task_id not in self._working:
                thread = threading.Thread(target=self._run_jobs, args=(task,), daemon=True)
                self._working[task.task_id] = thread
                thread.start()
        elif task.status == "running":
            final, files, finished, failed = self.outcome(task)
            task.n_files, task.n_files_finished, task.n_files_failed = files, finished, failed
            self._set(task, final)

    def _run_jobs(self, task: EmulatedTask) -> None:
        """A worker thread: the task's jobs, then its end (unless it was killed meanwhile)."""
        try:
            final, files, finished, failed = self.jobs.run(task, self)
        except Exception as exc:  # the task fails, the emulator goes on
            self.jobs.errors.setdefault(task.task_id, []).append(f"{type(exc).__name__}: {exc}")
            final, files, finished, failed = "failed", 0, 0, 0
        with self.lock:
            self._working.pop(task.task_id, None)
            if task.status == "running":
                task.n_files, task.n_files_finished, task.n_files_failed = files, finished, failed
                self._set(task, final)

    def stopping(self) -> bool:
        return self._stop.is_set()

    def new_panda_id(self, task: EmulatedTask) -> int:
        """A PanDA job id for one job of ``task``."""
        with self.lock:
            self._next_panda_id += 1
            task.panda_ids.append(self._next_panda_id)
            return self._next_panda_id

    def set_status(self, task_id: int, status: str) -> None:
        """Put a task in ``status`` (a test playing JEDI, e.g. ``exhausted``)."""
        with self.lock:
            self._set(self.tasks[task_id], status)

    def wait_for(self, task_id: int, statuses: tuple[str, ...], timeout: float = 10) -> str:
        """Wait until a task is in one of ``statuses``; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                status = self.tasks[task_id].status
            if status in statuses:
                return status
            time.sleep(self.tick_s / 2)
        raise AssertionError(f"task {task_id} is still {status}, not one of {statuses}")

    def tasks_named(self, name: str) -> list[EmulatedTask]:
        with self.lock:
            return [t for t in self.tasks.values() if t.name.rstrip("/") == name.rstrip("/")]

    # ---------------------------------------------------------------- dispatch

    def dispatch(self, method: str, path: str, query: dict[str, list[str]], body: Any, caller: Caller | None) -> Any:
        """The JSON reply to one ``/api/v1`` request (or raise ``KeyError`` for a 403)."""
        endpoint = self.endpoints[path]
        if endpoint.secure and caller is None:
            return response(False, message=MESSAGE_SSL)
        if endpoint.method != method:
            return response(False, message=f"expecting {endpoint.method}, received {method}")
        arguments = dict(body) if isinstance(body, dict) else {k: v if len(v) > 1 else v[0] for k, v in query.items()}
        signature = inspect.signature(endpoint.function)
        hints = typing.get_type_hints(endpoint.function)
        try:
            bound = signature.bind(caller, **arguments)
        except TypeError as exc:
            return response(False, message=f"Argument error: {exc}")
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            expected = hints.get(name)
            default = signature.parameters[name].default
            if expected is None or value == default:
                continue
            if method == "GET":
                try:
                    bound.arguments[name] = _cast_get(value, expected, default)
                except (TypeError, ValueError) as exc:
                    return response(False, message=f"Type error: {name} could not be cast: {exc}")
            elif not _type_ok(value, expected):
                return response(False, message=f"Type error: {name} must be {expected}, got {type(value).__name__}")
        with self.lock:
            return endpoint.function(*bound.args, **bound.kwargs)

    def caller_of(self, headers: Any) -> Caller | None:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        token = auth[len("Bearer ") :].strip()
        with self.lock:
            known = self.users.get(token)
        if known is None or headers.get("Origin", "") != known[0]:
            return None
        try:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError, binascii.Error):
            return None
        if float(claims.get("exp", 0)) < time.time():
            return None
        return known[1]

    def fault(self, path: str) -> str | None:
        """The fault to inject into this request, if any (seeded, so runs repeat)."""
        if self.fault_rate <= 0:
            return None
        with self.lock:
            if self._faults.random() >= self.fault_rate:
                return None
            kind = self._faults.choice(self.fault_kinds)
            self.faults_injected.append((path, kind))
            return kind

    # ---------------------------------------------------------------- task API

    def _owned(self, caller: Caller, task_id: int) -> EmulatedTask | dict[str, Any]:
        task = self.tasks.get(task_id)
        if task is None or task.user != caller.dn:
            return response(False, message=MESSAGE_TASK_OWNER)
        return task

    def submit(self, req: Caller, task_parameters: Dict, parent_tid: int = None) -> dict[str, Any]:  # type: ignore[assignment]
        params = dict(task_parameters)
        params["userName"] = req.dn
        params.setdefault("taskType", "anal")
        name = str(params.get("taskName") or "")
        if not name:
            return response(False, message="failed to register task", data=4)
        parent_id = parent_tid
        if "parentTaskName" in params:
            parents = [t for t in self.tasks.values() if t.user == req.dn and t.name == params["parentTaskName"]]
            if not parents:
                message = f'failed to find parent with user="{req.dn}" name={params["parentTaskName"]}'
                return response(False, message=message, data=11)
            parent_id = max(parents, key=lambda t: t.task_id).task_id
        if params.get("uniqueTaskName") is True:
            same = [t for t in self.tasks.values() if t.user == req.dn and t.name == name]
            if same:
                old = max(same, key=lambda t: t.task_id)
                if old.status not in ENDED:
                    message = (
                        f"jediTaskID={old.task_id} is in the {old.status} state for outDS={name}. "
                        "You can re-submit the task with new parameters for the same or another input "
                        "once it goes into finished/failed/done. "
                    )
                    return response(False, message=message, data=2)
                old.executions += 1
                self._set(old, "toincexec")
                message = (
                    "reactivation accepted. "
                    f"jediTaskID={old.task_id} (currently in {old.status} state) will be re-executed"
                    " with old and/or new input"
                )
                return response(True, message=message, data=old.task_id)
        self._next_id += 1
        task = EmulatedTask(self._next_id, name, req.dn, params, parent_id)
        task.next_at = time.monotonic() + self.tick_s
        self.tasks[task.task_id] = task
        return response(True, message=f"succeeded. new jediTaskID={task.task_id}", data=task.task_id)

    def get_status(self, req: Caller, task_id: int) -> dict[str, Any]:
        task = self.tasks.get(task_id)
        if task is None:
            return response(False, message="Task not found")
        return response(True, data=task.status)

    def get_details(
        self, req: Caller, task_id: int, include_parameters: bool = False, include_status: bool = False
    ) -> dict[str, Any]:
        task = self.tasks.get(task_id)
        if task is None:
            return response(False, message="Task not found or error retrieving the details")
        statistics = ",".join(
            f"{name}*{count}" for name, count in (("finished", task.n_files_finished), ("failed", task.n_files_failed))
            if count
        )
        details: dict[str, Any] = {
            "inDS": task.params.get("dsForIN", ""),
            "outDS": task.name,
            "statistics": statistics,
            "PandaID": list(task.panda_ids),
            "mergeStatus": None,
            "mergePandaID": [],
        }
        if include_status:
            details["status"] = task.status
        if include_parameters:
            details["cliParams"] = task.params.get("cliParams", "")
        return response(True, data=details)

    def get_detailed_info(self, req: Caller, task_id: int) -> dict[str, Any]:
        task = self.tasks.get(task_id)
        if task is None:
            return response(False, message="Task not found or error retrieving task info")
        info = dict(task.row())
        info.update(
            userName=task.user, nFiles=task.n_files, nFilesFinished=task.n_files_finished,
            nFilesFailed=task.n_files_failed, nFilesMissing=0,
            pctFinished=100 * task.n_files_finished // task.n_files if task.n_files else 0,
            pctFailed=100 * task.n_files_failed // task.n_files if task.n_files else 0,
            parent_tid=task.parent_id, attemptNr=task.retries,
        )
        return response(True, data=info)

    def get_task_parameters(self, req: Caller | None, task_id: int) -> dict[str, Any]:
        task = self.tasks.get(task_id)
        if task is None:
            return response(False, message="Task not found")
        return response(True, data=json.loads(json.dumps(task.params)))

    def get_tasks_modified_since(
        self, req: Caller, since: str, dn: str = None, full: bool = False,  # type: ignore[assignment]
        min_task_id: int = None, prod_source_label: str = "user",  # type: ignore[assignment]
    ) -> dict[str, Any]:
        try:
            moment = datetime.strptime(since, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return response(True, data={})  # the server logs the error and answers an empty dict
        user = dn or req.dn
        rows = sorted(
            (t for t in self.tasks.values() if t.user == user and t.modified >= moment - timedelta(seconds=1)),
            key=lambda t: t.task_id,
        )
        if min_task_id is not None:
            rows = [t for t in rows if t.task_id > min_task_id]
        if full:
            rows = rows[:ROWS_CAP]
        return response(True, data={str(t.task_id): t.row() for t in rows})

    def kill(self, req: Caller, task_id: int, broadcast: bool = False) -> dict[str, Any]:
        task = self._owned(req, task_id)
        if isinstance(task, dict):
            return task
        if task.status in FINAL or task.status == "aborting":
            return response(False, message=f"Command rejected: the task is in {task.status}", data=3)
        self._set(task, "aborting")
        return response(True, message=f"command=kill is registered for jediTaskID={task_id}", data=0)

    def finish(self, req: Caller, task_id: int, soft: bool = False, broadcast: bool = False) -> dict[str, Any]:
        task = self._owned(req, task_id)
        if isinstance(task, dict):
            return task
        if task.status in FINAL:
            return response(False, message=f"Command rejected: the task is in {task.status}", data=3)
        self._set(task, "finishing")
        return response(True, message=f"command=finish is registered for jediTaskID={task_id}", data=0)

    def retry(
        self, req: Caller, task_id: int, new_parameters: Dict | str = None,  # type: ignore[assignment]
        no_child_retry: bool = False, discard_events: bool = False, disable_staging_mode: bool = False,
        keep_gshare_priority: bool = False, ignore_hard_exhausted: bool = False,
    ) -> dict[str, Any]:
        task = self._owned(req, task_id)
        if isinstance(task, dict):
            return task
        if task.status not in ("finished", "failed", "aborted", "exhausted"):
            return response(True, message=f"Command rejected: the task is in {task.status}", data=3)
        if new_parameters:
            update = json.loads(new_parameters) if isinstance(new_parameters, str) else new_parameters
            task.params.update(update)
        task.retries += 1
        task.n_files_failed = 0
        self._set(task, "toretry")
        return response(True, message=f"command=retry is registered for jediTaskID={task_id}", data=0)

    # ---------------------------------------------------------------- cache and secrets

    def validate_cache_file(self, req: Caller, file_size: int, checksum: int | str) -> dict[str, Any]:
        for name, owner in self.uploads.items():
            path = self.cache_dir / name
            if owner != req.dn or path.stat().st_size != file_size:
                continue
            data = path.read_bytes()
            if len(data) >= 8 and struct.unpack("II", data[-8:])[0] == int(checksum):
                host = urlsplit(self.url).netloc
                return response(True, message=f"FOUND:{host}:{name}")
        return response(True, message="")

    def upload_cache_file(self, req: Caller, file: Any) -> dict[str, Any]:
        filename, content = file
        name = Path(str(filename)).name
        limit = SOURCES_LIMIT if name.startswith("sources.") else NO_BUILD_LIMIT
        if len(content) > limit:
            return response(False, message=f"Exceeded size limit {len(content)}>{limit}")
        target = self.cache_dir / name
        if target.exists() and not name.endswith(".__ow__"):
            return response(False, message=f"{name} already exists")
        target.write_bytes(content)
        self.uploads[name] = req.dn
        return response(True, message="")

    def set_user_secrets(self, req: Caller, key: str = None, value: str = None) -> dict[str, Any]:  # type: ignore[assignment]
        mine = self.secrets.setdefault(req.dn, {})
        if key is None:
            mine.clear()
        elif value is None:
            mine.pop(key, None)
        else:
            mine[key] = value
        return response(True, message="OK")

    def get_user_secrets(self, req: Caller, keys: str = None) -> dict[str, Any]:  # type: ignore[assignment]
        mine = self.secrets.get(req.dn, {})
        if keys:
            wanted = json.loads(keys)
            mine = {k: v for k, v in mine.items() if k in wanted}
        return response(True, data=json.dumps(mine))


class _RequestHandler(BaseHTTPRequestHandler):
    server_emulator: PandaEmulator
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one send (flushed after each request): written apart, they
    # meet Nagle's algorithm and the client's delayed ACK, 40 ms a request.
    wbufsize = 1 << 16

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, payload: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        emulator = self.server_emulator
        parts = urlsplit(self.path)
        raw = self._body() if method == "POST" else b""
        caller = emulator.caller_of(self.headers)
        with emulator.lock:
            emulator.requests.append(
                {"method": method, "path": parts.path, "query": parts.query, "time": time.monotonic(),
                 "user": caller.dn if caller else None}
            )
        if method == "GET" and parts.path.startswith("/cache/"):
            target = emulator.cache_dir / Path(parts.path[len("/cache/") :]).name
            if target.is_file():
                self._reply(200, target.read_bytes(), "application/octet-stream")
            else:
                self._reply(404, b"not found")
            return
        legacy = re.fullmatch(r"/server/panda/(put_workflow_request|execute_idds_workflow_command)", parts.path)
        if legacy is not None and method == "POST":
            reply = emulator.workflows.handle(legacy.group(1), raw, self.headers.get("Content-Type", ""), caller)
            self._reply(200, json.dumps(reply).encode())
            return
        match = re.fullmatch(r"/api/(?:v1|latest)/(\w+/\w+)", parts.path)
        if match is None or match.group(1) not in emulator.endpoints:
            self._reply(403, b"Forbidden")
            return
        endpoint = match.group(1)
        fault = emulator.fault(endpoint)
        if fault in ("500", "503"):
            self._reply(int(fault), b"Internal Server Error")
            return
        if fault == "timeout":
            time.sleep(float(self.headers.get("X-Test-Timeout", "2.5")))
        body: Any = None
        content_type = self.headers.get("Content-Type", "")
        if method == "POST" and content_type.startswith("multipart/form-data"):
            message = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + raw
            )
            body = {}
            for part in message.iter_parts():
                field_name = part.get_param("name", header="content-disposition")
                filename = part.get_param("filename", header="content-disposition")
                payload = part.get_payload(decode=True) or b""
                body[str(field_name)] = (filename, payload) if filename else payload.decode()
        elif method == "POST" and raw:
            if self.headers.get("Content-Encoding") == "gzip":
                import gzip

                raw = gzip.decompress(raw)
            try:
                body = json.loads(raw)
            except ValueError:
                body = {k: v[-1] for k, v in parse_qs(raw.decode(errors="replace")).items()}
        query = parse_qs(parts.query, keep_blank_values=True)
        reply = emulator.dispatch(method, endpoint, query, body, caller)
        if fault == "reply_lost":
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            self.close_connection = True
            return
        self._reply(200, json.dumps(_encode(reply)).encode())

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")


@contextlib.contextmanager
def running_emulator(root: Path, **kwargs: Any) -> Iterator[PandaEmulator]:
    """A started emulator that is stopped afterwards."""
    emulator = PandaEmulator(root, **kwargs).start()
    try:
        yield emulator
    finally:
        emulator.stop()
