"""``cwlbridge reana submit|job``: the REANA submitter's command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cwlbridge.errors import CwlbridgeError, UsageError

_DESCRIPTION_SUBMIT = """\
Fill in a reana.yaml template, submit it to REANA (or run it here), download the declared
outputs, tar them and optionally upload the tarball to Rucio.  Running the same command
again resumes the same workflow (state in WORKDIR/.cwlbridge/reana/).

Configuration comes from the environment: REANA_SERVER_URL, REANA_ACCESS_TOKEN,
REANA_CA_BUNDLE (or --ca-bundle), RUCIO_CONFIG / RUCIO_* and X509_USER_PROXY for Rucio.
Without REANA_SERVER_URL (or with --engine local) the spec runs on this machine."""

_DESCRIPTION_JOB = """\
The REANA submitter inside a PanDA job: like `submit`, but the template comes from --spec,
secrets are also read from the job's panda_secrets.json (REANA_SERVER_URL and
REANA_ACCESS_TOKEN too, when not in the environment), the workflow is named after the PanDA
job so a re-run finds it, and the tarball (--tar, default output_from_reana.tar) is left in
the work directory for the pilot to stage out."""


def _exit_epilog() -> str:
    from cwlbridge.reana.exitcodes import exit_code_table

    return "exit codes:\n" + exit_code_table()


def register(subparsers: Any) -> None:
    """Add the ``reana`` command family."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "reana", help="submit a reana.yaml template to REANA and stage its outputs out"
    )
    reana_sub = parser.add_subparsers(dest="reana_command", metavar="SUBCOMMAND")
    reana_sub.required = True
    epilog = _exit_epilog()

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = reana_sub.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return made

    submit = command("submit", "submit a reana.yaml template (lxplus, laptop)", _DESCRIPTION_SUBMIT)
    submit.add_argument("template", metavar="TEMPLATE", help="the reana.yaml template")
    _add_common(submit, default_tar=None)
    submit.set_defaults(handler=run_submit)

    job = command("job", "run inside a PanDA job container (pchain opt_exec)", _DESCRIPTION_JOB)
    job.add_argument("--spec", required=True, metavar="TEMPLATE", help="the reana.yaml template")
    _add_common(job, default_tar="output_from_reana.tar")
    job.set_defaults(handler=run_job)


def _repeatable(group: Any, flag: str, metavar: str, help_text: str) -> None:
    group.add_argument(flag, action="append", default=[], metavar=metavar, help=help_text + " (repeatable)")


def _duration(group: Any, flag: str, default: float, help_text: str) -> None:
    group.add_argument(
        flag, type=_seconds, default=default, metavar="SECONDS", help=help_text.format(default=f"{default:g}")
    )


def _add_common(parser: argparse.ArgumentParser, *, default_tar: str | None) -> None:
    spec = parser.add_argument_group("template")
    _repeatable(spec, "--set", "PATH=VALUE", "set a value at a dotted path, e.g. inputs.parameters.did=mc20:ds")
    _repeatable(spec, "--var", "NAME=VALUE", "replace token NAME inside string values, e.g. VAR_INPUT=mc20:ds")
    secrets = parser.add_argument_group("secrets")
    _repeatable(secrets, "--secret-file", "PATH", "a file secret named by its basename, e.g. usercert.pem")
    _repeatable(
        secrets, "--secret-env", "NAME[=VALUE]", "an env secret; without =VALUE the value comes from the environment"
    )
    secrets.add_argument(
        "--wipe-secret-files", action="store_true", help="remove the --secret-file files once uploaded (and on failure)"
    )
    secrets.add_argument(
        "--voms-pass-base64",
        action="store_true",
        help="VOMSPROXY_PASS is already base64-encoded (default: plain passphrase)",
    )
    run = parser.add_argument_group("workflow")
    run.add_argument("--name", help="workflow label; the REANA name is cwlb-<label>-<hash> (no dots)")
    run.add_argument(
        "--engine",
        choices=("auto", "remote", "local"),
        default="auto",
        help="remote REANA, local run, or auto (remote when REANA_SERVER_URL is set)",
    )
    run.add_argument("--workdir", default=".", help="where the tarball and the state live (default: .)")
    run.add_argument("--ca-bundle", default=None, help="CA bundle for the REANA server (REANA_CA_BUNDLE)")
    _duration(
        run, "--timeout", 24 * 3600.0, "give up waiting after this long (default {default}); the workflow keeps running"
    )
    _duration(
        run,
        "--stall-timeout",
        6 * 3600.0,
        "give up when the run stays created/queued/pending this long (default {default})",
    )
    _duration(run, "--poll-initial", 5.0, "first polling interval (default {default})")
    _duration(run, "--poll-max", 60.0, "longest polling interval (default {default})")
    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--tar",
        default=default_tar,
        metavar="NAME",
        help="tar the declared outputs into NAME (gzip when .tgz/.tar.gz)"
        + (f"; default {default_tar}" if default_tar else ""),
    )
    out.add_argument("--keep-downloads", action="store_true", help="keep the downloaded files next to the tarball")
    out.add_argument("--rucio-dataset", metavar="SCOPE:NAME", help="upload the tarball into this Rucio dataset")
    out.add_argument("--rse", help="the RSE for --rucio-dataset")
    out.add_argument("--rucio-lifetime-days", type=int, default=14, help="lifetime of a new dataset's rule")
    parser.add_argument("-v", "--verbose", action="store_true", help="log REST calls and retries")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _configure_logging(verbose: bool) -> None:
    from cwlbridge.reana.redact import RedactingFilter, install_log_redaction

    install_log_redaction(("cwlbridge", "cwlbridge.reana", "cwlbridge.data.stageout", "urllib3.connectionpool"))
    root = logging.getLogger()
    if not root.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(stream)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    logging.getLogger("cwlbridge").setLevel(logging.INFO if verbose else logging.WARNING)


