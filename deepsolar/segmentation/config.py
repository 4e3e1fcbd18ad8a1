"""Config models for greedy layer-wise CAM segmentation (DeepSolar's defaults).

``TrainSegmenterConfig`` is what ``configs/segmenter-*.yaml`` hold; ``CamConfig`` is shared by
training (for reports), ``segment-tiles`` and the evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from deepsolar.classifier.config import (
    ChipSource,
    ImagesSource,
    ManifestSource,
    SubtileConfig,
)
from deepsolar.core.config import StrictModel
from deepsolar.core.paths import DataPath
from deepsolar.core.runners import TaskRunnerConfig

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


class MaskCleanConfig(StrictModel):
    """Morphology on a boolean mask before vectorising (sizes in ground metres; 0 = off).

    Order: opening (removes specks and thin spurs narrower than ``open_m``), closing (bridges
    gaps narrower than ``close_m``, e.g. between panel rows), then holes up to ``fill_holes_m2``
    filled. Disc structuring elements; pixels beyond the tile edge neither erode nor dilate, so a
    piece that reaches the edge still reaches it after cleaning (arrays cut by a tile edge can be
    rejoined by the merge step).
    """

    open_m: float = Field(0.0, ge=0.0, le=50.0, description="opening disc diameter (m)")
    close_m: float = Field(0.0, ge=0.0, le=50.0, description="closing disc diameter (m)")
    fill_holes_m2: float = Field(
        0.0, ge=0.0, description="fill enclosed holes up to this area (m²)"
    )

    @property
    def active(self) -> bool:
        """Whether any clean-up step is on (a size above 0)."""
        return self.open_m > 0 or self.close_m > 0 or self.fill_holes_m2 > 0


class CamConfig(StrictModel):
    """How a CAM becomes a mask: native map -> bilinear to the tile -> min-max -> threshold.

    DeepSolar's rule is the default (``floor`` None, no cleaning). ``floor`` adds an absolute
    gate on the raw map; ``clean`` tidies the mask (see :class:`MaskCleanConfig`).
    """

    method: Literal["greedy", "plain", "mask_head"] = Field(
        "greedy",
        description="greedy: the trained branch (DeepSolar); plain: classifier's Mixed_7c x fc; "
        "mask_head: a supervised decoder trained on masks (train-mask-head), read from the "
        "segmenter checkpoint",
    )
    stage: int | None = Field(
        None, ge=1, description="greedy branch stage to read the CAM from (None: the last trained)"
    )
    threshold: float = Field(0.37, gt=0.0, lt=1.0, description="DeepSolar: 0.37")
    classifier_threshold: float | None = Field(
        None, gt=0.0, lt=1.0, description="None: the classifier checkpoint's own threshold"
    )
    floor: float | None = Field(
        None,
        allow_inf_nan=False,
        description="absolute activation floor: a pixel is panel only where the raw "
        "(un-normalised, upsampled) map named by floor_on is strictly above it, so a tile whose "
        "CAM is weak everywhere marks nothing. None: DeepSolar (min-max alone always marks part "
        "of a tile)",
    )
    floor_on: Literal["margin", "positive"] = Field(
        "margin",
        description="margin: the pixel's share of the CAM head's logit margin, "
        "sum_k (W[pos,k] - W[neg,k]) A_k (+ bias difference for plain CAM), so floor 0 = 'this "
        "pixel votes solar' and needs no calibration; positive: DeepSolar's positive-class CAM "
        "(model-specific units)",
    )
    floor_scope: Literal["pixel", "tile"] = Field(
        "pixel",
        description="pixel: a pixel is panel only where the raw map exceeds the floor; tile: a "
        "tile marks its DeepSolar mask only when the raw map's maximum exceeds the floor, else "
        "nothing (the rule a floor calibrated on tile maxima is made for)",
    )
    clean: MaskCleanConfig = Field(
        default_factory=MaskCleanConfig,
        description="morphological clean-up of each mask before it is saved / vectorised",
    )
    mask_threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="method mask_head: a pixel is panel where the decoder's probability is "
        "strictly above this (no min-max; threshold, stage and floor are CAM-only)",
    )

    # Fields that existed before the mask options: they alone make up a run key for defaults.
    LEGACY_FIELDS: ClassVar[tuple[str, ...]] = (
        "method", "stage", "threshold", "classifier_threshold",
    )  # fmt: skip

    def key_dict(self) -> dict:
        """What a resume key depends on: the legacy fields, plus mask options off their defaults.

        Mask options at their defaults are left out, so stores segmented before the options existed
        keep their journals.

        Returns:
            The legacy fields, then every other field that is not at its default (JSON-ready).
        """
        new = self.model_dump(mode="json", exclude=set(self.LEGACY_FIELDS), exclude_defaults=True)
        return {**self.model_dump(mode="json", include=set(self.LEGACY_FIELDS)), **new}


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
    """The greedy CAM training loop: seed, device, CPU threads, feature cache and progress bar.

    ``cache_features`` computes the frozen backbone's tapped features once (float16, in memory)
    instead of every epoch.
    """

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

    classifier_checkpoint: DataPath
    branch: BranchConfig = BranchConfig()
    optim: SegOptimConfig = SegOptimConfig()
    data: SegDataConfig
    cam: CamConfig = CamConfig()
    train: SegTrainLoopConfig = SegTrainLoopConfig()


class MaskHeadConfig(StrictModel):
    """A light FPN-style decoder on frozen classifier feature maps (see ``segmentation.maskhead``)."""

    taps: list[str] | None = Field(
        None,
        min_length=1,
        max_length=6,
        description="classifier modules to read, shallow to deep; None: the arch's default "
        "(efficientnet_lite*: blocks.1, blocks.2, blocks.4 = stride 4, 8, 16; inception_v3: "
        "Conv2d_4a_3x3, Mixed_5d, Mixed_6e)",
    )
    channels: int = Field(64, ge=1, le=1024, description="decoder width")


class MaskHeadOptimConfig(StrictModel):
    """AdamW on BCE + soft Dice of the decoder's logits against the chips' masks."""

    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(10, ge=1, le=1000)
    dice_weight: float = Field(1.0, ge=0.0, description="loss = BCE + dice_weight x soft Dice")
    pos_weight: float = Field(1.0, gt=0.0, description="BCE weight of panel pixels")


class MaskHeadDataConfig(StrictModel):
    """Chips with masks (every positive chip needs one), cut into cells as the classifier was."""

    train: list[ChipSource] = Field(min_length=1)
    subtiles: SubtileConfig | None = Field(
        None, description="cut chips wider than a tile into tile-sized cells (as the classifier)"
    )
    rot90: bool = Field(
        False, description="cache the 4 rotations of each cell and draw one per epoch (4x memory)"
    )
    val_fraction: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="seeded, stratified share of the train CHIPS held out to pick the epoch "
        "(best validation IoU); 0: keep the last epoch",
    )
    num_workers: int = Field(0, ge=0)
    min_side_px: int = Field(16, ge=1)


class MaskHeadTrainLoopConfig(StrictModel):
    """The mask-head training loop: seed, device, CPU threads and progress bar."""

    seed: int = 0
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    num_threads: int | None = Field(None, ge=1, description="torch.set_num_threads on CPU")
    progress: bool = True


class TrainMaskHeadConfig(StrictModel):
    """A supervised mask head trained on the masks, on top of a frozen classifier checkpoint."""

    classifier_checkpoint: DataPath
    head: MaskHeadConfig = MaskHeadConfig()
    optim: MaskHeadOptimConfig = MaskHeadOptimConfig()
    data: MaskHeadDataConfig
    train: MaskHeadTrainLoopConfig = MaskHeadTrainLoopConfig()


def uses_segmenter(method: str) -> bool:
    """Whether a CAM method reads ``segmenter_checkpoint`` (greedy branch or mask head).

    Args:
        method: ``greedy``, ``plain`` or ``mask_head``.

    Returns:
        True for every method but ``plain``.
    """
    return method != "plain"


def default_segmenter(classifier: Path, segmenter: Path | None, method: str) -> Path | None:
    """The segmenter checkpoint to use: ``builtin`` with the builtin classifier when unset.

    The builtin classifier comes with its builtin greedy CAM branch and mask head.

    Args:
        classifier: the classifier checkpoint (``builtin`` for the shipped one).
        segmenter: the segmenter checkpoint given (None: unset).
        method: the CAM method (``plain`` reads no segmenter).

    Returns:
        ``segmenter``, or ``Path("builtin")`` when it is unset, the method reads one and the
        classifier is the builtin one.
    """
    if segmenter is None and uses_segmenter(method) and str(classifier) == "builtin":
        return Path("builtin")
    return segmenter


class SegmentTilesJob(StrictModel):
    """Input of ``segment-tiles``."""

    manifest: Path = Field(description="a tile store's manifest.gpkg (layer 'tiles') or folder")
    classifier_checkpoint: Path = Field(
        Path("builtin"), description="a train-classifier best.pt; 'builtin': the shipped model"
    )
    segmenter_checkpoint: Path | None = Field(
        None,
        description="needed for cam.method greedy (a train-segmenter checkpoint) and mask_head "
        "(a train-mask-head checkpoint); with the builtin classifier: builtin",
    )
    cam: CamConfig = CamConfig()
    batch_size: int = Field(16, ge=1)
    device: str = "auto"
    num_threads: int | None = Field(None, ge=1)
    overlays: int = Field(0, ge=0, description="PNG overlays for this many positive tiles")
    overlay_seed: int = 0

    @model_validator(mode="after")
    def _builtin_pair(self) -> SegmentTilesJob:
        seg = default_segmenter(
            self.classifier_checkpoint, self.segmenter_checkpoint, self.cam.method
        )
        if seg != self.segmenter_checkpoint:  # assignment re-validates: only once
            self.segmenter_checkpoint = seg
        return self


class ScaleOutConfig(StrictModel):
    """How the per-tile work is sharded and where the shards run."""

    shard_size_tiles: int = Field(
        1024, ge=1, description="tiles per shard task (a band of tile rows); a multiple of "
        "batch_size keeps every batch whole",
    )  # fmt: skip
    task_runner: TaskRunnerConfig = Field(
        default_factory=lambda: TaskRunnerConfig(kind="threads", max_workers=1),
        description="where shards run; one thread by default (torch already uses every core)",
    )
    results_dir: Path | None = Field(
        None,
        description="persisted shard results (the cache); default <store>/.prefect-results. "
        "Must be shared storage when shards run on other machines",
    )


# ---------------------------------------------------------------- evaluation (evaluate.py)


class ChipMaskSet(StrictModel):
    """A shared chip set's ``manifest.csv`` with ``mask`` column (masks under ``{split}/masks``)."""

    kind: Literal["chips"] = "chips"
    manifest: DataPath
    split: str = "valid"
    name: str | None = None
    max_chips: int | None = Field(None, ge=1, description="first N rows (for quick runs)")
    m_per_px: float | None = Field(None, gt=0, description="None: areas in pixels")

    @property
    def display_name(self) -> str:
        """The name in reports: ``name``, else ``<manifest folder>/<split>``."""
        return self.name or f"{self.manifest.parent.name}/{self.split}"


