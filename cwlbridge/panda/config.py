"""Where PanDA is and who we are to it, read from the environment as panda-client reads it.

- ``PANDA_URL_SSL`` (default ``https://pandaserver.cern.ch/server/panda``): the new API lives
  at its scheme and host, ``<scheme>://<host>/api/v1``; the legacy calls (the workflow
  endpoints) at the full value.
- ``PANDACACHE_URL`` (default ``https://pandacache.cern.ch/server/panda``): sandbox uploads,
  and the ``sourceURL`` tasks fetch their sandbox from.
- ``PANDA_AUTH=oidc`` with ``PANDA_AUTH_VO`` (or ``OIDC_AUTH_VO``): a bearer ID token, taken
  from ``PANDA_AUTH_ID_TOKEN``, the file named by ``OIDC_AUTH_TOKEN_FILE``,
  ``OIDC_AUTH_ID_TOKEN``, then panda-client's cache ``$PANDA_CONFIG_ROOT/.token``; sent with
  ``Origin: <vo>``.  Otherwise x509: the proxy ``X509_USER_PROXY`` (else
  ``/tmp/x509up_u<uid>``) as client certificate and key.
- The server is verified against ``X509_CERT_DIR`` (else ``/etc/grid-security/certificates``,
  else the system's CAs).  ``http://`` is accepted only for a loopback host (tests).

Nothing here touches the network; files are read when the settings are made.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from cwlbridge.errors import UsageError

DEFAULT_PANDA_URL_SSL = "https://pandaserver.cern.ch/server/panda"
DEFAULT_PANDACACHE_URL = "https://pandacache.cern.ch/server/panda"
DEFAULT_CERT_DIR = "/etc/grid-security/certificates"
TOKEN_BASENAME = ".token"
#: A token with less left than this is refused (a chain's submissions take minutes).
TOKEN_MARGIN_S = 300

AuthMode = Literal["oidc", "x509"]


class CredentialsError(UsageError):
    """No usable PanDA credentials: the message says what is missing and how to get it."""


@dataclass(frozen=True)
class PandaSettings:
    """Everything the PanDA client needs, already checked."""

    api_url: str  # <scheme>://<host>[:port]/api/v1
    legacy_url: str  # PANDA_URL_SSL as given, without a trailing /
    cache_url: str  # PANDACACHE_URL, without a trailing /
    auth: AuthMode
    vo: str | None
    token: str | None = None
    token_expires: float | None = None
    proxy: str | None = None
    verify: bool | str = True  # a CA directory, or True for the system's CAs

    @property
    def cache_api_url(self) -> str:
        """The cache server's new API: ``<scheme>://<host>[:port]/api/v1`` of ``PANDACACHE_URL``."""
        parts = urlsplit(self.cache_url)
        return f"{parts.scheme}://{parts.netloc}/api/v1"

    @property
    def source_url(self) -> str:
        """A task's ``sourceURL``: scheme, host and port of the cache server."""
        parts = urlsplit(self.cache_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header of an OIDC request (the VO the token is for)."""
        return self.vo if self.auth == "oidc" else None

    def __repr__(self) -> str:  # the token must never be printed
        return f"PandaSettings(api_url={self.api_url!r}, auth={self.auth!r}, vo={self.vo!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, now: float | None = None) -> PandaSettings:
        """Read and check the settings; raise ``CredentialsError`` or ``UsageError`` with the fix."""
        env = os.environ if environ is None else environ
        legacy = _server_url(env.get("PANDA_URL_SSL") or DEFAULT_PANDA_URL_SSL, "PANDA_URL_SSL")
        cache = _server_url(env.get("PANDACACHE_URL") or DEFAULT_PANDACACHE_URL, "PANDACACHE_URL")
        parts = urlsplit(legacy)
        api = f"{parts.scheme}://{parts.netloc}/api/v1"
        verify = _ca_dir(env)
        if (env.get("PANDA_AUTH") or "").strip().lower() == "oidc":
            vo = (env.get("PANDA_AUTH_VO") or env.get("OIDC_AUTH_VO") or "").strip()
            if not vo:
                raise CredentialsError(
                    "PANDA_AUTH=oidc needs the VO in PANDA_AUTH_VO (e.g. atlas)",
                    hint="export PANDA_AUTH_VO=atlas, or unset PANDA_AUTH to use your x509 proxy",
                )
            token, expires = _oidc_token(env, now=time.time() if now is None else now)
            return cls(api, legacy, cache, "oidc", vo, token=token, token_expires=expires, verify=verify)
        proxy = env.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}"
        if not Path(proxy).is_file():
            raise CredentialsError(
                f"no x509 proxy at {proxy}",
                hint="make one with `voms-proxy-init -voms atlas`, or use a token: PANDA_AUTH=oidc"
                " PANDA_AUTH_VO=atlas (`pbook` gets one)",
            )
        return cls(api, legacy, cache, "x509", env.get("PANDA_AUTH_VO") or None, proxy=proxy, verify=verify)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server_url(text: str, variable: str) -> str:
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError(f"{variable}={text!r} is not a URL like https://pandaserver.cern.ch/server/panda")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise UsageError(
            f"{variable}={text!r}: PanDA is reached over https only (http is allowed for 127.0.0.1 alone)"
        )
    return url


def _ca_dir(env: Mapping[str, str]) -> bool | str:
    given = env.get("X509_CERT_DIR")
    if given:
        if not Path(given).is_dir():
            raise UsageError(f"X509_CERT_DIR={given} is not a directory")
        return given
    return DEFAULT_CERT_DIR if Path(DEFAULT_CERT_DIR).is_dir() else True


def token_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT: the server checks the signature, we only read ``exp``."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        raise CredentialsError("the PanDA ID token is not a JWT (three dot-separated parts)") from None
    if not isinstance(claims, dict):
        raise CredentialsError("the PanDA ID token is not a JWT (its payload is not an object)")
    return claims


def _oidc_token(env: Mapping[str, str], *, now: float) -> tuple[str, float | None]:
    """The ID token and its expiry, from the first source that has one (panda-client's order)."""
    token: str | None = None
    where = ""
    if env.get("PANDA_AUTH_ID_TOKEN"):
        token, where = env["PANDA_AUTH_ID_TOKEN"], "PANDA_AUTH_ID_TOKEN"
    elif env.get("OIDC_AUTH_TOKEN_FILE"):
        path = Path(env["OIDC_AUTH_TOKEN_FILE"])
        try:
            token, where = path.read_text(encoding="utf-8"), f"OIDC_AUTH_TOKEN_FILE ({path})"
        except OSError as exc:
            raise CredentialsError(f"cannot read OIDC_AUTH_TOKEN_FILE {path}: {exc.strerror or exc}") from None
    elif env.get("OIDC_AUTH_ID_TOKEN"):
        token, where = env["OIDC_AUTH_ID_TOKEN"], "OIDC_AUTH_ID_TOKEN"
    else:
        cache = Path(env.get("PANDA_CONFIG_ROOT") or ".").expanduser() / TOKEN_BASENAME
        where = f"panda-client's token cache {cache}"
        if cache.is_file():
            try:
                cached = json.loads(cache.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise CredentialsError(
                    f"{where} is unreadable", hint="run `pbook` to log in again (it rewrites the cache)"
                ) from None
            if isinstance(cached, dict) and isinstance(cached.get("id_token"), str):
                token = cached["id_token"]
    token = (token or "").strip()
    if not token:
        raise CredentialsError(
            "PANDA_AUTH=oidc but no ID token: none in PANDA_AUTH_ID_TOKEN, OIDC_AUTH_TOKEN_FILE,"
            f" OIDC_AUTH_ID_TOKEN or {where}",
            hint="run `pbook` once (it logs you in and caches the token in $PANDA_CONFIG_ROOT/.token)",
        )
    expires = token_claims(token).get("exp")
    if isinstance(expires, (int, float)) and expires - now < TOKEN_MARGIN_S:
        ago = "expired" if expires <= now else "expires in under 5 minutes"
        raise CredentialsError(
            f"the PanDA ID token from {where} {ago} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(expires))})",
            hint="refresh it with `pbook` (it renews $PANDA_CONFIG_ROOT/.token), then run this again",
        )
    return token, float(expires) if isinstance(expires, (int, float)) else None
