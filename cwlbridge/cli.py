"""The ``cwlbridge`` command line: parse arguments, call one function, print.

Each command family registers its own sub-parser (``register(subparsers)``)
and keeps its heavy imports inside the handler, so ``cwlbridge validate``
starts fast.  Every ``CwlbridgeError`` becomes a message and an exit code;
an unexpected exception becomes a one-line internal-error message (set
``CWLBRIDGE_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from cwlbridge import __version__
from cwlbridge.errors import EXIT_FAILURE, EXIT_USAGE, CwlbridgeError

Handler = Callable[[argparse.Namespace], int]
EXIT_INTERNAL = 70


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share one path."""

    def error(self, message: str) -> NoReturn:  # type: ignore[name-defined]  # noqa: F821
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every command family registered."""
    from cwlbridge.data import command as data_command
    from cwlbridge.engine import command as engine_command
    from cwlbridge.engine import run as run_command
    from cwlbridge.model import command as model_command
    from cwlbridge.reana import command as reana_command

    parser = _Parser(prog="cwlbridge", description="Validate, plan and run pchain CWL chains.")
    parser.add_argument("--version", action="version", version=f"cwlbridge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    model_command.register(subparsers)
    reana_command.register(subparsers)
    data_command.register(subparsers)
    run_command.register(subparsers)
    engine_command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return int(stop.code) if isinstance(stop.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    try:
        return handler(args)
    except CwlbridgeError as err:
        sys.stderr.write(f"cwlbridge: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("cwlbridge: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE
    except Exception as err:  # the last guard: no traceback for users
        if os.environ.get("CWLBRIDGE_DEBUG"):
            raise
        sys.stderr.write(
            f"cwlbridge: internal error: {type(err).__name__}: {err}\n"
            "  this is a bug in cwlbridge; rerun with CWLBRIDGE_DEBUG=1 for the traceback\n"
        )
        return EXIT_INTERNAL


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
