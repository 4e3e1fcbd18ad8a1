"""Locate the project's shared real data folder (``../shared/data`` beside the checkout).

One setting: the environment variable ``DEEPSOLAR_SHARED_DATA``; by default ``../shared/data``
relative to the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Path of the shared data folder (may not exist; callers check)."""
    env = os.environ.get("DEEPSOLAR_SHARED_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data").resolve()
