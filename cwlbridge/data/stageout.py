"""Idempotent stage-out of one file into a Rucio dataset.

``stage_out`` may be called again after any failure, including a crash half-way through
an earlier call, and converges on the same end state: the file DID registered with the
local file's adler32, an AVAILABLE replica on the RSE, the dataset present with a rule on
that RSE, and the file attached to it.  The catalogue, not the upload client's return
value, decides what happened: the upload client reports an identical re-upload as
``NoFilesUploaded`` and can register a file without attaching it (rucio#6670), so every
call ends by checking each piece of that end state and repairing what is missing.

The copy goes through the RSE's own protocol (``rucio.rse.rsemanager``) with the
checksums already known: ``UploadClient`` would read the whole file twice more for
adler32 and md5 before copying it (about 2.5 s per GB here).  The copy lands under a
temporary name, its size and adler32 are read back from the storage and compared,
and only then is it renamed into place and registered AVAILABLE.  RSEs that sign
their URLs (object stores) still go through ``UploadClient``, which knows how.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests
import tenacity
from rucio.client import Client
from rucio.client.uploadclient import UploadClient
from rucio.common import exception as rucio_exc
from rucio.common.utils import generate_uuid, make_valid_did
from rucio.rse import rsemanager

from cwlbridge.data.rucio import (
    DidName,
    RucioError,
    configured_hosts,
    host_resolves,
    is_name_resolution_failure,
    rucio_client,
    rucio_error,
    server_url,
)
from cwlbridge.data.tarball import file_checksums, format_adler32
from cwlbridge.errors import CwlbridgeError, InputFileError, UsageError

log = logging.getLogger(__name__)
_upload_log = logging.getLogger("cwlbridge.rucio.upload")

Outcome = Literal["uploaded", "already-present", "recovered"]

ATTEMPTS = 5
_SECONDS_PER_DAY = 86400


class StageOutConflict(CwlbridgeError):
    """The DID name is taken by a file with different content; Rucio names are never reused."""


class StageOutFailed(RucioError):
    """The stage-out did not reach its end state (replica, dataset, attachment)."""


class ReplicaMismatch(StageOutFailed):
    """The copy on the RSE does not have the local file's size or checksum; it was removed."""


#: Worth another attempt: the server or the storage may answer next time.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    rucio_exc.ServiceUnavailable,
    rucio_exc.DatabaseException,
    rucio_exc.RSEOperationNotSupported,
    rucio_exc.ServerConnectionException,
    requests.ConnectionError,
    requests.Timeout,
)
# Never retried (listed for readers; anything not in TRANSIENT_ERRORS is not retried, and
# neither is a host name that does not resolve: see ``is_name_resolution_failure``):
# AccessDenied, InputValidationError, RSEWriteBlocked, DataIdentifierAlreadyExists,
# InsufficientAccountLimit, InvalidObject, StageOutConflict and ReplicaMismatch.


def _worth_retrying(exc: BaseException) -> bool:
    # rucio's client drops the cause of a ServerConnectionException: look the hosts up again.
    return isinstance(exc, TRANSIENT_ERRORS) and not is_name_resolution_failure(exc) and all(
        host_resolves(h) for h in configured_hosts()
    )


@dataclass(frozen=True)
class StageOutResult:
    """What is in Rucio after a successful stage-out, and how it got there."""

    scope: str
    name: str
    dataset: str
    adler32: str
    md5: str
    bytes: int
    outcome: Outcome


@dataclass(frozen=True)
class _Request:
    path: Path
    file: DidName
    dataset: DidName
    rse: str
    lifetime_seconds: int | None
    adler32: str
    md5: str
    size: int


