"""``cwlbridge validate`` and ``cwlbridge plan``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from cwlbridge.errors import EXIT_FAILURE, EXIT_OK, CwlbridgeError, UsageError


def register(subparsers: Any) -> None:
    """Add ``validate`` and ``plan``."""
    validate = subparsers.add_parser(
        "validate",
        help="check a chain offline with PanDA's rules",
        description="Check a pchain CWL chain offline. Exit 0: valid (maybe with warnings);"
        " 1: errors found; 2: usage error.",
    )
    add_chain_arguments(validate)
    add_outds_arguments(validate, help="check the task and dataset names this --outDS gives (pchain's --outDS)")
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.set_defaults(handler=run_validate)

    plan = subparsers.add_parser(
        "plan",
        help="show the tasks and datasets PanDA would create",
        description="Resolve a chain into PanDA tasks: names, datasets, placeholders, parents.",
    )
    add_chain_arguments(plan)
    add_outds_arguments(plan, required=True, help="the pchain --outDS, e.g. user.NICK.NAME")
    plan.add_argument(
        "--format", choices=("table", "json", "dot", "mermaid"), default="table", help="output format"
    )
    plan.add_argument("-o", "--output", metavar="FILE", help="write a picture (.svg or .png) of the DAG")
    plan.add_argument(
        "--sandbox", action="store_true", help="list the files the PanDA sandbox would hold (and those it refuses)"
    )
    plan.add_argument(
        "--sandbox-include", action="append", default=[], metavar="GLOB",
        help="also put files matching GLOB (relative to the chain) into the sandbox (repeatable)",
    )
    plan.set_defaults(handler=run_plan)


def add_chain_arguments(parser: argparse.ArgumentParser) -> None:
    """CHAIN.cwl [INPUTS.yaml], or pchain's spellings ``--cwl CHAIN`` and ``--yaml INPUTS``."""
    parser.add_argument("chain", metavar="CHAIN.cwl", nargs="?")
    parser.add_argument("inputs", metavar="INPUTS.yaml", nargs="?")
    parser.add_argument("--cwl", metavar="CHAIN.cwl", help="the chain (pchain's spelling)")
    parser.add_argument("--yaml", metavar="INPUTS.yaml", help="the inputs file (pchain's spelling)")


def add_outds_arguments(parser: argparse.ArgumentParser, *, help: str, required: bool = False) -> None:
    """``--outds`` (or pchain's ``--outDS``) and ``--official``, read by ``outds_from``."""
    parser.add_argument("--outds", "--outDS", dest="outds", required=required, metavar="OUTDS", help=help)
    parser.add_argument(
        "--official", action="store_true", help="allow a group.<name>. --outds, as pchain --official does"
    )


def chain_and_inputs(args: argparse.Namespace, *, inputs_required: bool) -> tuple[str, str | None]:
    """The chain and inputs files from positional arguments or ``--cwl``/``--yaml``."""
    given = [p for p in (args.chain, args.inputs) if p is not None]
    chain, inputs = args.cwl, args.yaml
    if chain is None:
        if not given:
            raise UsageError("give the chain: CHAIN.cwl, or --cwl CHAIN.cwl")
        chain = given.pop(0)
    if given:
        if inputs is not None or len(given) > 1:
            raise UsageError(f"one inputs file only; got {', '.join([inputs, *given] if inputs else given)}")
        inputs = given.pop(0)
    if inputs is None and inputs_required:
        raise UsageError("give the inputs file: INPUTS.yaml, or --yaml INPUTS.yaml")
    return chain, inputs


def outds_from(args: argparse.Namespace) -> str | None:
    """The checked ``--outds`` without prun's trailing ``/``, or None when not given."""
    from cwlbridge.model.rules import normalize_outds

    return normalize_outds(args.outds, official=args.official) if args.outds is not None else None


def require_file(path: str, what: str) -> None:
    """A usage error unless ``path`` is an existing file."""
    if not os.path.exists(path):
        raise UsageError(f"{what} '{path}' does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{what} '{path}' is a directory, not a file")
    if not os.path.isfile(path):
        # A FIFO or a device would be read forever (or block until a writer comes).
        raise UsageError(f"{what} '{path}' is not a regular file (a FIFO, device or socket)")


