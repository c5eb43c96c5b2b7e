"""Exit codes of ``cwlbridge reana submit`` and ``cwlbridge reana job`` (documented in --help)."""

from __future__ import annotations

from cwlbridge.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

EXIT_REMOTE = 3
EXIT_SECRETS = 4
EXIT_WORKFLOW_FAILED = 5
EXIT_DEADLINE = 6
EXIT_OUTPUTS = 7
EXIT_STAGEOUT = 8

#: Exit codes of ``cwlbridge reana submit`` and ``cwlbridge reana job``.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "the workflow finished and every declared output arrived (and was tarred / staged out)",
    EXIT_FAILURE: "another error (a local file cannot be read or written, ...)",
    EXIT_USAGE: "bad command line or template (message says where)",
    EXIT_REMOTE: "the REANA server refused a call or could not be reached (HTTP status in the message)",
    EXIT_SECRETS: "secrets the spec needs (voms_proxy / rucio) are missing",
    EXIT_WORKFLOW_FAILED: "the REANA workflow failed, was stopped or deleted (log tail printed)",
    EXIT_DEADLINE: "--timeout passed, or the run stayed queued longer than --stall-timeout; re-run to resume",
    EXIT_OUTPUTS: "a declared output is missing, has the wrong size or an unsafe path",
    EXIT_STAGEOUT: "the upload to Rucio failed",
}


def exit_code_table() -> str:
    """The exit codes as an aligned text table for ``--help``."""
    return "\n".join(f"  {code}  {text}" for code, text in sorted(EXIT_CODES.items()))

