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

from deepsolar.classifier.config import (
    ClassifierConfig,
    DataConfig,
    FolderSource,
    LossConfig,
    ManifestSource,
    OptimConfig,
    SceneSource,
    TrainClassifierConfig,
    TrainConfig,
)
from deepsolar.classifier.data import Chip, labels_from_truth, load_sources, read_chip
from deepsolar.classifier.loss import DeepSolarLoss
from deepsolar.classifier.model import build_classifier, preprocess
from deepsolar.classifier.predict import (
    evaluate_checkpoint,
    load_classifier,
    predict_proba,
    predict_tiles,
)
from deepsolar.classifier.train import fit, load_checkpoint

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
