"""A small typed REST client for REANA 0.9 servers (requests + tenacity).

Speaks the 0.9 protocol only: the token goes as ``?access_token=`` on every call
but ``/api/ping``, and ``POST /api/workflows`` takes the whole (already packed)
reana.yaml as JSON.  ``detect_protocol`` refuses a 0.95 server clearly.

Retry policy (shared/reference/reana.md §11):

- idempotent calls (GETs, uploads, ``add_secrets`` with overwrite, deletes, stop)
  are retried with exponential backoff and jitter on connection errors, timeouts
  and HTTP 429/502/503/504; HTTP 500 is also retried, at most twice;
- ``create_workflow`` is never retried blindly, because a duplicate becomes
  ``NAME.N+1``: after an ambiguous failure it looks the name up and adopts the
  ``created`` run that appeared since the call, otherwise it creates again;
- ``start`` is retried, and a ``403 ... is already queued`` after an ambiguous
  failure means the earlier attempt worked.

Errors are ``ReanaError`` subclasses (``cwlbridge.errors.RemoteError``) with the
HTTP status, the server's message and the URL with ``access_token=***``.  The
token never appears in a log line, an error or a repr.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import time
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal, NoReturn

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from cwlbridge.errors import RemoteError, UsageError
from cwlbridge.reana.redact import install_log_redaction, redact, register_secret
from cwlbridge.transport import never_sent

log = logging.getLogger("cwlbridge.reana")

#: ping capability of servers that speak the 0.95 bundle protocol.
BUNDLES_CAPABILITY = "workflow-specification-bundles-v1"
#: Statuses after which a workflow will not change on its own.
TERMINAL_STATUSES: frozenset[str] = frozenset({"finished", "failed", "stopped", "deleted"})
#: Every status REANA 0.9 reports (reana_db RunStatus).
RUN_STATUSES: tuple[str, ...] = (
    "created",
    "queued",
    "pending",
    "running",
    "finished",
    "failed",
    "stopped",
    "deleted",
)
RETRY_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})
#: A GET answered 500 is retried at most this many times.
GET_500_RETRIES = 2
_DOWNLOAD_CHUNK = 1024 * 1024
_PAGE_SIZE = 200
# Uploads get extra read time in proportion to size: the server writes the body to disk
# before it answers.
_UPLOAD_BYTES_PER_SECOND = 5 * 1024 * 1024
_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I)
_ALREADY = re.compile(r"is already (\w+) and cannot be started again", re.I)
_TOKEN_MESSAGES = ("token not valid", "token revoked", "not signed in", "no active tokens")

Protocol = Literal["0.9"]


# --------------------------------------------------------------------------- errors


class ReanaError(RemoteError):
    """Any failed REANA call; ``status`` is None when no HTTP reply arrived."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str | None = None,
        hint: str | None = None,
        server_message: str | None = None,
    ):
        super().__init__(redact(message), status=status, url=redact(url) if url else url, hint=hint)
        self.server_message = redact(server_message) if server_message else server_message


class ReanaAuthError(ReanaError):
    """The token is missing, unknown or revoked (401, or 403 about the token)."""


class ReanaNotFoundError(ReanaError):
    """The workflow, file or secret does not exist (404)."""


class ReanaConflictError(ReanaError):
    """The request conflicts with the current state (409)."""


class ReanaRejectedError(ReanaError):
    """The server refused the request (other 4xx: bad spec, quota, illegal name)."""


