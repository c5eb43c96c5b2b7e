"""pytest fixtures for the real Rucio test server (see tests/servers/rucio_server.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.servers.rucio_server import (
    RucioServer,
    ServerUnavailable,
    ensure_server_venv,
    start_server,
)


@pytest.fixture(scope="session")
def rucio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    """A Rucio 41.5.1 server on 127.0.0.1 with RSE, account jdoe and scope user.jdoe.

    Installs the server venv on first use (~25 s); skips, with the reason printed, when the
    packages cannot be installed.  Use ``rucio_env`` to also point RUCIO_CONFIG at it.
    """
    try:
        report = ensure_server_venv()
    except ServerUnavailable as exc:
        reason = f"real Rucio server unavailable: {exc}"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    server = start_server(tmp_path_factory.mktemp("rucio-server"))
    server.timings["install"] = report.seconds
    print(
        f"\nrucio server {server.url} pid {server.pid}: "
        + ", ".join(f"{k} {v:.2f}s" for k, v in server.timings.items()),
        file=sys.stderr,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rucio_env(rucio_server: RucioServer, monkeypatch: pytest.MonkeyPatch) -> RucioServer:
    """The session server, with RUCIO_CONFIG etc. pointing at its test user for one test."""
    for name, value in rucio_server.env().items():
        monkeypatch.setenv(name, value)
    return rucio_server
