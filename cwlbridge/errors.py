"""One exception hierarchy for cwlbridge; callers catch by meaning.

User-facing errors carry where the problem is: a source position
(``file:line:col``) for chain and spec files, or the remote status for
server replies.  The CLI turns any ``CwlbridgeError`` into a one-line
message and an exit code; nothing else should reach the user as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Exit codes shared by every command.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


@dataclass(frozen=True)
class SourcePos:
    """A position in a source file; line and column are 1-based."""

    path: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.path
        return f"{self.path}:{self.line}:{self.col or 1}"


class CwlbridgeError(Exception):
    """Base of every error cwlbridge raises on purpose."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, pos: SourcePos | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.pos}: error: {self.message}" if self.pos else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class UsageError(CwlbridgeError):
    """The command line itself is wrong (missing file argument, bad option value)."""

    exit_code = EXIT_USAGE


class InputFileError(CwlbridgeError):
    """A file the user named cannot be read or parsed at all."""


class ValidationFailed(CwlbridgeError):
    """A chain has validation errors; the findings are reported separately."""


class RemoteError(CwlbridgeError):
    """A server answered with an error; carries the HTTP status and a redacted URL."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, hint=hint)
        self.status = status
        self.url = url

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        code = f"HTTP {self.status}: " if self.status is not None else ""
        text = f"{code}{self.message}{where}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text
