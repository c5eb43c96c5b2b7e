"""REANA secrets: gather them from files, the environment and PanDA, check what a spec needs.

Secrets come from three places:

- ``--secret-file PATH``: a file secret named by the file's basename (``usercert.pem``);
- ``--secret-env NAME`` (value from the environment) or ``--secret-env NAME=VALUE``;
- PanDA job secrets: ``panda_secrets.json`` in the job's work directory, a
  ``{key: value}`` map where ``___file___:<name>`` keys hold base64 file contents
  (what ``pbook set_secret --is_file`` stored) and the other keys are env secrets.

``VOMSPROXY_PASS``: REANA's VOMS init container runs ``base64 -d`` on it, so the
stored value must be base64(passphrase).  cwlbridge takes the *plain* passphrase
and stores base64(passphrase) for the user; pass ``voms_pass_is_base64=True`` when
the value given is already encoded (e.g. a secret set up for reana-client).

Values never appear in ``repr``, logs or error messages; only names and types do.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cwlbridge.errors import InputFileError, UsageError

log = logging.getLogger("cwlbridge.reana")

SecretType = Literal["env", "file"]

#: Prefix PanDA puts in front of file secrets in panda_secrets.json.
PANDA_FILE_PREFIX = "___file___:"
#: File name the PanDA pilot writes the user's secrets to.
PANDA_SECRETS_FILE = "panda_secrets.json"
#: Names REANA's init containers read (reana.md §9).
REANA_SECRET_NAMES: frozenset[str] = frozenset(
    {
        "VONAME",
        "VOMSPROXY_FILE",
        "VOMSPROXY_PASS",
        "usercert.pem",
        "userkey.pem",
        "RUCIO_USERNAME",
        "RUCIO_RUCIO_HOST",
        "RUCIO_AUTH_HOST",
        "CERN_USER",
        "CERN_KEYTAB",
    }
)
#: Names that must never be copied into REANA's per-user store.
NEVER_UPLOADED: frozenset[str] = frozenset({"REANA_ACCESS_TOKEN", "PANDA_AUTH_ID_TOKEN"})

# Kubernetes Secret keys: REANA stores every user secret as one key of one Secret.
_NAME = re.compile(r"[-._a-zA-Z0-9]+")


@dataclass(frozen=True)
class Secret:
    """One secret; ``value`` holds the raw bytes REANA should store (never in repr)."""

    name: str
    type: SecretType
    value: bytes = field(repr=False)
    origin: str = ""

    def __repr__(self) -> str:
        return f"Secret(name={self.name!r}, type={self.type!r}, origin={self.origin!r})"


class SecretSet:
    """An ordered collection of secrets by name; its repr lists names and types only."""

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        self._items: dict[str, Secret] = {}
        for secret in secrets:
            self.add(secret)

    def add(self, secret: Secret, *, replace: bool = False) -> None:
        """Add a secret; a second secret with the same name is a ``UsageError``."""
        _check_name(secret.name, secret.origin or "secret")
        if secret.type not in ("env", "file"):
            raise UsageError(f"secret {secret.name}: type must be 'env' or 'file'")
        old = self._items.get(secret.name)
        if old is not None and not replace:
            raise UsageError(f"secret {secret.name} is given twice ({old.origin or '?'} and {secret.origin or '?'})")
        self._items[secret.name] = secret

    def update(self, other: SecretSet, *, replace: bool = False) -> None:
        """Add every secret of ``other``."""
        for secret in other:
            self.add(secret, replace=replace)

    def names(self) -> set[str]:
        """The names in this set."""
        return set(self._items)

    def get(self, name: str) -> Secret | None:
        """The secret called ``name``, if present."""
        return self._items.get(name)

    def for_upload(self) -> dict[str, tuple[str, bytes]]:
        """``{name: (type, raw bytes)}``, the shape ``ReanaClient.add_secrets`` takes."""
        return {s.name: (s.type, s.value) for s in self._items.values()}

    def __iter__(self) -> Iterator[Secret]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        inner = ", ".join(f"{s.name}:{s.type}" for s in self._items.values())
        return f"SecretSet([{inner}])"


def _check_name(name: str, origin: str) -> None:
    if not _NAME.fullmatch(name):
        raise UsageError(f"{origin}: secret name {name!r} may only hold letters, digits, '-', '_' and '.'")
    if name in NEVER_UPLOADED:
        raise UsageError(f"{origin}: {name} is a cwlbridge credential, not a REANA secret")


def _encode_voms_pass(secret: Secret, is_base64: bool) -> Secret:
    """Store VOMSPROXY_PASS as base64(passphrase), as REANA's init container expects."""
    if secret.name != "VOMSPROXY_PASS" or secret.type != "env":
        return secret
    if is_base64:
        try:
            base64.b64decode(secret.value, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError("VOMSPROXY_PASS was declared base64-encoded but is not valid base64") from None
        return secret
    return Secret(secret.name, "env", base64.b64encode(secret.value), secret.origin)


def read_secret_file(path: str | Path) -> Secret:
    """A file secret named by the file's basename (``usercert.pem``)."""
    local = Path(path)
    origin = f"--secret-file {local}"
    try:
        value = local.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{origin}: cannot read the file: {exc.strerror or exc}") from None
    return Secret(local.name, "file", value, origin)


def parse_secret_env(arg: str, environ: Mapping[str, str] | None = None) -> Secret:
    """An env secret from ``NAME=VALUE`` or ``NAME`` (value taken from the environment)."""
    env = os.environ if environ is None else environ
    name, sep, value = arg.partition("=")
    origin = f"--secret-env {name}"
    if not name:
        raise UsageError("--secret-env needs NAME or NAME=VALUE")
    if not sep:
        if name not in env:
            raise UsageError(
                f"{origin}: environment variable {name} is not set",
                hint=f"export {name}=... first, or pass --secret-env {name}=VALUE",
            )
        value = env[name]
        origin += " (from the environment)"
    return Secret(name, "env", value.encode("utf-8"), origin)


def load_panda_secrets(
    workdir: str | Path,
    *,
    names: Iterable[str] | None = None,
) -> SecretSet:
    """Read the PanDA job secrets in ``workdir/panda_secrets.json``.

    ``___file___:<name>`` entries become file secrets (their values are base64);
    others become env secrets.  Only names REANA uses (``REANA_SECRET_NAMES``, plus
    the proxy file named by ``VOMSPROXY_FILE``) are taken unless ``names`` lists
    what to take: a user's PanDA secrets may hold unrelated credentials that should
    not land in the REANA account.  ``VOMSPROXY_PASS`` is returned as stored;
    ``gather_secrets`` does the encoding.
    """
    path = Path(workdir) / PANDA_SECRETS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputFileError(f"cannot read PanDA secrets {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        # The exception text may quote secret content; give the position only.
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputFileError(f"PanDA secrets {path} are not valid JSON{where}") from None
    if not isinstance(raw, dict):
        raise InputFileError(f"PanDA secrets {path} must hold a JSON object")
    found: dict[str, Secret] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        origin = f"{PANDA_SECRETS_FILE}:{key}"
        if key.startswith(PANDA_FILE_PREFIX):
            name = key[len(PANDA_FILE_PREFIX) :]
            try:
                content = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise InputFileError(f"PanDA secret {key!r} is not valid base64 (file secrets must be)") from None
            found[name] = Secret(name, "file", content, origin)
        else:
            found[key] = Secret(key, "env", value.encode("utf-8"), origin)
    if names is None:
        wanted = set(REANA_SECRET_NAMES)
        proxy = found.get("VOMSPROXY_FILE")
        if proxy is not None and proxy.type == "env":
            wanted.add(proxy.value.decode("utf-8", errors="replace").strip())
    else:
        wanted = set(names)
    missing = sorted(wanted - set(found)) if names is not None else []
    if missing:
        raise InputFileError(
            f"PanDA secrets {path} lack " + ", ".join(missing),
            hint="set them with pbook: set_secret(NAME, VALUE) or set_secret(NAME, PATH, is_file=True)",
        )
    return SecretSet(s for n, s in found.items() if n in wanted and n not in NEVER_UPLOADED)


def gather_secrets(
    *,
    files: Iterable[str | Path] = (),
    env: Iterable[str] = (),
    panda_workdir: str | Path | None = None,
    panda_names: Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
    voms_pass_is_base64: bool = False,
) -> SecretSet:
    """Collect the secrets given on the command line (and PanDA's) into one set.

    ``files`` are ``--secret-file`` paths, ``env`` the ``--secret-env`` arguments.
    Command-line secrets take precedence over PanDA secrets of the same name; the
    same name twice on the command line is a ``UsageError``.  ``VOMSPROXY_PASS`` is
    stored as base64(passphrase) unless ``voms_pass_is_base64`` says it already is.
    """
    given = SecretSet()
    for path in files:
        given.add(read_secret_file(path))
    for arg in env:
        given.add(parse_secret_env(arg, environ))
    result = SecretSet()
    if panda_workdir is not None:
        for secret in load_panda_secrets(panda_workdir, names=panda_names):
            if secret.name not in given:
                result.add(secret)
    result.update(given)
    return SecretSet(_encode_voms_pass(s, voms_pass_is_base64) for s in result)


def required_secret_problems(uses_voms: bool, uses_rucio: bool, server_names: set[str]) -> list[str]:
    """What is missing from the REANA secret store for the spec's VOMS/Rucio use.

    REANA's init containers fail silently without them (reana.md §9), so check
    before starting.  VOMS needs ``VONAME`` plus either ``VOMSPROXY_FILE`` (mode A)
    or ``usercert.pem`` + ``userkey.pem`` + ``VOMSPROXY_PASS`` (mode B).  Rucio needs
    ``RUCIO_USERNAME`` and a VOMS proxy as well.  ``server_names`` is the union of
    names already on the server and names about to be added.
    """
    problems: list[str] = []
    need_voms = uses_voms or uses_rucio
    if uses_rucio and not uses_voms:
        problems.append(
            "a step uses 'rucio: true' without 'voms_proxy: true'; REANA's Rucio set-up needs the VOMS proxy too"
        )
    if need_voms:
        if "VONAME" not in server_names:
            problems.append("VOMS proxy: secret VONAME (e.g. atlas) is missing")
        mode_b = {"usercert.pem", "userkey.pem", "VOMSPROXY_PASS"}
        if "VOMSPROXY_FILE" not in server_names and not mode_b <= server_names:
            lacking = ", ".join(sorted(mode_b - server_names))
            problems.append(
                "VOMS proxy: give either VOMSPROXY_FILE plus the proxy file "
                f"(--secret-file PROXY --secret-env VOMSPROXY_FILE=NAME), or {lacking}"
            )
    if uses_rucio and "RUCIO_USERNAME" not in server_names:
        problems.append("Rucio: secret RUCIO_USERNAME is missing")
    return problems


def local_secret_problems(secrets: SecretSet) -> list[str]:
    """Inconsistencies visible in the secrets about to be uploaded (names and types only)."""
    problems: list[str] = []
    proxy = secrets.get("VOMSPROXY_FILE")
    if proxy is not None:
        target = proxy.value.decode("utf-8", errors="replace").strip()
        named = secrets.get(target)
        if proxy.type != "env":
            problems.append("VOMSPROXY_FILE must be an env secret holding the proxy file's name")
        elif named is None:
            problems.append(f"VOMSPROXY_FILE names {target!r}, but no file secret of that name is given")
        elif named.type != "file":
            problems.append(f"{target} must be a file secret (--secret-file)")
    for name in ("usercert.pem", "userkey.pem"):
        secret = secrets.get(name)
        if secret is not None and secret.type != "file":
            problems.append(f"{name} must be a file secret (--secret-file)")
    return problems


def wipe_files(paths: Iterable[str | Path]) -> list[Path]:
    """Overwrite local secret files with zeros, then remove them (best effort).

    Returns the paths that could not be removed.  Overwriting does not defeat
    copy-on-write or journalling file systems; removal is what matters.
    """
    failed: list[Path] = []
    for item in paths:
        path = Path(item)
        if not path.exists() and not path.is_symlink():
            continue
        try:
            if path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                with path.open("r+b") as handle:
                    remaining = size
                    block = b"\0" * 65536
                    while remaining > 0:
                        handle.write(block[: min(remaining, len(block))])
                        remaining -= min(remaining, len(block))
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as exc:
            log.debug("could not overwrite %s before removal: %s", path, exc.strerror)
        try:
            path.unlink()
        except OSError as exc:
            log.warning("could not remove secret file %s: %s", path, exc.strerror)
            failed.append(path)
    return failed
