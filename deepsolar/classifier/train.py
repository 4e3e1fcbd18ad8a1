"""The training loop: seeded, resumable, one checkpoint per epoch plus the best by a metric.

Checkpoints are plain ``torch.save`` dicts of tensors, numbers, strings, lists and dicts, so they
load with ``torch.load(..., weights_only=True)`` (no pickled code runs). Each carries the full
config, class names, input size, normalisation and decision threshold, so inference needs nothing
else. Every epoch re-seeds torch from ``(seed, epoch)`` and builds its shuffling generator from the
same pair: resuming from the checkpoint of epoch k replays epoch k+1 exactly as an uninterrupted run
would (on the same device and thread count).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.context
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from deepsolar.classifier.config import TrainClassifierConfig
from deepsolar.classifier.data import (
    Chip,
    ChipDataset,
    class_counts,
    load_sources,
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
from deepsolar.classifier.model import NORMALIZE, build_classifier, model_outputs
from deepsolar.classifier.recipe import (
    apply_finetune,
    build_optimizer,
    build_scheduler,
    set_train_mode,
)
from deepsolar.classifier.subtiles import chip_level, expand_chips
from deepsolar.core.checkpoints import load_checkpoint_safely, save_checkpoint
from deepsolar.core.config import changed_fields, validate_config
from deepsolar.core.errors import ConfigError, InputDataError

log = logging.getLogger("deepsolar.classifier")

CHECKPOINT_FORMAT = "deepsolar-classifier"
CHECKPOINT_VERSION = 1
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


# ---------------------------------------------------------------- devices and seeds


def calibrated_threshold(labels: Any, probs: Any, default: float) -> float:
    """The sweep threshold with the best validation F1 (ties: the one nearest ``default``)."""
    rows = [r for r in threshold_sweep(labels, probs) if r["f1"] is not None]
    best_f1 = max((r["f1"] for r in rows), default=0.0)
    if best_f1 <= 0:  # no positive found at any threshold: nothing to calibrate on
        return default
    return float(min((r for r in rows if r["f1"] == best_f1),
                     key=lambda r: abs(r["threshold"] - default))["threshold"])  # fmt: skip


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is checked."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(
            f"unknown device '{spec}'", where="train.device", fix="use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "CUDA was requested but no GPU is visible",
            where="train.device",
            fix="set train.device to 'auto' or 'cpu'",
        )
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63


# ---------------------------------------------------------------- checkpoints


def checkpoint_meta(cfg: TrainClassifierConfig) -> dict[str, Any]:
    """What inference needs besides the weights, as plain data."""
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
    """Load a classifier checkpoint with ``weights_only=True`` (tensors and plain data only)."""
    return load_checkpoint_safely(
        path, fmt=CHECKPOINT_FORMAT, kind="classifier", producer="train-classifier"
    )


def config_from_checkpoint(
    ckpt: dict[str, Any], where: str = "checkpoint"
) -> TrainClassifierConfig:
    return validate_config(TrainClassifierConfig, ckpt["config"], where=where)


def model_from_checkpoint(ckpt: dict[str, Any], where: str = "checkpoint") -> nn.Module:
    """Rebuild the network (no download) and load the checkpoint's weights strictly."""
    cfg = config_from_checkpoint(ckpt, where)
    model = build_classifier(cfg.model.model_copy(update={"weights": "none"}))
    model.load_state_dict(ckpt["model_state"])
    return model


# ---------------------------------------------------------------- loaders and evaluation


def worker_context() -> multiprocessing.context.BaseContext:
    """Start DataLoader workers from a clean forkserver, not by forking this process.

    A plain fork inherits Prefect's at-exit hooks, which fail in the child (AssertionError in
    prefect's QueueService.drain): every worker then exits with code 1 and the DataLoader aborts.
    The forkserver preloads the data modules once, so workers still start quickly.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["deepsolar.classifier.data", "deepsolar.classifier.predict"])
    return ctx


def make_loader(
    dataset: ChipDataset,
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds all come from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=gen,
        drop_last=drop_last,
        pin_memory=pin_memory,
        multiprocessing_context=worker_context() if num_workers > 0 else None,
    )


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    amp_bf16: bool = False,
    channels_last: bool = False,
) -> tuple[torch.Tensor, np.ndarray]:
    """(float32 logits on CPU, labels) over a loader, in eval mode."""
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
    return torch.softmax(logits, dim=1)[:, 1].numpy()


def per_chip(
    cells: list[Chip], labels: np.ndarray, probs: np.ndarray, subtiles: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) per whole chip: the highest of its sub-tiles' (if cut)."""
    if subtiles is None:
        return labels, probs
    _, chip_labels, chip_probs = chip_level(cells, probs)
    return chip_labels, chip_probs


# ---------------------------------------------------------------- training


@dataclass
class TrainResult:
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


def _check_resume_config(saved: dict[str, Any], cfg: TrainClassifierConfig, where: str) -> None:
    diff = changed_fields(saved, cfg.model_dump(mode="json"), _RESUME_FREE)
    if diff:
        raise ConfigError(
            f"the config differs from the checkpoint's in {', '.join(diff)}",
            where=where,
            fix="resume with the same config (only train.epochs/device/threads and "
            "data.num_workers may change) or start a new run",
        )


