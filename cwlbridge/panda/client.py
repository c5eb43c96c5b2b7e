"""A PanDA client for a workflow manager: the ``/api/v1`` calls cwlbridge needs, typed.

panda-client keeps its server, proxy and cache host in module globals set at import (and does
DNS there); this client is an object made from ``PandaSettings`` and does no I/O until called.

Replies of the new API are ``{"success", "message", "data"}`` sent as ``text/plain``; a reply
with ``success: false`` is raised as ``PandaRejectedError`` carrying the endpoint, the
server's message and PanDA's code (``data``), never returned as ``None``.  Reads are retried
with backoff and jitter on connection errors, timeouts and 5xx.  A call that changes state is
retried only when the request certainly never left (connection refused): a ``task/submit``
whose reply was lost may have created the task, and submitting its name again would make
PanDA re-execute it, so the caller looks it up by name (``find_task``) instead, as iDDS does.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from cwlbridge.errors import RemoteError, UsageError
from cwlbridge.panda.config import PandaSettings
from cwlbridge.reana.redact import install_log_redaction, redact, register_secret
from cwlbridge.transport import never_sent

log = logging.getLogger("cwlbridge.panda")

#: Rows ``task/get_tasks_modified_since`` returns at most per call (with ``full``).
PAGE_ROWS = 500
#: The submit codes of ``insertTaskParamsPanda``.
SUBMIT_CODES = {
    0: "submitted",
    1: "a task of this name is already queued (DEFT)",
    2: "a task of this name is still active",
    3: "an ended task of this name was re-executed (incexec)",
    4: "the server failed to register the task",
    5: "new parameters were set on an ended task",
    10: "too many active tasks",
    11: "the parent task name was not found",
}
_TASK_ID = re.compile(r"jediTaskID=(\d+)")
_SINCE_FORMAT = "%Y-%m-%d %H:%M:%S"


class PandaError(RemoteError):
    """A failed PanDA call; ``status`` is None when no HTTP reply arrived."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status: int | None = None,
        url: str | None = None,
        hint: str | None = None,
        server_message: str | None = None,
        code: int | None = None,
    ):
        super().__init__(redact(message), status=status, url=redact(url) if url else url, hint=hint)
        self.endpoint = endpoint
        self.server_message = redact(server_message) if server_message else server_message
        self.code = code


class PandaAuthError(PandaError):
    """The server did not accept our credentials (HTTP 401/403, or "SSL secure connection")."""


class PandaRejectedError(PandaError):
    """The server answered ``success: false``; ``code`` is PanDA's code when it gave one."""


class PandaUnavailableError(PandaError):
    """No usable reply after the retries: connection errors, timeouts, 5xx."""


class PandaProtocolError(PandaError):
    """The reply is not what a PanDA server sends (not JSON, no ``success``)."""


@dataclass(frozen=True)
class Submitted:
    """What ``task/submit`` answered."""

    task_id: int
    code: int  # 0 new task, 3 an ended task of the name re-executed
    message: str


@dataclass(frozen=True)
class TaskRow:
    """One row of ``task/get_tasks_modified_since``."""

    task_id: int
    name: str  # taskName without prun's trailing "/"
    status: str
    modified: _dt.datetime | None
    raw: Mapping[str, Any]


class _Failure(Exception):
    """No HTTP reply; ``unsent`` when the request certainly did not reach the server."""

    def __init__(self, text: str, *, unsent: bool):
        super().__init__(text)
        self.text = text
        self.unsent = unsent


class _ServerError(Exception):
    def __init__(self, response: requests.Response):
        super().__init__(response.status_code)
        self.response = response


def _decode_datetimes(obj: dict[str, Any]) -> Any:
    if set(obj) == {"__datetime__"} and isinstance(obj["__datetime__"], str):
        try:
            return _dt.datetime.fromisoformat(obj["__datetime__"])
        except ValueError:
            return obj
    return obj


def task_id_from(message: str) -> int | None:
    """The ``jediTaskID=N`` of a submit message (older servers give the id only there)."""
    match = _TASK_ID.search(message or "")
    return int(match.group(1)) if match else None