class ReanaAlreadyStartedError(ReanaRejectedError):
    """``start`` on a workflow that is no longer ``created``; ``run_status`` says what it is."""

    def __init__(self, message: str, *, run_status: str, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.run_status = run_status


class ReanaServerError(ReanaError):
    """The server failed (5xx) and retrying did not help or was not allowed."""


class ReanaUnavailableError(ReanaError):
    """No usable reply after all retries: connection errors, timeouts, 429/502/503/504."""


class ReanaProtocolError(ReanaError):
    """The server does not speak REANA 0.9 as cwlbridge expects (incl. 0.95 servers)."""


class ReanaDownloadError(ReanaError):
    """A download was refused or did not match the workspace listing."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CreatedWorkflow:
    """A workflow created by ``create_workflow``; ``name`` is the full ``NAME.N``."""

    id: str
    name: str
    adopted: bool = False  #: True when an ambiguous failure was reconciled by lookup


@dataclass(frozen=True)
class WorkflowSummary:
    """One run as listed by ``GET /api/workflows``."""

    id: str
    name: str
    status: str
    created: str | None = None

    @property
    def base_name(self) -> str:
        """The name without the run number (names cannot contain dots)."""
        return self.name.split(".", 1)[0]

    @property
    def run_number(self) -> str:
        """``N`` or ``N.M`` (restarts), for display only."""
        return self.name.split(".", 1)[1] if "." in self.name else ""


@dataclass(frozen=True)
class StartResult:
    """The reply to ``start``; ``already_started`` when a retry found it running."""

    workflow_id: str
    workflow_name: str
    status: str
    run_number: str | None = None
    already_started: bool = False


@dataclass(frozen=True)
class WorkflowStatus:
    """``GET /api/workflows/{id}/status``, with the progress counters flattened."""

    id: str
    name: str
    status: str
    created: str | None
    run_started_at: str | None
    run_finished_at: str | None
    run_stopped_at: str | None
    current_step_name: str | None
    current_command: str | None
    total_jobs: int
    running_jobs: int
    finished_jobs: int
    failed_jobs: int
    logs: str | None = field(default=None, repr=False)
    progress: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_terminal(self) -> bool:
        """True for finished, failed, stopped and deleted."""
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        """True only for ``finished``."""
        return self.status == "finished"


@dataclass(frozen=True)
class WorkspaceFile:
    """One workspace file; ``size`` in bytes."""

    name: str
    size: int
    last_modified: str | None = None


@dataclass(frozen=True)
class SecretInfo:
    """A secret as listed by the server (values are never returned)."""

    name: str
    type: str


@dataclass(frozen=True)
class UserInfo:
    """``GET /api/you`` without the token it echoes."""

    email: str
    username: str | None
    full_name: str | None
    server_version: str | None
    quota: Mapping[str, Any] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- download sinks


class DownloadSink(typing.Protocol):
    """Where ``ReanaClient.stream_file`` puts the bytes of one workspace file."""

    def write(self, data: bytes, /) -> object:
        """Take the next chunk."""

    def restart(self) -> None:
        """Drop everything written so far: the transfer starts again from the first byte."""


class PartFile:
    """A download sink writing ``dest.part``, which ``commit`` renames to ``dest``.

    A context manager: leaving it without ``commit`` (an error) removes the part file,
    so ``dest`` only ever appears complete.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        self.partial = self.dest.with_name(self.dest.name + ".part")
        self._out: IO[bytes] | None = None
        self._committed = False

    def __enter__(self) -> PartFile:
        self._out = self.partial.open("wb")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._out is not None:
            self._out.close()
        if not self._committed:
            self.partial.unlink(missing_ok=True)

    def _handle(self) -> IO[bytes]:
        if self._out is None:
            raise RuntimeError("PartFile is used outside its with block")
        return self._out

    def write(self, data: bytes, /) -> object:
        return self._handle().write(data)

    def restart(self) -> None:
        out = self._handle()
        out.seek(0)
        out.truncate()

    def commit(self) -> None:
        """Close the part file and rename it to ``dest``."""
        self._handle().close()
        self._out = None
        os.replace(self.partial, self.dest)
        self._committed = True


# --------------------------------------------------------------------------- internals


class _TransportFailure(Exception):
    """No HTTP reply; ``unsent`` when the request certainly did not reach the server."""

    def __init__(self, text: str, *, unsent: bool):
        super().__init__(text)
        self.text = text
        self.unsent = unsent


class _RetryableStatus(Exception):
    def __init__(self, response: requests.Response):
        super().__init__(response.status_code)
        self.response = response
        header = response.headers.get("Retry-After", "")
        self.retry_after: float | None = float(header) if header.strip().isdigit() else None


RetryMode = Literal["idempotent", "unsent_only", "never"]


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _server_message(response: requests.Response) -> str:
    body = _json_or_none(response)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    if isinstance(body, list):
        return ", ".join(str(item) for item in body)
    text = response.text.strip() if response.content else ""
    return text[:300] if text else response.reason or f"HTTP {response.status_code}"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _job_count(progress: Mapping[str, Any], key: str) -> int:
    entry = progress.get(key)
    if isinstance(entry, Mapping):
        return _int(entry.get("total"))
    return _int(entry)


def check_relative_path(path: str, what: str = "path") -> str:
    """Return a workspace path in POSIX form; refuse absolute, empty or ``..`` paths."""
    text = str(path).replace("\\", "/")
    posix = PurePosixPath(text)
    if not text or text.strip() in ("", "."):
        raise ReanaDownloadError(f"{what} is empty")
    if posix.is_absolute() or re.match(r"^[A-Za-z]:/", text):
        raise ReanaDownloadError(f"{what} {path!r} is absolute; workspace paths are relative")
    if ".." in posix.parts:
        raise ReanaDownloadError(f"{what} {path!r} contains '..'")
    return posix.as_posix()


def safe_workflow_name(text: str, *, max_length: int = 60) -> str:
    """A legal REANA workflow name for ``text`` (dots, colons etc. replaced).

    REANA names must be ASCII, contain no ``.`` and not be a UUID.  A short hash of
    the original keeps names unique when the cleaned form is truncated or collides.
    """
    import hashlib

    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", text).strip("-") or "workflow"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    if cleaned == text and len(cleaned) <= max_length and not _UUID4.match(cleaned):
        return cleaned
    return f"{cleaned[: max(1, max_length - 9)]}-{digest}"


# --------------------------------------------------------------------------- client


class ReanaClient:
    """A REANA 0.9 REST client bound to one server and one access token.

    ``ca_bundle`` is passed to requests as ``verify=``; TLS is verified by default.
    ``max_attempts`` bounds every retried call; waits grow exponentially from
    ``backoff_initial`` up to ``backoff_max`` seconds, with jitter.
    """

    def __init__(
        self,
        server_url: str,
        access_token: str,
        *,
        ca_bundle: str | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_attempts: int = 6,
        backoff_max: float = 30,
        backoff_initial: float = 0.5,
    ) -> None:
        url = server_url.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise UsageError(f"REANA server URL {redact(server_url)!r} must start with https:// (or http://)")
        if not access_token or not access_token.strip():
            raise UsageError("a REANA access token is required (REANA_ACCESS_TOKEN)")
        if ca_bundle is not None and not Path(ca_bundle).exists():
            raise UsageError(f"CA bundle {ca_bundle} does not exist (REANA_CA_BUNDLE)")
        if max_attempts < 1:
            raise UsageError("max_attempts must be at least 1")
        register_secret(access_token)
        install_log_redaction()
        self.server_url = url
        self.__token = access_token.strip()
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        #: Items asked for per page when listing workflows or workspace files.
        self.page_size = _PAGE_SIZE
        self._session = requests.Session()
        self._session.verify = ca_bundle if ca_bundle is not None else True
        self._session.headers["User-Agent"] = "cwlbridge-reana-client"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> ReanaClient:
        """Build a client from ``REANA_SERVER_URL``, ``REANA_ACCESS_TOKEN``, ``REANA_CA_BUNDLE``."""
        env = os.environ if environ is None else environ
        url = env.get("REANA_SERVER_URL", "")
        token = env.get("REANA_ACCESS_TOKEN", "")
        if not url:
            raise UsageError("REANA_SERVER_URL is not set")
        if not token:
            raise UsageError("REANA_ACCESS_TOKEN is not set")
        kwargs.setdefault("ca_bundle", env.get("REANA_CA_BUNDLE") or None)
        return cls(url, token, **kwargs)

    def __repr__(self) -> str:
        return f"ReanaClient({self.server_url!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def __enter__(self) -> ReanaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- transport

    def _delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with jitter; ``attempt`` counts from 1."""
        ceiling = min(self.backoff_max, self.backoff_initial * (2.0 ** (attempt - 1)))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _tenacity_wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = exc.retry_after if isinstance(exc, _RetryableStatus) else None
        return self._delay(state.attempt_number, retry_after)

    def _retry_logger(self, what: str) -> Callable[[RetryCallState], None]:
        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            reason = str(exc)
            if isinstance(exc, _RetryableStatus):
                reason = f"HTTP {exc.response.status_code}"
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "%s failed (%s); retrying in %.1f s (attempt %d of %d)",
                what,
                reason,
                wait,
                state.attempt_number + 1,
                self.max_attempts,
            )

        return log_retry

    def _url(self, path: str) -> str:
        return self.server_url + path

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        auth: bool = True,
        json_body: Any = None,
        body: Callable[[], IO[bytes]] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        read_timeout: float | None = None,
    ) -> requests.Response:
        """One HTTP exchange; transport failures become ``_TransportFailure``."""
        query = dict(params or {})
        if auth:
            query["access_token"] = self.__token
        timeout = (self.timeout[0], read_timeout or self.timeout[1])
        failure: _TransportFailure | None = None
        handle = body() if body is not None else None
        started = time.monotonic()
        try:
            kwargs: dict[str, Any] = {
                "params": query,
                "headers": dict(headers or {}),
                "timeout": timeout,
                "stream": stream,
            }
            if json_body is not None:
                kwargs["json"] = json_body
            if handle is not None:
                kwargs["data"] = handle
            response = self._session.request(method, self._url(path), **kwargs)
        except requests.RequestException as exc:
            # Built outside the except block's chain: the original text holds the token.
            failure = _TransportFailure(redact(f"{type(exc).__name__}: {exc}"), unsent=never_sent(exc))
        finally:
            if handle is not None:
                handle.close()
        if failure is not None:
            log.debug("%s %s failed: %s", method, path, failure.text)
            raise failure
        log.debug(
            "%s %s -> %d (%.2f s)",
            method,
            redact(response.url),
            response.status_code,
            time.monotonic() - started,
        )
        return response

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        ok: Collection[int] = (200,),
        passthrough: Collection[int] = (),
        retry: RetryMode = "idempotent",
        **send: Any,
    ) -> requests.Response:
        """Send with the retry policy; return a response in ``ok``/``passthrough`` or raise."""
        server_errors = 0

        def attempt() -> requests.Response:
            nonlocal server_errors
            try:
                response = self._send(method, path, **send)
            except _TransportFailure as failure:
                if retry == "idempotent" or (retry == "unsent_only" and failure.unsent):
                    raise
                raise _NotRetried(failure) from None
            status = response.status_code
            if status in ok or status in passthrough:
                return response
            if retry == "never":
                return response
            if status == 429 or (retry == "idempotent" and status in RETRY_STATUSES):
                raise _RetryableStatus(response)
            if retry == "idempotent" and status == 500:
                server_errors += 1
                if server_errors <= GET_500_RETRIES:
                    raise _RetryableStatus(response)
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._tenacity_wait,
            retry=retry_if_exception_type((_TransportFailure, _RetryableStatus)),
            before_sleep=self._retry_logger(what),
            reraise=True,
        )
        final: requests.Response | None = None
        failure: _TransportFailure | None = None
        try:
            final = retrying(attempt)
        except _RetryableStatus as exc:
            final = exc.response
        except _TransportFailure as exc:
            failure = exc
        except _NotRetried as exc:
            failure = exc.failure
        if failure is not None:
            raise ReanaUnavailableError(
                f"{what}: no reply from REANA: {failure.text}",
                url=self._url(path),
                hint="check the server URL, the network and REANA's status; the call was retried with backoff",
            )
        assert final is not None
        if final.status_code in ok or final.status_code in passthrough:
            return final
        self._raise_for(final, what)

    def _raise_for(self, response: requests.Response, what: str) -> NoReturn:
        status = response.status_code
        message = _server_message(response)
        text = f"{what}: {message}"
        url = redact(response.url)
        lowered = message.lower()
        kind: type[ReanaError]
        hint: str | None = None
        if status == 401 or (status == 403 and any(m in lowered for m in _TOKEN_MESSAGES)):
            kind = ReanaAuthError
            hint = "check REANA_ACCESS_TOKEN; get a fresh token from the REANA web UI"
        elif status == 404:
            kind = ReanaNotFoundError
        elif status == 409:
            kind = ReanaConflictError
        elif status in RETRY_STATUSES:
            kind = ReanaUnavailableError
            hint = "the server is overloaded or down; try again later"
        elif status >= 500:
            kind = ReanaServerError
        elif 400 <= status < 500:
            kind = ReanaRejectedError
        else:
            kind = ReanaProtocolError
            text = f"{what}: unexpected HTTP {status}: {message}"
        raise kind(text, status=status, url=url, hint=hint, server_message=message)

    def _json(self, response: requests.Response, what: str) -> Any:
        body = _json_or_none(response)
        if body is None:
            raise ReanaProtocolError(
                f"{what}: the reply is not JSON (is this a REANA server?)",
                status=response.status_code,
                url=response.url,
            )
        return body

    def _json_dict(self, response: requests.Response, what: str) -> dict[str, Any]:
        body = self._json(response, what)
        if not isinstance(body, dict):
            raise ReanaProtocolError(
                f"{what}: expected a JSON object, got {type(body).__name__}",
                status=response.status_code,
                url=response.url,
            )
        return body

    @staticmethod
    def _wf(wf_id: str) -> str:
        from urllib.parse import quote

        if not wf_id:
            raise UsageError("a workflow id is required")
        return quote(wf_id, safe="")

    # ---------------------------------------------------------------- server and account

    def ping(self) -> dict[str, Any]:
        """``GET /api/ping`` without authentication; the server's reply."""
        response = self._call("GET", "/api/ping", what="ping", auth=False)
        return self._json_dict(response, "ping")

    def detect_protocol(self) -> Protocol:
        """Return ``"0.9"``, or raise ``ReanaProtocolError`` for a 0.95 (bundle) server.

        Decided by the ``api_capabilities`` of ``/api/ping`` (never by version strings).
        """
        body = self.ping()
        capabilities = body.get("api_capabilities") or []
        if isinstance(capabilities, list) and BUNDLES_CAPABILITY in capabilities:
            version = body.get("reana_server_version") or "0.95"
            raise ReanaProtocolError(
                f"the REANA server at {self.server_url} (version {version}) speaks the 0.95 "
                "bundle protocol (workflow-specification-bundles-v1), which cwlbridge does "
                "not yet support; cwlbridge speaks REANA 0.9 only",
                hint="use a REANA 0.9 server, or reana-client 0.95 for this one",
            )
        return "0.9"

    def you(self) -> UserInfo:
        """``GET /api/you``: who the token belongs to (checks the token works)."""
        body = self._json_dict(self._call("GET", "/api/you", what="get user"), "get user")
        return UserInfo(
            email=str(body.get("email", "")),
            username=body.get("username"),
            full_name=body.get("full_name"),
            server_version=body.get("reana_server_version"),
            quota=dict(body.get("quota") or {}),
        )

    # ---------------------------------------------------------------- workflows

    def _list_pages(self, params: Mapping[str, str], what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            query = {**params, "page": str(page), "size": str(self.page_size)}
            body = self._json_dict(self._call("GET", "/api/workflows", what=what, params=query), what)
            chunk = body.get("items")
            if not isinstance(chunk, list):
                raise ReanaProtocolError(f"{what}: the reply has no 'items' list")
            items.extend(item for item in chunk if isinstance(item, dict))
            total = _int(body.get("total"))
            if not chunk or len(items) >= total or len(chunk) < self.page_size:
                return items
            page += 1

    @staticmethod
    def _summary(item: Mapping[str, Any]) -> WorkflowSummary:
        return WorkflowSummary(
            id=str(item.get("id", "")),
            name=str(item.get("name", "")),
            status=str(item.get("status", "")),
            created=item.get("created"),
        )

    def list_workflows(
        self,
        *,
        status: Iterable[str] | None = None,
        name_contains: str | None = None,
        workflow_id_or_name: str | None = None,
    ) -> list[WorkflowSummary]:
        """All batch workflows of the user (all pages), newest first.

        ``status`` filters by run status, ``name_contains`` by substring of the name
        (REANA's ``search``), ``workflow_id_or_name`` by UUID or bare name.
        """
        params = {"type": "batch", "sort": "desc"}
        statuses = list(status or [])
        if statuses:
            params["status"] = ",".join(statuses)
        if name_contains:
            params["search"] = json.dumps({"name": [name_contains]})
        if workflow_id_or_name:
            params["workflow_id_or_name"] = workflow_id_or_name
        items = self._list_pages(params, "list workflows")
        return [self._summary(item) for item in items]

    def find_workflows(self, name: str) -> list[WorkflowSummary]:
        """Every run whose bare name is exactly ``name`` (any run number), newest first."""
        runs = self.list_workflows(workflow_id_or_name=name)
        return [run for run in runs if run.base_name == name]

    def create_workflow(self, name: str, spec_dict: Mapping[str, Any]) -> CreatedWorkflow:
        """``POST /api/workflows``: create a workflow from an already built spec.

        ``spec_dict`` is ``spec.build_submission``'s result.  Never retried blindly:
        after an ambiguous failure (timeout, reset, 5xx) the runs of ``name`` are
        listed and a ``created`` run that was not there before the call is adopted;
        only when none exists is the create sent again.  Use a name unique per
        attempt, so a run created by someone else cannot be mistaken for ours.
        """
        if not name or "." in name or not name.isascii() or _UUID4.match(name):
            raise UsageError(
                f"workflow name {name!r} is not valid for REANA (ASCII, no '.', not a UUID)",
                hint="see reana.client.safe_workflow_name",
            )
        what = f"create workflow {name!r}"
        before = {run.id for run in self.find_workflows(name)}
        last_problem = "no attempt made"
        last_status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                time.sleep(self._delay(attempt - 1))
            ambiguous = False
            try:
                response = self._send(
                    "POST", "/api/workflows", params={"workflow_name": name}, json_body=dict(spec_dict)
                )
            except _TransportFailure as failure:
                last_problem, last_status = failure.text, None
                ambiguous = not failure.unsent
            else:
                status = response.status_code
                if status == 201:
                    body = self._json_dict(response, what)
                    created = CreatedWorkflow(id=str(body["workflow_id"]), name=str(body.get("workflow_name", name)))
                    log.info("created REANA workflow %s (%s)", created.name, created.id)
                    return created
                if status == 429 or status in (500, 502, 503, 504):
                    last_problem, last_status = f"HTTP {status}: {_server_message(response)}", status
                    ambiguous = status != 429
                else:
                    self._raise_for(response, what)
            if ambiguous:
                adopted = self._adopt_created(name, before)
                if adopted is not None:
                    return adopted
            log.warning(
                "%s failed (%s); trying again (attempt %d of %d)",
                what,
                last_problem,
                attempt + 1,
                self.max_attempts,
            )
        kind = (
            ReanaServerError if last_status is not None and last_status not in RETRY_STATUSES else ReanaUnavailableError
        )
        raise kind(
            f"{what}: failed after {self.max_attempts} attempts: {last_problem}",
            status=last_status,
            url=self._url("/api/workflows"),
        )

    def _adopt_created(self, name: str, before: set[str]) -> CreatedWorkflow | None:
        fresh = [run for run in self.find_workflows(name) if run.id not in before and run.status == "created"]
        if not fresh:
            return None
        fresh.sort(key=lambda run: (run.created or "", run.name))
        chosen = fresh[0]
        if len(fresh) > 1:
            log.warning(
                "found %d new runs of %s after failed creates; using %s",
                len(fresh),
                name,
                chosen.name,
            )
        log.info("adopted REANA workflow %s (%s) after an ambiguous create", chosen.name, chosen.id)
        return CreatedWorkflow(id=chosen.id, name=chosen.name, adopted=True)

    def upload_file(self, wf_id: str, rel_path: str, local_path: str | Path) -> None:
        """Upload one file to the workspace at ``rel_path`` (streamed, overwriting)."""
        target = check_relative_path(rel_path, "upload path")
        local = Path(local_path)
        try:
            size = local.stat().st_size
        except OSError as exc:
            raise UsageError(f"cannot upload {local}: {exc.strerror or exc}") from None
        if not local.is_file():
            raise UsageError(f"cannot upload {local}: not a regular file")
        self._call(
            "POST",
            f"/api/workflows/{self._wf(wf_id)}/workspace",
            what=f"upload {target}",
            params={"file_name": target},
            body=lambda: local.open("rb"),
            headers={"Content-Type": "application/octet-stream"},
            read_timeout=self.timeout[1] + size / _UPLOAD_BYTES_PER_SECOND,
        )

    def start(
        self,
        wf_id: str,
        input_parameters: Mapping[str, Any] | None = None,
        operational_options: Mapping[str, Any] | None = None,
    ) -> StartResult:
        """``POST /start``; a retry answered "already queued/running/..." counts as started.

        A first attempt answered that way raises ``ReanaAlreadyStartedError`` (someone
        else started it), whose ``run_status`` tells the caller what it is now.
        """
        path = f"/api/workflows/{self._wf(wf_id)}/start"
        what = f"start workflow {wf_id}"
        body = {
            "input_parameters": dict(input_parameters or {}),
            "operational_options": dict(operational_options or {}),
        }
        ambiguous_before = False
        last_problem = ""
        last_status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                time.sleep(self._delay(attempt - 1))
            try:
                response = self._send("POST", path, json_body=body)
            except _TransportFailure as failure:
                last_problem, last_status = failure.text, None
                ambiguous_before = ambiguous_before or not failure.unsent
                continue
            status = response.status_code
            if status == 200:
                reply = self._json_dict(response, what)
                return StartResult(
                    workflow_id=str(reply.get("workflow_id", wf_id)),
                    workflow_name=str(reply.get("workflow_name", "")),
                    status=str(reply.get("status", "queued")),
                    run_number=None if reply.get("run_number") is None else str(reply["run_number"]),
                )
            message = _server_message(response)
            already = _ALREADY.search(message) if status in (403, 409) else None
            if already:
                if ambiguous_before:
                    log.info("start of %s was retried and the workflow is %s: started", wf_id, already.group(1))
                    return StartResult(
                        workflow_id=wf_id, workflow_name="", status=already.group(1), already_started=True
                    )
                raise ReanaAlreadyStartedError(
                    f"{what}: {message}",
                    run_status=already.group(1),
                    status=status,
                    url=response.url,
                    server_message=message,
                )
            if status in RETRY_STATUSES or status == 500:
                last_problem, last_status = f"HTTP {status}: {message}", status
                ambiguous_before = ambiguous_before or status != 429
                if status == 500 and attempt > GET_500_RETRIES:
                    self._raise_for(response, what)
                log.warning("%s failed (%s); retrying", what, last_problem)
                continue
            self._raise_for(response, what)
        kind = ReanaUnavailableError if last_status in (None, *RETRY_STATUSES) else ReanaServerError
        raise kind(
            f"{what}: failed after {self.max_attempts} attempts: {last_problem}",
            status=last_status,
            url=self._url(path),
        )

    def status(self, wf_id: str) -> WorkflowStatus:
        """``GET /status`` of one workflow."""
        what = f"get status of {wf_id}"
        body = self._json_dict(self._call("GET", f"/api/workflows/{self._wf(wf_id)}/status", what=what), what)
        progress = body.get("progress") if isinstance(body.get("progress"), dict) else {}
        assert isinstance(progress, dict)
        return WorkflowStatus(
            id=str(body.get("id", wf_id)),
            name=str(body.get("name", "")),
            status=str(body.get("status", "")),
            created=body.get("created"),
            run_started_at=progress.get("run_started_at"),
            run_finished_at=progress.get("run_finished_at"),
            run_stopped_at=progress.get("run_stopped_at"),
            current_step_name=progress.get("current_step_name"),
            current_command=progress.get("current_command"),
            total_jobs=_job_count(progress, "total"),
            running_jobs=_job_count(progress, "running"),
            finished_jobs=_job_count(progress, "finished"),
            failed_jobs=_job_count(progress, "failed"),
            logs=body.get("logs"),
            progress=progress,
        )

    def specification(self, wf_id: str) -> dict[str, Any]:
        """``GET /specification``: ``{specification, parameters}`` as the server stored them."""
        what = f"get specification of {wf_id}"
        return self._json_dict(self._call("GET", f"/api/workflows/{self._wf(wf_id)}/specification", what=what), what)

    def logs(self, wf_id: str) -> dict[str, Any]:
        """``GET /logs``, with the ``logs`` string decoded a second time.

        Returns ``{workflow_logs, job_logs: {job_id: {...}}, engine_specific}``; a
        ``logs`` value that is not JSON comes back as ``workflow_logs``.
        """
        what = f"get logs of {wf_id}"
        body = self._json_dict(self._call("GET", f"/api/workflows/{self._wf(wf_id)}/logs", what=what), what)
        raw = body.get("logs")
        if isinstance(raw, dict):
            return raw
        if isinstance(raw, str):
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                return decoded
        return {"workflow_logs": raw, "job_logs": {}, "engine_specific": None}

    def stop(self, wf_id: str) -> bool:
        """Stop a running workflow; False when it was not running (409), which is fine."""
        response = self._call(
            "PUT",
            f"/api/workflows/{self._wf(wf_id)}/status",
            what=f"stop workflow {wf_id}",
            params={"status": "stop"},
            json_body={},
            passthrough=(409,),
        )
        if response.status_code == 409:
            log.info("workflow %s was not running; nothing to stop", wf_id)
            return False
        return True

    def delete(self, wf_id: str) -> None:
        """Delete a workflow and its workspace; only after it is terminal (else HTTP 500)."""
        try:
            self._call(
                "PUT",
                f"/api/workflows/{self._wf(wf_id)}/status",
                what=f"delete workflow {wf_id}",
                params={"status": "deleted"},
                json_body={"all_runs": False, "workspace": True},
            )
        except ReanaServerError as exc:
            exc.hint = "REANA cannot delete a running workflow; stop it first and wait"
            raise

    # ---------------------------------------------------------------- workspace

    def list_workspace(self, wf_id: str, file_name: str | None = None) -> list[WorkspaceFile]:
        """Files in the workspace (all pages); ``file_name`` is a directory or glob."""
        what = f"list workspace of {wf_id}"
        files: list[WorkspaceFile] = []
        page = 1
        while True:
            params = {"page": str(page), "size": str(self.page_size)}
            if file_name:
                params["file_name"] = file_name
            response = self._call("GET", f"/api/workflows/{self._wf(wf_id)}/workspace", what=what, params=params)
            body = self._json_dict(response, what)
            chunk = body.get("items")
            if not isinstance(chunk, list):
                raise ReanaProtocolError(f"{what}: the reply has no 'items' list")
            for item in chunk:
                if not isinstance(item, dict):
                    continue
                size = item.get("size")
                raw = size.get("raw") if isinstance(size, dict) else size
                files.append(WorkspaceFile(str(item.get("name", "")), _int(raw), item.get("last-modified")))
            total = _int(body.get("total"))
            if not chunk or len(files) >= total or len(chunk) < self.page_size:
                return files
            page += 1

    def download_file(self, wf_id: str, path: str, dest: Path, expected_size: int | None) -> int:
        """Stream one workspace file to ``dest``; return its size in bytes.

        Written to ``dest.part`` and renamed into place only when complete and, if
        given, of ``expected_size`` bytes.  Refusals and retries as ``stream_file``.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with PartFile(dest) as out:
            written = self.stream_file(wf_id, path, out, expected_size)
            out.commit()
        log.debug("downloaded %s (%d bytes) to %s", path, written, dest)
        return written

    def stream_file(self, wf_id: str, path: str, sink: DownloadSink, expected_size: int | None) -> int:
        """Stream one workspace file into ``sink`` chunk by chunk; return its size in bytes.

        Server paths that are absolute, contain ``..`` or globs are refused before any
        request, and so is a zip the server builds for a directory.  A transfer broken
        by a transport error is retried from the first byte, after ``sink.restart()``.
        With ``expected_size`` (from ``list_workspace``) a longer body is refused as soon
        as it exceeds it and a shorter one at the end (``ReanaDownloadError``).
        """
        from urllib.parse import quote

        rel = check_relative_path(path, "download path")
        if any(char in rel for char in "*?["):
            raise ReanaDownloadError(f"download path {path!r} is a glob; list the files and fetch each")
        url_path = f"/api/workflows/{self._wf(wf_id)}/workspace/{quote(rel, safe='/')}"
        what = f"download {rel}"

        def size_error(written: int) -> ReanaDownloadError:
            return ReanaDownloadError(
                f"{what}: got {written} bytes but the workspace listing says {expected_size}; "
                "the file changed or the transfer is broken",
                url=self._url(url_path),
            )

        attempts = 0

        def fetch() -> int:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                sink.restart()
            response = self._call("GET", url_path, what=what, stream=True)
            try:
                content_type = response.headers.get("Content-Type", "")
                if content_type.startswith("application/zip") and not rel.lower().endswith(".zip"):
                    raise ReanaDownloadError(
                        f"{what}: the server sent a zip archive, so {rel!r} is a directory or "
                        "matched several files; download files one by one",
                        status=response.status_code,
                        url=response.url,
                    )
                written = 0
                failure: _TransportFailure | None = None
                try:
                    for chunk in response.iter_content(_DOWNLOAD_CHUNK):
                        written += len(chunk)
                        if expected_size is not None and written > expected_size:
                            raise size_error(written)
                        sink.write(chunk)
                except requests.RequestException as exc:
                    failure = _TransportFailure(redact(f"{type(exc).__name__}: {exc}"), unsent=False)
                if failure is not None:
                    raise failure
                announced = response.headers.get("Content-Length", "")
                if announced.isdigit() and int(announced) != written:
                    raise _TransportFailure(f"got {written} of {announced} bytes", unsent=False)
                return written
            finally:
                response.close()

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._tenacity_wait,
            retry=retry_if_exception_type(_TransportFailure),
            before_sleep=self._retry_logger(what),
            reraise=True,
        )
        try:
            written = retrying(fetch)
        except _TransportFailure as failure:
            raise ReanaUnavailableError(f"{what}: {failure.text}", url=self._url(url_path)) from None
        if expected_size is not None and written != expected_size:
            raise size_error(written)
        return written

    # ---------------------------------------------------------------- secrets

    def add_secrets(self, secrets: Mapping[str, tuple[str, bytes]], overwrite: bool = True) -> None:
        """``POST /api/secrets/``: store ``{name: (type, raw bytes)}`` (type env or file).

        Values are sent base64-encoded; ``overwrite`` goes as the string "true"/"false"
        (anything else makes REANA 0.9 answer 500 or a misleading 403).  All or
        nothing: with ``overwrite=False`` an existing name raises ``ReanaConflictError``.
        """
        payload: dict[str, dict[str, str]] = {}
        for name, (kind, value) in secrets.items():
            if kind not in ("env", "file"):
                raise UsageError(f"secret {name}: type must be 'env' or 'file'")
            payload[name] = {"value": base64.b64encode(bytes(value)).decode("ascii"), "type": kind}
        if not payload:
            return
        self._call(
            "POST",
            "/api/secrets/",
            what="add secrets " + ", ".join(sorted(payload)),
            ok=(200, 201),
            params={"overwrite": "true" if overwrite else "false"},
            json_body=payload,
            retry="idempotent" if overwrite else "unsent_only",
        )

    def list_secrets(self) -> list[SecretInfo]:
        """``GET /api/secrets``: names and types of the user's secrets."""
        body = self._json(self._call("GET", "/api/secrets", what="list secrets"), "list secrets")
        if not isinstance(body, list):
            raise ReanaProtocolError("list secrets: expected a JSON list")
        return [
            SecretInfo(str(item.get("name", "")), str(item.get("type", ""))) for item in body if isinstance(item, dict)
        ]

    def delete_secrets(self, names: Iterable[str]) -> list[str]:
        """Delete secrets by name; return the names that did not exist.

        REANA answers 404 with a bare JSON list of the missing names and deletes
        nothing then, so the names that do exist are deleted in a second call.
        """
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return []
        missing: list[str] = []
        while wanted:
            response = self._call(
                "DELETE",
                "/api/secrets/",
                what="delete secrets",
                json_body=wanted,
                passthrough=(404,),
            )
            if response.status_code != 404:
                return missing
            body = _json_or_none(response)
            if not isinstance(body, list):
                self._raise_for(response, "delete secrets")
            gone = [str(name) for name in body]
            missing.extend(name for name in gone if name not in missing)
            remaining = [name for name in wanted if name not in gone]
            if remaining == wanted:
                self._raise_for(response, "delete secrets")
            wanted = remaining
        return missing


class _NotRetried(Exception):
    def __init__(self, failure: _TransportFailure):
        super().__init__(failure.text)
        self.failure = failure
