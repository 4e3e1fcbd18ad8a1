"""The classifier's training loop on the shared skeleton (:mod:`deepsolar.core.training`).

Seeded and resumable: ``last.pt`` after every epoch, ``best.pt`` for the best epoch by
``train.best_metric`` (:mod:`deepsolar.classifier.checkpoint` says what a checkpoint holds). Every
epoch re-seeds torch from ``(seed, epoch)`` and builds its shuffling generator from the same pair:
resuming from the checkpoint of epoch k replays epoch k+1 exactly as an uninterrupted run would
(on the same device and thread count).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from deepsolar.classifier.checkpoint import checkpoint_meta, load_checkpoint
from deepsolar.classifier.config import ClassifierConfig, TrainClassifierConfig
from deepsolar.classifier.data import (
    Chip,
    ChipDataset,
    class_counts,
    load_sources,
    make_loader,
    raise_batch_errors,
    stratified_split,
)
from deepsolar.classifier.frozen import cache_features, split_model
from deepsolar.classifier.loss import DeepSolarLoss
from deepsolar.classifier.metrics import (
    classification_metrics,
    threshold_sweep,
    write_json,
    write_metrics,
)
from deepsolar.classifier.model import build_classifier, model_outputs
from deepsolar.classifier.predict import per_chip, positive_probs, predict_logits
from deepsolar.classifier.recipe import (
    apply_finetune,
    build_optimizer,
    build_scheduler,
    set_train_mode,
)
from deepsolar.classifier.subtiles import expand_chips
from deepsolar.core.checkpoints import save_checkpoint
from deepsolar.core.config import validate_config
from deepsolar.core.errors import InputDataError
from deepsolar.core.training import (
    BestEpoch,
    EpochTask,
    check_resume_config,
    epoch_steps,
    run_epochs,
    start_run,
)

log = logging.getLogger("deepsolar.classifier")

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


def calibrated_threshold(labels: Any, probs: Any, default: float) -> float:
    """The sweep threshold with the best validation F1 (ties: the one nearest ``default``).

    Args:
        labels: the validation labels (0 or 1).
        probs: the validation probabilities of PV, 0-1.
        default: the threshold to keep when no threshold finds a positive, probability 0-1.

    Returns:
        The threshold, probability 0-1.
    """
    rows = [r for r in threshold_sweep(labels, probs) if r["f1"] is not None]
    best_f1 = max((r["f1"] for r in rows), default=0.0)
    if best_f1 <= 0:  # no positive found at any threshold: nothing to calibrate on
        return default
    return float(min((r for r in rows if r["f1"] == best_f1),
                     key=lambda r: abs(r["threshold"] - default))["threshold"])  # fmt: skip


@dataclass
class TrainResult:
    """What a classifier training run produced.

    Attributes:
        out_dir: the run's folder.
        last_checkpoint: the last epoch's checkpoint.
        best_checkpoint: the best epoch's checkpoint.
        best_metric: the validation metric that picks the best epoch (e.g. ``f1``,
            ``val_loss``).
        best_score: its best value (None when never defined).
        best_epoch: the epoch of the best checkpoint (None when none was better).
        val_metrics: the validation metrics of the best checkpoint.
        history: one row of metrics per epoch.
        counts: positive and negative chips per split.
        held_out_metrics: the metrics on the held-out chips (None without any).
    """

    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    best_metric: str
    best_score: float | None
    best_epoch: int | None
    val_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    held_out_metrics: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The run's paths, best epoch, chip counts and headline metrics, JSON-ready.

        Returns:
            The summary (metrics cut to counts, precision, recall, F1, ROC/PR-AUC and the confusion
            matrix).
        """
        return {
            "out_dir": str(self.out_dir),
            "last_checkpoint": str(self.last_checkpoint),
            "best_checkpoint": str(self.best_checkpoint),
            "best_metric": self.best_metric,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "counts": self.counts,
            "val_metrics": _headline(self.val_metrics),
            "held_out_metrics": _headline(self.held_out_metrics),
        }