def derived_file_name(dataset: DidName, path: Path, md5: str) -> str:
    """The file name used when the caller gives none: ``<dataset>.<md5[:8]><extension>``.

    The content hash makes the name deterministic for the same bytes and distinct for
    different bytes, so a re-run never collides with an earlier, different output.
    """
    lowered = path.name.lower()
    ext = next((e for e in (".tar.gz", ".tgz", ".tar") if lowered.endswith(e)), path.suffix.lower())
    return f"{dataset.name}.{md5[:8]}{ext}"


def stage_out(
    path: Path,
    *,
    did: str | None = None,
    dataset: str,
    rse: str,
    lifetime_days: int | None = 14,
    client: Client | None = None,
    checksums: tuple[str, str, int] | None = None,
) -> StageOutResult:
    """Upload ``path`` as file DID ``did`` into ``dataset`` on ``rse``, at most once.

    ``did`` and ``dataset`` are ``scope:name`` (a trailing ``/`` is dropped); without
    ``did`` the file goes into the dataset's scope under ``derived_file_name``.  A new
    dataset gets a rule of one copy on ``rse`` lasting ``lifetime_days`` (None: no expiry).
    Outcomes: "uploaded"; "already-present" (everything was already in place: a no-op);
    "recovered" (an earlier or the current attempt stopped half-way, e.g. the file was
    registered but never attached, and this call completed it).  Raises StageOutConflict
    when the name holds different bytes, RucioError (StageOutFailed) for server refusals.

    ``checksums`` is (adler32, md5, size) of the file when the caller has them already,
    e.g. ``TarResult.checksums``: the file is then not read for them.  The size is
    checked against the file, and the copy on the RSE against the adler32.
    """
    if not path.is_file():
        raise InputFileError(f"cannot stage out {path}: not a file")
    adler32, md5, size = file_checksums(path) if checksums is None else _known_checksums(path, checksums)
    dataset_did = DidName.parse(dataset)
    file_did = (
        DidName.parse(did, default_scope=dataset_did.scope)
        if did
        else DidName(dataset_did.scope, derived_file_name(dataset_did, path, md5))
    )
    request = _Request(
        path=path,
        file=file_did,
        dataset=dataset_did,
        rse=rse,
        lifetime_seconds=lifetime_days * _SECONDS_PER_DAY if lifetime_days else None,
        adler32=adler32,
        md5=md5,
        size=size,
    )
    client = client or rucio_client()
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_worth_retrying),
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=1, min=1, max=30),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        outcome = retrying(_stage_out_once, client, request)
    except CwlbridgeError:
        raise
    except (rucio_exc.RucioException, requests.RequestException) as exc:
        raise rucio_error(exc, f"stage-out of {path.name} to {file_did} failed", url=server_url(client)) from exc
    return StageOutResult(
        scope=file_did.scope,
        name=file_did.name,
        dataset=str(dataset_did),
        adler32=adler32,
        md5=md5,
        bytes=size,
        outcome=outcome,
    )


def _known_checksums(path: Path, checksums: tuple[str, str, int]) -> tuple[str, str, int]:
    adler32, md5, size = checksums
    if not re.fullmatch(r"[0-9a-fA-F]{1,8}", adler32) or not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise UsageError(f"checksums for {path} must be (adler32 hex, md5 hex, size), not {checksums!r}")
    actual = path.stat().st_size
    if actual != size:
        raise InputFileError(
            f"cannot stage out {path}: the checksums given are for {size} bytes, the file has {actual}"
        )
    return format_adler32(int(adler32, 16)), md5.lower(), size


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("stage-out attempt %d failed (%s); retrying", state.attempt_number, type(exc).__name__)


def _same_adler32(a: str | None, b: str) -> bool:
    # Rucio has stored adler32 values both with and without leading zeros (rucio#4127).
    return a is not None and a.lower().lstrip("0") == b.lower().lstrip("0")


def _file_metadata(client: Client, did: DidName) -> dict[str, Any] | None:
    try:
        meta: dict[str, Any] = client.get_metadata(did.scope, did.name)
    except rucio_exc.DataIdentifierNotFound:
        return None
    return meta


