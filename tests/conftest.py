"""Shared pytest set-up: the real servers and emulators live in tests/servers/."""

pytest_plugins = [
    "tests.servers.reana_fixtures",
    "tests.servers.rucio_fixtures",
]
