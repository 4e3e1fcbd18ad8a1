"""Checkpoint files shared by every trained stage: atomic saves and safe (weights-only) loads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deepsolar.core.errors import InputDataError
from deepsolar.core.io import atomic_output


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a checkpoint.

    Args:
        path: the ``.pt`` file; its folder is created.
        payload: what ``torch.save`` writes (tensors and plain data).

    Returns:
        The path written.
    """
    p = Path(path)
    with atomic_output(p) as tmp:
        torch.save(payload, tmp)
    return p


BUILTIN = "builtin"
# The reference model the project ships (data/models/, see its MODEL_CARD.md); DEEPSOLAR_MODELS_DIR
# points elsewhere (e.g. when the package is installed without the repository).
BUILTIN_FILES = {
    "classifier": "builtin-classifier.pt",
    "segmenter": "builtin-segmenter.pt",
    "mask_head": "builtin-mask-head.pt",
}


def builtin_models_dir() -> Path:
    """Folder of the shipped reference model: ``$DEEPSOLAR_MODELS_DIR`` or ``<repo>/data/models``.

    Returns:
        The folder path (not checked to exist).
    """
    env = os.environ.get("DEEPSOLAR_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data" / "models"


def resolve_checkpoint(path: str | Path, kind: str) -> Path:
    """``builtin`` -> the shipped reference model's file of ``kind``; anything else unchanged.

    Args:
        path: A checkpoint path, or ``builtin``.
        kind: ``classifier``, ``segmenter`` or ``mask_head`` (keys of :data:`BUILTIN_FILES`).

    Returns:
        The checkpoint file path.
    """
    if str(path) == BUILTIN and kind in BUILTIN_FILES:
        return builtin_models_dir() / BUILTIN_FILES[kind]
    return Path(path)


def load_checkpoint_safely(
    path: str | Path, *, fmt: str, kind: str, producer: str
) -> dict[str, Any]:
    """Load with ``weights_only=True`` (tensors and plain data only, no code) and check its format.

    ``fmt`` is the ``format`` field the file must carry; ``kind`` and ``producer`` name the file
    and the flow that writes it in the error messages.

    Args:
        path: The ``.pt`` file, or ``builtin`` for the shipped model of ``kind``.
        fmt: The ``format`` field the file must carry (e.g. ``deepsolar-segmenter``).
        kind: The kind's name in errors and in :data:`BUILTIN_FILES` (e.g. ``segmenter``).
        producer: The flow that writes it (e.g. ``train-segmenter``), for the errors' fixes.

    Returns:
        The checkpoint dict (tensors and plain data only).

    Raises:
        InputDataError: If the file is missing, cannot be loaded weights-only, or is not a
            ``fmt`` checkpoint.
    """
    p = resolve_checkpoint(path, kind)
    fix = f"use a checkpoint written by deepsolar's {producer}"
    if not p.is_file():
        raise InputDataError(
            f"{kind} checkpoint not found", where=str(p), fix=f"pass a .pt from {producer}"
        )
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling/zip errors vary by torch version
        raise InputDataError(
            f"cannot load the checkpoint safely ({type(err).__name__}: {err})",
            where=str(p),
            fix=fix,
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise InputDataError(f"not a deepsolar {kind} checkpoint", where=str(p), fix=fix)
    return ckpt


@dataclass(frozen=True)
class CheckpointKind:
    """What a kind of checkpoint file declares, and how errors name it.

    Attributes:
        fmt: the ``format`` field the file must carry (e.g. ``deepsolar-segmenter``).
        kind: the kind's name in errors and in :data:`BUILTIN_FILES` (e.g. ``segmenter``).
        producer: the flow that writes it (e.g. ``train-segmenter``), for the errors' fixes.
    """

    fmt: str
    kind: str
    producer: str


def load_checkpoint_of(path: str | Path, kind: CheckpointKind) -> dict[str, Any]:
    """Load a checkpoint of ``kind`` with ``weights_only=True``; clear error if it is not one.

    Args:
        path: the ``.pt`` file, or ``builtin`` for the shipped model of the kind.
        kind: the checkpoint kind it must be.

    Returns:
        The checkpoint dict (tensors and plain data only).

    Raises:
        InputDataError: If the file is missing, cannot be loaded weights-only, or is not a
            checkpoint of ``kind``.
    """
    return load_checkpoint_safely(path, fmt=kind.fmt, kind=kind.kind, producer=kind.producer)