def _score(metrics: dict[str, Any], name: str) -> float:
    """Higher is better; undefined scores rank last."""
    if name == "val_loss":
        return -metrics["val_loss"]
    v = metrics.get(name)
    return -math.inf if v is None else float(v)


def split_data(cfg: TrainClassifierConfig) -> tuple[list[Chip], list[Chip], list[Chip]]:
    """(train, val, held-out) chips: val from data.val or a split; held-out per test_fraction."""
    seed = cfg.train.seed
    pool = load_sources(cfg.data.train, seed=seed)
    held_out: list[Chip] = []
    if cfg.data.test_fraction > 0:
        pool, held_out = stratified_split(pool, cfg.data.test_fraction, seed + 1)
    if cfg.data.val:
        return pool, load_sources(cfg.data.val, seed=seed + 10_000), held_out
    train, val = stratified_split(pool, cfg.data.val_fraction, seed)
    return train, val, held_out


def fit(
    cfg: TrainClassifierConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | None = None,
    train_chips: list[Chip] | None = None,
    val_chips: list[Chip] | None = None,
) -> TrainResult:
    """Train per ``cfg``; write ``last.pt``, ``best.pt``, ``history.json``, ``val/metrics.json``."""
    cfg = validate_config(TrainClassifierConfig, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tc, dc = cfg.train, cfg.data
    device = resolve_device(tc.device)
    if tc.num_threads and device.type == "cpu":
        torch.set_num_threads(tc.num_threads)
    seed_everything(tc.seed)
    on_gpu = device.type == "cuda"
    amp, ch_last = tc.amp_bf16 and on_gpu, tc.channels_last and on_gpu

    held_out: list[Chip] = []
    if train_chips is None or val_chips is None:
        train_chips, val_chips, held_out = split_data(cfg)
    splits = {"train": train_chips, "val": val_chips, "held_out": held_out}
    counts = {k: class_counts(v) for k, v in splits.items()}
    log.info("chips per split: %s", counts)
    write_json(
        out / "data_split.json",
        {
            split: [{"path": str(c.path), "label": c.label, "source": c.source} for c in chips]
            for split, chips in splits.items()
        },
    )

    resume_ckpt = load_checkpoint(resume) if resume else None
    model_cfg = cfg.model
    if resume_ckpt is not None:
        _check_resume_config(resume_ckpt["config"], cfg, str(resume))
        model_cfg = model_cfg.model_copy(update={"weights": "none"})  # weights come from resume
    model = build_classifier(model_cfg)
    apply_finetune(model, cfg.optim, model_cfg.arch)
    model.to(device)
    if ch_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim)
    criterion = DeepSolarLoss(cfg.loss)

    start_epoch, history = 0, []
    best_score, best_epoch = -math.inf, None
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["model_state"])
        optimizer.load_state_dict(resume_ckpt["optimizer_state"])
        scheduler.load_state_dict(resume_ckpt["scheduler_state"])
        start_epoch = int(resume_ckpt["epoch"])
        history = list(resume_ckpt["history"])
        best_epoch = resume_ckpt.get("best_epoch")
        saved_best = resume_ckpt.get("best_score")
        best_score = -math.inf if saved_best is None else float(saved_best)
        log.info("resumed from %s after epoch %d", resume, start_epoch)

    train_cells = expand_chips(train_chips, dc.subtiles, training=True, seed=tc.seed)
    val_cells = expand_chips(val_chips, dc.subtiles, training=False)
    if dc.subtiles is not None:
        log.info("sub-tiles: train %s, val %s", class_counts(train_cells), class_counts(val_cells))
    cache = tc.cache_frozen_features
    train_ds = ChipDataset(
        train_cells, model_cfg.input_size_px, rot90=dc.rot90 and not cache, hflip=dc.hflip,
        min_side_px=dc.min_side_px,
    )  # fmt: skip
    val_ds = ChipDataset(val_cells, model_cfg.input_size_px, min_side_px=dc.min_side_px)
    net, train_src, val_src = model, train_ds, val_ds
    if cache:
        head, net = split_model(model, str(cfg.optim.unfreeze_from))
        rots = 4 if dc.rot90 else 1
        train_src = cache_features(head, train_ds, rotations=rots, device=device,
                                   batch_size=dc.eval_batch_size, progress=tc.progress)  # fmt: skip
        val_src = cache_features(head, val_ds, rotations=1, device=device,
                                 batch_size=dc.eval_batch_size, progress=tc.progress)  # fmt: skip
    # A last batch of one sample breaks BatchNorm in training mode.
    drop_last = len(train_ds) > dc.batch_size and len(train_ds) % dc.batch_size == 1
    n_epochs = math.ceil(tc.epochs)
    meta = checkpoint_meta(cfg)
    last_path, best_path = out / LAST_NAME, out / BEST_NAME

    for epoch in range(start_epoch, n_epochs):
        es = _epoch_seed(tc.seed, epoch)
        torch.manual_seed(es)  # dropout and (with num_workers=0) augmentation
        loader = make_loader(
            train_src, batch_size=dc.batch_size, shuffle=True,
            num_workers=0 if cache else dc.num_workers,
            seed=es, drop_last=drop_last, pin_memory=on_gpu,
        )  # fmt: skip
        steps = len(loader)
        if tc.epochs - epoch < 1:  # fractional last epoch
            steps = max(1, round((tc.epochs - epoch) * len(loader)))
        lr = optimizer.param_groups[0]["lr"]
        set_train_mode(model)
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(
            loader, total=steps, desc=f"epoch {epoch + 1}/{n_epochs}", unit="batch",
            disable=not tc.progress, leave=False,
        )  # fmt: skip
        for step, batch in enumerate(bar):
            if step >= steps:
                break
            raise_batch_errors(batch)
            x = batch["image"].to(device, non_blocking=True)
            if ch_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["label"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits, aux = model_outputs(net(x))
            loss = criterion(logits, y, aux)  # computed in float32
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            ips = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{ips:.1f}")
        bar.close()
        train_s = time.perf_counter() - t0
        scheduler.step()

        val_loader = make_loader(
            val_src, batch_size=dc.eval_batch_size, shuffle=False,
            num_workers=0 if cache else dc.num_workers,
        )  # fmt: skip
        logits, labels = predict_logits(
            net, val_loader, device, amp_bf16=amp, channels_last=ch_last
        )
        val_loss = (
            float(criterion(logits, torch.as_tensor(labels))) if len(labels) else float("nan")
        )
        labels, probs = per_chip(val_cells, labels, positive_probs(logits), dc.subtiles)
        m = classification_metrics(labels, probs, model_cfg.threshold)
        m["val_loss"] = val_loss
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
        history.append(row)
        log.info(
            "epoch %d/%d loss %.4f val_loss %.4f P %s R %s F1 %s AUC %s (%.1f img/s)",
            epoch + 1, n_epochs, row["train_loss"], val_loss, m["precision"], m["recall"],
            m["f1"], m["roc_auc"], row["train_images_per_s"],
        )  # fmt: skip
        score = _score(m, tc.best_metric)
        is_best = best_epoch is None or score > best_score
        if is_best:
            best_score, best_epoch = score, epoch + 1
        state = {
            **meta,
            "model_state": model.state_dict(),
            "epoch": epoch + 1,
            "metrics": m,
            "history": history,
            "best_metric": tc.best_metric,
            "best_score": None if math.isinf(best_score) else best_score,
            "best_epoch": best_epoch,
        }
        if is_best:
            save_checkpoint(best_path, state)
        full = {
            **state,
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(),
        }
        save_checkpoint(last_path, full)
        if tc.keep_every_epoch:
            save_checkpoint(out / f"epoch_{epoch + 1:03d}.pt", full)
        write_json(out / "history.json", history)

    if not best_path.is_file():
        raise InputDataError(
            "no epoch was trained and there is no best checkpoint",
            where=str(out),
            fix="raise train.epochs above the resumed checkpoint's epoch",
        )
    # Final reports with the best weights: validation, and the held-out split if any.
    best = load_checkpoint(best_path)
    model.load_state_dict(best["model_state"])
    threshold = model_cfg.threshold
    if tc.calibrate_threshold and len(val_ds):
        loader = make_loader(
            val_src, batch_size=dc.eval_batch_size, shuffle=False,
            num_workers=0 if cache else dc.num_workers,
        )  # fmt: skip
        logits, labels = predict_logits(net, loader, device, amp_bf16=amp, channels_last=ch_last)
        labels, probs = per_chip(val_cells, labels, positive_probs(logits), dc.subtiles)
        threshold = calibrated_threshold(labels, probs, model_cfg.threshold)
        best["threshold"] = threshold
        save_checkpoint(best_path, best)
        log.info("decision threshold calibrated on validation: %.2f", threshold)
    reports: dict[str, dict[str, Any]] = {}
    held_cells = expand_chips(held_out, dc.subtiles, training=False)
    final_sets = [("val", val_cells)]
    if held_out:
        final_sets.append(("held_out", held_cells))
    for name, cells in final_sets:
        ds = ChipDataset(cells, model_cfg.input_size_px, min_side_px=dc.min_side_px)
        loader = make_loader(
            ds, batch_size=dc.eval_batch_size, shuffle=False, num_workers=dc.num_workers
        )
        logits, labels = predict_logits(model, loader, device, amp_bf16=amp, channels_last=ch_last)
        labels, probs = per_chip(cells, labels, positive_probs(logits), dc.subtiles)
        reports[name] = write_metrics(
            labels,
            probs,
            out / name,
            threshold=threshold,
            name="validation" if name == "val" else "held-out split",
            extra={"checkpoint": str(best_path), "epoch": best["epoch"]},
        )
    return TrainResult(
        out_dir=out,
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        best_metric=tc.best_metric,
        best_score=best.get("best_score"),
        best_epoch=best.get("best_epoch"),
        val_metrics=reports["val"],
        history=history,
        counts=counts,
        held_out_metrics=reports.get("held_out"),
    )
