"""Config models for greedy layer-wise CAM segmentation (DeepSolar's defaults).

``TrainSegmenterConfig`` is what ``configs/segmenter-*.yaml`` hold; ``CamConfig`` is shared by
training (for reports), ``segment-tiles`` and the evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from deepsolar.classifier.config import ChipSource, SubtileConfig, _resolve_path
from deepsolar.config import StrictModel

# DeepSolar taps Inception-v3's Mixed_5d (35x35x288 at 299 px); other backbones: see backbones.
TAP_LAYER = "Mixed_5d"
TAP_CHANNELS = 288


class BranchConfig(StrictModel):
    """The CAM branch: ``n_stages`` conv3x3 + ReLU layers, each with its own GAP + linear head."""

    tap: str | None = Field(
        None,
        description="classifier module to tap; None: the arch's default (inception_v3: Mixed_5d, "
        "DeepSolar; efficientnet_lite*: blocks.4, stride 16)",
        max_length=100,
    )
    channels: int = Field(512, ge=1, le=4096, description="DeepSolar: 512 per conv layer")
    n_stages: int = Field(2, ge=1, le=8, description="DeepSolar: 2 (greedy, one at a time)")


class CamConfig(StrictModel):
    """How a CAM becomes a mask: native map -> bilinear to the tile -> min-max -> threshold."""

    method: Literal["greedy", "plain"] = Field(
        "greedy", description="greedy: the trained branch; plain: classifier's Mixed_7c x fc"
    )
    stage: int | None = Field(
        None, ge=1, description="greedy branch stage to read the CAM from (None: the last trained)"
    )
    threshold: float = Field(0.37, gt=0.0, lt=1.0, description="DeepSolar: 0.37")
    classifier_threshold: float | None = Field(
        None, gt=0.0, lt=1.0, description="None: the classifier checkpoint's own threshold"
    )


class SegOptimConfig(StrictModel):
    """Plain SGD, as DeepSolar trained each CAM stage."""

    lr: float = Field(0.005, gt=0.0, description="DeepSolar: 0.005")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="DeepSolar: plain SGD (0)")
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(64, ge=1, description="DeepSolar: 64")
    epochs_per_stage: float = Field(
        5.0, gt=0.0, description="not stated by DeepSolar; a fraction = part of an epoch"
    )


class SegDataConfig(StrictModel):
    """Image-level labelled chips (the same source kinds as the classifier)."""

    train: list[ChipSource] = Field(min_length=1)
    subtiles: SubtileConfig | None = Field(
        None, description="cut chips wider than a tile into tile-sized cells (as the classifier)"
    )
    rot90: bool = Field(False, description="random 90-degree rotations (disables feature cache)")
    num_workers: int = Field(0, ge=0)
    min_side_px: int = Field(16, ge=1)


class SegTrainLoopConfig(StrictModel):
    seed: int = 0
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    num_threads: int | None = Field(None, ge=1, description="torch.set_num_threads on CPU")
    cache_features: bool = Field(
        True,
        description="compute the frozen backbone's Mixed_5d features once (float16, in memory) "
        "instead of every epoch; off when rot90 is on",
    )
    progress: bool = True


class TrainSegmenterConfig(StrictModel):
    """A greedy CAM training run on top of a trained classifier checkpoint."""

    classifier_checkpoint: Path
    branch: BranchConfig = BranchConfig()
    optim: SegOptimConfig = SegOptimConfig()
    data: SegDataConfig
    cam: CamConfig = CamConfig()
    train: SegTrainLoopConfig = SegTrainLoopConfig()

    @field_validator("classifier_checkpoint", mode="before")
    @classmethod
    def _expand(cls, value: object) -> object:
        return _resolve_path(value)


def default_segmenter(classifier: Path, segmenter: Path | None, method: str) -> Path | None:
    """The builtin classifier comes with its builtin greedy CAM branch (``segmenter`` unset)."""
    if segmenter is None and method == "greedy" and str(classifier) == "builtin":
        return Path("builtin")
    return segmenter
