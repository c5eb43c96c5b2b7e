"""prun options, parsed by prun's own argument parser from panda-client.

PanDA's server runs ``opt_args`` through prun's parser and dies with
``SystemExit`` on a bad option.  We use the same parser (so the answer is
exactly prun's) but turn its exit into an error message.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

#: Characters prun refuses in output file names (PsubUtils.check_invalid_char).
_INVALID_OUTPUT_CHARS = "%|;><?'\"()$@:=&^#\\[]{}`*"


class PrunOptionError(Exception):
    """prun would reject these options; the message is prun's own."""


@dataclass(frozen=True)
class OutputSpec:
    """One ``--outputs`` entry: the file pattern and the dataset type it lands in."""

    pattern: str
    type: str


@dataclass
class PrunOptions:
    """The prun options cwlbridge needs, from one parse of ``opt_args``."""

    outputs: list[OutputSpec] = field(default_factory=list)
    use_secrets: bool = False
    n_files_per_job: int | None = None
    n_jobs: int | None = None
    n_files: int | None = None
    n_gb_per_job: str | None = None
    secondary_dss: str = ""
    namespace: dict[str, Any] = field(default_factory=dict)  # every option, as prun parsed it


class _Exit(Exception):
    pass


@lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    from pandaclient import PrunArgs

    parser: argparse.ArgumentParser = PrunArgs.build_parser()

    def _error(message: str) -> Any:
        raise PrunOptionError(message)

    def _exit(status: int = 0, message: str | None = None) -> Any:
        raise _Exit(message or "")

    parser.error = _error  # type: ignore[method-assign]
    parser.exit = _exit  # type: ignore[method-assign]
    return parser


#: One lexical piece of a POSIX shell word list, as ``shlex.split`` reads it: a run of plain
#: characters, blanks, a single-quoted part, a double-quoted part, or a backslash escape.
_PIECE = re.compile(r"""[^ \t\r\n'"\\]+|[ \t\r\n]+|'[^']*'?|"(?:[^"\\]|\\.)*"?|\\.?""", re.DOTALL)
_DOUBLE_QUOTED_ESCAPE = re.compile(r'\\(["\\])')


def split_args(text: str) -> list[str]:
    """Split ``opt_args`` into words exactly as ``shlex.split`` does, in linear time.

    ``shlex`` grows each word one character at a time, which is quadratic in the word's
    length (20 s for an opt_args of 25 000 placeholders); here each word is joined once.
    Unbalanced quotes and a trailing backslash are errors, with shlex's messages.
    """
    words: list[str] = []
    parts: list[str] = []
    in_word = False
    for match in _PIECE.finditer(text):
        piece = match.group()
        first = piece[0]
        if first in " \t\r\n":
            if in_word:
                words.append("".join(parts))
                parts, in_word = [], False
            continue
        in_word = True
        if first == "'":
            if len(piece) == 1 or piece[-1] != "'":
                raise PrunOptionError("cannot split opt_args: No closing quotation")
            parts.append(piece[1:-1])
        elif first == '"':
            if len(piece) == 1 or piece[-1] != '"' or _ends_escaped(piece):
                # Unclosed; shlex names a backslash at the very end first.
                last = "No escaped character" if match.end() < len(text) else "No closing quotation"
                raise PrunOptionError(f"cannot split opt_args: {last}")
            parts.append(_DOUBLE_QUOTED_ESCAPE.sub(r"\1", piece[1:-1]))
        elif first == "\\":
            if len(piece) == 1:
                raise PrunOptionError("cannot split opt_args: No escaped character")
            parts.append(piece[1])
        else:
            parts.append(piece)
    if in_word:
        words.append("".join(parts))
    return words


def _ends_escaped(quoted: str) -> bool:
    """Whether the closing quote of a double-quoted piece is itself escaped (``"ab\\"``)."""
    backslashes = len(quoted) - 1 - len(quoted[:-1].rstrip("\\"))
    return backslashes % 2 == 1


def unknown_option_hint(message: str) -> tuple[str | None, str | None]:
    """For prun's "unrecognized arguments: …": the first unknown option and a "did you mean".

    Returns (option word as written, hint); (None, None) for other messages.
    """
    _, found, rest = message.partition("unrecognized arguments: ")
    if not found:
        return None, None
    word = next((w for w in rest.split() if w.startswith("-")), None)
    if word is None:
        return None, None
    name = word.split("=", 1)[0]
    close = difflib.get_close_matches(name, sorted(_parser()._option_string_actions), n=1)
    return name, f"did you mean '{close[0]}'?" if close else None


def output_specs(outputs: str) -> list[OutputSpec]:
    """``--outputs`` entries and their dataset types, the way prun names the datasets."""
    specs: list[OutputSpec] = []
    seen_suffix: set[str] = set()
    regex_index = 0
    for entry in outputs.replace(" ", "").split(","):
        if not entry:
            continue
        suffix = ""
        name = entry
        if ":" in entry and not entry.startswith("regex|"):
            suffix, name = entry.split(":", 1)
            if suffix in seen_suffix:
                raise PrunOptionError(
                    f"dataset name suffix '{suffix}' is used for multiple files in --outputs"
                )
            seen_suffix.add(suffix)
        if name.startswith("regex|"):
            if not suffix:
                suffix = str(regex_index)
                regex_index += 1
            specs.append(OutputSpec(name, suffix))
            continue
        file_name = name
        if "*" in file_name:
            file_name = file_name.replace("*", "XYZ") + ".tgz"
        if "/" in file_name:
            raise PrunOptionError(f"an output file name {file_name} contains '/'")
        bad = next((c for c in file_name if c in _INVALID_OUTPUT_CHARS), None)
        if bad is not None:
            raise PrunOptionError(f'an output file name {file_name} contains an invalid character "{bad}"')
        specs.append(OutputSpec(name, suffix or file_name))
    return specs


@lru_cache(maxsize=4096)
def _parse_cached(args_text: str) -> PrunOptions:
    argv = split_args(args_text)
    parser = _parser()
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            namespace = parser.parse_args(argv)
    except (_Exit, SystemExit):
        raise PrunOptionError("opt_args asks prun to print and exit (--help or --version)") from None
    values = vars(namespace)
    outputs = values.get("outputs") or ""
    return PrunOptions(
        outputs=output_specs(outputs),
        use_secrets=bool(values.get("useSecrets")),
        n_files_per_job=_int_or_none(values.get("nFilesPerJob")),
        n_jobs=_int_or_none(values.get("nJobs")),
        n_files=_int_or_none(values.get("nFiles")),
        n_gb_per_job=str(values["nGBPerJob"]) if values.get("nGBPerJob") not in (None, "", -1) else None,
        secondary_dss=str(values.get("secondaryDSs") or ""),
        namespace=values,
    )


def _int_or_none(value: Any) -> int | None:
    if value in (None, "", -1):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def parse_prun_args(args_text: str) -> PrunOptions:
    """Parse ``opt_args`` with prun's parser; raises PrunOptionError with prun's message."""
    return _parse_cached(args_text)
