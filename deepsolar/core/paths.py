"""Locate the project's shared real data folder (``../shared/data`` beside the checkout).

One setting: the environment variable ``DEEPSOLAR_SHARED_DATA``; by default ``../shared/data``
relative to the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """Path of the shared data folder (may not exist; callers check).

    Returns:
        ``$DEEPSOLAR_SHARED_DATA``, or ``../shared/data`` beside the repository root.
    """
    env = os.environ.get("DEEPSOLAR_SHARED_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data").resolve()


SHARED_DATA_VAR = "${DEEPSOLAR_SHARED_DATA}"


def resolve_data_path(value: object) -> object:
    """Expand a leading ``${DEEPSOLAR_SHARED_DATA}`` in a config value to the shared data folder.

    Args:
        value: a config value; strings starting with the variable become a ``Path``.

    Returns:
        The expanded path, or ``value`` unchanged.
    """
    if isinstance(value, str) and value.startswith(SHARED_DATA_VAR):
        rest = value[len(SHARED_DATA_VAR) :].lstrip("/")
        return shared_data_dir() / rest
    return value


# A config path field whose leading ``${DEEPSOLAR_SHARED_DATA}`` is expanded (resolve_data_path);
# ``DataPath | None`` for an optional one.
DataPath = Annotated[Path, BeforeValidator(resolve_data_path)]
