"""Shared pytest set-up: the real servers and emulators live in tests/servers/."""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# What cwlbridge remembers between commands goes to a directory of this test session, not
# the user's ~/.cache (cwlbridge commands the tests start inherit it).
os.environ["CWLBRIDGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="cwlbridge-test-cache-")

pytest_plugins = [
    "tests.servers.reana_fixtures",
    "tests.servers.rucio_fixtures",
]


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Path]:
    """A file whose existence lets the test's waiting jobs end (see tests/waiting.py); made at
    teardown whatever happened, so that a failed test leaves no job waiting."""
    path = tmp_path / "release"
    yield path
    path.touch()
