"""Batched inference with a trained checkpoint, and evaluation on labelled chip sources."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepsolar.classifier.checkpoint import (
    config_from_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
)
from deepsolar.classifier.config import ChipSource, SubtileConfig, TrainClassifierConfig
from deepsolar.classifier.data import (
    Chip,
    ChipDataset,
    array_to_rgb,
    load_source,
    make_loader,
    raise_batch_errors,
    read_chip,
)
from deepsolar.classifier.metrics import (
    MIN_CLASS_FOR_AUC,
    REPORT_COLUMNS,
    report_notes,
    report_rows,
    write_json,
    write_metrics,
)
from deepsolar.classifier.model import model_outputs, preprocess
from deepsolar.classifier.subtiles import chip_level, expand_chips
from deepsolar.core.device import resolve_device
from deepsolar.core.errors import InputDataError
from deepsolar.core.io import write_table_atomic
from deepsolar.core.report_table import format_text, write_report

ImageLike = str | Path | np.ndarray | Image.Image


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    amp_bf16: bool = False,
    channels_last: bool = False,
) -> tuple[torch.Tensor, np.ndarray]:
    """Logits and labels over a loader, in eval mode.

    Args:
        model: the network (or the trained part on cached features).
        loader: batches with ``image`` and ``label``.
        device: where the network runs.
        amp_bf16: autocast to bfloat16.
        channels_last: feed channels-last inputs.

    Returns:
        (float32 logits on the CPU, N x 2; labels, N).
    """
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        raise_batch_errors(batch)
        x = batch["image"].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_bf16):
            logits, _ = model_outputs(model(x))
        all_logits.append(logits.float().cpu())
        all_labels.append(batch["label"].numpy())
    if not all_logits:
        return torch.zeros(0, 2), np.zeros(0, dtype=int)
    return torch.cat(all_logits), np.concatenate(all_labels)


def positive_probs(logits: torch.Tensor) -> np.ndarray:
    """Softmax probability of the positive class (column 1) per row of ``logits``.

    Args:
        logits: the logits, N x 2 (on the CPU).

    Returns:
        The probabilities of PV, N, 0-1.
    """
    return torch.softmax(logits, dim=1)[:, 1].numpy()


def per_chip(
    cells: list[Chip], labels: np.ndarray, probs: np.ndarray, subtiles: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) per whole chip: the highest of its sub-tiles' (if cut).

    Args:
        cells: the chips or their sub-tile cells, in the order of ``labels`` and ``probs``.
        labels: label per cell.
        probs: positive probability per cell.
        subtiles: the config's ``data.subtiles`` (None: chips were not cut).

    Returns:
        (labels, probabilities) per chip.
    """
    if subtiles is None:
        return labels, probs
    _, chip_labels, chip_probs = chip_level(cells, probs)
    return chip_labels, chip_probs


@dataclass
class LoadedClassifier:
    """A network ready for inference plus everything its checkpoint says about inputs."""

    model: nn.Module
    config: TrainClassifierConfig
    class_names: list[str]
    input_size_px: int
    normalize: dict[str, list[float]]
    threshold: float
    device: torch.device
    checkpoint: Path

    @property
    def on_gpu(self) -> bool:
        """Whether the network runs on a CUDA device."""
        return self.device.type == "cuda"


def load_classifier(checkpoint: str | Path, device: str = "auto") -> LoadedClassifier:
    """Load a checkpoint (``weights_only=True``) for inference, in eval mode on ``device``.

    Args:
        checkpoint: a ``train-classifier`` ``.pt`` file, or ``builtin`` for the shipped model.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The network (channels-last on a GPU) with its config, input size, normalisation and
        decision threshold.

    Raises:
        InputDataError: the checkpoint is missing or not a classifier checkpoint.
        ConfigError: the device is unknown or not available, or the checkpoint's config is
            invalid.
    """
    ckpt = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt, str(checkpoint)).to(dev).eval()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return LoadedClassifier(
        model=model,
        config=config_from_checkpoint(ckpt, str(checkpoint)),
        class_names=list(ckpt["class_names"]),
        input_size_px=int(ckpt["input_size_px"]),
        normalize=dict(ckpt["normalize"]),
        threshold=float(ckpt["threshold"]),
        device=dev,
        checkpoint=Path(checkpoint),
    )


class ImageListDataset(Dataset):
    """Paths or in-memory arrays/PIL images, preprocessed like the training chips.

    An image that cannot be read comes back with ``error`` set (and a zero image).

    Args:
        images: image files, uint8 arrays or PIL images.
        input_size_px: side of the square network input, px.
        normalize: ``{"mean": [...], "std": [...]}`` per channel on [0, 1] pixels.
        min_side_px: smallest accepted image width or height, px.
    """

    def __init__(
        self,
        images: Sequence[ImageLike],
        input_size_px: int,
        normalize: dict[str, list[float]],
        min_side_px: int = 16,
    ) -> None:
        self.images = list(images)
        self.input_size_px = input_size_px
        self.normalize = normalize
        self.min_side_px = min_side_px

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.images[index]
        what = where = fix = ""
        try:
            if isinstance(item, str | Path):
                img = read_chip(item, min_side_px=self.min_side_px)
            elif isinstance(item, Image.Image):
                img = item.convert("RGB")
            else:
                img = array_to_rgb(item, where=f"images[{index}]")
            x = preprocess(img, self.input_size_px, self.normalize)
        except InputDataError as err:
            x = torch.zeros(3, self.input_size_px, self.input_size_px)
            what, where, fix = err.what, err.where or f"images[{index}]", err.fix or ""
        return {
            "image": x,
            "label": -1,
            "index": index,
            "error": what,
            "error_where": where,
            "error_fix": fix,
        }


