"""Shared pytest set-up: the real servers and emulators live in tests/servers/."""

import os
import tempfile

# What cwlbridge remembers between commands goes to a directory of this test session, not
# the user's ~/.cache (cwlbridge commands the tests start inherit it).
os.environ["CWLBRIDGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="cwlbridge-test-cache-")

pytest_plugins = [
    "tests.servers.reana_fixtures",
    "tests.servers.rucio_fixtures",
]
