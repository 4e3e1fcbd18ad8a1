"""Classifier checkpoints: what they hold besides the weights, and loading them for inference.

Checkpoints are plain ``torch.save`` dicts of tensors, numbers, strings, lists and dicts, so they
load with ``torch.load(..., weights_only=True)`` (no pickled code runs). Each carries the full
config, class names, input size, normalisation and decision threshold, so inference needs nothing
else. Inference imports this module, not the training loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepsolar.classifier.config import TrainClassifierConfig
from deepsolar.classifier.model import NORMALIZE, build_classifier
from deepsolar.core.checkpoints import CheckpointKind, load_checkpoint_of
from deepsolar.core.config import validate_config

CHECKPOINT_FORMAT = "deepsolar-classifier"
CHECKPOINT_VERSION = 1
CLASSIFIER_CHECKPOINT = CheckpointKind(
    fmt=CHECKPOINT_FORMAT, kind="classifier", producer="train-classifier"
)


def checkpoint_meta(cfg: TrainClassifierConfig) -> dict[str, Any]:
    """What inference needs besides the weights, as plain data.

    Args:
        cfg: the training config.

    Returns:
        format, version, config (JSON dump), class names, input size (px), normalisation, decision
        threshold and the torch version.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": cfg.model_dump(mode="json"),
        "class_names": list(cfg.model.class_names),
        "input_size_px": cfg.model.input_size_px,
        "normalize": {k: list(v) for k, v in NORMALIZE.items()},
        "threshold": cfg.model.threshold,
        "torch_version": str(torch.__version__),
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a classifier checkpoint with ``weights_only=True`` (tensors and plain data only).

    Args:
        path: a ``train-classifier`` ``.pt`` file, or ``builtin`` for the shipped model.

    Returns:
        The checkpoint dict; InputDataError when it is missing or not a classifier checkpoint.
    """
    return load_checkpoint_of(path, CLASSIFIER_CHECKPOINT)


def config_from_checkpoint(
    ckpt: dict[str, Any], where: str = "checkpoint"
) -> TrainClassifierConfig:
    """The training config a checkpoint carries, validated.

    Args:
        ckpt: a loaded classifier checkpoint.
        where: the checkpoint's name for errors.

    Returns:
        The config; ConfigError naming each bad field.
    """
    return validate_config(TrainClassifierConfig, ckpt["config"], where=where)


def model_from_checkpoint(ckpt: dict[str, Any], where: str = "checkpoint") -> nn.Module:
    """Rebuild the network (no download) and load the checkpoint's weights strictly.

    Args:
        ckpt: a loaded classifier checkpoint.
        where: the checkpoint's name for errors.

    Returns:
        The network with the checkpoint's weights (train mode, on the CPU).
    """
    cfg = config_from_checkpoint(ckpt, where)
    model = build_classifier(cfg.model.model_copy(update={"weights": "none"}))
    model.load_state_dict(ckpt["model_state"])
    return model
