"""Keep REANA access tokens out of log lines and error messages.

A REANA 0.9 token travels as ``?access_token=...`` in every URL, and both
``requests`` exception texts and urllib3's debug lines quote URLs.  ``redact``
masks the query parameter and any registered secret string; ``RedactingFilter``
applies the same to log records of the loggers it is installed on.
"""

from __future__ import annotations

import logging
import re
import threading

_TOKEN_PARAM = re.compile(r"(access_token=)[^&\s#'\"<>)]*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+")
MASK = "***"

_known: set[str] = set()
_known_lock = threading.Lock()
# Short strings would mask ordinary words; real tokens are far longer.
_MIN_SECRET_LENGTH = 6


def register_secret(value: str) -> None:
    """Mask ``value`` wherever ``redact`` or a ``RedactingFilter`` sees it from now on."""
    if len(value) >= _MIN_SECRET_LENGTH:
        with _known_lock:
            _known.add(value)


def redact(text: str) -> str:
    """``text`` with ``access_token=`` values, bearer tokens and registered secrets masked."""
    text = _TOKEN_PARAM.sub(r"\g<1>" + MASK, text)
    text = _BEARER.sub(r"\g<1>" + MASK, text)
    with _known_lock:
        secrets = sorted(_known, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites a record's message through ``redact``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's problem
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


_FILTER = RedactingFilter()
#: Loggers that may print request URLs: ours and urllib3's connection pool.
REDACTED_LOGGERS: tuple[str, ...] = ("cwlbridge.reana", "urllib3.connectionpool")


def install_log_redaction(loggers: tuple[str, ...] = REDACTED_LOGGERS) -> None:
    """Attach the shared ``RedactingFilter`` to each named logger (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
