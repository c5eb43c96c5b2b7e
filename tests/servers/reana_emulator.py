"""A REANA 0.9 server emulator on loopback, routed and checked by the official OpenAPI spec.

What it does (see tests/test_reana_emulator.py for each behaviour exercised over HTTP):

* Every request is matched against the path templates and methods of ``reana_server.json``;
  required query parameters, enums, integer/boolean types, body presence, body schema and the
  upload content type are checked against the operation. Every response the emulator sends is
  validated against the operation's response schema (draft-4, ``x-nullable`` rewritten,
  ``type: file`` skipped); a mismatch is a bug in the emulator and lands in ``violations``.
* Submitted reana.yaml specs are validated with the official draft-07 schema
  (``additionalProperties`` errors become ``warnings``, the rest a 400).
* ``serial`` workflows run for real: each command is one job, ``bash -c`` in the workspace,
  after REANA's ``string.Template`` substitution of ``inputs.parameters`` overlaid with the
  start call's ``input_parameters`` (so ``$$`` becomes ``$``, as on REANA; unknown ``$NAME``
  stays). ``cwl`` workflows run as one job through ``cwltool --no-container`` on the packed
  ``$graph``, outputs in ``outputs/``. No containers: ``environment`` is only recorded.
* Job environment: ``PATH``, ``HOME`` (a per-run directory outside the workspace),
  ``REANA_WORKSPACE``, every ``env`` secret of the owner, and ``REANA_SECRETS_DIR``: a
  per-run directory holding every ``file`` secret by name, rewritten before each job (REANA
  mounts them at ``/etc/reana/secrets``). A step with ``voms_proxy: true`` gets
  ``X509_USER_PROXY`` (a copy of the file named by ``VOMSPROXY_FILE``); with ``rucio: true``
  and ``RUCIO_USERNAME`` it gets ``RUCIO_CONFIG`` (hosts from ``RUCIO_RUCIO_HOST`` /
  ``RUCIO_AUTH_HOST`` or the VONAME defaults). Missing secrets only print ``[ERROR]`` into the
  job log and the job still runs, as REANA's init containers do.
* The REANA 0.9 quirks listed in shared/reference/reana.md §3 and §12.4 are reproduced, and a
  seeded fault mode injects 5xx/429 replies, read timeouts, connection resets, replies lost
  after the request was processed and replies cut off half-way through their body.
* Uploads with an empty body store an empty file, as reana-server and RWC do (they stream the
  body to the workspace without checking its length). ``serve_hostile_listing`` makes the
  workspace listing name unsafe paths, for testing that clients refuse them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import io
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import jsonschema

REANA_SERVER_VERSION = "0.9.4"
REANA_095_SERVER_VERSION = "0.95.0a7"
BUNDLES_CAPABILITY = "workflow-specification-bundles-v1"

HTTP_FAULT_KINDS = ("500", "502", "503", "504", "429")
TRANSPORT_FAULT_KINDS = ("timeout", "reset", "reply_lost", "cut")
ALL_FAULT_KINDS = HTTP_FAULT_KINDS + TRANSPORT_FAULT_KINDS
DEFAULT_FAULT_KINDS = ("500", "502", "503", "504", "429", "timeout", "reset")

RUN_STATUSES = ("created", "queued", "pending", "running", "finished", "failed", "stopped",
                "deleted")

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I)
_BODY_IN_MEMORY_MAX = 8 * 1024 * 1024
_STREAM_CHUNK = 256 * 1024
_OPERATIONAL_OPTIONS = {"serial": {"CACHE", "FROM", "TARGET"}, "cwl": {"TARGET"}}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
}


def _now() -> str:
    return datetime.now(timezone.utc).strftime(_TIME_FORMAT)


def _human_size(raw: int) -> str:
    size = float(raw)
    for unit in ("Bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "Bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{raw} Bytes"


def redact_token(text: str) -> str:
    """Replace the value of every ``access_token=`` in text by ``***``."""
    return re.sub(r"(access_token=)[^&\s]*", r"\1***", text)


# ---------------------------------------------------------------------------------------------
# Spec routing and validation


class RouteNotFound(Exception):
    """No path template of the spec matches the request path."""


class MethodNotAllowed(Exception):
    """The path exists in the spec but not with this method."""


@dataclass(frozen=True)
class Operation:
    """One spec operation: a method on a path template."""

    method: str
    template: str
    spec: dict[str, Any]


class SpecRouter:
    """Matches requests to the operations of a Swagger 2.0 document."""

    def __init__(self, spec: dict[str, Any]) -> None:
        routes: list[tuple[re.Pattern[str], str, dict[str, Any], int]] = []
        for template, item in spec["paths"].items():
            pattern = ""
            literal_segments = 0
            for segment in template.strip("/").split("/"):
                parameter = re.fullmatch(r"\{(\w+)\}", segment)
                if parameter is None:
                    pattern += "/" + re.escape(segment)
                    literal_segments += 1
                elif parameter.group(1) == "file_name":
                    # Workspace paths carry their own slashes.
                    pattern += f"/(?P<{parameter.group(1)}>.+)"
                else:
                    pattern += f"/(?P<{parameter.group(1)}>[^/]+)"
            if template.endswith("/"):
                pattern += "/"
            routes.append((re.compile(f"^{pattern}$"), template, item, literal_segments))
        routes.sort(key=lambda route: -route[3])
        self._routes = [(regex, template, item) for regex, template, item, _ in routes]

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        """Return the operation for method+path and the decoded path parameters."""
        path_exists = False
        for regex, template, item in self._routes:
            found = regex.match(path)
            if found is None:
                continue
            path_exists = True
            operation = item.get(method.lower())
            if operation is not None:
                params = {key: unquote(value) for key, value in found.groupdict().items()}
                return Operation(method.upper(), template, operation), params
        if path_exists:
            raise MethodNotAllowed(path)
        raise RouteNotFound(path)


def _nullable_to_type(schema: Any) -> Any:
    if isinstance(schema, dict):
        rewritten = {key: _nullable_to_type(value) for key, value in schema.items()}
        if rewritten.pop("x-nullable", False) and isinstance(rewritten.get("type"), str):
            rewritten["type"] = [rewritten["type"], "null"]
        return rewritten
    if isinstance(schema, list):
        return [_nullable_to_type(item) for item in schema]
    return schema


def response_schema(operation: Operation, status: int) -> dict[str, Any] | None:
    """The draft-4 schema a response must satisfy; None when the spec declares no JSON body.

    Status codes the spec does not declare for the operation (401 on most calls, 429 from the
    rate limiter, injected 5xx, 501 for calls the emulator does not implement) are what the
    real server sends as ``{"message": str}``, so they are held to that shape.
    """
    declared = operation.spec.get("responses", {}).get(str(status))
    if declared is None:
        return _ERROR_SCHEMA
    schema = declared.get("schema")
    if schema is None or schema.get("type") == "file":
        return None
    prepared: dict[str, Any] = _nullable_to_type(copy.deepcopy(schema))
    return prepared


def _schema_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    validator = jsonschema.Draft4Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def _query_value_errors(parameter: dict[str, Any], values: list[str]) -> list[str]:
    name = parameter["name"]
    kind = parameter.get("type")
    problems = []
    for value in values:
        if kind == "integer":
            try:
                int(value)
            except ValueError:
                problems.append(f"Query parameter '{name}' must be an integer, got {value!r}.")
        elif kind == "boolean" and value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            problems.append(f"Query parameter '{name}' must be a boolean, got {value!r}.")
        if "enum" in parameter and value not in parameter["enum"]:
            problems.append(
                f"Query parameter '{name}' must be one of {parameter['enum']}, got {value!r}."
            )
    return problems


# ---------------------------------------------------------------------------------------------
# Request, response and state records


@dataclass
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: IO[bytes]
    body_size: int

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def body_bytes(self) -> bytes:
        self.body.seek(0)
        return self.body.read()

    def json_body(self) -> Any:
        return json.loads(self.body_bytes().decode("utf-8")) if self.body_size else None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass
class Response:
    """A reply: a JSON document, raw bytes, or a file streamed from disk."""

    status: int
    json_body: Any = None
    raw: bytes | None = None
    file: Path | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: Send only this many bytes of the body, then close the connection (fault "cut").
    cut_at: int | None = None

    @classmethod
    def message(cls, status: int, text: str) -> Response:
        return cls(status, {"message": text})

    def payload_size(self) -> int:
        if self.file is not None:
            return self.file.stat().st_size
        return len(self.encoded())

    def encoded(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.json_body).encode("utf-8")


@dataclass
class User:
    """A REANA account: identity, token and its per-user secret store."""

    id: str
    email: str
    token: str
    revoked: bool = False
    secrets: dict[str, tuple[str, bytes]] = field(default_factory=dict)


@dataclass
class Job:
    """One job of a run: a command, its log file and outcome."""

    id: str
    name: str
    command: str
    docker_img: str
    log_path: Path
    status: str = "created"
    started_at: str | None = None
    finished_at: str | None = None


@dataclass
class Workflow:
    """A workflow run with its spec, state and workspace."""

    id: str
    name: str
    run_number: int
    owner: User
    spec: dict[str, Any]
    workspace: Path
    runtime: Path
    created: str
    status: str = "created"
    warnings: list[str] = field(default_factory=list)
    input_parameters: dict[str, Any] = field(default_factory=dict)
    operational_options: dict[str, Any] = field(default_factory=dict)
    run_started_at: str | None = None
    run_finished_at: str | None = None
    run_stopped_at: str | None = None
    current_command: str | None = None
    current_step_name: str | None = None
    total_jobs: int = 0
    jobs: list[Job] = field(default_factory=list)
    workflow_logs: str = ""
    process: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None

    @property
    def full_name(self) -> str:
        return f"{self.name}.{self.run_number}"

    def job_ids(self, status: str | None = None) -> list[str]:
        return [job.id for job in self.jobs if status is None or job.status == status]

    def progress(self) -> dict[str, Any]:
        def counts(status: str | None) -> dict[str, Any]:
            ids = self.job_ids(status)
            return {"total": len(ids), "job_ids": ids}

        total = counts(None)
        total["total"] = self.total_jobs
        return {
            "run_started_at": self.run_started_at,
            "run_finished_at": self.run_finished_at,
            "run_stopped_at": self.run_stopped_at,
            "total": total,
            "running": counts("running"),
            "finished": counts("finished"),
            "failed": counts("failed"),
            "current_command": self.current_command,
            "current_step_name": self.current_step_name,
        }


@dataclass(frozen=True)
class _ScriptedFault:
    kind: str
    method: str | None
    path_pattern: re.Pattern[str] | None

    def applies(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path_pattern is None or self.path_pattern.search(path) is not None


class _CloseWithoutReply(Exception):
    """Drop the connection without answering (after an optional wait)."""

    def __init__(self, wait_s: float = 0.0, reset: bool = False) -> None:
        super().__init__()
        self.wait_s = wait_s
        self.reset = reset


# ---------------------------------------------------------------------------------------------
# The emulator


class ReanaEmulator:
    """A REANA 0.9 server on 127.0.0.1 with an inspection API for tests.

    Inspection: ``url``, ``token``, ``workflows()``, ``secrets()``, ``request_log``,
    ``violations``, ``warnings``, ``fault_log``. Control: ``set_faults``, ``inject_faults``,
    ``set_rate_limit``, ``serve_hostile_listing``, ``queue_delay``, ``fault_timeout_s``,
    ``add_user``, ``revoke_token``, ``stop``. With ``protocol_095=True`` only ``/api/ping``
    works (advertising the bundle capability); every other call answers 501.
    """

    def __init__(
        self,
        server_spec: dict[str, Any],
        analysis_schema: dict[str, Any],
        *,
        root: Path | None = None,
        queue_delay: float = 0.0,
        fault_timeout_s: float = 3.0,
        protocol_095: bool = False,
    ) -> None:
        self.server_spec = server_spec
        self.analysis_schema = analysis_schema
        self.protocol_095 = protocol_095
        self.queue_delay = queue_delay
        self.fault_timeout_s = fault_timeout_s
        self.request_log: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.warnings: list[str] = []
        self.fault_log: list[dict[str, Any]] = []
        self._router = SpecRouter(server_spec)
        self._spec_validator_class = jsonschema.validators.validator_for(analysis_schema)
        self._spec_validator = self._spec_validator_class(analysis_schema)
        self._lock = threading.RLock()
        self._shutdown = threading.Event()
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="reana-emulator-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self._users: dict[str, User] = {}
        self._workflows: dict[str, Workflow] = {}
        self._fault_rate = 0.0
        self._fault_kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS
        self._fault_rng = random.Random(0)
        self._scripted: deque[_ScriptedFault] = deque()
        self._request_counter = 0
        self._rate_limit: tuple[int, float] | None = None
        self._recent: deque[float] = deque()
        self._hostile_names: tuple[str, ...] = ()
        self._hostile_size = 4
        self.token = self.add_user("alice@example.org")
        self._handlers: dict[tuple[str, str], Callable[[Request, User, dict[str, str]], Response]]
        self._handlers = {
            ("GET", "/api/you"): self._you,
            ("GET", "/api/info"): self._info,
            ("POST", "/api/workflows"): self._create,
            ("GET", "/api/workflows"): self._list,
            ("GET", "/api/workflows/{workflow_id_or_name}/status"): self._get_status,
            ("PUT", "/api/workflows/{workflow_id_or_name}/status"): self._set_status,
            ("POST", "/api/workflows/{workflow_id_or_name}/start"): self._start,
            ("GET", "/api/workflows/{workflow_id_or_name}/logs"): self._logs,
            ("GET", "/api/workflows/{workflow_id_or_name}/specification"): self._specification,
            ("GET", "/api/workflows/{workflow_id_or_name}/parameters"): self._parameters,
            ("POST", "/api/workflows/{workflow_id_or_name}/workspace"): self._upload,
            ("GET", "/api/workflows/{workflow_id_or_name}/workspace"): self._list_workspace,
            ("GET", "/api/workflows/{workflow_id_or_name}/workspace/{file_name}"): self._download,
            ("POST", "/api/secrets/"): self._add_secrets,
            ("GET", "/api/secrets"): self._list_secrets,
            ("DELETE", "/api/secrets/"): self._delete_secrets,
        }
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.daemon_threads = True
        self._http.emulator = self  # type: ignore[attr-defined]
        self._serve_thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._serve_thread.start()

    # -- inspection and control ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the server (the API lives under ``/api``)."""
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_user(self, email: str) -> str:
        """Create another account and return its access token."""
        user = User(id=str(uuid.uuid4()), email=email, token=base64.urlsafe_b64encode(
            os.urandom(18)).decode("ascii"))
        with self._lock:
            self._users[user.token] = user
        return user.token

    def revoke_token(self, token: str) -> None:
        """Mark a token revoked: calls with it get 403 "User access token revoked."."""
        with self._lock:
            self._users[token].revoked = True

    def workflows(self) -> list[dict[str, Any]]:
        """Every workflow of every user, oldest first, as plain dicts."""
        with self._lock:
            return [
                {
                    "id": wf.id,
                    "name": wf.name,
                    "run_number": wf.run_number,
                    "full_name": wf.full_name,
                    "status": wf.status,
                    "workspace": wf.workspace,
                    "user": wf.owner.email,
                    "created": wf.created,
                    "specification": copy.deepcopy(wf.spec),
                    "input_parameters": copy.deepcopy(wf.input_parameters),
                    "operational_options": copy.deepcopy(wf.operational_options),
                    "warnings": list(wf.warnings),
                    "jobs": [
                        {"id": job.id, "name": job.name, "command": job.command,
                         "status": job.status}
                        for job in wf.jobs
                    ],
                }
                for wf in self._workflows.values()
            ]

    def secrets(self, token: str | None = None) -> dict[str, dict[str, Any]]:
        """The secret store of one user (default: the primary user): name → type, raw bytes."""
        with self._lock:
            user = self._users[token or self.token]
            return {name: {"type": kind, "value": value}
                    for name, (kind, value) in user.secrets.items()}

    def set_faults(
        self, rate: float, seed: int, kinds: Sequence[str] = DEFAULT_FAULT_KINDS
    ) -> None:
        """Inject faults into a fraction ``rate`` of requests, drawn from a seeded generator.

        Kinds: "500", "502", "503", "504", "429" (reply with that status, request not
        processed), "timeout" (hold the connection ``fault_timeout_s`` then close it without a
        reply), "reset" (TCP reset before processing), "reply_lost" (process the request, then
        reset instead of replying), "cut" (process the request and reply, but close the
        connection half-way through the body, e.g. of a download). ``rate=0`` turns injection
        off.
        """
        unknown = set(kinds) - set(ALL_FAULT_KINDS)
        if unknown or not kinds:
            raise ValueError(
                f"unknown fault kinds {sorted(unknown)}; choose from {ALL_FAULT_KINDS}"
            )
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {rate}")
        with self._lock:
            self._fault_rate = rate
            self._fault_kinds = tuple(kinds)
            self._fault_rng = random.Random(seed)

    def inject_faults(
        self, kinds: Iterable[str], method: str | None = None, path: str | None = None
    ) -> None:
        """Queue faults for the next matching requests, in order (e.g. a burst of "429").

        ``path`` is a regular expression searched in the request path (without the query).
        """
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            for kind in kinds:
                if kind not in ALL_FAULT_KINDS:
                    raise ValueError(f"unknown fault kind {kind!r}; choose from {ALL_FAULT_KINDS}")
                self._scripted.append(_ScriptedFault(kind, method, pattern))

    def set_rate_limit(self, limit: int | None, per_seconds: float = 1.0) -> None:
        """Answer 429 once more than ``limit`` requests arrive within ``per_seconds``."""
        with self._lock:
            self._rate_limit = None if limit is None else (limit, per_seconds)
            self._recent.clear()

    def serve_hostile_listing(self, names: Iterable[str], size: int = 4) -> None:
        """Make every workspace listing also name these paths, as a broken or hostile server might.

        The entries (``size`` bytes each) are added to each listing, whatever it was asked
        for, e.g. ``results/../../escape.txt`` or ``/etc/passwd``; nothing is created on
        disk, so a download of one answers 400 or 404. An empty ``names`` turns it off.
        """
        with self._lock:
            self._hostile_names = tuple(names)
            self._hostile_size = size

    def stop(self) -> None:
        """Stop serving, kill running jobs, and remove the emulator's directory if it made it."""
        if self._shutdown.is_set():
            return
        self._shutdown.set()
        self._http.shutdown()
        self._http.server_close()
        with self._lock:
            runs = list(self._workflows.values())
        for wf in runs:
            self._kill(wf)
        for wf in runs:
            if wf.thread is not None:
                wf.thread.join(timeout=10)
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ReanaEmulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- request pipeline ---------------------------------------------------------------------

    def _draw_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            self._request_counter += 1
            index = self._request_counter
            kind: str | None = None
            for scripted in list(self._scripted):
                if scripted.applies(method, path):
                    self._scripted.remove(scripted)
                    kind = scripted.kind
                    break
            if kind is None and self._fault_rate > 0.0:
                # Two draws per request keep the sequence a function of (seed, request index).
                hit = self._fault_rng.random() < self._fault_rate
                choice = self._fault_rng.choice(self._fault_kinds)
                kind = choice if hit else None
            if kind is not None:
                self.fault_log.append(
                    {"index": index, "method": method, "path": path, "kind": kind}
                )
            return kind

    def _over_rate_limit(self) -> bool:
        with self._lock:
            if self._rate_limit is None:
                return False
            limit, window = self._rate_limit
            now = time.monotonic()
            while self._recent and now - self._recent[0] > window:
                self._recent.popleft()
            self._recent.append(now)
            return len(self._recent) > limit

    def handle(self, request: Request) -> Response:
        """Answer one request: fault injection, rate limit, routing, auth, checks, dispatch."""
        fault = self._draw_fault(request.method, request.path)
        if fault in HTTP_FAULT_KINDS:
            assert fault is not None
            status = int(fault)
            text = "Too many requests" if status == 429 else f"Injected fault {status}."
            response = Response.message(status, text)
            self._finish(request, None, response, fault)
            return response
        if fault == "timeout":
            self._finish(request, None, None, fault)
            raise _CloseWithoutReply(wait_s=self.fault_timeout_s)
        if fault == "reset":
            self._finish(request, None, None, fault)
            raise _CloseWithoutReply(reset=True)
        operation: Operation | None = None
        try:
            operation, response = self._route_and_dispatch(request)
        except Exception:
            self.violations.append(
                f"{request.method} {request.path}: emulator crashed:\n{traceback.format_exc()}"
            )
            response = Response.message(500, "Internal emulator error.")
        self._finish(request, operation, response, fault)
        if fault == "reply_lost":
            raise _CloseWithoutReply(reset=True)
        if fault == "cut":
            response.cut_at = response.payload_size() // 2
        return response

    def _finish(
        self, request: Request, operation: Operation | None, response: Response | None,
        fault: str | None,
    ) -> None:
        if response is not None and operation is not None:
            self._validate_response(request, operation, response)
        elif response is not None and response.content_type == "application/json":
            problems = _schema_errors(_ERROR_SCHEMA, response.json_body)
            if problems:
                self.violations.append(f"{request.method} {request.path}: {problems}")
        query = "&".join(
            f"{key}={'***' if key == 'access_token' else quote(value, safe='/,')}"
            for key, values in request.query.items() for value in values
        )
        with self._lock:
            self.request_log.append({
                "method": request.method,
                "path": request.path + (f"?{query}" if query else ""),
                "status": response.status if response is not None else None,
                "fault": fault,
            })

    def _validate_response(
        self, request: Request, operation: Operation, response: Response
    ) -> None:
        where = f"{request.method} {operation.template} -> {response.status}"
        produces = operation.spec.get("produces") or ["application/json"]
        if response.status < 400 and not any(
            response.content_type == kind or (kind.endswith("/*") and response.content_type
                                              .startswith(kind[:-1]))
            for kind in produces
        ):
            self.violations.append(f"{where}: content type {response.content_type} not in "
                                   f"{produces}")
        if response.content_type != "application/json":
            return
        schema = response_schema(operation, response.status)
        if schema is None:
            return
        problems = _schema_errors(schema, response.json_body)
        if problems:
            self.violations.append(f"{where}: response does not match the spec: {problems}")

    def _route_and_dispatch(self, request: Request) -> tuple[Operation | None, Response]:
        try:
            operation, path_params = self._router.match(request.method, request.path)
        except RouteNotFound:
            return None, Response.message(404, f"No API endpoint at {request.path}.")
        except MethodNotAllowed:
            return None, Response.message(
                405, f"Method {request.method} is not allowed on {request.path}."
            )
        if self._over_rate_limit():
            return operation, Response.message(429, "Too many requests: rate limit exceeded.")
        if operation.template == "/api/ping":
            return operation, self._ping()
        if self.protocol_095:
            return operation, Response.message(
                501, "This emulator speaks the REANA 0.95 protocol only for GET /api/ping."
            )
        user_or_error = self._authenticate(request)
        if isinstance(user_or_error, Response):
            return operation, user_or_error
        problems = self._request_problems(request, operation)
        if problems:
            return operation, Response.message(400, " ".join(problems))
        handler = self._handlers.get((operation.method, operation.template))
        if handler is None:
            return operation, Response.message(
                501, f"{operation.method} {operation.template} is not implemented by the "
                "REANA emulator."
            )
        return operation, handler(request, user_or_error, path_params)

    def _authenticate(self, request: Request) -> User | Response:
        token = request.arg("access_token")
        if not token:
            return Response.message(401, "User not signed in")
        with self._lock:
            user = self._users.get(token)
        if user is None:
            return Response.message(403, "Token not valid.")
        if user.revoked:
            return Response.message(403, "User access token revoked.")
        return user

    def _request_problems(self, request: Request, operation: Operation) -> list[str]:
        problems: list[str] = []
        for parameter in operation.spec.get("parameters", []):
            name = parameter["name"]
            if parameter["in"] == "query":
                values = request.query.get(name, [])
                if parameter.get("required") and name not in request.query:
                    problems.append(f"Missing required query parameter '{name}'.")
                elif values and (operation.template, name) != ("/api/secrets/", "overwrite"):
                    # The secrets call parses `overwrite` itself; see _add_secrets.
                    problems.extend(_query_value_errors(parameter, values))
            elif parameter["in"] == "body":
                raw_body = "application/octet-stream" in operation.spec.get("consumes", [])
                if request.body_size == 0:
                    # reana-server streams an upload body to RWC, which writes it to the
                    # workspace as it is; neither checks the length, so an empty body is an
                    # empty file (200), whatever `required` says. Only JSON bodies are missed.
                    if parameter.get("required") and not raw_body:
                        problems.append(f"Missing request body '{name}'.")
                    continue
                if raw_body:
                    continue
                if request.content_type != "application/json":
                    problems.append(
                        f"Body '{name}' must be sent as application/json, "
                        f"not {request.content_type or 'no content type'}."
                    )
                    continue
                try:
                    document = request.json_body()
                except (UnicodeDecodeError, json.JSONDecodeError):
                    problems.append(f"Body '{name}' is not valid JSON.")
                    continue
                schema = parameter.get("schema")
                if schema:
                    problems.extend(
                        f"Body '{name}' {problem}"
                        for problem in _schema_errors(_nullable_to_type(schema), document)
                    )
        consumes = operation.spec.get("consumes", [])
        if "application/octet-stream" in consumes and request.content_type != (
            "application/octet-stream"
        ):
            problems.append(
                "Wrong Content-Type "
                f"'{request.content_type or 'none'}': use application/octet-stream."
            )
        return problems

    # -- lookups ------------------------------------------------------------------------------

    def _find_workflow(self, user: User, id_or_name: str) -> Workflow | Response:
        with self._lock:
            if _UUID4.match(id_or_name):
                wf = self._workflows.get(id_or_name.lower())
                if wf is not None and wf.owner is not user:
                    return Response.message(
                        403, f"User {user.id} is not allowed to access workflow {id_or_name}"
                    )
                if wf is not None:
                    return wf
            else:
                name, _, run = id_or_name.partition(".")
                runs = [wf for wf in self._workflows.values()
                        if wf.owner is user and wf.name == name]
                if run:
                    runs = [wf for wf in runs if str(wf.run_number) == run]
                if runs:
                    return max(runs, key=lambda wf: wf.run_number)
        return Response.message(
            404, f"REANA_WORKON is set to {id_or_name}, but that workflow does not exist. "
            "Please set your REANA_WORKON environment variable appropriately."
        )

    @staticmethod
    def _workspace_path(wf: Workflow, relative: str) -> Path | Response:
        cleaned = relative.lstrip("/")
        parts = PurePosixPath(cleaned).parts
        if not cleaned or ".." in parts:
            return Response.message(400, f"Path {relative!r} is not valid: it must be relative "
                                         "and must not contain '..'.")
        return wf.workspace.joinpath(*parts)

    # -- handlers: account and info -----------------------------------------------------------

    def _ping(self) -> Response:
        body: dict[str, Any] = {"message": "OK", "status": "200"}
        if self.protocol_095:
            body["reana_server_version"] = REANA_095_SERVER_VERSION
            body["api_capabilities"] = [BUNDLES_CAPABILITY]
        return Response(200, body)

    def _you(self, request: Request, user: User, _: dict[str, str]) -> Response:
        with self._lock:
            disk = sum(_tree_size(wf.workspace) for wf in self._workflows.values()
                       if wf.owner is user)

        def quota(usage: float, health: str, unit: Callable[[int], str]) -> dict[str, Any]:
            return {
                "usage": {"raw": usage, "human_readable": unit(int(usage))},
                "limit": {"raw": 0, "human_readable": unit(0)},
                "health": health,
            }

        return Response(200, {
            "email": user.email,
            "full_name": user.email.split("@")[0],
            "username": user.email.split("@")[0],
            "reana_server_version": REANA_SERVER_VERSION,
            "reana_token": {"value": user.token, "status": "active",
                            "requested_at": "2024-01-01T00:00:00"},
            "quota": {
                "cpu": quota(0, "healthy", lambda ms: f"{ms // 1000}s"),
                "disk": quota(disk, "healthy", _human_size),
            },
        })

    def _info(self, request: Request, user: User, _: dict[str, str]) -> Response:
        def item(title: str, value: Any) -> dict[str, Any]:
            return {"title": title, "value": value}

        return Response(200, {
            "compute_backends": item("List of supported compute backends", ["kubernetes"]),
            "default_workspace": item("Default workspace", str(self.root / "workspaces")),
            "workspaces_available": item("List of available workspaces",
                                         [str(self.root / "workspaces")]),
            "default_kubernetes_jobs_timeout": item("Default timeout for Kubernetes jobs",
                                                    "604800"),
            "maximum_kubernetes_jobs_timeout": item("Maximum timeout for Kubernetes jobs",
                                                    "1209600"),
            "default_kubernetes_memory_limit": item("Default memory limit for Kubernetes jobs",
                                                    "3Gi"),
            "kubernetes_max_memory_limit": item("Maximum memory limit for Kubernetes jobs",
                                                "10Gi"),
            "maximum_workspace_retention_period": item(
                "Maximum retention period in days for workspace files", None),
        })

    # -- handlers: workflows ------------------------------------------------------------------

    def _validate_specification(self, spec: Any) -> tuple[list[str], list[str]]:
        """Errors and warnings for a submitted reana.yaml, as REANA's validate_reana_yaml."""
        if not isinstance(spec, dict):
            return ["The REANA specification must be a JSON object."], []
        errors: list[str] = []
        warnings: list[str] = []
        for error in self._spec_validator.iter_errors(spec):
            where = "/".join(str(p) for p in error.absolute_path) or "<root>"
            (warnings if error.validator == "additionalProperties" else errors).append(
                f"{where}: {error.message}"
            )
        if errors:
            return errors, warnings
        workflow = spec["workflow"]
        body = workflow.get("specification")
        if workflow["type"] == "cwl":
            graph = body.get("$graph") if isinstance(body, dict) else None
            if not isinstance(graph, list) or not any(
                isinstance(node, dict) and str(node.get("id", "")).lstrip("#") == "main"
                for node in graph
            ):
                errors.append("workflow/specification: a CWL specification must be a packed "
                              "document with a $graph holding #main (run cwltool --pack).")
        elif workflow["type"] == "serial":
            steps = body.get("steps") if isinstance(body, dict) else None
            if not isinstance(steps, list) or not steps:
                errors.append("workflow/specification: a serial specification needs a "
                              "non-empty list of steps.")
            else:
                for number, step in enumerate(steps):
                    commands = step.get("commands") if isinstance(step, dict) else None
                    if not (isinstance(commands, list)
                            and all(isinstance(c, str) for c in commands)):
                        errors.append(f"workflow/specification/steps/{number}: commands must "
                                      "be a list of strings.")
        return errors, warnings

    def _create(self, request: Request, user: User, _: dict[str, str]) -> Response:
        if request.arg("spec") is not None:
            return Response(501, raw=b"", content_type="text/plain")
        name = request.arg("workflow_name") or "workflow"
        if not name.isascii():
            return Response.message(400, f"Workflow name {name} is not valid.")
        if _UUID4.match(name):
            return Response.message(400, "Workflow name cannot be a valid UUIDv4.")
        if "." in name:
            return Response.message(
                403, f"Workflow name {name} contains illegal character `.`."
            )
        spec = request.json_body()
        errors, warnings = self._validate_specification(spec)
        if errors:
            return Response.message(400, "Invalid REANA specification: " + "; ".join(errors))
        with self._lock:
            run_number = 1 + max(
                (wf.run_number for wf in self._workflows.values()
                 if wf.owner is user and wf.name == name),
                default=0,
            )
            workflow_id = str(uuid.uuid4())
            workspace = self.root / "workspaces" / user.id / workflow_id
            runtime = self.root / "runtime" / workflow_id
            workspace.mkdir(parents=True)
            runtime.mkdir(parents=True)
            wf = Workflow(
                id=workflow_id, name=name, run_number=run_number, owner=user, spec=spec,
                workspace=workspace, runtime=runtime, created=_now(), warnings=warnings,
            )
            self._workflows[workflow_id] = wf
            self.warnings.extend(f"{wf.full_name}: {warning}" for warning in warnings)
        return Response(201, {"message": "Workflow workspace created",
                              "workflow_id": workflow_id, "workflow_name": wf.full_name})

    def _workflow_summary(self, wf: Workflow, include_size: bool) -> dict[str, Any]:
        raw = _tree_size(wf.workspace) if include_size else -1
        return {
            "id": wf.id,
            "name": wf.full_name,
            "status": wf.status,
            "user": wf.owner.id,
            "launcher_url": None,
            "created": wf.created,
            "progress": wf.progress(),
            "size": {"raw": raw, "human_readable": _human_size(raw) if raw >= 0 else ""},
        }

    def _list(self, request: Request, user: User, _: dict[str, str]) -> Response:
        kind = request.arg("type")
        if kind not in ("batch", "interactive"):
            return Response.message(400, "Malformed request.")
        statuses = [s for value in request.query.get("status", []) for s in value.split(",") if s]
        if set(statuses) - set(RUN_STATUSES):
            return Response.message(400, "Malformed request.")
        search_text = request.arg("search")
        needle = None
        if search_text:
            try:
                search = json.loads(search_text)
                needle = str(search["name"][0]).lower()
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                return Response.message(400, "Malformed request.")
        wanted = request.arg("workflow_id_or_name")
        include_size = _truthy(request.arg("include_workspace_size")) or _truthy(
            request.arg("verbose"))
        with self._lock:
            runs = [wf for wf in self._workflows.values() if wf.owner is user]
            user_has_workflows = bool(runs)
            if kind == "interactive":
                runs = []
            if needle is not None:
                runs = [wf for wf in runs if needle in wf.name.lower()]
            if statuses:
                runs = [wf for wf in runs if wf.status in statuses]
            if wanted:
                # As RWC maint-0.9: a UUID selects one run, anything else is the bare name.
                runs = [wf for wf in runs if (wf.id == wanted.lower() if _UUID4.match(wanted)
                                              else wf.name == wanted)]
            descending = request.arg("sort") != "asc"
            runs.sort(key=lambda wf: (wf.created, wf.run_number), reverse=descending)
            items = [self._workflow_summary(wf, include_size) for wf in runs]
        page_body = _paginate(items, request.arg("page"), request.arg("size"))
        page_body["user_has_workflows"] = user_has_workflows
        return Response(200, page_body)

    def _get_status(self, request: Request, user: User, params: dict[str, str]) -> Response:
        found = self._find_workflow(user, params["workflow_id_or_name"])
        if isinstance(found, Response):
            return found
        with self._lock:
            return Response(200, {
                "id": found.id, "name": found.full_name, "created": found.created,
                "status": found.status, "user": found.owner.id, "logs": found.workflow_logs,
                "progress": found.progress(),
            })

    def _status_reply(self, wf: Workflow, message: str) -> Response:
        return Response(200, {"message": message, "workflow_id": wf.id,
                              "workflow_name": wf.full_name, "status": wf.status,
                              "user": wf.owner.id})

    def _set_status(self, request: Request, user: User, params: dict[str, str]) -> Response:
        target = request.arg("status")
        if target == "start":
            return self._start(request, user, params)
        found = self._find_workflow(user, params["workflow_id_or_name"])
        if isinstance(found, Response):
            return found
        body = request.json_body() or {}
        if target == "stop":
            with self._lock:
                if found.status != "running":
                    return Response.message(409, f"Workflow {found.id} is not running.")
                found.status = "stopped"
                found.run_stopped_at = _now()
                found.current_command = None
            self._kill(found)
            return self._status_reply(found, "Workflow successfully stopped.")
        if body.get("workspace") is False:
            return Response.message(400, "Parameter workspace must be true when deleting a "
                                         "workflow: workspaces are always deleted.")
        with self._lock:
            victims = [found]
            if body.get("all_runs"):
                victims = [wf for wf in self._workflows.values()
                           if wf.owner is user and wf.name == found.name]
            busy = [wf for wf in victims if wf.status in ("running", "pending")]
            if busy:
                return Response.message(
                    500, f"Workflow {busy[0].full_name} cannot be deleted as it is currently "
                    f"{busy[0].status}.")
            for wf in victims:
                wf.status = "deleted"
                shutil.rmtree(wf.workspace, ignore_errors=True)
        return self._status_reply(found, "Workflow successfully deleted.")

    def _start(self, request: Request, user: User, params: dict[str, str]) -> Response:
        found = self._find_workflow(user, params["workflow_id_or_name"])
        if isinstance(found, Response):
            return found
        body = request.json_body() or {}
        if body.get("restart"):
            return Response.message(501, "Restarting workflows is not supported by the REANA "
                                         "emulator.")
        kind = found.spec["workflow"]["type"]
        options = body.get("operational_options") or {}
        unsupported = sorted(set(options) - _OPERATIONAL_OPTIONS.get(kind, set()))
        if unsupported:
            return Response.message(
                400, f"Operational option(s) {', '.join(unsupported)} not supported for "
                f"{kind} workflows.")
        if kind not in ("serial", "cwl"):
            return Response.message(501, f"The REANA emulator cannot run {kind} workflows.")
        with self._lock:
            if found.status != "created":
                return Response.message(
                    403, f"Workflow {found.full_name} is already {found.status} and cannot be "
                    "started again.")
            found.input_parameters = dict(body.get("input_parameters") or {})
            found.operational_options = dict(options)
            found.status = "queued"
            found.thread = threading.Thread(target=self._run, args=(found,), daemon=True,
                                            name=f"reana-run-{found.full_name}")
            found.thread.start()
        return Response(200, {"message": "Workflow submitted.", "workflow_id": found.id,
                              "workflow_name": found.full_name, "status": "queued",
                              "run_number": found.run_number, "user": user.id})

    def _logs(self, request: Request, user: User, params: dict[str, str]) -> Response:
        found = self._find_workflow(user, params["workflow_id_or_name"])
        if isinstance(found, Response):
            return found
        steps = request.json_body() if request.body_size else None
        with self._lock:
            job_logs = {
                job.id: {
                    "workflow_uuid": found.id,
                    "job_name": job.name,
                    "compute_backend": "Kubernetes",
                    "backend_job_id": f"reana-run-job-{job.id}",
                    "docker_img": job.docker_img,
                    "cmd": job.command,
                    "status": job.status,
                    "logs": job.log_path.read_text(errors="replace")
                    if job.log_path.exists() else "",
                    "started_at": job.started_at,
                    "finished_at": job.finished_at,
                }
                for job in found.jobs
                if not steps or job.name in steps
            }
            logs = {"workflow_logs": found.workflow_logs, "job_logs": job_logs,
                    "engine_specific": None}
        return Response(200, {"workflow_id": found.id, "workflow_name": found.full_name,
                              "user": user.id, "logs": json.dumps(logs)})

    def _specification(self, request: Request, user: User, params: dict[str, str]) -> Response:
        found = self._find_workflow(user, params["workflow_id_or_name"])
        if isinstance(found, Response):
            return found
        return Response(200, {"specification": found.spec,
                              "parameters": found.input_parameters})

    def _parameters(self, request: Request, user: User, params: dict[str, str]) -> Response:
        found = self._find_workflow(user, params["workflow_id_or_name"])
        if isinstance(found, Response):
            return found
        parameters = dict((found.spec.get("inputs") or {}).get("parameters") or {})
        return Response(200, {"id": found.id, "name": found.full_name,
                              "type": found.spec["workflow"]["type"], "parameters": parameters})

    # -- handlers: workspace ------------------------------------------------------------------

    def _upload(self, request: Request, user: User, params: dict[str, str]) -> Response:
        found = self._find_workflow(user, params["workflow_id_or_name"])
        if isinstance(found, Response):
            return found
        file_name = request.arg("file_name") or ""
        target = self._workspace_path(found, file_name)
        if isinstance(target, Response):
            return target
        if found.status == "deleted":
            return Response.message(404, f"Workflow {found.full_name} has been deleted.")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.upload-{uuid.uuid4().hex[:8]}")
        request.body.seek(0)
        with partial.open("wb") as out:
            shutil.copyfileobj(request.body, out, _STREAM_CHUNK)
        partial.replace(target)
        shown = file_name.lstrip("/")
        return Response(200, {"message": f"{shown} has been successfully uploaded."})

    @staticmethod
    def _workspace_files(wf: Workflow) -> list[tuple[str, Path]]:
        if not wf.workspace.is_dir():
            return []
        return sorted(
            (path.relative_to(wf.workspace).as_posix(), path)
            for path in wf.workspace.rglob("*")
            if path.is_file() and not path.is_symlink()
        )

    def _list_workspace(self, request: Request, user: User, params: dict[str, str]) -> Response:
        found = self._find_workflow(user, params["workflow_id_or_name"])
        if isinstance(found, Response):
            return found
        files = self._workspace_files(found)
        wanted = (request.arg("file_name") or "").strip("/")
        if wanted:
            if (found.workspace / wanted).is_dir():
                files = [(name, path) for name, path in files
                         if name.startswith(wanted + "/")]
            else:
                matcher = _glob_regex(wanted)
                files = [(name, path) for name, path in files if matcher.match(name)]
        search_text = request.arg("search")
        if search_text:
            try:
                needle = str(json.loads(search_text)["name"][0])
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                return Response.message(400, "Malformed request.")
            files = [(name, path) for name, path in files if needle in name]
        listed = [(name, path.stat().st_size, path.stat().st_mtime) for name, path in files]
        with self._lock:
            listed += [(name, self._hostile_size, time.time()) for name in self._hostile_names]
        items = [{
            "name": name,
            "size": {"raw": size, "human_readable": _human_size(size)},
            "last-modified": datetime.fromtimestamp(mtime, timezone.utc).strftime(_TIME_FORMAT),
        } for name, size, mtime in listed]
        return Response(200, _paginate(items, request.arg("page"), request.arg("size")))

    def _download(self, request: Request, user: User, params: dict[str, str]) -> Response:
        found = self._find_workflow(user, params["workflow_id_or_name"])
        if isinstance(found, Response):
            return found
        wanted = params["file_name"]
        target = self._workspace_path(found, wanted)
        if isinstance(target, Response):
            return target
        missing = Response.message(404, f"{wanted} does not exist.")
        if target.is_file() and not any(char in wanted for char in "*?["):
            return Response(200, file=target, content_type="application/octet-stream",
                            headers={"Content-Disposition":
                                     f"attachment; filename={target.name}"})
        files = self._workspace_files(found)
        if target.is_dir():
            prefix = target.relative_to(found.workspace).as_posix() + "/"
            selected = [(name, path) for name, path in files if name.startswith(prefix)]
        elif any(char in wanted for char in "*?["):
            matcher = _glob_regex(wanted.strip("/"))
            selected = [(name, path) for name, path in files if matcher.match(name)]
        else:
            return missing
        if not selected:
            return missing
        # As RWC, the archive is assembled in memory before the reply starts.
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, path in selected:
                archive.write(path, name)
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", PurePosixPath(wanted.strip("/")).name) or "files"
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d-%H%M%S")
        zip_name = f"download_{found.full_name}_{base}_{stamp}.zip"
        return Response(200, raw=buffer.getvalue(), content_type="application/zip",
                        headers={"Content-Disposition": f"attachment; filename={zip_name}"})

    # -- handlers: secrets --------------------------------------------------------------------

    def _add_secrets(self, request: Request, user: User, _: dict[str, str]) -> Response:
        raw_overwrite = request.arg("overwrite")
        # reana-server runs json.loads on the raw value: None is a TypeError (500) and a
        # non-JSON word such as "True" a ValueError that its handler reports as a bad token.
        if raw_overwrite is None:
            return Response.message(
                500, "the JSON object must be str, bytes or bytearray, not NoneType")
        try:
            overwrite = bool(json.loads(raw_overwrite))
        except ValueError:
            return Response.message(403, "Token is not valid.")
        body = request.json_body()
        decoded: dict[str, tuple[str, bytes]] = {}
        for name, secret in body.items():
            try:
                value = base64.b64decode(str(secret.get("value", "")), validate=True)
            except (binascii.Error, ValueError) as exc:
                return Response.message(500, f"Secret {name}: value is not base64 ({exc}).")
            decoded[name] = (str(secret.get("type", "env")), value)
        with self._lock:
            if not overwrite:
                for name in decoded:
                    if name in user.secrets:
                        return Response.message(
                            409, f"Operation cancelled. Secret {name} already exists. If you "
                            "want to change it use overwrite.")
            user.secrets.update(decoded)
        return Response(201, {"message": "Secret(s) successfully added."})

    def _list_secrets(self, request: Request, user: User, _: dict[str, str]) -> Response:
        with self._lock:
            listing = [{"name": name, "type": kind}
                       for name, (kind, _value) in sorted(user.secrets.items())]
        return Response(200, listing)

    def _delete_secrets(self, request: Request, user: User, _: dict[str, str]) -> Response:
        names = request.json_body()
        with self._lock:
            missing = [name for name in names if name not in user.secrets]
            if missing:
                return Response(404, missing)
            for name in names:
                del user.secrets[name]
        return Response(200, list(names))

    # -- execution ----------------------------------------------------------------------------

    def _kill(self, wf: Workflow) -> None:
        process = wf.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def _job_environment(self, wf: Workflow, step: dict[str, Any], log: IO[str]) -> dict[str, str]:
        secrets_dir = wf.runtime / "secrets"
        shutil.rmtree(secrets_dir, ignore_errors=True)
        secrets_dir.mkdir(mode=0o700, parents=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(wf.runtime),
            "LANG": "C.UTF-8",
            "REANA_WORKSPACE": str(wf.workspace),
            "REANA_SECRETS_DIR": str(secrets_dir),
        }
        with self._lock:
            store = dict(wf.owner.secrets)
        for name, (kind, value) in store.items():
            if kind == "env":
                env[name] = os.fsdecode(value)
            else:
                path = secrets_dir / PurePosixPath(name).name
                path.write_bytes(value)
                path.chmod(0o600)
        if step.get("voms_proxy"):
            proxy_name = env.get("VOMSPROXY_FILE", "")
            proxy_file = secrets_dir / proxy_name if proxy_name else None
            if proxy_file is not None and proxy_file.is_file():
                cache = wf.runtime / "vomsproxy_cache"
                cache.mkdir(exist_ok=True)
                shutil.copyfile(proxy_file, cache / "x509up_proxy")
                (cache / "x509up_proxy").chmod(0o600)
                env["X509_USER_PROXY"] = str(cache / "x509up_proxy")
            else:
                # REANA's init container reports this and still exits 0; so does the emulator.
                log.write("[ERROR] VOMS proxy requested but no VOMSPROXY_FILE secret with a "
                          "matching file secret was found.\n")
        if step.get("rucio"):
            account = env.get("RUCIO_USERNAME")
            if account and "X509_USER_PROXY" in env:
                vo = env.get("VONAME", "atlas")
                default_host = ("https://voatlasrucio-server-prod.cern.ch" if vo == "atlas"
                                else f"https://{vo}-rucio.cern.ch")
                default_auth = ("https://voatlasrucio-auth-prod.cern.ch" if vo == "atlas"
                                else f"https://{vo}-rucio-auth.cern.ch")
                config = wf.runtime / "rucio_cache" / "rucio.cfg"
                config.parent.mkdir(exist_ok=True)
                config.write_text(
                    "[client]\n"
                    f"rucio_host = {env.get('RUCIO_RUCIO_HOST', default_host)}\n"
                    f"auth_host = {env.get('RUCIO_AUTH_HOST', default_auth)}\n"
                    f"account = {account}\n"
                    "auth_type = x509_proxy\n"
                    f"client_x509_proxy = {env['X509_USER_PROXY']}\n"
                    f"vo = {vo}\n"
                )
                env["RUCIO_CONFIG"] = str(config)
            else:
                log.write("[ERROR] Rucio requested but RUCIO_USERNAME or the VOMS proxy is "
                          "missing.\n")
        return env

    def _planned_jobs(self, wf: Workflow) -> list[tuple[dict[str, Any], str, str]]:
        """(step, job name, command) for every job of the run, parameters substituted."""
        spec = wf.spec
        parameters = dict((spec.get("inputs") or {}).get("parameters") or {})
        parameters.update(wf.input_parameters)
        if spec["workflow"]["type"] == "cwl":
            packed = wf.runtime / "workflow.json"
            packed.write_text(json.dumps(spec["workflow"]["specification"]))
            job_order = wf.runtime / "inputs.json"
            job_order.write_text(json.dumps(_absolute_locations(parameters, wf.workspace)))
            target = wf.operational_options.get("TARGET")
            entry = f"{packed}#{target}" if target else f"{packed}#main"
            command = (f"{shlex.quote(sys.executable)} -m cwltool --no-container --quiet "
                       f"--outdir outputs {shlex.quote(entry)} {shlex.quote(str(job_order))}")
            return [({"name": "cwltool", "environment": "cwltool"}, "cwltool", command)]
        steps = list(spec["workflow"]["specification"]["steps"])
        names = [str(step.get("name", "")) for step in steps]
        first = names.index(wf.operational_options["FROM"]) if (
            wf.operational_options.get("FROM") in names) else 0
        last = names.index(wf.operational_options["TARGET"]) + 1 if (
            wf.operational_options.get("TARGET") in names) else len(steps)
        values = {key: str(value) for key, value in parameters.items()}
        return [
            (step, str(step.get("name") or f"step{index}"),
             string.Template(command).safe_substitute(values))
            for index, step in enumerate(steps[first:last], start=first)
            for command in step["commands"]
        ]

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the emulator stops first; True when it stopped."""
        return self._shutdown.wait(seconds) if seconds > 0 else self._shutdown.is_set()

    def _run(self, wf: Workflow) -> None:
        try:
            self._execute(wf)
        except Exception:
            self.violations.append(f"run of {wf.full_name} crashed:\n{traceback.format_exc()}")
            with self._lock:
                wf.status = "failed"
                wf.run_finished_at = _now()

    def _execute(self, wf: Workflow) -> None:
        if self._wait(self.queue_delay):
            return
        with self._lock:
            if wf.status != "queued":
                return
            planned = self._planned_jobs(wf)
            wf.total_jobs = len(planned)
            wf.status = "running"
            wf.run_started_at = _now()
            wf.workflow_logs = f"Workflow {wf.full_name} started: {len(planned)} job(s).\n"
        outcome = "finished"
        for step, job_name, command in planned:
            job = Job(id=str(uuid.uuid4()), name=job_name, command=command,
                      docker_img=str(step.get("environment", "")),
                      log_path=wf.runtime / "logs" / f"{len(wf.jobs):04d}.log")
            job.log_path.parent.mkdir(exist_ok=True)
            with job.log_path.open("w") as log:
                env = self._job_environment(wf, step, log)
                log.flush()
                with self._lock:
                    if wf.status != "running" or self._shutdown.is_set():
                        outcome = wf.status
                        break
                    wf.jobs.append(job)
                    job.status = "running"
                    job.started_at = _now()
                    wf.current_command = command
                    wf.current_step_name = job_name
                    wf.process = subprocess.Popen(
                        ["bash", "-c", command], cwd=wf.workspace, env=env, stdout=log,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    process = wf.process
                exit_code = process.wait()
            with self._lock:
                job.finished_at = _now()
                wf.process = None
                if wf.status == "stopped" or self._shutdown.is_set():
                    job.status = "stopped"
                    outcome = "stopped"
                    break
                job.status = "finished" if exit_code == 0 else "failed"
                if exit_code != 0:
                    outcome = "failed"
                    wf.workflow_logs += f"Job {job_name} exited with code {exit_code}.\n"
                    break
        with self._lock:
            wf.current_command = None
            if wf.status == "running":
                wf.status = outcome
                wf.run_finished_at = _now()
                wf.workflow_logs += f"Workflow {wf.full_name} {outcome}.\n"


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "yes")


def _paginate(items: list[dict[str, Any]], page: str | None, size: str | None) -> dict[str, Any]:
    total = len(items)
    if size:
        number = max(int(page or 1), 1)
        per_page = max(int(size), 1)
        start = (number - 1) * per_page
        return {"items": items[start:start + per_page], "total": total, "page": number,
                "size": per_page, "has_next": start + per_page < total, "has_prev": number > 1}
    return {"items": items, "total": total, "page": 1, "size": total, "has_next": False,
            "has_prev": False}


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Glob over workspace paths: ``**`` crosses directories, ``*`` and ``?`` do not."""
    out = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
            continue
        if pattern.startswith("**", index):
            out += ".*"
            index += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        index += 1
    return re.compile(f"^{out}$")