def _headline(m: dict[str, Any] | None) -> dict[str, Any] | None:
    keys = ("n", "n_positive", "precision", "recall", "f1", "roc_auc", "pr_auc", "confusion_matrix")
    return None if m is None else {k: m.get(k) for k in keys}


# Keys that may change when resuming (they do not alter what the next epoch computes).
_RESUME_FREE = {"train.epochs", "train.device", "train.progress", "train.num_threads",
                "train.keep_every_epoch", "data.num_workers", "data.eval_batch_size",
                "train.cache_frozen_features"}  # fmt: skip
_RESUME_FIX = ("resume with the same config (only train.epochs/device/threads and "
               "data.num_workers may change) or start a new run")  # fmt: skip


def _score(metrics: dict[str, Any], name: str) -> float:
    """Higher is better; undefined scores rank last."""
    if name == "val_loss":
        return -metrics["val_loss"]
    v = metrics.get(name)
    return -math.inf if v is None else float(v)


def split_data(cfg: TrainClassifierConfig) -> tuple[list[Chip], list[Chip], list[Chip]]:
    """(train, val, held-out) chips: val from data.val or a split; held-out per test_fraction.

    Args:
        cfg: the training config (sources, ``val_fraction`` and ``test_fraction`` as fractions
            0-1, seed).

    Returns:
        The training, validation and held-out chips (held-out empty when ``test_fraction`` is 0).

    Raises:
        InputDataError: a source cannot be read or the chips cannot be split.
    """
    seed = cfg.train.seed
    pool = load_sources(cfg.data.train, seed=seed)
    held_out: list[Chip] = []
    if cfg.data.test_fraction > 0:
        pool, held_out = stratified_split(pool, cfg.data.test_fraction, seed + 1)
    if cfg.data.val:
        return pool, load_sources(cfg.data.val, seed=seed + 10_000), held_out
    train, val = stratified_split(pool, cfg.data.val_fraction, seed)
    return train, val, held_out


def _record_splits(
    cfg: TrainClassifierConfig,
    out: Path,
    train_chips: list[Chip] | None,
    val_chips: list[Chip] | None,
) -> dict[str, list[Chip]]:
    """The train/val/held-out chips (split unless given), logged and written to data_split.json."""
    held_out: list[Chip] = []
    if train_chips is None or val_chips is None:
        train_chips, val_chips, held_out = split_data(cfg)
    splits = {"train": train_chips, "val": val_chips, "held_out": held_out}
    log.info("chips per split: %s", {k: class_counts(v) for k, v in splits.items()})
    write_json(
        out / "data_split.json",
        {
            split: [{"path": str(c.path), "label": c.label, "source": c.source} for c in chips]
            for split, chips in splits.items()
        },
    )
    return splits


@dataclass
class _Network:
    """The classifier and its recipe (optimiser, schedule, loss), resumed if asked."""

    model: nn.Module
    model_cfg: ClassifierConfig
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: nn.Module
    channels_last: bool


def _build_network(
    cfg: TrainClassifierConfig, device: torch.device, resume_ckpt: dict[str, Any] | None
) -> _Network:
    model_cfg = cfg.model
    if resume_ckpt is not None:
        model_cfg = model_cfg.model_copy(update={"weights": "none"})  # weights come from resume
    model = build_classifier(model_cfg)
    apply_finetune(model, cfg.optim, model_cfg.arch)
    model.to(device)
    ch_last = cfg.train.channels_last and device.type == "cuda"
    if ch_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim)
    criterion = DeepSolarLoss(cfg.loss)
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["model_state"])
        optimizer.load_state_dict(resume_ckpt["optimizer_state"])
        scheduler.load_state_dict(resume_ckpt["scheduler_state"])
    return _Network(model, model_cfg, optimizer, scheduler, criterion, ch_last)


@dataclass
class _Inputs:
    """What the epochs read: cells, their datasets, and the trained part with its sources.

    The trained part is the whole network on chips, or its tail on cached frozen features.
    """

    train_cells: list[Chip]
    val_cells: list[Chip]
    train_ds: ChipDataset
    net: nn.Module
    train_src: Dataset
    val_src: Dataset