def _check_not_conflicting(meta: dict[str, Any], request: _Request) -> None:
    if meta.get("did_type") not in (None, "FILE"):
        raise StageOutConflict(
            f"{request.file} already exists as a {str(meta['did_type']).lower()}, not a file",
            hint="choose another file name",
        )
    if not _same_adler32(meta.get("adler32"), request.adler32):
        raise StageOutConflict(
            f"{request.file} already exists in Rucio with different content "
            f"(adler32 {meta.get('adler32')}, local file {request.path} has {request.adler32})",
            hint="Rucio never reuses a name, even after deletion; give the output a new name",
        )


def _dataset_exists(client: Client, dataset: DidName) -> bool:
    try:
        client.get_did(dataset.scope, dataset.name)
    except rucio_exc.DataIdentifierNotFound:
        return False
    return True


def _stage_out_once(client: Client, request: _Request) -> Outcome:
    outcome: Outcome
    meta = _file_metadata(client, request.file)
    if meta is not None:
        _check_not_conflicting(meta, request)
        outcome = "already-present"
        log.info("%s is already registered with the same adler32", request.file)
    else:
        outcome = _upload(client, request)
    repaired = _reconcile(client, request)
    if outcome == "already-present" and repaired:
        return "recovered"
    return outcome


def _upload(client: Client, request: _Request) -> Outcome:
    """Copy the file to the RSE and register it (only called while the DID does not exist)."""
    try:
        # What rsemanager.get_rse_info fetches, but with the caller's client and credentials.
        settings = client.get_rse(request.rse)
    except rucio_exc.RSENotFound as exc:
        raise rucio_exc.InvalidRSEExpression(f"RSE {request.rse} does not exist") from exc
    if not settings.get("availability_write", True):
        raise rucio_exc.RSEWriteBlocked(f"{request.rse} is not available for writing")
    if not settings.get("deterministic", True):
        raise StageOutFailed(
            f"{request.rse} is not a deterministic RSE, so a file's place on it is not derived from its name",
            url=server_url(client),
            hint="stage out to a deterministic RSE (scratch, user and group disks are)",
        )
    if settings.get("sign_url"):
        return _upload_with_upload_client(client, request)
    _copy_to_rse(client, request, settings)
    return _register(client, request)


def _copy_to_rse(client: Client, request: _Request, settings: Any) -> None:
    """Copy the file to its place on the RSE, verify size and adler32 there, then move it in.

    Write protocols are tried in the RSE's order of preference.
    """
    did = make_valid_did(
        {
            "scope": request.file.scope,
            "name": request.file.name,
            "filesize": request.size,
            "adler32": request.adler32,
            "md5": request.md5,
        }
    )
    failures: list[str] = []
    for attributes in rsemanager.get_protocols_ordered(settings, "write", domain="wan"):
        protocol = rsemanager.create_protocol(
            settings,
            "write",
            domain="wan",
            auth_token=client.auth_token,
            protocol_attr=attributes,
            logger=_upload_log.log,
        )
        try:
            protocol.connect()
            pfn = next(iter(protocol.lfns2pfns(did).values()))
            staging = f"{pfn}.rucio.upload" if protocol.renaming else pfn
            # The DID is not registered, so anything at these places was left by an
            # attempt that never registered it: it is replaced.
            for leftover in dict.fromkeys((staging, pfn)):
                if protocol.exists(leftover):
                    protocol.delete(leftover)
            protocol.put(
                request.path.name,
                staging,
                str(request.path.parent),
                # The pilot's rule: room for slow storage, scaled with size, capped at 3 h.
                transfer_timeout=int(min(400 + request.size / 1e6, 10800)),
            )
            _verify_copy(protocol, staging, request, settings)
            if protocol.renaming:
                protocol.rename(staging, pfn)
            log.info("copied %s to %s (%d bytes, adler32 %s)", request.path.name, pfn, request.size, request.adler32)
            return
        except CwlbridgeError:
            raise
        except Exception as exc:  # any protocol error: try the next protocol, then retry as a whole
            failures.append(f"{attributes.get('scheme')}: {type(exc).__name__}: {exc}")
        finally:
            protocol.close()
    raise rucio_exc.RSEOperationNotSupported(
        f"copy of {request.path.name} to {request.rse} failed: " + ("; ".join(failures) or "no write protocol")
    )


