"""A supervised mask head: a light FPN-style decoder on the frozen classifier, trained on masks.

DeepSolar segments with CAM because it only has image-level labels. Where the chips come with PV
masks (the shared ``pv_chips`` sets, any ``images/`` + ``masks/`` folder), a decoder can learn the
masks directly, as DeepLab-style segmenters do. This one stays light and reuses the classifier:

- **taps**: 2-3 intermediate feature maps of the frozen classifier (EfficientNet-Lite:
  ``blocks.1`` / ``blocks.2`` / ``blocks.4``, strides 4 / 8 / 16; Inception-v3: ``Conv2d_4a_3x3``
  / ``Mixed_5d`` / ``Mixed_6e``), read by forward hooks during the classification pass, so a
  positive tile costs only the decoder on top of classification;
- **decoder**: a 1x1 lateral conv per tap to ``channels``, top-down bilinear upsample-and-add
  (deep to shallow), two 3x3 conv + BatchNorm + ReLU, a 1x1 conv to one logit per position at the
  shallowest tap's grid; bilinearly upsampled (half-pixel centres) to the tile;
- **mask**: sigmoid > ``CamConfig.mask_threshold`` (0.5), only in tiles the classifier calls
  positive (as the CAM methods).

Training (:func:`fit_mask_head`, ``deepsolar train-mask-head``): the backbone is frozen, so each
cell's tapped maps are computed once (float16, in memory; with ``data.rot90`` for its 4 rotations)
and the decoder trains on them with AdamW on BCE + soft Dice against the cell's mask (resized to
the network input). Chips are cut into tile-sized cells exactly as the classifier was trained
(``data.subtiles``). A seeded share of the train chips is held out to pick the epoch (best mean IoU
on its positive cells). ``last.pt`` is written atomically after every epoch (a re-run resumes from
it; a changed recipe is refused) and ``mask_head.pt`` holds the best epoch. Each checkpoint
carries the sha256 of the classifier's weights up to its deepest tap: another classifier is
refused with one clear line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from deepsolar.classifier.data import (
    Chip,
    ChipDataset,
    class_counts,
    load_sources,
    raise_batch_errors,
    read_mask,
    stratified_split,
)
from deepsolar.classifier.predict import LoadedClassifier, load_classifier
from deepsolar.classifier.subtiles import expand_chips
from deepsolar.core.checkpoints import CheckpointKind, load_checkpoint_of
from deepsolar.core.config import validate_config
from deepsolar.core.device import MASK_HEAD_SEED_STAGE
from deepsolar.core.errors import ConfigError, InputDataError, StaleCheckpointError
from deepsolar.core.training import (
    BestEpoch,
    EpochTask,
    check_resume_config,
    run_epochs,
    stale_fields,
    start_run,
)
from deepsolar.segmentation.branch import backbone_fingerprint, freeze_backbone, taps_features
from deepsolar.segmentation.cam import upsample
from deepsolar.segmentation.config import TrainMaskHeadConfig

log = logging.getLogger("deepsolar.segmentation")

CHECKPOINT_FORMAT = "deepsolar-mask-head"
CHECKPOINT_VERSION = 1
FINAL_NAME = "mask_head.pt"
LAST_NAME = "last.pt"
MASK_HEAD_CHECKPOINT = CheckpointKind(
    fmt=CHECKPOINT_FORMAT, kind="mask_head", producer="train-mask-head"
)
MASK_HEAD = "mask_head"  # the method's key beside "plain" / "stageK" in evaluation tables

DEFAULT_MASK_TAPS: dict[str, tuple[str, ...]] = {
    "efficientnet_lite0": ("blocks.1", "blocks.2", "blocks.4"),
    "efficientnet_lite2": ("blocks.1", "blocks.2", "blocks.4"),
    "inception_v3": ("Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e"),
}


def resolve_mask_taps(taps: Sequence[str] | None, arch: str) -> tuple[str, ...]:
    """``taps`` if given, else the arch's default; ValueError for an arch without one.

    Args:
        taps: classifier module names, shallow to deep (None/empty: the default).
        arch: the classifier's ``model.arch``.

    Returns:
        The module names.

    Raises:
        ValueError: no ``taps`` is given and ``arch`` has no default.
    """
    if taps:
        return tuple(taps)
    if arch not in DEFAULT_MASK_TAPS:
        raise ValueError(f"{arch} has no default mask-head taps: set head.taps to module names")
    return DEFAULT_MASK_TAPS[arch]


# ---------------------------------------------------------------- the decoder


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class MaskDecoder(nn.Module):
    """FPN-style: lateral 1x1 per tap, top-down upsample-and-add, 2 x conv3x3, 1x1 -> 1 logit.

    Args:
        in_channels: channels of each tapped map, shallow (largest) to deep.
        channels: decoder width.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in self.in_channels)
        self.fuse = nn.Sequential(
            _conv_bn_relu(channels, channels), _conv_bn_relu(channels, channels)
        )
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Native logits (B x h x w, the shallowest map's grid) from the tapped maps.

        Args:
            feats: the tapped maps, shallow to deep, each B x C_i x h_i x w_i.

        Returns:
            The panel logits, B x h x w.

        Raises:
            ValueError: the number of maps differs from the number of taps.
        """
        if len(feats) != len(self.lateral):
            raise ValueError(f"{len(self.lateral)} feature maps expected, got {len(feats)}")
        x = self.lateral[-1](feats[-1].float())
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1]), strict=True):
            x = F.interpolate(x, size=f.shape[-2:], mode="bilinear", align_corners=False)
            x = x + lat(f.float())
        return self.out(self.fuse(x))[:, 0]


def mask_head_mask(
    logits: torch.Tensor, size_px: tuple[int, int] | int, threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Native logits -> (probability at ``size_px``, boolean mask prob > threshold).

    Args:
        logits: the decoder's native logits, B x h x w.
        size_px: the output size, px: (H, W), or one int for a square.
        threshold: a pixel is panel where its probability is above this, 0-1.

    Returns:
        The panel probabilities (0-1) and the masks, both B x H x W.
    """
    prob = torch.sigmoid(upsample(logits.float(), size_px))
    return prob, prob > threshold


def ordered_taps(
    model: nn.Module, taps: Sequence[str], input_size_px: int
) -> tuple[tuple[str, ...], list[int]]:
    """The taps in the order they run (shallow to deep) and their channels (one dry pass).

    Args:
        model: the classifier (its train/eval mode is restored).
        taps: dotted module names.
        input_size_px: side of the square network input, px.

    Returns:
        The module names in run order and the channels of each.

    Raises:
        ValueError: a module did not run in the forward pass.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        out = taps_features(model, torch.zeros(1, 3, input_size_px, input_size_px, device=dev),
                            tuple(taps))  # fmt: skip
    model.train(was_training)
    names = tuple(out)
    return names, [int(out[n].shape[1]) for n in names]


def _resolve_for(
    clf: LoadedClassifier, taps: Sequence[str] | None
) -> tuple[tuple[str, ...], list[int]]:
    try:
        return ordered_taps(
            clf.model, resolve_mask_taps(taps, clf.config.model.arch), clf.input_size_px
        )
    except (ValueError, AttributeError) as err:
        raise ConfigError(
            f"mask-head taps: {err}", where="head.taps", fix="name modules of the classifier"
        ) from None


# ---------------------------------------------------------------- checkpoints


@dataclass
class LoadedMaskHead:
    """A trained mask decoder with the taps it reads and the backbone it was trained on.

    Attributes:
        decoder: the decoder, eval mode.
        taps: the classifier modules it reads, shallow to deep.
        backbone_fingerprint: sha256 of the classifier's weights up to the deepest tap.
        config: the training config.
        checkpoint: the checkpoint file.
    """

    decoder: MaskDecoder
    taps: tuple[str, ...]
    backbone_fingerprint: str
    config: TrainMaskHeadConfig
    checkpoint: Path

    @property
    def fingerprint_tap(self) -> str:
        """The deepest tap: the backbone fingerprint covers the weights up to it."""
        return self.taps[-1]


def load_mask_head(path: str | Path, device: str | torch.device = "cpu") -> LoadedMaskHead:
    """The decoder of a ``train-mask-head`` checkpoint, eval mode (float16 files cast back).

    Args:
        path: the checkpoint (``mask_head.pt``, or ``builtin``).
        device: where the decoder runs.

    Returns:
        The loaded mask head.

    Raises:
        InputDataError: the file is missing or not a mask-head checkpoint.
        ConfigError: its config is invalid.
    """
    ckpt = load_checkpoint_of(path, MASK_HEAD_CHECKPOINT)
    cfg = validate_config(TrainMaskHeadConfig, ckpt["config"], where=str(path))
    decoder = MaskDecoder(ckpt["in_channels"], cfg.head.channels)
    decoder.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in ckpt["decoder_state"].items()})  # fmt: skip
    dev = torch.device(device) if isinstance(device, str) else device
    return LoadedMaskHead(
        decoder=decoder.to(dev).eval(),
        taps=tuple(ckpt["taps"]),
        backbone_fingerprint=str(ckpt["backbone_fingerprint"]),
        config=cfg,
        checkpoint=Path(path),
    )


def check_mask_head_backbone(head: LoadedMaskHead, clf: LoadedClassifier) -> None:
    """A decoder only makes sense on the exact backbone features it was trained on.

    Args:
        head: the loaded mask head.
        clf: the classifier it is to run on.

    Raises:
        ConfigError: the classifier's weights up to the deepest tap differ from the training
            backbone's (or the tap does not exist).
    """
    tap = head.fingerprint_tap
    try:
        fp = backbone_fingerprint(clf.model, tap)
    except ValueError:
        fp = None  # the tap does not exist in this classifier: another architecture
    if fp != head.backbone_fingerprint:
        raise ConfigError(
            f"the mask head was trained on a different classifier backbone (its weights up to "
            f"{tap} differ)",
            where=f"{head.checkpoint} vs {clf.checkpoint}",
            fix="pass the classifier checkpoint the mask head was trained with, or retrain the "
            "mask head on this classifier (train-mask-head)",
        )


# ---------------------------------------------------------------- data


class MaskChipDataset(ChipDataset):
    """Chips (or their cells) with the PV mask resized to the network input, as ``mask``.

    ``mask`` is 1 x S x S float in [0, 1] (bilinear, so cell edges are soft). Arguments as
    :class:`~deepsolar.classifier.data.ChipDataset`.
    """

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        chip = self.chips[index]
        s = self.input_size_px
        target = torch.zeros(1, s, s)
        if chip.mask is not None and not item["error"]:
            try:
                m = read_mask(chip.mask)
                im = Image.fromarray(m.astype(np.uint8) * 255)
                if chip.window is not None:
                    im = im.crop(chip.window)
                im = im.resize((s, s), Image.Resampling.BILINEAR)
                target = torch.from_numpy(np.asarray(im, np.float32) / 255.0)[None]
            except InputDataError as err:
                item.update(error=err.what, error_where=err.where or str(chip.mask),
                            error_fix=err.fix or "")  # fmt: skip
        item["mask"] = target
        return item


def _check_masks(chips: Sequence[Chip]) -> None:
    bad = [c for c in chips if c.label == 1 and c.mask is None]
    if bad:
        raise InputDataError(
            f"{len(bad)} positive chip(s) have no mask, e.g. {bad[0].path.name}",
            where=str(bad[0].path),
            fix="train the mask head on sources with masks (images/ + masks/, or a manifest with "
            "a mask column)",
        )


@dataclass
class CachedMasks:
    """Tapped maps (per tap: R x N x C x h x w, float16) and targets (R x N x S x S, uint8)."""

    feats: list[torch.Tensor]
    masks: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.masks.shape[1])

    def batch(
        self, idx: torch.Tensor, rot: torch.Tensor, device: torch.device
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Features and targets of the cells ``idx`` under rotations ``rot``, on ``device``.

        Args:
            idx: cell indices, B.
            rot: the rotation index of each, B (0 .. R-1).
            device: where the tensors go.

        Returns:
            The tapped maps (float32, one per tap) and the targets (B x S x S, float32 0-1).
        """
        f = [t[rot, idx].to(device, torch.float32) for t in self.feats]
        return f, self.masks[rot, idx].to(device, torch.float32) / 255.0


def _compact(f: torch.Tensor) -> torch.Tensor:
    """float16 on the CPU, or float32 where float16 would overflow (an untrained backbone)."""
    h = f.to("cpu", torch.float16)
    return h if bool(torch.isfinite(h).all()) else f.to("cpu", torch.float32)


@torch.no_grad()
def cache_mask_features(
    clf: LoadedClassifier, dataset: MaskChipDataset, taps: tuple[str, ...], *,
    rotations: int = 1, batch_size: int = 64, progress: bool = False,
) -> CachedMasks:  # fmt: skip
    """Run the frozen classifier once per cell (and rotation k x 90 degrees, k < ``rotations``).

    Maps are kept in float16 (float32 for all of them if any would overflow float16).

    Args:
        clf: the frozen classifier.
        dataset: the cells with their masks.
        taps: the classifier modules to keep, shallow to deep.
        rotations: number of 90-degree rotations to cache (1: as is).
        batch_size: cells per forward pass.
        progress: show a progress bar.

    Returns:
        The tapped maps, the targets (uint8 0-255) and the labels.

    Raises:
        InputDataError: a chip or mask cannot be read.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    per: list[list[list[torch.Tensor]]] = [[[] for _ in range(rotations)] for _ in taps]
    masks: list[list[torch.Tensor]] = [[] for _ in range(rotations)]
    for batch in tqdm(loader, desc="mask-head features", disable=not progress, leave=False):
        raise_batch_errors(batch)
        x, m = batch["image"].to(clf.device), batch["mask"][:, 0]
        for k in range(rotations):
            xr = torch.rot90(x, k, dims=(2, 3)) if k else x
            out = taps_features(clf.model, xr, taps)
            for i, t in enumerate(taps):
                per[i][k].append(_compact(out[t]))
            mr = torch.rot90(m, k, dims=(1, 2)) if k else m
            masks[k].append((mr * 255).round().to(torch.uint8))
    dtype = max((p.dtype for tap in per for r in tap for p in r), key=lambda d: d.itemsize)
    feats = [torch.stack([torch.cat([p.to(dtype) for p in r]) for r in tap]) for tap in per]
    labels = torch.tensor([c.label for c in dataset.chips])
    return CachedMasks(feats, torch.stack([torch.cat(r) for r in masks]), labels)


# ---------------------------------------------------------------- loss and metric


def mask_loss(
    logits: torch.Tensor, target: torch.Tensor, *, dice_weight: float = 1.0, pos_weight: float = 1.0
) -> torch.Tensor:
    """BCE (panel pixels weighted ``pos_weight``) + ``dice_weight`` x soft Dice over the batch.

    One Dice over all pixels of the batch, so cells without panels are well defined.

    Args:
        logits: the decoder's logits, B x S x S.
        target: the targets, B x S x S, 0-1.
        dice_weight: weight of the Dice term.
        pos_weight: BCE weight of panel pixels.

    Returns:
        The loss, a scalar.
    """
    pw = torch.tensor(pos_weight, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    dice = 1 - (2 * inter + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + dice_weight * dice


def per_cell_iou(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
    """IoU of (sigmoid > threshold) against (target > 0.5) per cell; NaN where both are empty.

    Args:
        logits: the decoder's logits, B x S x S.
        target: the targets, B x S x S, 0-1.
        threshold: a pixel is panel where its probability is above this, 0-1.

    Returns:
        The IoU of each cell, B, 0-1.
    """
    p = torch.sigmoid(logits) > threshold
    t = target > 0.5
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.nan)
    return iou.cpu().numpy()


# ---------------------------------------------------------------- training


@dataclass
class MaskHeadTrainResult:
    """What a mask-head training run produced.

    Attributes:
        out_dir: the run's folder.
        final_checkpoint: the best epoch's checkpoint (``mask_head.pt``).
        best_epoch: its epoch.
        history: one row of losses and IoU per epoch.
        counts: cells and chips per split (and the caching time, s).
    """

    out_dir: Path
    final_checkpoint: Path
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The run's paths, best epoch, counts and last history row, JSON-ready.

        Returns:
            The summary.
        """
        return {
            "out_dir": str(self.out_dir),
            "final_checkpoint": str(self.final_checkpoint),
            "best_epoch": self.best_epoch,
            "counts": self.counts,
            "last_epoch": self.history[-1] if self.history else None,
        }


# Keys that may differ on resume: they do not change what the remaining epochs compute.
_RESUME_FREE = {"optim.epochs", "train.device", "train.num_threads", "train.progress",
                "data.num_workers"}  # fmt: skip
_RESUME_FIX = ("resume with the same config (only epochs, device, threads and progress may "
               "change) or use a new output folder")  # fmt: skip


def _logits(decoder: MaskDecoder, feats: list[torch.Tensor], size: int) -> torch.Tensor:
    return upsample(decoder(feats), size)


@torch.no_grad()
def _validate(
    decoder: MaskDecoder, data: CachedMasks, size: int, device: torch.device, oc: Any
) -> dict[str, float]:
    decoder.eval()
    ious, loss_sum, n = [], 0.0, 0
    for i in range(0, len(data), 128):
        idx = torch.arange(i, min(i + 128, len(data)))
        f, t = data.batch(idx, torch.zeros_like(idx), device)
        lg = _logits(decoder, f, size)
        loss_sum += float(mask_loss(lg, t, dice_weight=oc.dice_weight,
                                    pos_weight=oc.pos_weight)) * len(idx)  # fmt: skip
        n += len(idx)
        pos = data.labels[idx] == 1
        if pos.any():
            ious.append(per_cell_iou(lg[pos], t[pos]))
    iou = np.concatenate(ious) if ious else np.array([])
    iou = iou[~np.isnan(iou)]
    return {"val_loss": loss_sum / max(n, 1), "val_iou": float(iou.mean()) if len(iou) else 0.0}


@dataclass
class _MaskBackbone:
    """The frozen classifier, its taps (shallow to deep) with their channels, and a fingerprint.

    The fingerprint is of its weights up to the deepest tap.
    """

    clf: LoadedClassifier
    taps: tuple[str, ...]
    in_channels: list[int]
    fingerprint: str


def _load_mask_backbone(cfg: TrainMaskHeadConfig, device: torch.device) -> _MaskBackbone:
    clf = load_classifier(cfg.classifier_checkpoint, str(device))
    freeze_backbone(clf.model)
    taps, in_channels = _resolve_for(clf, cfg.head.taps)
    return _MaskBackbone(clf, taps, in_channels, backbone_fingerprint(clf.model, taps[-1]))


def stale_run(cfg: TrainMaskHeadConfig, out_dir: Path) -> str | None:
    """Why the ``last.pt`` in ``out_dir`` cannot be resumed under ``cfg``, if it cannot.

    Args:
        cfg: the training config about to run.
        out_dir: its output folder.

    Returns:
        ``"last.pt: the config differs in <keys>"``, or None (none there, or resumable as far as
        the config goes; the backbone is checked when training starts).
    """
    path = out_dir / LAST_NAME
    if not path.is_file():
        return None
    diff = stale_fields(path, MASK_HEAD_CHECKPOINT, cfg.model_dump(mode="json"), _RESUME_FREE)
    return f"{path.name}: the config differs in {', '.join(diff)}" if diff else None


def _saved_run(
    cfg: TrainMaskHeadConfig, last_path: Path, fingerprint: str
) -> dict[str, Any] | None:
    """``last.pt`` if it exists, checked against this config and backbone; else None."""
    if not last_path.is_file():
        return None
    saved = load_checkpoint_of(last_path, MASK_HEAD_CHECKPOINT)
    check_resume_config(saved["config"], cfg.model_dump(mode="json"), _RESUME_FREE,
                        where=str(last_path), fix=_RESUME_FIX)  # fmt: skip
    if saved["backbone_fingerprint"] != fingerprint:
        raise StaleCheckpointError(
            "the checkpoint was trained on a different classifier backbone",
            where=str(last_path),
            fix="use the same classifier_checkpoint or a new output folder",
        )
    return saved


@dataclass
class _MaskInputs:
    """Cached tapped maps and targets of the train (and validation) cells."""

    train: CachedMasks
    val: CachedMasks | None
    counts: dict[str, Any]
    cache_s: float


def _cache_cells(cfg: TrainMaskHeadConfig, bb: _MaskBackbone, chips: list[Chip]) -> _MaskInputs:
    tc, dc = cfg.train, cfg.data
    if dc.val_fraction > 0:
        train_chips, val_chips = stratified_split(chips, dc.val_fraction, tc.seed)
    else:
        train_chips, val_chips = list(chips), []
    train_cells = expand_chips(train_chips, dc.subtiles, training=True, seed=tc.seed)
    val_cells = expand_chips(val_chips, dc.subtiles, training=True, seed=tc.seed)
    counts = {"train": class_counts(train_cells), "val": class_counts(val_cells),
              "train_chips": len(train_chips), "val_chips": len(val_chips)}  # fmt: skip
    if counts["train"]["positive"] == 0:
        raise InputDataError(
            f"no positive training cells ({counts['train']})",
            where="data.train",
            fix="add chips with panels (and their masks)",
        )
    clf = bb.clf

    def cached(cells: list[Chip], rot: int) -> CachedMasks:
        ds = MaskChipDataset(cells, clf.input_size_px, min_side_px=dc.min_side_px,
                             normalize=clf.normalize)  # fmt: skip
        return cache_mask_features(clf, ds, bb.taps, rotations=rot,
                                   batch_size=cfg.optim.batch_size, progress=tc.progress)  # fmt: skip

    t0 = time.perf_counter()
    train_data = cached(train_cells, 4 if dc.rot90 else 1)
    val_data = cached(val_cells, 1) if val_cells else None
    cache_s = time.perf_counter() - t0
    log.info("cached %d train / %d val cells in %.0f s", len(train_cells), len(val_cells), cache_s)
    return _MaskInputs(train_data, val_data, counts, cache_s)


class _MaskHeadEpochs(EpochTask):
    """One epoch of the decoder on the cached maps: shuffled cells, a drawn rotation each."""

    def __init__(
        self, cfg: TrainMaskHeadConfig, bb: _MaskBackbone, inputs: _MaskInputs,
        history: list[dict[str, Any]], saved: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        self.cfg, self.bb, self.inputs, self.history = cfg, bb, inputs, history
        self.device, self.size = bb.clf.device, bb.clf.input_size_px
        self.rotations = 4 if cfg.data.rot90 else 1
        oc = cfg.optim
        self.decoder = MaskDecoder(bb.in_channels, cfg.head.channels).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.decoder.parameters(), lr=oc.lr, weight_decay=oc.weight_decay
        )
        if saved is not None:
            self.decoder.load_state_dict(saved["decoder_state"])
            self.optimizer.load_state_dict(saved["optimizer_state"])
        self.cfg_json = cfg.model_dump(mode="json")

    def train_epoch(self, epoch: int, seed: int) -> dict[str, Any]:
        """Train one epoch from ``seed`` (order and rotations), then validate; the history row."""
        oc, data, n = self.cfg.optim, self.inputs.train, len(self.inputs.train)
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=gen)
        rots = torch.randint(0, self.rotations, (n,), generator=gen)
        self.decoder.train()
        t1, loss_sum, seen = time.perf_counter(), 0.0, 0
        for i in range(0, n, oc.batch_size):
            idx = perm[i : i + oc.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            f, t = data.batch(idx, rots[idx], self.device)
            loss = mask_loss(_logits(self.decoder, f, self.size), t, dice_weight=oc.dice_weight,
                             pos_weight=oc.pos_weight)  # fmt: skip
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                               "train_s": time.perf_counter() - t1}  # fmt: skip
        if self.inputs.val is not None:
            row.update(_validate(self.decoder, self.inputs.val, self.size, self.device, oc))
        log.info("mask head epoch %d/%d %s", epoch + 1, oc.epochs,
                 " ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))  # fmt: skip
        return row

    def score(self, row: dict[str, Any]) -> float:
        """Validation IoU; without validation the epoch number (the last epoch is the best)."""
        return row.get("val_iou", float(row["epoch"] - 1))

    def checkpoint(self, epoch: int, best: BestEpoch) -> dict[str, Any]:
        """The decoder, its taps and what loading and resuming it needs."""
        state = {k: v.detach().cpu().clone() for k, v in self.decoder.state_dict().items()}
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": self.cfg_json,
            "decoder_state": state, "taps": list(self.bb.taps),
            "in_channels": self.bb.in_channels, "backbone_fingerprint": self.bb.fingerprint,
            "classifier_checkpoint": str(self.cfg.classifier_checkpoint),
            "input_size_px": self.size, "epoch": epoch, "best_epoch": best.epoch,
            "best_val_iou": best.score, "history": self.history, "counts": self.inputs.counts,
            "torch_version": str(torch.__version__),
        }  # fmt: skip

    def resume_state(self) -> dict[str, Any]:
        """The AdamW state."""
        return {"optimizer_state": self.optimizer.state_dict()}


