"""The names Rucio accepts for datasets and containers, which PanDA's task names become.

Rucio's generic schema (rucio-clients, ``rucio/common/schema/generic.py``, ``NAME``): a DID
name matches ``[/A-Za-z0-9][/A-Za-z0-9.\\-_]*`` and has at most ``NAME_LENGTH`` (250)
characters.  The ``/`` is left out here: the ATLAS policy refuses it, and PanDA only uses it
at the end of a name to mark a container, which is not part of the Rucio name.
"""

from __future__ import annotations

import re

DID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]*")
DID_NAME_LENGTH = 250
_FIRST = re.compile(r"[A-Za-z0-9]")
_REST = re.compile(r"[A-Za-z0-9.\-_]")
#: What a message says about the rule.
ALLOWED = "Rucio names take letters, digits and . - _ only"


def bad_name_char(name: str) -> str | None:
    """The first character Rucio refuses in the DID name ``name``, described, or None."""
    if DID_NAME.fullmatch(name) or not name:
        return None
    for index, char in enumerate(name):
        if (_FIRST if index == 0 else _REST).fullmatch(char):
            continue
        if not char.isascii():
            what = f"the non-ASCII character '{char}' (U+{ord(char):04X})"
        elif not char.isprintable() or char.isspace():
            what = "a space" if char == " " else f"the character U+{ord(char):04X}"
        elif index == 0:
            what = f"the character '{char}' at its start"
        else:
            what = f"the character '{char}'"
        return what
    return None