def _verify_copy(protocol: Any, staging: str, request: _Request, settings: Any) -> None:
    """Compare the copy's size and checksum, as the storage reports them, with the local file."""
    try:
        stats = protocol.stat(staging)
    except (NotImplementedError, rucio_exc.RSEChecksumUnavailable) as exc:
        if settings.get("verify_checksum") is False:
            log.warning("%s cannot report checksums (verify_checksum is off); copy not verified", request.rse)
            return
        raise StageOutFailed(
            f"{request.rse} cannot report the size and checksum of the copy of {request.path.name}: {exc}",
            hint="the copy could not be verified, so it is not registered",
        ) from exc
    problems: list[str] = []
    if "filesize" in stats and int(stats["filesize"]) != request.size:
        problems.append(f"{stats['filesize']} bytes instead of {request.size}")
    if "adler32" in stats:
        if not _same_adler32(str(stats["adler32"]), request.adler32):
            problems.append(f"adler32 {stats['adler32']} instead of {request.adler32}")
    elif "md5" in stats:
        if str(stats["md5"]).lower() != request.md5:
            problems.append(f"md5 {stats['md5']} instead of {request.md5}")
    elif settings.get("verify_checksum") is not False:
        log.warning("%s reported no checksum for %s; only its size was verified", request.rse, request.path.name)
    if problems:
        protocol.delete(staging)
        raise ReplicaMismatch(f"the copy of {request.path.name} on {request.rse} has " + " and ".join(problems))


def _register(client: Client, request: _Request) -> Outcome:
    replica = {
        **request.file.as_dict(),
        "bytes": request.size,
        "adler32": request.adler32,
        "md5": request.md5,
        "state": "A",
        "meta": {"guid": generate_uuid()},
    }
    try:
        client.add_replicas(rse=request.rse, files=[replica])
    except (
        rucio_exc.Duplicate,
        rucio_exc.DataIdentifierAlreadyExists,
        rucio_exc.FileAlreadyExists,
        rucio_exc.FileConsistencyMismatch,
    ):
        # Registered in the meantime (a concurrent run, or an earlier try whose reply was lost).
        meta = _file_metadata(client, request.file)
        if meta is None:
            raise
        _check_not_conflicting(meta, request)
        log.info("%s was registered by another attempt in the meantime", request.file)
        return "recovered"
    log.info("registered %s on %s", request.file, request.rse)
    return "uploaded"


def _upload_with_upload_client(client: Client, request: _Request) -> Outcome:
    """Upload through ``UploadClient`` (it reads the file again for its checksums)."""
    item: dict[str, Any] = {
        "path": str(request.path),
        "rse": request.rse,
        "did_scope": request.file.scope,
        "did_name": request.file.name,
        "dataset_scope": request.dataset.scope,
        "dataset_name": request.dataset.name,
        # Registers the replica AVAILABLE after the copy; the default mode needs a
        # state update that ordinary accounts may not make under the generic policy.
        "register_after_upload": True,
        "transfer_timeout": int(min(400 + request.size / 1e6, 10800)),
    }
    # The upload client refuses a lifetime for a dataset that already exists.
    if request.lifetime_seconds and not _dataset_exists(client, request.dataset):
        item["lifetime"] = request.lifetime_seconds
    uploader = UploadClient(_client=client, logger=_upload_log)
    # UploadClient(tracing=False) crashes in rucio 41 (it calls its logger argument),
    # so tracing is switched off on the instance instead.
    uploader.tracing = False
    try:
        uploader.upload([item])
    except (rucio_exc.NoFilesUploaded, rucio_exc.NotAllFilesUploaded) as exc:
        meta = _file_metadata(client, request.file)
        if meta is None:
            raise StageOutFailed(
                f"upload of {request.path.name} to {request.file} on {request.rse} failed "
                "and the file is not registered",
                rucio_class=type(exc).__name__,
                url=server_url(client),
                hint="the Rucio upload log (logger cwlbridge.rucio.upload) has the details",
            ) from exc
        _check_not_conflicting(meta, request)
        log.info("upload client reported %s, but %s is registered", type(exc).__name__, request.file)
        return "recovered"
    return "uploaded"


