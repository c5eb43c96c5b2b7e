"""Test jobs that wait for their test: bounded, and let go whatever the test's outcome.

A job outlives the backend that started it (that is the design), so a job looping until a
file appears would loop forever, and load the machine, if its test failed before making
the file.  The ``release`` fixture (conftest.py) makes the file at teardown in any case, and
the loop gives up on its own after a while.
"""

from __future__ import annotations

import shlex
from pathlib import Path


def wait_until_exists(path: Path, seconds: int = 120) -> str:
    """Shell text that waits until ``path`` exists, for at most ``seconds``."""
    return f"i=0; while [ ! -e {shlex.quote(str(path))} ] && [ $i -lt {seconds * 20} ]; do sleep 0.05; i=$((i+1)); done"
