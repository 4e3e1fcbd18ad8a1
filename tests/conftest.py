"""Shared fixtures.

``shared_data``: the real data folder (``DEEPSOLAR_SHARED_DATA``, default ``../shared/data``).
Tests needing it are skipped with a reason where it is absent, except in CI (``CI=true``), where a
missing folder is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deepsolar.core.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        msg = (
            f"shared real data not found at {path}; set DEEPSOLAR_SHARED_DATA to the folder "
            "that holds pv_chips/, boundaries/ and tables/"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API (SQLite in a temp dir) for flow tests; one per test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def server():
    """A local tile server on 127.0.0.1 (tests/fixtures/tileserver.py), stopped after the test."""
    from tests.fixtures.tileserver import TileServer

    with TileServer() as srv:
        yield srv
