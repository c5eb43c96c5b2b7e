"""The ``cwlbridge`` command line: parse arguments, call one function, print.

Each command family registers its own sub-parser (``register(subparsers)``)
and keeps its heavy imports inside the handler, so ``cwlbridge validate``
starts fast.  Every ``CwlbridgeError`` becomes a message and an exit code;
an unexpected exception becomes a one-line internal-error message (``--debug``
or ``CWLBRIDGE_DEBUG=1`` shows the traceback).  ``-v``/``--verbose`` and
``--debug`` are accepted by every command, before or after its name.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from cwlbridge import __version__
from cwlbridge.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CwlbridgeError

Handler = Callable[[argparse.Namespace], int]
EXIT_INTERNAL = 70


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share one path."""

    def error(self, message: str) -> NoReturn:  # type: ignore[name-defined]  # noqa: F821
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _add_common_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """Give ``parser`` and every sub-parser below it ``-v/--verbose`` and ``--debug``.

    Below the top level the defaults are suppressed, so ``cwlbridge --debug run …``
    is not undone by the sub-parser's own default.  A parser that defines ``-v``
    itself (``reana job``, whose options are also PanDA's opt_exec) keeps its own.
    """
    verbose_default: object = 0 if top else argparse.SUPPRESS
    debug_default: object = False if top else argparse.SUPPRESS
    if "-v" not in parser._option_string_actions:
        parser.add_argument(
            "-v", "--verbose", action="count", default=verbose_default, help="say more (REST calls, retries, …)"
        )
    if "--debug" not in parser._option_string_actions:
        parser.add_argument(
            "--debug", action="store_true", default=debug_default, help="log everything and show tracebacks"
        )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _add_common_options(sub)


def _configure_logging(verbose: int, debug: bool) -> None:
    """Log cwlbridge's own messages to stderr: INFO with ``-v``, DEBUG with ``--debug``."""
    if not (verbose or debug):
        return
    logger = logging.getLogger("cwlbridge")
    if not logger.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(stream)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every command family registered."""
    from cwlbridge.data import command as data_command
    from cwlbridge.engine import command as engine_command
    from cwlbridge.engine import run as run_command
    from cwlbridge.model import command as model_command
    from cwlbridge.panda import command as panda_command
    from cwlbridge.panda import submit as submit_command
    from cwlbridge.panda import workflows as workflow_command
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
    panda_command.register(subparsers)
    submit_command.register(subparsers)
    workflow_command.register(subparsers)
    _add_common_options(parser, top=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return int(stop.code) if isinstance(stop.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    if args.debug:
        # Child processes (the REANA submitter of a run: reana step) inherit it.
        os.environ["CWLBRIDGE_DEBUG"] = "1"
    _configure_logging(args.verbose or 0, args.debug)
    try:
        return handler(args)
    except CwlbridgeError as err:
        sys.stderr.write(f"cwlbridge: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("cwlbridge: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILURE
    except Exception as err:  # the last guard: no traceback for users
        if os.environ.get("CWLBRIDGE_DEBUG"):
            raise
        sys.stderr.write(
            f"cwlbridge: internal error: {type(err).__name__}: {err}\n"
            "  this is a bug in cwlbridge; rerun with --debug for the traceback\n"
        )
        return EXIT_INTERNAL


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