def _reconcile(client: Client, request: _Request) -> bool:
    """Check, and repair where an ordinary account can, every part of the end state.

    Returns whether anything had to be repaired.
    """
    _require_available_replica(client, request)
    repaired = False
    if not _dataset_exists(client, request.dataset):
        _create_dataset(client, request)
        repaired = True
    else:
        repaired = _ensure_dataset_rule(client, request)
    if not _is_attached(client, request):
        repaired = True
        # Attached by a concurrent or earlier attempt in the meantime: that is the goal.
        with contextlib.suppress(rucio_exc.FileAlreadyExists, rucio_exc.DuplicateContent):
            client.attach_dids(request.dataset.scope, request.dataset.name, [request.file.as_dict()])
        if not _is_attached(client, request):
            raise StageOutFailed(
                f"{request.file} was attached to {request.dataset}, but the dataset does not list it",
                url=server_url(client),
            )
    return repaired


def _require_available_replica(client: Client, request: _Request) -> None:
    replicas = list(client.list_replicas([request.file.as_dict()], all_states=True))
    states: dict[str, str] = {}
    for replica in replicas:
        states.update(replica.get("states") or {})
    state = states.get(request.rse)
    if state == "AVAILABLE":
        return
    where = f"in state {state}" if state else "missing"
    others = ", ".join(f"{rse} ({st})" for rse, st in sorted(states.items())) or "none"
    # An ordinary account cannot change a replica's state (rucio#6278), so this needs a
    # Rucio admin or a new file name; retrying would not help.
    raise StageOutFailed(
        f"{request.file} is registered, but its replica on {request.rse} is {where} (replicas: {others})",
        url=server_url(client),
        hint="ask your Rucio admins to repair the replica, or stage out under a new name",
    )


def _dataset_rule(request: _Request, account: str) -> dict[str, Any]:
    return {
        "account": account,
        "copies": 1,
        "rse_expression": request.rse,
        "grouping": "DATASET",
        "lifetime": request.lifetime_seconds,
    }


def _create_dataset(client: Client, request: _Request) -> None:
    try:
        client.add_dataset(
            request.dataset.scope,
            request.dataset.name,
            rules=[_dataset_rule(request, client.account)],
        )
        log.info("created dataset %s with a rule on %s", request.dataset, request.rse)
    except rucio_exc.DataIdentifierAlreadyExists:
        pass  # created concurrently; its rule is checked next time round


def _ensure_dataset_rule(client: Client, request: _Request) -> bool:
    rules = client.list_did_rules(request.dataset.scope, request.dataset.name)
    if any(rule.get("rse_expression") == request.rse for rule in rules):
        return False
    client.add_replication_rule(
        [request.dataset.as_dict()],
        copies=1,
        rse_expression=request.rse,
        grouping="DATASET",
        lifetime=request.lifetime_seconds,
    )
    log.info("added a rule for %s on %s", request.dataset, request.rse)
    return True


def _is_attached(client: Client, request: _Request) -> bool:
    return any(
        entry.get("scope") == request.file.scope and entry.get("name") == request.file.name
        for entry in client.list_files(request.dataset.scope, request.dataset.name)
    )
