"""Devices, thread counts and seeds shared by every training and inference stage.

Every training loop re-seeds from ``(seed, stage, epoch)`` at the start of each epoch
(:func:`epoch_seed`), so a run resumed from the checkpoint of epoch k replays epoch k+1 exactly as
an uninterrupted run would (on the same device and thread count).
"""

from __future__ import annotations

import random

import numpy as np
import torch

from deepsolar.core.errors import ConfigError

# ``stage`` of :func:`epoch_seed` per loop: the classifier has none (0), the greedy CAM branch uses
# its stage number (1..n), the mask head a fixed 7. Changing one changes that loop's trained weights.
CLASSIFIER_SEED_STAGE = 0
MASK_HEAD_SEED_STAGE = 7


def resolve_device(spec: str = "auto") -> torch.device:
    """The torch device for a config's ``device`` value.

    Args:
        spec: ``auto`` (cuda when a GPU is visible, else cpu), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The device; ConfigError for an unknown name or CUDA without a visible GPU.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(
            f"unknown device '{spec}'", where="train.device", fix="use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "CUDA was requested but no GPU is visible",
            where="train.device",
            fix="set train.device to 'auto' or 'cpu'",
        )
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's (``seed mod 2**32``) and torch's global generators.

    Args:
        seed: the run's seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, stage: int = CLASSIFIER_SEED_STAGE) -> int:
    """The seed of one epoch: ``(seed x 1_000_003 + stage x 10_007 + epoch) mod 2**63``.

    Args:
        seed: the run's seed.
        epoch: the 0-based epoch.
        stage: the loop's stage (:data:`CLASSIFIER_SEED_STAGE`, a greedy CAM stage number, or
            :data:`MASK_HEAD_SEED_STAGE`).

    Returns:
        A non-negative 63-bit seed for ``torch.manual_seed`` and the epoch's shuffling generator.
    """
    return (seed * 1_000_003 + stage * 10_007 + epoch) % 2**63
