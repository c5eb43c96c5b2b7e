"""Rucio through rucio-clients: client construction, DID names, downloads and error mapping.

Rucio reads its configuration only through ``$RUCIO_CONFIG`` (or fallbacks such as
``$RUCIO_HOME/etc/rucio.cfg``) and caches the parsed file for the whole process; the
functions here re-read it whenever a client is built, so a changed ``RUCIO_CONFIG`` is
honoured.  Every Rucio exception that leaves this package is turned into a
``RucioError`` with a one-line message by ``rucio_error``.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from rucio.client import Client
from rucio.client.downloadclient import DownloadClient
from rucio.common import exception as rucio_exc
from rucio.common.config import clean_cached_config

from cwlbridge.errors import CwlbridgeError, RemoteError, UsageError

log = logging.getLogger(__name__)

#: Scope prefixes for which a bare ``user.jdoe.name`` implies the scope ``user.jdoe``.
_IMPLICIT_SCOPE_PREFIXES = ("user", "group")
_NAME_FORBIDDEN = re.compile(r"[\s:]")
_TOKEN_IN_TEXT = re.compile(r"(access_token=|X-Rucio-Auth-Token:\s*)[^\s&\"']+", re.IGNORECASE)
# SQLAlchemy errors relayed by the server quote the statement and its bound parameters,
# which can include the caller's auth token; the first line of the error is enough.
_SQL_DETAILS = re.compile(r"\s*\[(SQL|parameters): .*?\](?=\s*(\[|\(Background|$))", re.DOTALL)
_SQL_BACKGROUND = re.compile(r"\s*\(Background on this error at: [^)]*\)")
_MAX_MESSAGE = 500

# HTTP statuses of the server replies behind these exceptions; for the user's orientation.
_STATUS_BY_CLASS: dict[type[Exception], int] = {
    rucio_exc.AccessDenied: 401,
    rucio_exc.CannotAuthenticate: 401,
    rucio_exc.DataIdentifierNotFound: 404,
    rucio_exc.ScopeNotFound: 404,
    rucio_exc.RSENotFound: 404,
    rucio_exc.Duplicate: 409,
    rucio_exc.DataIdentifierAlreadyExists: 409,
    rucio_exc.FileAlreadyExists: 409,
    rucio_exc.UnsupportedOperation: 409,
    rucio_exc.InputValidationError: 400,
    rucio_exc.InvalidObject: 400,
    rucio_exc.InvalidRSEExpression: 400,
    rucio_exc.DatabaseException: 500,
    rucio_exc.ServiceUnavailable: 503,
}


class RucioError(RemoteError):
    """A Rucio call failed; ``rucio_class`` names the rucio exception behind it."""

    def __init__(
        self,
        message: str,
        *,
        rucio_class: str | None = None,
        status: int | None = None,
        url: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, status=status, url=url, hint=hint)
        self.rucio_class = rucio_class


@dataclass(frozen=True)
class DidName:
    """A Rucio data identifier ``scope:name``.

    ``container_style`` records a trailing ``/`` (the PanDA/DQ2 container convention); it is
    never part of the Rucio name, so ``name`` never ends in ``/``.
    """

    scope: str
    name: str
    container_style: bool = False

    @classmethod
    def parse(cls, text: str, *, default_scope: str | None = None) -> DidName:
        """Parse ``scope:name``, ``user.nick.rest`` (scope implied) or a bare name.

        A bare name needs ``default_scope``; raises UsageError on anything malformed.
        """
        raw = text.strip()
        container = raw.endswith("/")
        body = raw.rstrip("/")
        if ":" in body:
            scope, _, name = body.partition(":")
        else:
            parts = body.split(".")
            if len(parts) >= 3 and parts[0] in _IMPLICIT_SCOPE_PREFIXES:
                scope, name = f"{parts[0]}.{parts[1]}", body
            elif default_scope:
                scope, name = default_scope, body
            else:
                raise UsageError(
                    f"{text!r} is not a Rucio DID: write it as scope:name",
                    hint="for example user.jdoe:user.jdoe.myanalysis",
                )
        if not scope or not name or _NAME_FORBIDDEN.search(scope) or _NAME_FORBIDDEN.search(name):
            raise UsageError(f"{text!r} is not a valid Rucio DID: expected scope:name without spaces and with one ':'")
        if "/" in name:
            raise UsageError(f"{text!r} is not a valid Rucio DID: '/' is allowed only at the end")
        return cls(scope=scope, name=name, container_style=container)

    def as_dict(self) -> dict[str, str]:
        """The ``{'scope': …, 'name': …}`` form the Rucio API takes."""
        return {"scope": self.scope, "name": self.name}

    def panda_style(self) -> str:
        """The name as PanDA prints it: with the trailing ``/`` for containers."""
        return f"{self.name}/" if self.container_style else self.name

    def __str__(self) -> str:
        return f"{self.scope}:{self.name}"


def redact(text: str) -> str:
    """Hide tokens that a Rucio error message might quote."""
    return _TOKEN_IN_TEXT.sub(lambda m: m.group(1) + "***", text)


def describe_rucio_exception(exc: BaseException) -> str:
    """One line from a rucio exception: its summary plus the server's details."""
    text = _SQL_BACKGROUND.sub("", _SQL_DETAILS.sub("", str(exc)))
    text = " ".join(re.sub(r"\.?\s*\nDetails:", ":", text).split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return redact(text) or type(exc).__name__


_NAME_RESOLUTION_MESSAGES = (
    "Name or service not known",
    "Temporary failure in name resolution",
    "nodename nor servname provided",
    "No address associated with hostname",
    "getaddrinfo failed",
    "Failed to resolve",
)


def is_name_resolution_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a host name that does not resolve.

    A mistyped or unreachable-by-DNS host does not come back in a minute; retrying it only
    delays the error.  (A real outage of DNS is rare enough to be worth an error too.)
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror) or type(current).__name__ == "NameResolutionError":
            return True
        if any(text in str(current) for text in _NAME_RESOLUTION_MESSAGES):
            return True
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [a for a in current.args if isinstance(a, BaseException)]
    return False


