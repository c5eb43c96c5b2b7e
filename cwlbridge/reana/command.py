"""``cwlbridge reana submit|job``: the REANA submitter's command line."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``reana`` command family."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "reana", help="submit a reana.yaml template to REANA and stage its outputs out"
    )
    reana_sub = parser.add_subparsers(dest="reana_command", metavar="SUBCOMMAND")
    reana_sub.required = True