@torch.no_grad()
def predict_proba(
    clf: LoadedClassifier,
    images: Sequence[ImageLike],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    on_error: Literal["raise", "nan"] = "raise",
) -> np.ndarray:
    """Probability of the positive class (solar) for each image, in input order.

    ``on_error="nan"`` gives NaN for an unreadable image instead of raising (useful when
    scanning many downloaded tiles, where one bad file must not stop the run).

    Args:
        clf: the loaded classifier.
        images: image files, uint8 arrays or PIL images.
        batch_size: images per batch.
        num_workers: DataLoader worker processes (0: in this process).
        on_error: ``raise`` or ``nan`` for an unreadable image.

    Returns:
        The probabilities of PV, 0-1 (float64; NaN for unreadable images with ``nan``).

    Raises:
        InputDataError: an image cannot be read and ``on_error`` is ``raise``.
    """
    ds = ImageListDataset(images, clf.input_size_px, clf.normalize, clf.config.data.min_side_px)
    loader = make_loader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    amp = clf.on_gpu and clf.config.train.amp_bf16
    probs = np.full(len(ds), np.nan, dtype=np.float64)
    clf.model.eval()
    for batch in loader:
        bad = [i for i, e in enumerate(batch["error"]) if e]
        if bad and on_error == "raise":
            i = bad[0]
            raise InputDataError(
                batch["error"][i], where=batch["error_where"][i], fix=batch["error_fix"][i]
            )
        x = batch["image"].to(clf.device, non_blocking=True)
        if clf.on_gpu:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(clf.device.type, dtype=torch.bfloat16, enabled=amp):
            out = clf.model(x)
        p = torch.softmax(out.float(), dim=1)[:, 1].cpu().numpy().astype(np.float64)
        idx = batch["index"].numpy()
        p[bad] = np.nan
        probs[idx] = p
    return probs


def predict_tiles(
    clf: LoadedClassifier,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    threshold: float | None = None,
) -> pd.DataFrame:
    """One row per tile path: ``prob`` (NaN if unreadable) and ``positive`` at the threshold.

    Args:
        clf: the loaded classifier.
        paths: the tile image files.
        batch_size: images per batch.
        num_workers: DataLoader worker processes (0: in this process).
        threshold: decision threshold, probability 0-1 (None: the checkpoint's).

    Returns:
        Columns ``path``, ``prob`` (0-1), ``positive`` and ``readable``, in input order.
    """
    probs = predict_proba(
        clf, list(paths), batch_size=batch_size, num_workers=num_workers, on_error="nan"
    )
    t = clf.threshold if threshold is None else threshold
    return pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "prob": probs,
            "positive": np.where(np.isnan(probs), False, probs >= t),
            "readable": ~np.isnan(probs),
        }
    )


