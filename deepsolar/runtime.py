"""Process-wide settings for running flows as an operator's tool (no Prefect import here)."""

from __future__ import annotations

import os

# Seconds Prefect's temporary ("ephemeral") API server may take to start: its default, 20 s, is
# missed on a loaded 2-core machine (34 s measured), which killed flows before any work.
EPHEMERAL_STARTUP_TIMEOUT_S = "120"

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": EPHEMERAL_STARTUP_TIMEOUT_S,
    # offline by design: no telemetry, no "Failed to send telemetry" lines
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def prefect_env_defaults() -> None:
    """Set PREFECT_DEFAULTS in the environment unless already set. Must run before Prefect is
    imported (its settings are read then); child processes (the temporary server, workers)
    inherit them."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
