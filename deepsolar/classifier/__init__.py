"""Tile classifier: DeepSolar's Inception-v3 transfer-learning recipe in PyTorch.

- :mod:`.config` - pydantic configs (``TrainClassifierConfig`` = model/loss/optim/data/train)
- :mod:`.model` - Inception-v3 with 2-class heads, weights loading, preprocessing
- :mod:`.loss` - the cost-sensitive loss
- :mod:`.recipe` - optimiser, step decay, fine-tuning strategies
- :mod:`.data` - chip reading, sources, splits, labels from synthetic truth
- :mod:`.train` - the loop and checkpoints
- :mod:`.metrics` - metrics, threshold sweep, JSON + PNG
- :mod:`.predict` - batched inference and evaluation
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule; imported on first use, so that ``deepsolar.classifier.config`` (pydantic
# models only) can be imported without torch, torchvision and scikit-learn (the CLI validates a
# config before it imports a flow).
_EXPORTS = {
    "ClassifierConfig": "config",
    "DataConfig": "config",
    "FolderSource": "config",
    "LossConfig": "config",
    "ManifestSource": "config",
    "OptimConfig": "config",
    "SceneSource": "config",
    "TrainClassifierConfig": "config",
    "TrainConfig": "config",
    "Chip": "data",
    "labels_from_truth": "data",
    "load_sources": "data",
    "read_chip": "data",
    "DeepSolarLoss": "loss",
    "build_classifier": "model",
    "preprocess": "model",
    "evaluate_checkpoint": "predict",
    "load_classifier": "predict",
    "predict_proba": "predict",
    "predict_tiles": "predict",
    "fit": "train",
    "load_checkpoint": "train",
}


def __getattr__(name: str) -> Any:
    """The exported names, each from its submodule on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Chip",
    "ClassifierConfig",
    "DataConfig",
    "DeepSolarLoss",
    "FolderSource",
    "LossConfig",
    "ManifestSource",
    "OptimConfig",
    "SceneSource",
    "TrainClassifierConfig",
    "TrainConfig",
    "build_classifier",
    "evaluate_checkpoint",
    "fit",
    "labels_from_truth",
    "load_checkpoint",
    "load_classifier",
    "load_sources",
    "predict_proba",
    "predict_tiles",
    "preprocess",
    "read_chip",
]