def _prepare_inputs(
    cfg: TrainClassifierConfig, nw: _Network, splits: dict[str, list[Chip]], device: torch.device
) -> _Inputs:
    tc, dc, size = cfg.train, cfg.data, nw.model_cfg.input_size_px
    train_cells = expand_chips(splits["train"], dc.subtiles, training=True, seed=tc.seed)
    val_cells = expand_chips(splits["val"], dc.subtiles, training=False)
    if dc.subtiles is not None:
        log.info("sub-tiles: train %s, val %s", class_counts(train_cells), class_counts(val_cells))
    cache = tc.cache_frozen_features
    train_ds = ChipDataset(train_cells, size, rot90=dc.rot90 and not cache, hflip=dc.hflip,
                           min_side_px=dc.min_side_px)  # fmt: skip
    val_ds = ChipDataset(val_cells, size, min_side_px=dc.min_side_px)
    net, train_src, val_src = nw.model, train_ds, val_ds
    if cache:
        head, net = split_model(nw.model, str(cfg.optim.unfreeze_from))
        rots = 4 if dc.rot90 else 1
        train_src = cache_features(head, train_ds, rotations=rots, device=device,
                                   batch_size=dc.eval_batch_size, progress=tc.progress)  # fmt: skip
        val_src = cache_features(head, val_ds, rotations=1, device=device,
                                 batch_size=dc.eval_batch_size, progress=tc.progress)  # fmt: skip
    return _Inputs(train_cells, val_cells, train_ds, net, train_src, val_src)