def _tree_size(root: Path) -> int:
    if not root.is_dir():
        return 0
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def _absolute_locations(value: Any, base: Path) -> Any:
    """Resolve relative File/Directory locations of a CWL job object against the workspace."""
    if isinstance(value, dict):
        resolved = {key: _absolute_locations(item, base) for key, item in value.items()}
        if resolved.get("class") in ("File", "Directory"):
            for key in ("location", "path"):
                location = resolved.get(key)
                if isinstance(location, str) and "://" not in location and not (
                    location.startswith("/")
                ):
                    resolved[key] = str(base / location)
        return resolved
    if isinstance(value, list):
        return [_absolute_locations(item, base) for item in value]
    return value


# ---------------------------------------------------------------------------------------------
# HTTP transport


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "reana-emulator/0.9"

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes request lines, tokens included, to stderr.
        return

    def _read_body(self) -> tuple[IO[bytes], int]:
        # The caller closes the spool once the request is answered.
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_BODY_IN_MEMORY_MAX)  # noqa: SIM115
        size = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline()
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                spool.write(self.rfile.read(length))
                size += length
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                block = self.rfile.read(min(remaining, _STREAM_CHUNK))
                if not block:
                    break
                spool.write(block)
                size += len(block)
                remaining -= len(block)
        spool.seek(0)
        return spool, size

    def _serve(self) -> None:
        emulator: ReanaEmulator = self.server.emulator  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        body, size = self._read_body()
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={key.lower(): value for key, value in self.headers.items()},
            body=body,
            body_size=size,
        )
        try:
            response = emulator.handle(request)
        except _CloseWithoutReply as drop:
            if drop.wait_s:
                emulator._shutdown.wait(drop.wait_s)
            self._drop(reset=drop.reset)
            return
        finally:
            body.close()
        self._send(response)

    def _drop(self, reset: bool) -> None:
        self.close_connection = True
        if reset:
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        # The read buffer holds a reference to the socket; it must go for close() to be real.
        with contextlib.suppress(OSError):
            self.rfile.close()
        self.wfile = io.BytesIO()
        with contextlib.suppress(OSError):
            self.connection.close()

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(response.payload_size()))
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if response.file is not None:
                with response.file.open("rb") as stream:
                    if response.cut_at is None:
                        shutil.copyfileobj(stream, self.wfile, _STREAM_CHUNK)
                    else:
                        self.wfile.write(stream.read(response.cut_at))
            else:
                self.wfile.write(response.encoded()[: response.cut_at])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if response.cut_at is not None:
            # A plain close (FIN, not RST), so the client reads the part that was sent and
            # then finds the body shorter than its Content-Length.
            self._drop(reset=False)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()