def host_resolves(url: str | None) -> bool:
    """Whether the host of ``url`` has an address (True when unknown: nothing to blame)."""
    host = urllib.parse.urlsplit(url).hostname if url else None
    if not host:
        return True
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    except OSError:
        return True
    return True


def configured_hosts() -> list[str]:
    """The rucio_host and auth_host of the Rucio configuration in use (those it names)."""
    from rucio.common.config import config_get

    hosts = []
    for option in ("rucio_host", "auth_host"):
        try:
            hosts.append(str(config_get("client", option)))
        except Exception:  # not configured: nothing to check
            continue
    return hosts


def rucio_error(exc: BaseException, action: str, *, url: str | None = None, hint: str | None = None) -> RucioError:
    """Translate a rucio or connection exception raised while doing ``action`` to RucioError."""
    status = next((code for cls, code in _STATUS_BY_CLASS.items() if isinstance(exc, cls)), None)
    if is_name_resolution_failure(exc) or (
        isinstance(exc, rucio_exc.ServerConnectionException)
        and not all(host_resolves(h) for h in ([url] if url else configured_hosts()))
    ):
        message = f"{action}: the Rucio server's host name does not resolve (DNS)"
        hint = hint or "check rucio_host and auth_host in your Rucio config"
    elif isinstance(exc, (requests.ConnectionError, rucio_exc.ServerConnectionException)):
        message = f"{action}: cannot connect to the Rucio server"
        hint = hint or "check rucio_host in your Rucio config and your network"
    else:
        message = f"{action}: {describe_rucio_exception(exc)}"
    if isinstance(exc, rucio_exc.AccessDenied) and hint is None:
        hint = "Rucio users may only write into scopes their account owns (user.<nick>)"
    return RucioError(message, rucio_class=type(exc).__name__, status=status, url=url, hint=hint)


@contextmanager
def rucio_errors(action: str, *, url: str | None = None) -> Iterator[None]:
    """Re-raise rucio and connection exceptions inside the block as RucioError."""
    try:
        yield
    except CwlbridgeError:
        raise
    except (rucio_exc.RucioException, requests.RequestException) as exc:
        raise rucio_error(exc, action, url=url) from exc


def rucio_client(config: Path | None = None, *, account: str | None = None) -> Client:
    """Build a Rucio ``Client`` from ``config`` (or ``$RUCIO_CONFIG`` and rucio's fallbacks).

    Rucio only takes its config file from the environment, so a given ``config`` is set as
    ``RUCIO_CONFIG`` for this process.  Authentication happens here, so bad credentials or
    an unreachable server fail now, as RucioError or UsageError.
    """
    if config is not None:
        if not config.is_file():
            raise UsageError(f"Rucio config {config} does not exist")
        os.environ["RUCIO_CONFIG"] = str(config)
    clean_cached_config()
    try:
        return Client(account=account)
    except rucio_exc.ConfigNotFound as exc:
        raise UsageError(
            "no Rucio configuration found",
            hint="set RUCIO_CONFIG to your rucio.cfg (or RUCIO_HOME to its parent directory)",
        ) from exc
    except (rucio_exc.MissingClientParameter, rucio_exc.ConfigLoadingError) as exc:
        raise UsageError(f"bad Rucio configuration: {describe_rucio_exception(exc)}") from exc
    except (rucio_exc.RucioException, requests.RequestException) as exc:
        raise rucio_error(exc, "cannot connect to Rucio") from exc


def server_url(client: Client) -> str | None:
    """The server address a client talks to (for error messages)."""
    host = getattr(client, "host", None)
    return str(host) if host else None


def download(
    did: str | DidName,
    dest_dir: Path,
    *,
    rse: str | None = None,
    client: Client | None = None,
) -> list[Path]:
    """Download a file or dataset DID into ``dest_dir``; return the local paths.

    Uses the real ``DownloadClient``, which verifies each file's checksum.  Files land in
    ``dest_dir/<scope>/<name>``, as ``rucio download`` puts them.
    """
    target = did if isinstance(did, DidName) else DidName.parse(did)
    client = client or rucio_client()
    url = server_url(client)
    dest_dir.mkdir(parents=True, exist_ok=True)
    item: dict[str, Any] = {"did": str(target), "base_dir": str(dest_dir)}
    if rse:
        item["rse"] = rse
    with rucio_errors(f"download of {target} failed", url=url):
        # Traces go to a trace server the local deployment may not have; they carry no
        # information cwlbridge needs.
        downloader = DownloadClient(client=client, logger=logging.getLogger("cwlbridge.rucio.download"), tracing=False)
        results = downloader.download_dids([item], num_threads=1)
    paths: list[Path] = []
    for result in results:
        if result.get("clientState") not in ("DONE", "ALREADY_DONE"):
            raise RucioError(
                f"download of {result.get('scope')}:{result.get('name')} failed: state {result.get('clientState')}",
                url=url,
            )
        paths.extend(Path(p) for p in result.get("dest_file_paths", []))
    return paths