def infer_chips(
    clf: LoadedClassifier,
    chips: Sequence[Chip],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    subtiles: SubtileConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, positive-class probabilities) for labelled chips, one per chip.

    With ``subtiles``, chips much larger on the ground than a tile are cut into tile-sized cells
    (:mod:`deepsolar.classifier.subtiles`) and a chip's probability is the highest of its cells'.

    Args:
        clf: the loaded classifier.
        chips: the labelled chips.
        batch_size: images per batch.
        num_workers: DataLoader worker processes (0: in this process).
        subtiles: how to cut large chips (None: resize whole chips).

    Returns:
        The labels and the probabilities of PV (0-1), one per chip, in input order.

    Raises:
        InputDataError: a chip cannot be read.
    """
    cells = expand_chips(chips, subtiles, training=False)
    ds = ChipDataset(
        cells,
        clf.input_size_px,
        min_side_px=clf.config.data.min_side_px,
        normalize=clf.normalize,
    )
    loader = make_loader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    amp = clf.on_gpu and clf.config.train.amp_bf16
    logits, labels = predict_logits(
        clf.model, loader, clf.device, amp_bf16=amp, channels_last=clf.on_gpu
    )
    return per_chip(cells, labels, positive_probs(logits), subtiles)


def write_evaluation(
    chips: Sequence[Chip],
    labels: np.ndarray,
    probs: np.ndarray,
    out_dir: str | Path,
    *,
    name: str,
    threshold: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """metrics.json + roc.png/pr.png + predictions.csv in ``out_dir``.

    Args:
        chips: the chips, in the order of ``labels`` and ``probs``.
        labels: the true labels (0 or 1).
        probs: the probabilities of PV, 0-1.
        out_dir: the output folder; created if missing.
        name: the evaluation's name.
        threshold: the decision threshold, probability 0-1.
        extra: more entries for metrics.json.

    Returns:
        The metrics written (see :func:`~deepsolar.classifier.metrics.write_metrics`).
    """
    out = Path(out_dir)
    metrics = write_metrics(labels, probs, out, threshold=threshold, name=name, extra=extra)
    table = pd.DataFrame({"path": [str(c.path) for c in chips], "label": labels, "prob": probs})
    write_table_atomic(table, out / "predictions.csv", fmt="csv")
    return metrics


def evaluate_checkpoint(
    checkpoint: str | Path,
    sources: Sequence[ChipSource],
    out_dir: str | Path,
    *,
    threshold: float | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "auto",
    seed: int = 0,
    bootstrap_reps: int = 1000,
    level: float = 0.95,
    subtiles: bool = True,
    ground_m_per_px: float | None = None,
) -> dict[str, Any]:
    """Evaluate on each source separately and on all together; write ``summary.json``.

    Also a table with one row per source and one overall, the model beside the all-positive
    baseline, with bootstrap intervals on precision / recall / F1: ``report.json``,
    ``report.csv``, ``report.md`` (and ``summary["table"]``, its rows).

    Args:
        checkpoint: a ``train-classifier`` ``.pt`` file, or ``builtin``.
        sources: the chip sources (each with its own name).
        out_dir: the output folder (one subfolder per source, ``all/`` with several).
        threshold: decision threshold, probability 0-1 (None: the checkpoint's).
        batch_size: images per batch.
        num_workers: DataLoader worker processes (0: in this process).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of the per-class caps and the bootstrap.
        bootstrap_reps: number of bootstrap resamples.
        level: confidence level of the intervals, fraction 0-1.
        subtiles: cut chips larger than a tile as the checkpoint was trained to (its
            ``data.subtiles``; False: resize whole chips, DeepSolar's way).
        ground_m_per_px: ground resolution, m/px, for chips whose source and metadata do not
            say.

    Returns:
        The summary: threshold, input size, sub-tiling, per-source (and overall) metrics and the
        report table's rows.

    Raises:
        InputDataError: the checkpoint or a chip cannot be read, a source is empty, or two
            sources share a name.
    """
    clf = load_classifier(checkpoint, device)
    t = clf.threshold if threshold is None else threshold
    cut = clf.config.data.subtiles if subtiles else None
    out = Path(out_dir)
    extra = {"checkpoint": str(checkpoint)}
    keys = ("n", "n_positive", "n_negative", "precision", "recall", "f1", "roc_auc", "pr_auc",
            "confusion_matrix")  # fmt: skip
    per_source: dict[str, Any] = {}
    chips_all: list[Chip] = []
    labels_all, probs_all = [], []
    table: list[dict[str, Any]] = []
    names = [src.display_name for src in sources]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InputDataError(
            f"two sources share the name {sorted(dupes)[0]!r}",
            where="sources",
            fix="give each source its own name",
        )
    for i, src in enumerate(sources):
        chips = load_source(src, seed=seed + i)
        if ground_m_per_px is not None:
            chips = [c if c.ground_m_per_px else replace(c, ground_m_per_px=ground_m_per_px)
                     for c in chips]  # fmt: skip
        labels, probs = infer_chips(
            clf, chips, batch_size=batch_size, num_workers=num_workers, subtiles=cut
        )
        name = src.display_name
        m = write_evaluation(
            chips, labels, probs, out / _safe(name), name=name, threshold=t, extra=extra
        )
        per_source[name] = {k: m[k] for k in keys}
        table += report_rows(name, labels, probs, t, reps=bootstrap_reps, seed=seed, level=level)
        chips_all += chips
        labels_all.append(labels)
        probs_all.append(probs)
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "threshold": t,
        "input_size_px": clf.input_size_px,
        "subtiles": None if cut is None else cut.model_dump(mode="json"),
        "sources": per_source,
    }
    if len(sources) > 1:
        m = write_evaluation(
            chips_all, np.concatenate(labels_all), np.concatenate(probs_all), out / "all",
            name="all", threshold=t, extra=extra,
        )  # fmt: skip
        summary["all"] = {k: m[k] for k in keys}
    labels_cat, probs_cat = np.concatenate(labels_all), np.concatenate(probs_all)
    table += report_rows(
        "overall", labels_cat, probs_cat, t, reps=bootstrap_reps, seed=seed, level=level
    )
    summary["table"] = table
    write_report(
        table,
        REPORT_COLUMNS,
        out,
        title="Classifier evaluation",
        meta={"checkpoint": str(checkpoint), "threshold": t, "input_size_px": clf.input_size_px},
        notes=report_notes(bootstrap_reps, level, MIN_CLASS_FOR_AUC),
    )
    write_json(out / "summary.json", summary)
    return summary


def format_report_table(summary: dict[str, Any]) -> str:
    """The compact per-source + overall table of :func:`evaluate_checkpoint`'s summary.

    Args:
        summary: the summary :func:`evaluate_checkpoint` returns.

    Returns:
        The table as plain text.
    """
    return format_text(summary["table"], REPORT_COLUMNS)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