class _ClassifierEpochs(EpochTask):
    """One epoch of the classifier: train on shuffled batches, step the schedule, validate."""

    def __init__(
        self, cfg: TrainClassifierConfig, nw: _Network, inp: _Inputs, device: torch.device,
        out: Path, history: list[dict[str, Any]],
    ) -> None:  # fmt: skip
        self.cfg, self.nw, self.inp, self.device = cfg, nw, inp, device
        self.out, self.history = out, history
        self.amp = cfg.train.amp_bf16 and device.type == "cuda"
        self.workers = 0 if cfg.train.cache_frozen_features else cfg.data.num_workers
        n, bs = len(inp.train_ds), cfg.data.batch_size
        self.drop_last = n > bs and n % bs == 1  # a last batch of one breaks BatchNorm
        self.n_epochs = math.ceil(cfg.train.epochs)
        self.meta = checkpoint_meta(cfg)
        self.metrics: dict[str, Any] = {}

    def train_epoch(self, epoch: int, seed: int) -> dict[str, Any]:
        """Train one epoch from ``seed``, step the schedule and validate; the history row."""
        tc, dc = self.cfg.train, self.cfg.data
        torch.manual_seed(seed)  # dropout and (with num_workers=0) augmentation
        loader = make_loader(
            self.inp.train_src, batch_size=dc.batch_size, shuffle=True, num_workers=self.workers,
            seed=seed, drop_last=self.drop_last, pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        steps = epoch_steps(tc.epochs, epoch, len(loader))
        lr = self.nw.optimizer.param_groups[0]["lr"]
        set_train_mode(self.nw.model)
        t0 = time.perf_counter()
        seen, loss_sum = self._train_steps(loader, steps, f"epoch {epoch + 1}/{self.n_epochs}")
        train_s = time.perf_counter() - t0
        self.nw.scheduler.step()
        m = self.metrics = self._validate()
        row = {
            "epoch": epoch + 1,
            "steps": steps,
            "lr": lr,
            "train_loss": loss_sum / max(seen, 1),
            "train_images_per_s": seen / max(train_s, 1e-9),
            "train_s": train_s,
            **{k: m[k] for k in ("val_loss", "precision", "recall", "f1", "roc_auc", "pr_auc")},
            "confusion_matrix": m["confusion_matrix"],
        }
        log.info(
            "epoch %d/%d loss %.4f val_loss %.4f P %s R %s F1 %s AUC %s (%.1f img/s)",
            epoch + 1, self.n_epochs, row["train_loss"], m["val_loss"], m["precision"],
            m["recall"], m["f1"], m["roc_auc"], row["train_images_per_s"],
        )  # fmt: skip
        return row

    def _train_steps(self, loader: DataLoader, steps: int, desc: str) -> tuple[int, float]:
        """Optimiser steps over the first ``steps`` batches; (samples seen, summed loss)."""
        nw, device = self.nw, self.device
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(loader, total=steps, desc=desc, unit="batch",
                   disable=not self.cfg.train.progress, leave=False)  # fmt: skip
        for step, batch in enumerate(bar):
            if step >= steps:
                break
            raise_batch_errors(batch)
            x = batch["image"].to(device, non_blocking=True)
            if nw.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["label"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits, aux = model_outputs(self.inp.net(x))
            loss = nw.criterion(logits, y, aux)  # computed in float32
            nw.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nw.optimizer.step()
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            ips = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{ips:.1f}")
        bar.close()
        return seen, loss_sum

    def validation_logits(self) -> tuple[torch.Tensor, np.ndarray]:
        """(logits, labels) per validation cell with the current weights."""
        loader = make_loader(self.inp.val_src, batch_size=self.cfg.data.eval_batch_size,
                             shuffle=False, num_workers=self.workers)  # fmt: skip
        return predict_logits(self.inp.net, loader, self.device, amp_bf16=self.amp,
                              channels_last=self.nw.channels_last)  # fmt: skip

    def _validate(self) -> dict[str, Any]:
        logits, labels = self.validation_logits()
        val_loss = (
            float(self.nw.criterion(logits, torch.as_tensor(labels)))
            if len(labels)
            else float("nan")
        )
        labels, probs = per_chip(
            self.inp.val_cells, labels, positive_probs(logits), self.cfg.data.subtiles
        )
        m = classification_metrics(labels, probs, self.nw.model_cfg.threshold)
        m["val_loss"] = val_loss
        return m

    def score(self, row: dict[str, Any]) -> float:
        """``train.best_metric`` of the epoch's validation metrics."""
        return _score(self.metrics, self.cfg.train.best_metric)

    def checkpoint(self, epoch: int, best: BestEpoch) -> dict[str, Any]:
        """Metadata, weights, metrics and history after ``epoch``; the best so far."""
        return {
            **self.meta,
            "model_state": self.nw.model.state_dict(),
            "epoch": epoch,
            "metrics": self.metrics,
            "history": self.history,
            "best_metric": self.cfg.train.best_metric,
            "best_score": None if math.isinf(best.score) else best.score,
            "best_epoch": best.epoch,
        }

    def resume_state(self) -> dict[str, Any]:
        """The optimiser's and the schedule's states."""
        return {
            "optimizer_state": self.nw.optimizer.state_dict(),
            "scheduler_state": self.nw.scheduler.state_dict(),
        }

    def after_epoch(self, epoch: int) -> None:
        """Rewrite history.json."""
        write_json(self.out / "history.json", self.history)


def _resume_point(
    resume_ckpt: dict[str, Any] | None,
) -> tuple[int, list[dict[str, Any]], BestEpoch]:
    """(epochs done, history, best epoch) of a resumed checkpoint, or of a fresh run."""
    if resume_ckpt is None:
        return 0, [], BestEpoch()
    saved_best = resume_ckpt.get("best_score")
    best = BestEpoch(
        -math.inf if saved_best is None else float(saved_best), resume_ckpt.get("best_epoch")
    )
    return int(resume_ckpt["epoch"]), list(resume_ckpt["history"]), best


def _final_reports(
    task: _ClassifierEpochs, splits: dict[str, list[Chip]], best_path: Path
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Reload the best weights, calibrate the threshold if asked, and report val (+ held-out).

    Returns:
        (the best checkpoint, metrics per reported split).
    """
    cfg, nw, device = task.cfg, task.nw, task.device
    dc = cfg.data
    best = load_checkpoint(best_path)
    nw.model.load_state_dict(best["model_state"])
    threshold = nw.model_cfg.threshold
    if cfg.train.calibrate_threshold and len(task.inp.val_cells):
        logits, labels = task.validation_logits()
        labels, probs = per_chip(task.inp.val_cells, labels, positive_probs(logits), dc.subtiles)
        threshold = calibrated_threshold(labels, probs, nw.model_cfg.threshold)
        best["threshold"] = threshold
        save_checkpoint(best_path, best)
        log.info("decision threshold calibrated on validation: %.2f", threshold)
    reports: dict[str, dict[str, Any]] = {}
    final_sets = [("val", task.inp.val_cells)]
    if splits["held_out"]:
        final_sets.append(
            ("held_out", expand_chips(splits["held_out"], dc.subtiles, training=False))
        )
    for name, cells in final_sets:
        ds = ChipDataset(cells, nw.model_cfg.input_size_px, min_side_px=dc.min_side_px)
        loader = make_loader(
            ds, batch_size=dc.eval_batch_size, shuffle=False, num_workers=dc.num_workers
        )
        logits, labels = predict_logits(nw.model, loader, device, amp_bf16=task.amp,
                                        channels_last=nw.channels_last)  # fmt: skip
        labels, probs = per_chip(cells, labels, positive_probs(logits), dc.subtiles)
        reports[name] = write_metrics(
            labels, probs, task.out / name, threshold=threshold,
            name="validation" if name == "val" else "held-out split",
            extra={"checkpoint": str(best_path), "epoch": best["epoch"]},
        )  # fmt: skip
    return best, reports


def fit(
    cfg: TrainClassifierConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    train_chips: list[Chip] | None = None,
    val_chips: list[Chip] | None = None,
) -> TrainResult:
    """Train per ``cfg``; write ``last.pt``, ``best.pt``, ``history.json``, ``val/metrics.json``.

    Args:
        cfg: the training config.
        out_dir: the output folder.
        resume: a ``last.pt`` to continue from (its config must match but for resume-free keys).
        train_chips: the training chips (with ``val_chips``: instead of ``cfg.data``'s sources).
        val_chips: the validation chips.

    Returns:
        The checkpoints, the best epoch and the final validation (and held-out) metrics.
    """
    cfg = validate_config(TrainClassifierConfig, cfg)
    tc = cfg.train
    out, device = start_run(out_dir, device=tc.device, num_threads=tc.num_threads, seed=tc.seed)
    splits = _record_splits(cfg, out, train_chips, val_chips)
    resume_ckpt = load_checkpoint(resume) if resume else None
    if resume_ckpt is not None:
        check_resume_config(resume_ckpt["config"], cfg.model_dump(mode="json"), _RESUME_FREE,
                            where=str(resume), fix=_RESUME_FIX)  # fmt: skip
    nw = _build_network(cfg, device, resume_ckpt)
    start_epoch, history, best = _resume_point(resume_ckpt)
    if resume_ckpt is not None:
        log.info("resumed from %s after epoch %d", resume, start_epoch)
    task = _ClassifierEpochs(cfg, nw, _prepare_inputs(cfg, nw, splits, device), device, out,
                             history)  # fmt: skip
    last_path, best_path = out / LAST_NAME, out / BEST_NAME
    run_epochs(task, start_epoch=start_epoch, n_epochs=task.n_epochs, seed=tc.seed,
               history=history, last_path=last_path, best_path=best_path, best=best,
               keep_every_epoch=tc.keep_every_epoch)  # fmt: skip
    if not best_path.is_file():
        raise InputDataError(
            "no epoch was trained and there is no best checkpoint",
            where=str(out),
            fix="raise train.epochs above the resumed checkpoint's epoch",
        )
    best_ckpt, reports = _final_reports(task, splits, best_path)
    return TrainResult(
        out_dir=out,
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        best_metric=tc.best_metric,
        best_score=best_ckpt.get("best_score"),
        best_epoch=best_ckpt.get("best_epoch"),
        val_metrics=reports["val"],
        history=history,
        counts={k: class_counts(v) for k, v in splits.items()},
        held_out_metrics=reports.get("held_out"),
    )