def _options(args: argparse.Namespace, template: str, *, panda: bool, environ: dict[str, str]) -> Any:
    from cwlbridge.reana.spec import parse_set_option, parse_var_option
    from cwlbridge.reana.submitter import SubmitOptions

    if args.rse and not args.rucio_dataset:
        raise UsageError("--rse is only used with --rucio-dataset")
    if args.rucio_dataset and not args.rse:
        raise UsageError("--rucio-dataset needs --rse")
    if args.poll_max < args.poll_initial:
        raise UsageError("--poll-max must not be smaller than --poll-initial")
    workdir = Path(args.workdir)
    if not workdir.is_dir():
        raise UsageError(f"--workdir {workdir} is not a directory")
    return SubmitOptions(
        template=Path(template),
        workdir=workdir,
        sets=[parse_set_option(a) for a in args.set],
        variables=[parse_var_option(a) for a in args.var],
        secret_files=[Path(p) for p in args.secret_file],
        secret_env=list(args.secret_env),
        panda_secrets=panda,
        voms_pass_is_base64=args.voms_pass_base64,
        wipe_secret_files=args.wipe_secret_files,
        name=args.name,
        tar=args.tar,
        rucio_dataset=args.rucio_dataset,
        rse=args.rse,
        rucio_lifetime_days=args.rucio_lifetime_days or None,
        timeout=args.timeout,
        stall_timeout=args.stall_timeout,
        poll_initial=args.poll_initial,
        poll_max=args.poll_max,
        engine=args.engine,
        ca_bundle=args.ca_bundle or environ.get("REANA_CA_BUNDLE") or None,
        keep_downloads=args.keep_downloads,
        environ=environ,
    )


def _run(args: argparse.Namespace, template: str, *, panda: bool) -> int:
    from cwlbridge.reana.redact import redact, register_secret
    from cwlbridge.reana.submitter import default_say, describe_exit, submit

    _configure_logging(args.verbose)
    environ = dict(os.environ)
    if panda:
        environ = _with_panda_server_settings(environ, Path(args.workdir))
    if environ.get("REANA_ACCESS_TOKEN"):
        register_secret(environ["REANA_ACCESS_TOKEN"])
    try:
        options = _options(args, template, panda=panda, environ=environ)
        result = submit(options, say=default_say)
    except CwlbridgeError as err:
        err.message = redact(err.message)
        if err.hint:
            err.hint = redact(err.hint)
        default_say(f"FAILED (exit {err.exit_code}: {describe_exit(err.exit_code)})")
        raise
    where = f"workflow {result.workflow_name} ({result.workflow_id})" if result.workflow_id else "local run"
    default_say(f"DONE: {where}, {len(result.outputs)} output file(s)")
    if result.tar is not None:
        default_say(f"tarball {result.tar.path} adler32 {result.tar.adler32} md5 {result.tar.md5}")
    if result.stageout is not None:
        default_say(f"in Rucio: {result.stageout.scope}:{result.stageout.name} ({result.stageout.outcome})")
    return 0


def _with_panda_server_settings(environ: dict[str, str], workdir: Path) -> dict[str, str]:
    """Take REANA_SERVER_URL / REANA_ACCESS_TOKEN from panda_secrets.json when the env lacks them."""
    from cwlbridge.reana.secrets import PANDA_SECRETS_FILE

    path = workdir / PANDA_SECRETS_FILE
    if not path.is_file():
        return environ
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return environ  # load_panda_secrets reports the problem with a safe message
    if not isinstance(raw, dict):
        return environ
    merged = dict(environ)
    for name in ("REANA_SERVER_URL", "REANA_ACCESS_TOKEN", "REANA_CA_BUNDLE"):
        value = raw.get(name)
        if isinstance(value, str) and value and not merged.get(name):
            merged[name] = value
    return merged


def run_submit(args: argparse.Namespace) -> int:
    """``cwlbridge reana submit TEMPLATE``."""
    return _run(args, args.template, panda=False)


def run_job(args: argparse.Namespace) -> int:
    """``cwlbridge reana job --spec TEMPLATE`` inside a PanDA job."""
    return _run(args, args.spec, panda=True)