def fit_mask_head(
    cfg: TrainMaskHeadConfig, out_dir: str | Path, *, chips: list[Chip] | None = None
) -> MaskHeadTrainResult:
    """Train the decoder on the frozen classifier's cached taps; resume from ``last.pt``.

    Args:
        cfg: the mask-head config.
        out_dir: the output folder (``last.pt``, ``mask_head.pt``).
        chips: the training chips with masks (default: ``data.train``'s sources).

    Returns:
        The best checkpoint, its epoch, the history and the cell counts.
    """
    cfg = validate_config(TrainMaskHeadConfig, cfg)
    tc = cfg.train
    out, device = start_run(out_dir, device=tc.device, num_threads=tc.num_threads, seed=tc.seed)
    if chips is None:
        chips = load_sources(cfg.data.train, seed=tc.seed)
    _check_masks(chips)  # before the classifier loads: a missing mask fails at once
    bb = _load_mask_backbone(cfg, device)
    last_path, final_path = out / LAST_NAME, out / FINAL_NAME
    saved = _saved_run(cfg, last_path, bb.fingerprint)
    if saved is not None and int(saved["epoch"]) >= cfg.optim.epochs:
        log.info("mask head already trained (%d epochs); nothing to do", saved["epoch"])
        return MaskHeadTrainResult(out, final_path, int(saved["best_epoch"]),
                                   list(saved["history"]), dict(saved["counts"]))  # fmt: skip
    inputs = _cache_cells(cfg, bb, chips)
    start, history, best = 0, [], BestEpoch(-1.0, None)
    if saved is not None:
        start, history = int(saved["epoch"]), list(saved["history"])
        best = BestEpoch(float(saved["best_val_iou"]), int(saved["best_epoch"]))
    task = _MaskHeadEpochs(cfg, bb, inputs, history, saved)
    best = run_epochs(task, start_epoch=start, n_epochs=cfg.optim.epochs, seed=tc.seed,
                      history=history, last_path=last_path, best_path=final_path, best=best,
                      stage=MASK_HEAD_SEED_STAGE)  # fmt: skip
    inputs.counts["cache_s"] = round(inputs.cache_s, 1)
    return MaskHeadTrainResult(out, final_path, int(best.epoch or 0), history, inputs.counts)
