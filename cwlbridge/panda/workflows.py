"""``cwlbridge workflow status|kill|retry|finish|pause|resume REQUEST_ID``: a submitted chain.

The commands go through PanDA's ``execute_idds_workflow_command`` (pbook's way), sent as a
form with its Content-Type.  iDDS names them ``get_status``, ``abort``, ``retry``,
``finish``, ``suspend`` and ``resume``.

iDDS answers ``get_status`` with a text table (``tabulate``'s "simple" format): without
detail one row for the request (its status), with detail one row per transform, whose
``transform_workload_id`` is the PanDA task's jediTaskID.  ``status`` reads both, then the
tasks' names and JEDI statuses from PanDA (one ``get_tasks_modified_since``) and their file
counts (``get_detailed_info``, only for tasks whose status changed while ``--watch`` runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from cwlbridge.errors import EXIT_FAILURE, EXIT_OK, CwlbridgeError, UsageError

#: Our command -> iDDS's.
COMMANDS = {"kill": "abort", "retry": "retry", "finish": "finish", "pause": "suspend", "resume": "resume"}
#: iDDS request statuses after which nothing more happens unless the user acts.
FINAL_REQUEST = frozenset({"Finished", "SubFinished", "Failed", "Cancelled", "Expired", "Suspended", "Broken"})
#: How far back tasks are looked for when the request was not submitted from here.
UNKNOWN_SINCE = dt.timedelta(days=30)


def register(subparsers: Any) -> None:
    workflow = subparsers.add_parser(
        "workflow", help="follow or steer a chain handed to PanDA with `cwlbridge submit` (by request id)"
    )
    actions = workflow.add_subparsers(dest="workflow_command", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="the request's status and its tasks (jediTaskID, status, files)")
    status.add_argument("request_id", type=_request_id, metavar="REQUEST_ID")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action="store_true", help="show it again as it changes, until the request ends")
    status.add_argument("--interval", type=float, default=60.0, metavar="SECONDS", help="--watch: ask this often")
    status.add_argument("--base", metavar="DIR", default=".", help="directory holding .cwlbridge/ (default .)")
    status.set_defaults(handler=run_status)
    for name, idds_name in COMMANDS.items():
        action = actions.add_parser(name, help=f"iDDS {idds_name} of the request")
        action.add_argument("request_id", type=_request_id, metavar="REQUEST_ID")
        action.add_argument("--json", action="store_true", help="machine-readable output")
        action.set_defaults(handler=run_command, idds_command=idds_name)


def _request_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a request id is a number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a request id is not negative")
    return value


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of a ``tabulate`` "simple" table, by header; [] for anything else."""
    lines = [line for line in str(text).splitlines() if line.strip()]
    rule = next((i for i, line in enumerate(lines) if set(line.strip()) <= {"-", " "} and "-" in line), None)
    if rule is None or rule == 0:
        return []
    spans = []
    start = None
    for index, char in enumerate(lines[rule] + " "):
        if char == "-" and start is None:
            start = index
        elif char != "-" and start is not None:
            spans.append((start, index))
            start = None
    # A cell may run past its rule (tabulate pads to the widest); cut at the next column's start.
    cuts = [a for a, _ in spans[1:]] + [None]
    headers = [lines[rule - 1][a:b].strip() for (a, _), b in zip(spans, cuts)]
    rows = []
    for line in lines[rule + 1 :]:
        rows.append({h: line[a:b].strip() for h, (a, _), b in zip(headers, spans, cuts)})
    return rows


def _client() -> Any:
    from cwlbridge.panda.client import PandaClient

    return PandaClient.from_env()


def request_state(client: Any, request_id: int, base: str, known: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The request's status and its tasks; ``known`` keeps file counts between rounds."""
    from cwlbridge.panda.grid import DEFAULT_MONITOR_URL
    from cwlbridge.panda.submit import recalled

    summary = parse_table(client.workflow_command("get_status", request_id))
    if not summary:
        raise CwlbridgeError(f"iDDS knows no request {request_id}", hint="check the id `cwlbridge submit` printed")
    transforms = parse_table(client.workflow_command("get_status", request_id, with_detail=True))
    ids = sorted({int(t["transform_workload_id"]) for t in transforms
                  if t.get("transform_workload_id", "").isdigit()})
    record = recalled(Path(base), request_id) or {}
    since = (dt.datetime.fromisoformat(record["submitted"]) - dt.timedelta(minutes=10) if record.get("submitted")
             else dt.datetime.now(dt.timezone.utc) - UNKNOWN_SINCE)
    rows = {r.task_id: r for r in client.tasks_modified_since(since)} if ids else {}
    monitor = os.environ.get("CWLBRIDGE_PANDA_MONITOR_URL") or DEFAULT_MONITOR_URL
    tasks = []
    for task_id in ids:
        row = rows.get(task_id)
        status = row.status if row is not None else "unknown"
        entry = known.get(task_id)
        if entry is None or entry["status"] != status:
            info = client.detailed_info(task_id) if row is not None else {}
            files = {k: int(info.get(src) or 0) for k, src in
                     (("total", "nFiles"), ("done", "nFilesFinished"), ("failed", "nFilesFailed"))}
            entry = {"jediTaskID": task_id, "name": row.name if row is not None else "", "status": status,
                     "files": files, "link": monitor.format(id=task_id)}
            known[task_id] = entry
        tasks.append(entry)
    return {"request_id": request_id, "status": summary[0].get("status", ""), "outds": record.get("outds"),
            "errors": summary[0].get("errors") or None, "tasks": tasks}


def _show(state: dict[str, Any]) -> str:
    from cwlbridge.model.plan import short_name

    lines = [f"request {state['request_id']}  {state['status']}" + (f"  {state['outds']}" if state["outds"] else "")]
    if state.get("errors") and state["errors"] != "None":
        lines.append(f"errors: {state['errors']}")
    if not state["tasks"]:
        lines.append("no PanDA task yet")
    rows = [["task", "jediTaskID", "PanDA", "files", "link"]]
    for task in state["tasks"]:
        files = task["files"]
        shown = f"{files['done']}/{files['total']}" if files["total"] else ""
        if files["failed"]:
            shown += f" ({files['failed']} failed)"
        name = short_name(task["name"], state["outds"]) if state["outds"] else task["name"]
        rows.append([name, str(task["jediTaskID"]), task["status"], shown, task["link"]])
    if state["tasks"]:
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def run_status(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be more than 0 seconds")
    known: dict[int, dict[str, Any]] = {}
    shown = None
    with _client() as client:
        while True:
            state = request_state(client, args.request_id, args.base, known)
            text = json.dumps(state, indent=2) + "\n" if args.json else _show(state)
            if text != shown:
                sys.stdout.write(text)
                sys.stdout.flush()
                shown = text
            if not args.watch or state["status"] in FINAL_REQUEST:
                break
            time.sleep(args.interval)
    return EXIT_OK if state["status"] not in ("Failed", "Broken") else EXIT_FAILURE


def run_command(args: argparse.Namespace) -> int:
    with _client() as client:
        answer = client.workflow_command(args.idds_command, args.request_id)
    message = answer[1] if isinstance(answer, list) and len(answer) == 2 else answer
    if args.json:
        sys.stdout.write(json.dumps({"request_id": args.request_id, "command": args.idds_command,
                                     "answer": answer}) + "\n")
    else:
        sys.stdout.write(f"request {args.request_id}: {args.idds_command}: {message}\n")
    return EXIT_OK
