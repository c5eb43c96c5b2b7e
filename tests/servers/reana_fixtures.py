"""pytest fixtures for the REANA 0.9 emulator and the official artifacts it is checked against.

* ``reana_artifacts`` (session): paths and parsed JSON of reana_server.json and
  reana_analysis_schema.json from reana-commons 0.9.11; skips, with the reason, without PyPI.
* ``reana_server``: a fresh 0.9 emulator on 127.0.0.1; at teardown it is stopped and the test
  errors if any response the emulator sent broke the spec (``violations``).
* ``reana_server_095``: the same, advertising the 0.95 bundle capability in /api/ping.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.reana_artifacts import (
    ArtifactsUnavailable,
    ReanaArtifacts,
    describe_cache,
    load_reana_artifacts,
)
from tests.servers.reana_emulator import ReanaEmulator


@pytest.fixture(scope="session")
def reana_artifacts() -> ReanaArtifacts:
    """The pinned REANA 0.9 OpenAPI spec and reana.yaml schema (downloaded once, cached)."""
    try:
        return load_reana_artifacts()
    except ArtifactsUnavailable as exc:
        pytest.skip(f"REANA 0.9 artifacts unavailable, so no REANA emulator: {exc} "
                    f"({describe_cache()})")


def _serve(artifacts: ReanaArtifacts, root: Path, protocol_095: bool) -> Iterator[ReanaEmulator]:
    emulator = ReanaEmulator(
        artifacts.server_spec, artifacts.analysis_schema, root=root, protocol_095=protocol_095
    )
    try:
        yield emulator
    finally:
        emulator.stop()
    if emulator.violations:
        pytest.fail(
            "the REANA emulator sent responses that break the REANA 0.9 spec:\n"
            + "\n".join(emulator.violations),
            pytrace=False,
        )


@pytest.fixture
def reana_server(reana_artifacts: ReanaArtifacts, tmp_path: Path) -> Iterator[ReanaEmulator]:
    """A fresh REANA 0.9 emulator; workspaces live under tmp_path/reana-emulator."""
    yield from _serve(reana_artifacts, tmp_path / "reana-emulator", protocol_095=False)


@pytest.fixture
def reana_server_095(
    reana_artifacts: ReanaArtifacts, tmp_path: Path
) -> Iterator[ReanaEmulator]:
    """An emulator that advertises the REANA 0.95 protocol and answers 501 beyond /api/ping."""
    yield from _serve(reana_artifacts, tmp_path / "reana-emulator-095", protocol_095=True)
