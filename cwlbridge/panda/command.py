"""``cwlbridge panda secrets ls|set|rm``: the PanDA secrets a task with ``--useSecrets`` reads.

Secrets are stored as pbook stores them: a plain value under its name, a file base64-encoded
under ``___file___:<name>`` (at most 1000 kB, PanDA's limit).  Values never reach the
terminal: ``ls`` lists names and sizes, and ``set`` reads a value from stdin (or a prompt)
when it is not given, so it stays out of the shell history and ``ps``.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from cwlbridge.errors import EXIT_OK, UsageError

FILE_PREFIX = "___file___:"
MAX_FILE_BYTES = 1000 * 1024


def register(subparsers: Any) -> None:
    panda = subparsers.add_parser("panda", help="your PanDA account: secrets")
    families = panda.add_subparsers(dest="panda_command", metavar="COMMAND", required=True)
    secrets = families.add_parser("secrets", help="the secrets PanDA gives tasks run with --useSecrets")
    actions = secrets.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)

    ls = actions.add_parser("ls", help="list your PanDA secrets (names and sizes, never values)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=run_ls)

    put = actions.add_parser("set", help="store a secret (a value, or a file with --file)")
    put.add_argument("name", nargs="?", help="its name (default for --file: the file's name)")
    put.add_argument("value", nargs="?", help="its value; '-' or left out: read from stdin or a prompt")
    put.add_argument("--file", metavar="PATH", help="store this file (as pbook does: base64 under ___file___:NAME)")
    put.set_defaults(handler=run_set)

    rm = actions.add_parser("rm", help="delete secrets")
    rm.add_argument("names", nargs="*", metavar="NAME", help="a secret's name (a file secret by its name too)")
    rm.add_argument("--all", action="store_true", help="delete every secret")
    rm.set_defaults(handler=run_rm)


def _client() -> Any:
    from cwlbridge.panda.client import PandaClient

    return PandaClient.from_env()


def run_ls(args: argparse.Namespace) -> int:
    with _client() as client:
        secrets = client.secrets()
    rows = [
        {"name": key.removeprefix(FILE_PREFIX), "kind": "file" if key.startswith(FILE_PREFIX) else "value",
         "bytes": len(base64.b64decode(value)) if key.startswith(FILE_PREFIX) else len(value)}
        for key, value in sorted(secrets.items())
    ]
    if args.json:
        sys.stdout.write(json.dumps({"secrets": rows}, indent=2) + "\n")
        return EXIT_OK
    if not rows:
        sys.stdout.write("no PanDA secrets\n")
    for row in rows:
        sys.stdout.write(f"{row['name']}  ({row['kind']}, {row['bytes']} bytes)\n")
    return EXIT_OK


def run_set(args: argparse.Namespace) -> int:
    if args.file:
        path = Path(args.file)
        if args.value is not None:
            raise UsageError("give a value or --file, not both")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_FILE_BYTES:
            raise UsageError(f"{path} is {len(data)} bytes; PanDA keeps file secrets up to 1000 kB")
        key, value = FILE_PREFIX + (args.name or path.name), base64.b64encode(data).decode()
    else:
        if not args.name:
            raise UsageError("name the secret: cwlbridge panda secrets set NAME [VALUE]")
        value = args.value
        if value in (None, "-"):
            value = getpass.getpass(f"value of {args.name}: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\n")
        if not value:
            raise UsageError(f"no value for {args.name}")
        key = args.name
    with _client() as client:
        client.set_secret(key, value)
    sys.stdout.write(f"PanDA secret {key.removeprefix(FILE_PREFIX)} stored\n")
    return EXIT_OK


def run_rm(args: argparse.Namespace) -> int:
    if args.all == bool(args.names):
        raise UsageError("name the secrets to delete, or give --all")
    with _client() as client:
        if args.all:
            client.set_secret(None, None)
            sys.stdout.write("every PanDA secret deleted\n")
            return EXIT_OK
        have = set(client.secrets())
        for name in args.names:
            keys = [k for k in (name, FILE_PREFIX + name) if k in have]
            if not keys:
                raise UsageError(f"no PanDA secret named {name}")
            for key in keys:
                client.set_secret(key, None)
            sys.stdout.write(f"PanDA secret {name} deleted\n")
    return EXIT_OK