class SceneMaskSet(StrictModel):
    """A tile store (manifest.gpkg) over a scene with PV truth polygons (e.g. the SYNTHETIC demo)."""

    kind: Literal["scene"] = "scene"
    manifest: DataPath
    truth_path: DataPath
    truth_layer: str | None = None
    truth_visible_column: str | None = None
    name: str | None = None
    max_chips: int | None = Field(None, ge=1)

    @property
    def display_name(self) -> str:
        """The name in reports: ``name``, else the tile store's folder."""
        return self.name or self.manifest.parent.name


EvalSet = Annotated[
    ChipMaskSet | SceneMaskSet | ImagesSource | ManifestSource, Field(discriminator="kind")
]
AnySet = ChipMaskSet | SceneMaskSet | ImagesSource | ManifestSource


class EvaluateSegmentationConfig(StrictModel):
    """What ``deepsolar evaluate-segmenter --config`` reads (the job's ``evaluation``)."""

    classifier_checkpoint: DataPath
    segmenter_checkpoint: DataPath | None = Field(None, description="None: plain CAM only")
    mask_head_checkpoint: DataPath | None = Field(
        None,
        description="a train-mask-head checkpoint: its masks are reported beside the CAM "
        "methods (method mask_head)",
    )
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="CamConfig.mask_threshold")
    sets: list[EvalSet] = Field(min_length=1)
    cam_threshold: float = Field(0.37, gt=0.0, lt=1.0)
    classifier_threshold: float | None = Field(None, gt=0.0, lt=1.0)
    batch_size: int = Field(16, ge=1)
    device: str = "auto"
    num_threads: int | None = Field(None, ge=1)
    overlays: int = Field(6, ge=0, description="comparison PNGs per set (truth-positive tiles)")
    bootstrap_reps: int = Field(1000, ge=1, description="resamples for the IoU intervals")
    seed: int = Field(0, description="seed of the bootstrap resamples")
    cam_floor: float | None = Field(
        None, allow_inf_nan=False, description="CamConfig.floor (None: DeepSolar's rule)"
    )
    cam_floor_on: Literal["margin", "positive"] = Field("margin", description="CamConfig.floor_on")
    cam_floor_scope: Literal["pixel", "tile"] = Field("pixel", description="CamConfig.floor_scope")
    clean: MaskCleanConfig = Field(
        default_factory=MaskCleanConfig, description="CamConfig.clean (needs the chips' GSD)"
    )
    subtiles: bool = Field(
        True,
        description="cut chips wider than a tile into tile-sized cells as the classifier was "
        "trained to (its data.subtiles); false: resize whole chips (DeepSolar's way)",
    )