def run_validate(args: argparse.Namespace) -> int:
    from cwlbridge.cache import LoadedChains, SchemaVerdicts
    from cwlbridge.model.rules import analyse

    args.chain, args.inputs = chain_and_inputs(args, inputs_required=False)
    outds = outds_from(args)
    require_file(args.chain, "chain file")
    if args.inputs is not None:
        require_file(args.inputs, "inputs file")
    analysis = analyse(
        args.chain, args.inputs, outds, verdicts=SchemaVerdicts.default(), chains=LoadedChains.default()
    )
    findings = analysis.findings
    if args.format == "json":
        sys.stdout.write(
            json.dumps(
                {
                    "valid": not findings.errors,
                    "errors": len(findings.errors),
                    "warnings": len(findings.warnings),
                    "findings": [f.as_dict() for f in findings.items],
                },
                indent=2,
            )
            + "\n"
        )
    else:
        for finding in findings.items:
            sys.stderr.write(finding.text() + "\n")
        tasks = len(analysis.plan.tasks) if analysis.plan else 0
        if findings.errors:
            sys.stderr.write(
                f"{args.chain}: {len(findings.errors)} error(s), {len(findings.warnings)} warning(s)\n"
            )
        else:
            sys.stdout.write(
                f"{args.chain}: valid ({tasks} task(s), {len(findings.warnings)} warning(s))\n"
            )
    return EXIT_FAILURE if findings.errors else EXIT_OK


def run_plan(args: argparse.Namespace) -> int:
    from cwlbridge.cache import LoadedChains, SchemaVerdicts
    from cwlbridge.model import plan as plan_mod
    from cwlbridge.model.rules import analyse

    # No inputs file is fine for a chain whose inputs all have defaults; a required one
    # without a value is then an error at its declaration.
    args.chain, args.inputs = chain_and_inputs(args, inputs_required=False)
    outds = outds_from(args)
    require_file(args.chain, "chain file")
    if args.inputs is not None:
        require_file(args.inputs, "inputs file")
    analysis = analyse(
        args.chain, args.inputs, outds, verdicts=SchemaVerdicts.default(), chains=LoadedChains.default(),
        need_values=True,
    )
    for finding in analysis.findings.items:
        sys.stderr.write(finding.text() + "\n")
    if analysis.findings.errors or analysis.plan is None:
        sys.stderr.write(f"{args.chain}: {len(analysis.findings.errors)} error(s); no plan\n")
        return EXIT_FAILURE
    plan = analysis.plan
    if args.sandbox:
        from cwlbridge.panda import sandbox as sandbox_mod

        selection = sandbox_mod.select(Path(args.chain), plan, includes=args.sandbox_include)
        sys.stdout.write(f"PanDA sandbox of {args.chain}: {len(selection.files)} file(s)\n")
        for line in sandbox_mod.describe(selection):
            sys.stdout.write(line + "\n")
        selection.check()
        return EXIT_OK
    if args.output:
        write_picture(plan_mod.to_dot(plan), args.output)
        sys.stderr.write(f"wrote {args.output}\n")
    if args.format == "json":
        sys.stdout.write(plan.json_text())
    elif args.format == "dot":
        sys.stdout.write(plan_mod.to_dot(plan))
    elif args.format == "mermaid":
        sys.stdout.write(plan_mod.to_mermaid(plan))
    elif not args.output:
        print_table(plan)
    return EXIT_OK


def print_table(plan: Any) -> None:
    """The plan as a terminal table (rich), one row per task."""
    from rich.console import Console
    from rich.table import Table

    from cwlbridge.model.plan import to_table_rows

    table = Table(title=f"{plan.outds}: {len(plan.tasks)} task(s)", show_lines=True)
    for column in ("id", "task", "type", "inputs", "outputs", "parents"):
        table.add_column(column, overflow="fold")
    for row in to_table_rows(plan):
        table.add_row(*row)
    Console(width=max(shutil.get_terminal_size((160, 24)).columns, 120)).print(table)


def write_picture(dot_text: str, output: str) -> None:
    """Render DOT to .svg/.png with Graphviz, or say how to get Graphviz."""
    ext = os.path.splitext(output)[1].lower().lstrip(".")
    if ext not in ("svg", "png", "pdf"):
        raise UsageError(f"-o {output}: the picture must end in .svg, .png or .pdf")
    dot = shutil.which("dot")
    if dot is None:
        raise CwlbridgeError(
            "cannot draw the picture: Graphviz 'dot' is not installed",
            hint="install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install"
            " graphviz; conda: conda install graphviz), or use --format dot / --format mermaid",
        )
    try:
        subprocess.run(
            [dot, f"-T{ext}", "-o", output], input=dot_text.encode(), check=True, capture_output=True
        )
    except subprocess.CalledProcessError as err:
        raise CwlbridgeError(f"Graphviz failed: {err.stderr.decode(errors='replace').strip()}") from None
    except OSError as err:
        raise CwlbridgeError(f"cannot write {output}: {err.strerror}") from None