def format_since(moment: _dt.datetime) -> str:
    """A UTC time as ``get_tasks_modified_since`` takes it."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return moment.strftime(_SINCE_FORMAT)


Retry = Literal["read", "unsent_only"]


TIMEOUT_ENV = "CWLBRIDGE_PANDA_TIMEOUT"


class PandaClient:
    """The PanDA API for one user, from ``PandaSettings``.

    ``connect_timeout``/``read_timeout`` bound every exchange; reads are tried up to
    ``max_attempts`` times, waiting ``backoff_initial`` doubling up to ``backoff_max`` seconds
    (with jitter) in between.
    """

    def __init__(
        self,
        settings: PandaSettings,
        *,
        connect_timeout: float = 10,
        read_timeout: float = 120,
        max_attempts: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        if max_attempts < 1:
            raise UsageError("max_attempts must be at least 1")
        self.settings = settings
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.requests_sent = 0  # for the benchmark's requests-per-poll figure
        install_log_redaction(("cwlbridge.panda", "urllib3.connectionpool"))
        session = requests.Session()
        session.verify = settings.verify
        session.headers["User-Agent"] = "cwlbridge-panda-client"
        session.headers["Accept"] = "application/json"
        if settings.auth == "oidc" and settings.token:
            register_secret(settings.token)
            session.headers["Authorization"] = f"Bearer {settings.token}"
            session.headers["Origin"] = settings.vo or ""
        elif settings.proxy:
            session.cert = (settings.proxy, settings.proxy)
        self._session = session

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> PandaClient:
        """A client for the server and credentials the environment names (see ``config``).

        ``CWLBRIDGE_PANDA_TIMEOUT`` (seconds) bounds the wait for a reply (default 120).
        """
        env = os.environ if environ is None else environ
        given = env.get(TIMEOUT_ENV)
        if given and "read_timeout" not in kwargs:
            try:
                kwargs["read_timeout"] = float(given)
            except ValueError:
                raise UsageError(f"{TIMEOUT_ENV}={given!r} is not a number of seconds") from None
        return cls(PandaSettings.from_env(env), **kwargs)

    def __repr__(self) -> str:
        return f"PandaClient({self.settings.api_url!r}, auth={self.settings.auth!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def __enter__(self) -> PandaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- transport

    def _wait(self, state: RetryCallState) -> float:
        ceiling = min(self.backoff_max, self.backoff_initial * 2.0 ** (state.attempt_number - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _log_retry(self, endpoint: str) -> Callable[[RetryCallState], None]:
        def say(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            reason = f"HTTP {exc.response.status_code}" if isinstance(exc, _ServerError) else str(exc)
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "PanDA %s failed (%s); retrying in %.1f s (attempt %d of %d)",
                endpoint, reason, wait, state.attempt_number + 1, self.max_attempts,
            )

        return say

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.requests_sent += 1
        started = time.monotonic()
        try:
            response = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise _Failure(redact(f"{type(exc).__name__}: {exc}"), unsent=never_sent(exc)) from None
        elapsed = time.monotonic() - started
        log.debug("%s %s -> %d (%.2f s)", method, redact(response.url), response.status_code, elapsed)
        return response

    def _exchange(self, method: str, url: str, endpoint: str, retry: Retry, **kwargs: Any) -> requests.Response:
        """One call with the retry policy; a response with a status below 500, or an error."""

        def attempt() -> requests.Response:
            try:
                response = self._send(method, url, **kwargs)
            except _Failure as failure:
                if retry == "read" or failure.unsent:
                    raise
                raise _NoRetry(failure) from None
            if response.status_code >= 500 and retry == "read":
                raise _ServerError(response)
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type((_Failure, _ServerError)),
            before_sleep=self._log_retry(endpoint),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _ServerError as exc:
            return exc.response
        except (_Failure, _NoRetry) as exc:
            failure = exc.failure if isinstance(exc, _NoRetry) else exc
            lost = "" if failure.unsent else " (the request may have reached the server)"
            raise PandaUnavailableError(
                f"PanDA {endpoint}: no reply{lost}: {failure.text}",
                endpoint=endpoint,
                url=url,
                hint="check PANDA_URL_SSL, the network and PanDA's status",
            ) from None

    def _reply(self, response: requests.Response, endpoint: str) -> tuple[Any, str]:
        """The ``data`` of a successful new-API reply; every other reply raises."""
        url = response.url
        status = response.status_code
        if status in (401, 403):
            raise PandaAuthError(
                f"PanDA {endpoint}: the server refused our credentials (HTTP {status})",
                endpoint=endpoint, status=status, url=url, server_message=response.text[:300],
                hint=self._auth_hint(),
            )
        if status >= 500:
            raise PandaUnavailableError(
                f"PanDA {endpoint}: server error HTTP {status}", endpoint=endpoint, status=status, url=url,
                server_message=response.text[:300], hint="PanDA is having trouble; try again later",
            )
        try:
            body = json.loads(response.text, object_hook=_decode_datetimes)
        except ValueError:
            raise PandaProtocolError(
                f"PanDA {endpoint}: the reply (HTTP {status}) is not JSON: {response.text[:120]!r}",
                endpoint=endpoint, status=status, url=url,
                hint="is PANDA_URL_SSL a PanDA server?",
            ) from None
        if not isinstance(body, dict) or "success" not in body:
            raise PandaProtocolError(
                f"PanDA {endpoint}: the reply has no 'success' field", endpoint=endpoint, status=status, url=url
            )
        message = str(body.get("message") or "")
        if body["success"] is not True:
            data = body.get("data")
            code = data if isinstance(data, int) and not isinstance(data, bool) else None
            if "secure connection is required" in message:
                raise PandaAuthError(
                    f"PanDA {endpoint}: {message}", endpoint=endpoint, status=status, url=url,
                    server_message=message, hint=self._auth_hint(),
                )
            known = endpoint == "task/submit" and code in SUBMIT_CODES
            detail = f" (code {code}: {SUBMIT_CODES[code]})" if known and code is not None else ""
            raise PandaRejectedError(
                f"PanDA {endpoint} refused: {message or 'no message'}{detail}",
                endpoint=endpoint, status=status, url=url, server_message=message, code=code,
            )
        return body.get("data"), message

    def _auth_hint(self) -> str:
        if self.settings.auth == "oidc":
            return f"renew the token with `pbook` (VO {self.settings.vo}); the server reads the VO from Origin"
        return "renew the proxy with `voms-proxy-init -voms atlas` (X509_USER_PROXY)"

    def _get(self, endpoint: str, **params: Any) -> tuple[Any, str]:
        query = {k: ("True" if v is True else "False" if v is False else v) for k, v in params.items() if v is not None}
        response = self._exchange("GET", f"{self.settings.api_url}/{endpoint}", endpoint, "read", params=query)
        return self._reply(response, endpoint)

    def _post(self, endpoint: str, body: Mapping[str, Any], *, retry: Retry = "unsent_only") -> tuple[Any, str]:
        payload = {k: v for k, v in body.items() if v is not None}
        response = self._exchange("POST", f"{self.settings.api_url}/{endpoint}", endpoint, retry, json=payload)
        return self._reply(response, endpoint)

    # ---------------------------------------------------------------- tasks

    def submit(self, task_parameters: Mapping[str, Any], *, parent_task_id: int | None = None) -> Submitted:
        """``task/submit``: register a task; never retried once the request may have left."""
        data, message = self._post(
            "task/submit", {"task_parameters": dict(task_parameters), "parent_tid": parent_task_id}
        )
        task_id = data if isinstance(data, int) and not isinstance(data, bool) else task_id_from(message)
        if task_id is None:
            raise PandaProtocolError(
                f"PanDA task/submit succeeded without a task id: {message!r}", endpoint="task/submit"
            )
        code = 3 if "re-executed" in message or "reactivation" in message else 0
        return Submitted(task_id=task_id, code=code, message=message)

    def status(self, task_id: int) -> str:
        """``task/get_status``: the JEDI status of one task."""
        data, _ = self._get("task/get_status", task_id=task_id)
        return str(data)

    def details(self, task_id: int, *, parameters: bool = False, status: bool = True) -> dict[str, Any]:
        """``task/get_details``: datasets, statistics, PandaIDs (and status, cliParams when asked)."""
        data, _ = self._get("task/get_details", task_id=task_id, include_parameters=parameters, include_status=status)
        return dict(data or {})

    def detailed_info(self, task_id: int) -> dict[str, Any]:
        """``task/get_detailed_info``: every task column plus the file counts (nFiles, nFilesFailed…)."""
        data, _ = self._get("task/get_detailed_info", task_id=task_id)
        return dict(data or {})

    def task_parameters(self, task_id: int) -> dict[str, Any]:
        """``task/get_task_parameters``: the map the task was created from."""
        data, _ = self._get("task/get_task_parameters", task_id=task_id)
        return dict(data or {})

    def tasks_modified_since(self, since: _dt.datetime, *, full: bool = False) -> list[TaskRow]:
        """``task/get_tasks_modified_since`` for our user, every page (panda-server caps a ``full``
        listing at 500 rows, so a page of exactly 500 asks for the next)."""
        rows: dict[int, TaskRow] = {}
        min_task_id: int | None = None
        while True:
            data, _ = self._get(
                "task/get_tasks_modified_since", since=format_since(since), full=full, min_task_id=min_task_id
            )
            page = [_row(item) for item in (data or {}).values() if isinstance(item, Mapping)]
            for row in page:
                rows[row.task_id] = row
            if len(page) != PAGE_ROWS:  # only a full listing is capped (at exactly PAGE_ROWS rows)
                return sorted(rows.values(), key=lambda r: r.task_id)
            min_task_id = max(row.task_id for row in page)

    def find_task(self, name: str, since: _dt.datetime) -> TaskRow | None:
        """The newest task called ``name`` (prun's trailing ``/`` ignored) modified since ``since``."""
        wanted = name.rstrip("/")
        found = [row for row in self.tasks_modified_since(since) if row.name == wanted]
        return max(found, key=lambda r: r.task_id) if found else None

    def kill(self, task_id: int) -> str:
        """``task/kill``: abort the task (its jobs are killed)."""
        return self._command("task/kill", {"task_id": task_id})

    def finish(self, task_id: int, *, soft: bool = False) -> str:
        """``task/finish``: stop generating jobs; ``soft`` lets running jobs end."""
        return self._command("task/finish", {"task_id": task_id, "soft": True if soft else None})

    def retry(self, task_id: int, new_parameters: Mapping[str, Any] | None = None) -> str:
        """``task/retry``: rerun the task's failed files (the server answers success with a code)."""
        body = {"task_id": task_id, "new_parameters": json.dumps(dict(new_parameters)) if new_parameters else None}
        return self._command("task/retry", body)

    def _command(self, endpoint: str, body: Mapping[str, Any]) -> str:
        data, message = self._post(endpoint, body)
        if isinstance(data, int) and not isinstance(data, bool) and data != 0:
            raise PandaRejectedError(
                f"PanDA {endpoint} refused: {message or 'no message'} (code {data})",
                endpoint=endpoint, server_message=message, code=data,
            )
        return message

    # ---------------------------------------------------------------- workflows (legacy API, iDDS)

    def _legacy(self, endpoint: str, response: requests.Response) -> Any:
        """The ``[ok, value]`` pair a legacy endpoint answers; ``value`` when ok, else an error."""
        if response.status_code in (401, 403):
            raise PandaAuthError(
                f"PanDA {endpoint}: the server refused our credentials (HTTP {response.status_code})",
                endpoint=endpoint, status=response.status_code, url=response.url, hint=self._auth_hint(),
            )
        if response.status_code >= 500:
            raise PandaUnavailableError(
                f"PanDA {endpoint}: server error HTTP {response.status_code}", endpoint=endpoint,
                status=response.status_code, url=response.url, hint="PanDA is having trouble; try again later",
            )
        try:
            body = json.loads(response.text)
        except ValueError:
            raise PandaProtocolError(
                f"PanDA {endpoint}: the reply (HTTP {response.status_code}) is not JSON: {response.text[:120]!r}",
                endpoint=endpoint, status=response.status_code, url=response.url,
            ) from None
        if not isinstance(body, list) or len(body) != 2:
            raise PandaProtocolError(f"PanDA {endpoint}: the reply is not an [ok, value] pair", endpoint=endpoint)
        ok, value = body
        if ok is not True:
            message = str(value)
            if "secure connection is required" in message:
                raise PandaAuthError(f"PanDA {endpoint}: {message}", endpoint=endpoint, hint=self._auth_hint())
            raise PandaRejectedError(f"PanDA {endpoint} refused: {message}", endpoint=endpoint, server_message=message)
        return value

    def put_workflow_request(self, params: Mapping[str, Any], *, check: bool = False) -> dict[str, Any]:
        """``put_workflow_request`` as pchain sends it: ``{"data": json, "sync"|"check": true}``, gzipped.

        Returns the server's ``{"status", "request_id", "log"}``.  Not retried: a lost reply may
        have made a request (the caller says so instead of sending a second one).
        """
        endpoint = "put_workflow_request"
        body: dict[str, Any] = {"data": json.dumps(dict(params))}
        body["check" if check else "sync"] = True
        payload = gzip.compress(json.dumps(body).encode())
        response = self._exchange(
            "POST", f"{self.settings.legacy_url}/{endpoint}", endpoint, "unsent_only", data=payload,
            headers={"Content-Type": "application/json"},
        )
        value = self._legacy(endpoint, response)
        if not isinstance(value, dict):
            raise PandaProtocolError(f"PanDA {endpoint}: unexpected reply {str(value)[:200]!r}", endpoint=endpoint)
        return value

    def workflow_command(self, command: str, request_id: int, **kwargs: Any) -> Any:
        """iDDS command ``command`` (get_status, abort, retry, finish, suspend, resume) on a request.

        Sent as a form with its Content-Type (panda-client's form posts carry none).  ``get_status``
        is a read and retried like one.
        """
        endpoint = "execute_idds_workflow_command"
        form = {"command_name": command, "kwargs": json.dumps({"request_id": request_id, **kwargs})}
        response = self._exchange(
            "POST", f"{self.settings.legacy_url}/{endpoint}", endpoint,
            "read" if command == "get_status" else "unsent_only", data=form,
        )
        value = self._legacy(endpoint, response)
        is_pair = isinstance(value, list) and len(value) == 2 and isinstance(value[0], (bool, int))
        if is_pair and command != "get_status":
            # iDDS answers a command with [status, message]; a falsy or negative status is a refusal
            status, message = value
            if status is False or (not isinstance(status, bool) and status < 0):
                raise PandaRejectedError(
                    f"iDDS {command} of request {request_id} refused: {message}", endpoint=endpoint,
                    server_message=str(message),
                )
        return value

    # ---------------------------------------------------------------- cache and secrets

    def cached_sandbox(self, file_size: int, checksum: int) -> tuple[str, str] | None:
        """``file_server/validate_cache_file``: (cache host, file name) of our identical upload, if any.

        ``checksum`` is the CRC32 of the gzip trailer.  Tasks using the file must then take
        their ``sourceURL`` from that host, as panda-client's ``setCacheServer`` does.
        """
        _, message = self._post(
            "file_server/validate_cache_file", {"file_size": file_size, "checksum": checksum}, retry="read"
        )
        if message.startswith("FOUND:"):
            host, _, name = message[len("FOUND:") :].rpartition(":")
            return host, name
        return None

    def upload_sandbox(self, path: Path) -> None:
        """``file_server/upload_cache_file`` on the cache server (multipart field ``file``)."""
        endpoint = "file_server/upload_cache_file"
        url = f"{self.settings.cache_api_url}/{endpoint}"
        with open(path, "rb") as stream:
            response = self._exchange(
                "POST", url, endpoint, "unsent_only", files={"file": (path.name, stream, "application/octet-stream")}
            )
        self._reply(response, endpoint)

    def secrets(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """``creds/get_user_secrets``: our PanDA secrets (values included: never log them)."""
        data, _ = self._get("creds/get_user_secrets", keys=json.dumps(list(keys)) if keys else None)
        if isinstance(data, str):
            try:
                data = json.loads(data) if data else {}
            except ValueError:
                raise PandaProtocolError(
                    "PanDA creds/get_user_secrets: the secrets are not JSON", endpoint="creds/get_user_secrets"
                ) from None
        values = {str(k): str(v) for k, v in (data or {}).items()}
        for value in values.values():
            register_secret(value)
        return values

    def set_secret(self, key: str | None, value: str | None) -> None:
        """``creds/set_user_secrets``: set ``key``; a None value deletes it (None key: all of them)."""
        if value is not None:
            register_secret(value)
        self._post("creds/set_user_secrets", {"key": key, "value": value})


class _NoRetry(Exception):
    def __init__(self, failure: _Failure):
        super().__init__(failure.text)
        self.failure = failure


def _row(item: Mapping[str, Any]) -> TaskRow:
    modified = item.get("modificationTime")
    return TaskRow(
        task_id=int(item.get("jediTaskID") or 0),
        name=str(item.get("taskName") or "").rstrip("/"),
        status=str(item.get("status") or ""),
        modified=modified if isinstance(modified, _dt.datetime) else None,
        raw=item,
    )
