"""Tile classifier: DeepSolar's Inception-v3 transfer-learning recipe in PyTorch.

- :mod:`.config` - pydantic configs (``TrainClassifierConfig`` = model/loss/optim/data/train)
- :mod:`.model` - Inception-v3 with 2-class heads, weights loading, preprocessing
- :mod:`.loss` - the cost-sensitive loss
- :mod:`.recipe` - optimiser, step decay, fine-tuning strategies
- :mod:`.data` - chip reading, sources, splits, labels from synthetic truth
- :mod:`.checkpoint` - what a checkpoint holds, loading one for inference
- :mod:`.train` - the training loop
- :mod:`.metrics` - metrics, threshold sweep, JSON + PNG
- :mod:`.predict` - batched inference and evaluation
"""

from __future__ import annotations

from deepsolar import lazy_exports

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
    "load_checkpoint": "checkpoint",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


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
