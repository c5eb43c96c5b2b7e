"""One emulated PanDA job, run as its own process, as a pilot and runGen run a grid job.

``python -m tests.servers.panda_pilot list SPEC.json`` prints the files of datasets;
``python -m tests.servers.panda_pilot job SPEC.json`` runs one job:

1. unpacks the task's sandbox (``-a``) from the PanDA cache into the job directory;
2. downloads the job's input files from Rucio (the real DownloadClient, checksums verified);
3. writes the user's PanDA secrets when the task ``useSecrets``: ``panda_secrets.json``, the
   plain ones exported into the environment, ``___file___:<name>`` ones decoded into files
   (what runGen does with the file the pilot writes);
4. runs the exec (``%IN`` filled with the comma-joined input names) with ``bash -c``;
5. uploads each output the ``-o`` map names under its LFN into the output dataset on the
   test RSE (the real UploadClient; the dataset is created when missing).

Rucio is reached as $RUCIO_CONFIG says (the emulator gives the root account: PanDA's own
stage-out identity).  The result goes to stdout as one JSON line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

log = logging.getLogger("panda-pilot")
FILE_PREFIX = "___file___:"


def split_did(text: str) -> tuple[str, str]:
    """(scope, name) of ``scope:name`` or of a bare name (``user.jdoe.x`` is in ``user.jdoe``)."""
    text = text.strip().rstrip("/")
    if ":" in text:
        scope, _, name = text.partition(":")
        return scope, name
    parts = text.split(".")
    scope = ".".join(parts[:2]) if parts[0] in ("user", "group") else parts[0]
    return scope, text


def _client() -> Any:
    from rucio.client import Client

    return Client()


def list_datasets(datasets: list[str]) -> dict[str, Any]:
    from rucio.common.exception import DataIdentifierNotFound

    client = _client()
    found: dict[str, Any] = {}
    for dataset in datasets:
        scope, name = split_did(dataset)
        try:
            files = list(client.list_files(scope, name))
        except DataIdentifierNotFound:
            found[dataset] = None
            continue
        found[dataset] = sorted(
            ({"scope": f["scope"], "name": f["name"], "bytes": int(f.get("bytes") or 0)} for f in files),
            key=lambda f: f["name"],
        )
    return found


def _download(client: Any, files: list[dict[str, Any]], where: Path) -> None:
    from rucio.client.downloadclient import DownloadClient

    if not files:
        return
    downloader = DownloadClient(client=client, logger=log, tracing=False)
    items = [{"did": f"{f['scope']}:{f['name']}", "base_dir": str(where), "no_subdir": True} for f in files]
    results = downloader.download_dids(items, num_threads=2)
    bad = [r for r in results if r.get("clientState") not in ("DONE", "ALREADY_DONE")]
    if bad:
        raise RuntimeError(f"input download failed: {[r.get('name') for r in bad]}")


def _upload(client: Any, path: Path, lfn: str, dataset: str, rse: str) -> None:
    from rucio.client.uploadclient import UploadClient
    from rucio.common.exception import DataIdentifierAlreadyExists

    scope, name = split_did(dataset)
    with contextlib.suppress(DataIdentifierAlreadyExists):
        client.add_dataset(scope, name, rules=[{"account": client.account, "copies": 1, "rse_expression": rse}])
    uploader = UploadClient(_client=client, logger=log)
    uploader.tracing = False  # UploadClient(tracing=False) crashes in rucio 41
    item = {
        "path": str(path), "rse": rse, "did_scope": scope, "did_name": lfn,
        "dataset_scope": scope, "dataset_name": name, "register_after_upload": True,
    }
    uploader.upload([item])


def _secrets(secrets: dict[str, str], work: Path) -> dict[str, str]:
    (work / "panda_secrets.json").write_text(json.dumps(secrets))
    env = {}
    for key, value in secrets.items():
        if key.startswith(FILE_PREFIX):
            (work / key[len(FILE_PREFIX) :]).write_bytes(base64.b64decode(value))
        else:
            env[key] = value
    return env


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    work = Path(spec["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    if spec.get("sandbox"):
        with tarfile.open(spec["sandbox"]) as tar:
            tar.extractall(work, filter="data")
    client = _client()
    _download(client, spec["inputs"], work)
    env = {
        "PATH": spec["path"],
        "HOME": str(work),
        "LANG": "C.UTF-8",
        "PANDAID": str(spec["panda_id"]),
        "JEDITASKID": str(spec["task_id"]),
    }
    if spec.get("secrets") is not None:
        env |= _secrets(spec["secrets"], work)
    command = spec["exec"].replace("%IN", ",".join(spec["in_names"]))
    with (work / "payload.log").open("w") as out:
        code = subprocess.run(
            ["bash", "-c", command], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
            timeout=spec.get("timeout", 300), check=False,
        ).returncode
    if code != 0:
        tail = (work / "payload.log").read_text(errors="replace")[-2000:]
        return {"ok": False, "error": f"exec exited {code}", "log": tail}
    missing = [o["local"] for o in spec["outputs"] if not (work / o["local"]).is_file()]
    if missing:
        return {"ok": False, "error": f"output file(s) missing: {missing}"}
    for output in spec["outputs"]:
        staged = work / output["lfn"]
        os.replace(work / output["local"], staged)
        _upload(client, staged, output["lfn"], output["dataset"], spec["rse"])
    return {"ok": True, "outputs": [o["lfn"] for o in spec["outputs"]]}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    mode, path = argv
    spec = json.loads(Path(path).read_text())
    try:
        result: Any = list_datasets(spec["datasets"]) if mode == "list" else run_job(spec)
    except Exception as exc:  # a job's failure is its result
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
