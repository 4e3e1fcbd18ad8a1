"""Greedy stage-wise training of the CAM branch (DeepSolar's recipe), seeded and resumable.

Stage k trains only its conv + linear head (plain SGD, lr 0.005, batch 64, unweighted
cross-entropy) on the frozen stack below it: the classifier up to its tap (Inception:
``Mixed_5d``) in eval mode and
stages 1..k-1. After every epoch ``stage_{k}.pt`` is written atomically; a finished stage is not
trained again and a half-finished one resumes from its last epoch. ``segmenter.pt`` is the last
stage without optimiser state. Checkpoints hold only tensors and plain data (``weights_only=True``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from deepsolar.classifier.data import ChipDataset, class_counts, load_sources, raise_batch_errors
from deepsolar.classifier.predict import LoadedClassifier, load_classifier
from deepsolar.classifier.subtiles import expand_chips
from deepsolar.core.checkpoints import CheckpointKind, load_checkpoint_of, save_checkpoint
from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, InputDataError, StaleCheckpointError
from deepsolar.core.training import (
    BestEpoch,
    EpochTask,
    check_resume_config,
    epoch_steps,
    run_epochs,
    stale_fields,
    start_run,
)
from deepsolar.segmentation.branch import (
    GreedyCamBranch,
    backbone_fingerprint,
    freeze_backbone,
    resolve_tap,
    tap_channels,
    tap_features,
)
from deepsolar.segmentation.config import TrainSegmenterConfig

log = logging.getLogger("deepsolar.segmentation")

CHECKPOINT_FORMAT = "deepsolar-segmenter"
CHECKPOINT_VERSION = 1
FINAL_NAME = "segmenter.pt"
SEGMENTER_CHECKPOINT = CheckpointKind(
    fmt=CHECKPOINT_FORMAT, kind="segmenter", producer="train-segmenter"
)


def stage_path(out_dir: Path, stage: int) -> Path:
    """The checkpoint of one finished greedy stage.

    Args:
        out_dir: the run's folder.
        stage: the 1-based stage.

    Returns:
        ``<out_dir>/stage_<stage>.pt``.
    """
    return Path(out_dir) / f"stage_{stage}.pt"


# ---------------------------------------------------------------- checkpoints


@dataclass
class LoadedSegmenter:
    """A trained greedy CAM branch with the backbone it was trained on.

    Attributes:
        branch: the branch, eval mode, with its trained stages only.
        stages_trained: number of finished stages.
        backbone_fingerprint: sha256 of the classifier's weights up to the tap.
        config: the training config.
        checkpoint: the checkpoint file.
    """

    branch: GreedyCamBranch
    stages_trained: int
    backbone_fingerprint: str
    config: TrainSegmenterConfig
    checkpoint: Path


def load_segmenter(path: str | Path, device: str | torch.device = "cpu") -> LoadedSegmenter:
    """The branch with its trained stages (a ``stage_1.pt`` gives a 1-stage branch), eval mode.

    Args:
        path: a ``train-segmenter`` checkpoint, or ``builtin``.
        device: where the branch runs.

    Returns:
        The loaded segmenter.

    Raises:
        InputDataError: the file is missing, not a segmenter checkpoint, or holds no finished
            stage.
        ConfigError: its config is invalid.
    """
    ckpt = load_checkpoint_of(path, SEGMENTER_CHECKPOINT)
    cfg = validate_config(TrainSegmenterConfig, ckpt["config"], where=str(path))
    k = int(ckpt["stages_trained"])
    if k < 1:
        raise InputDataError(
            "this checkpoint holds no finished stage",
            where=str(path),
            fix="finish training stage 1 (run train-segmenter again to resume)",
        )
    in_channels = int(ckpt["branch_state"]["stages.0.conv.weight"].shape[1])
    branch = GreedyCamBranch(cfg.branch.model_copy(update={"n_stages": k}), in_channels)
    state = {
        key: v
        for key, v in ckpt["branch_state"].items()
        if int(key.split(".")[1]) < k  # stages.i.* / heads.i.*
    }
    branch.load_state_dict(state)
    dev = torch.device(device) if isinstance(device, str) else device
    return LoadedSegmenter(
        branch=branch.to(dev).eval(),
        stages_trained=k,
        backbone_fingerprint=str(ckpt["backbone_fingerprint"]),
        config=cfg,
        checkpoint=Path(path),
    )


def check_backbone(seg: LoadedSegmenter, clf: LoadedClassifier) -> None:
    """A branch only makes sense on the exact backbone it was trained on.

    Args:
        seg: the loaded segmenter.
        clf: the classifier it is to run on.

    Raises:
        ConfigError: the classifier's weights up to the tap differ from the training backbone's
            (or the tap does not exist).
    """
    tap = resolve_tap(seg.config.branch.tap, clf.config.model.arch)
    try:
        fp = backbone_fingerprint(clf.model, tap)
    except ValueError:
        fp = None  # the tap does not exist in this classifier: a different architecture
    if fp != seg.backbone_fingerprint:
        raise ConfigError(
            "the segmenter was trained on a different classifier backbone "
            f"(its weights up to {tap} differ)",
            where=f"{seg.checkpoint} vs {clf.checkpoint}",
            fix="pass the classifier checkpoint the segmenter was trained with, "
            "or retrain the segmenter on this classifier",
        )


# ---------------------------------------------------------------- training


@dataclass
class SegTrainResult:
    """What a greedy CAM training run produced.

    Attributes:
        out_dir: the run's folder.
        final_checkpoint: the checkpoint with every trained stage (``segmenter.pt``).
        stage_checkpoints: one checkpoint per finished stage.
        history: one row per epoch of every stage.
        counts: chips per class.
    """

    out_dir: Path
    final_checkpoint: Path
    stage_checkpoints: list[Path]
    history: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The run's paths, counts and each stage's last epoch, JSON-ready.

        Returns:
            The summary.
        """
        return {
            "out_dir": str(self.out_dir),
            "final_checkpoint": str(self.final_checkpoint),
            "stage_checkpoints": [str(p) for p in self.stage_checkpoints],
            "counts": self.counts,
            "last_epochs": [h for h in self.history if h.get("last_of_stage")],
        }


# Keys that may differ on resume: they do not change what the remaining epochs compute.
_RESUME_FREE = {"optim.epochs_per_stage", "train.device", "train.num_threads", "train.progress",
                "train.cache_features", "data.num_workers", "cam", "branch.n_stages"}  # fmt: skip


_RESUME_FIX = ("resume with the same config (only epochs, n_stages, device, threads, cache "
               "and cam settings may change) or use a new output folder")  # fmt: skip


@torch.no_grad()
def compute_features(
    clf: LoadedClassifier, loader: DataLoader, *, dtype: torch.dtype = torch.float16,
    progress: bool = False, tap: str = "Mixed_5d",
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Frozen backbone features of every chip (cached once: the backbone never changes).

    Args:
        clf: the frozen classifier.
        loader: batches of chips (``image``, ``label``).
        dtype: the dtype the features are kept in (on the CPU).
        progress: show a progress bar.
        tap: the module whose output is kept.

    Returns:
        The features (N x C x h x w) and the labels (N).

    Raises:
        InputDataError: a chip cannot be read.
    """
    feats, labels = [], []
    for batch in tqdm(loader, desc=f"{tap} features", disable=not progress, leave=False):
        raise_batch_errors(batch)
        f = tap_features(clf.model, batch["image"].to(clf.device), tap)
        feats.append(f.to("cpu", dtype))
        labels.append(batch["label"].long())
    return torch.cat(feats), torch.cat(labels)


def _last_stage(cfg: TrainSegmenterConfig, upto_stage: int | None) -> int:
    last_stage = cfg.branch.n_stages if upto_stage is None else int(upto_stage)
    if not 1 <= last_stage <= cfg.branch.n_stages:
        raise ConfigError(
            f"upto_stage {upto_stage} is outside 1..{cfg.branch.n_stages}",
            where="fit_segmenter",
            fix="pass a stage number within branch.n_stages",
        )
    return last_stage


@dataclass
class _Backbone:
    """The frozen classifier, its tap and the fingerprint of its weights up to the tap."""

    clf: LoadedClassifier
    tap: str
    fingerprint: str


def _load_backbone(cfg: TrainSegmenterConfig, device: torch.device) -> _Backbone:
    clf = load_classifier(cfg.classifier_checkpoint, str(device))
    freeze_backbone(clf.model)
    try:
        tap = resolve_tap(cfg.branch.tap, clf.config.model.arch)
        fingerprint = backbone_fingerprint(clf.model, tap)
    except ValueError as err:
        raise ConfigError(
            str(err), where="branch.tap", fix="name a module of the classifier"
        ) from None
    return _Backbone(clf, tap, fingerprint)


@dataclass
class _StageInputs:
    """The training cells as chips (``ds``) and, when cached, as frozen tap features."""

    ds: ChipDataset
    cached: TensorDataset | None
    counts: dict[str, int]


def _stage_inputs(cfg: TrainSegmenterConfig, bb: _Backbone, chips: list | None) -> _StageInputs:
    tc, dc = cfg.train, cfg.data
    if chips is None:
        chips = load_sources(dc.train, seed=tc.seed)
    chips = expand_chips(chips, dc.subtiles, training=True, seed=tc.seed)
    counts = class_counts(chips)
    if min(counts.values()) == 0:
        raise InputDataError(
            f"training chips must hold both classes, got {counts}",
            where="data.train",
            fix="add positive and negative chips",
        )
    clf = bb.clf
    ds = ChipDataset(
        chips, clf.input_size_px, rot90=dc.rot90, min_side_px=dc.min_side_px,
        normalize=clf.normalize,
    )  # fmt: skip
    cached: TensorDataset | None = None
    if tc.cache_features and not dc.rot90:
        bs = cfg.optim.batch_size
        loader = DataLoader(ds, batch_size=bs, shuffle=False, num_workers=dc.num_workers)
        feats, labels = compute_features(clf, loader, progress=tc.progress, tap=bb.tap)
        cached = TensorDataset(feats, labels)
    return _StageInputs(ds, cached, counts)


def stale_stages(cfg: TrainSegmenterConfig, out_dir: Path) -> str | None:
    """Why the stage checkpoints in ``out_dir`` cannot be resumed under ``cfg``, if they cannot.

    Args:
        cfg: the training config about to run.
        out_dir: its output folder.

    Returns:
        ``"stage_k.pt: the config differs in <keys>"``, or None (none there, or resumable as far
        as the config goes; the backbone is checked when training starts).
    """
    current = cfg.model_dump(mode="json")
    for stage in range(1, cfg.branch.n_stages + 1):
        path = stage_path(out_dir, stage)
        if path.is_file():
            diff = stale_fields(path, SEGMENTER_CHECKPOINT, current, _RESUME_FREE)
            if diff:
                return f"{path.name}: the config differs in {', '.join(diff)}"
    return None


def _stage_start(
    cfg: TrainSegmenterConfig, out: Path, stage: int, branch: GreedyCamBranch, fingerprint: str
) -> dict[str, Any] | None:
    """Load ``stage_{stage}.pt`` into ``branch`` if it exists (checked), else stage - 1's weights.

    Returns:
        The stage's saved checkpoint, or None when the stage starts afresh.
    """
    path = stage_path(out, stage)
    if path.is_file():
        saved = load_checkpoint_of(path, SEGMENTER_CHECKPOINT)
        check_resume_config(saved["config"], cfg.model_dump(mode="json"), _RESUME_FREE,
                            where=str(path), fix=_RESUME_FIX, what="stage checkpoint")  # fmt: skip
        if saved["backbone_fingerprint"] != fingerprint:
            raise StaleCheckpointError(
                "the stage checkpoint was trained on a different classifier backbone",
                where=str(path),
                fix="use the same classifier_checkpoint or a new output folder",
            )
        _load_partial(branch, saved["branch_state"], upto=stage)
        return saved
    if stage > 1:
        prev = load_checkpoint_of(stage_path(out, stage - 1), SEGMENTER_CHECKPOINT)
        _load_partial(branch, prev["branch_state"], upto=stage - 1)
    return None


class _StageEpochs(EpochTask):
    """One epoch of greedy stage ``stage``: its conv + head on the frozen stack below it."""

    def __init__(
        self, cfg: TrainSegmenterConfig, stage: int, branch: GreedyCamBranch, bb: _Backbone,
        inputs: _StageInputs, history: list[dict[str, Any]], saved: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        self.cfg, self.stage, self.branch, self.bb = cfg, stage, branch, bb
        self.inputs, self.history = inputs, history
        self.device = bb.clf.device
        self.n_epochs = math.ceil(cfg.optim.epochs_per_stage)
        self.criterion = nn.CrossEntropyLoss()  # unweighted, as DeepSolar's CAM stages
        self.cfg_json = cfg.model_dump(mode="json")
        branch.freeze_below(stage)
        oc = cfg.optim
        params = [p for p in branch.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            params, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay
        )
        if saved is not None and "optimizer_state" in saved:
            self.optimizer.load_state_dict(saved["optimizer_state"])

    def train_epoch(self, epoch: int, seed: int) -> dict[str, Any]:
        """Train one epoch from ``seed``; the history row (loss, accuracy)."""
        oc, cached = self.cfg.optim, self.inputs.cached
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            cached if cached is not None else self.inputs.ds, batch_size=oc.batch_size,
            shuffle=True, generator=gen,
            num_workers=0 if cached is not None else self.cfg.data.num_workers,
        )  # fmt: skip
        steps = epoch_steps(oc.epochs_per_stage, epoch, len(loader))
        self.branch.train()
        t0 = time.perf_counter()
        desc = f"stage {self.stage} epoch {epoch + 1}/{self.n_epochs}"
        seen, loss_sum, correct = self._train_steps(loader, steps, desc)
        row = {
            "stage": self.stage,
            "epoch": epoch + 1,
            "steps": steps,
            "lr": oc.lr,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "train_s": time.perf_counter() - t0,
            "last_of_stage": epoch + 1 == self.n_epochs,
        }
        log.info("stage %d epoch %d/%d loss %.4f acc %.3f", self.stage, epoch + 1, self.n_epochs,
                 row["train_loss"], row["train_accuracy"])  # fmt: skip
        return row

    def _train_steps(self, loader: DataLoader, steps: int, desc: str) -> tuple[int, float, int]:
        """SGD steps over the first ``steps`` batches; (samples seen, summed loss, correct)."""
        device, seen, loss_sum, correct = self.device, 0, 0.0, 0
        bar = tqdm(loader, total=steps, desc=desc, disable=not self.cfg.train.progress,
                   leave=False)  # fmt: skip
        for step, batch in enumerate(bar):
            if step >= steps:
                break
            if self.inputs.cached is not None:
                f, y = batch[0].to(device, torch.float32), batch[1].to(device)
            else:
                raise_batch_errors(batch)
                with torch.no_grad():
                    f = tap_features(self.bb.clf.model, batch["image"].to(device), self.bb.tap)
                y = batch["label"].to(device)
            logits = self.branch(f, self.stage)
            loss = self.criterion(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        bar.close()
        return seen, loss_sum, correct

    def checkpoint(self, epoch: int, best: BestEpoch) -> dict[str, Any]:
        """The branch up to this stage and what loading and resuming it needs."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.cfg_json,
            "branch_state": _branch_state(self.branch, self.stage),
            "stage": self.stage,
            "stages_trained": self.stage if epoch == self.n_epochs else self.stage - 1,
            "epoch": epoch,
            "history": self.history,
            "backbone_fingerprint": self.bb.fingerprint,
            "classifier_checkpoint": str(self.cfg.classifier_checkpoint),
            "input_size_px": self.bb.clf.input_size_px,
            "counts": self.inputs.counts,
            "torch_version": str(torch.__version__),
        }

    def resume_state(self) -> dict[str, Any]:
        """The stage's SGD state."""
        return {"optimizer_state": self.optimizer.state_dict()}


def fit_segmenter(
    cfg: TrainSegmenterConfig,
    out_dir: str | Path,
    *,
    upto_stage: int | None = None,
    chips: list | None = None,
) -> SegTrainResult:
    """Train stages 1..``upto_stage`` (default all) greedily; resume from ``stage_k.pt``.

    Args:
        cfg: the segmenter config.
        out_dir: the output folder (``stage_k.pt`` per stage, ``segmenter.pt``).
        upto_stage: the last stage to train (default ``branch.n_stages``).
        chips: the training chips (default: ``data.train``'s sources).

    Returns:
        The final and per-stage checkpoints, the history and the class counts.
    """
    cfg = validate_config(TrainSegmenterConfig, cfg)
    last_stage = _last_stage(cfg, upto_stage)
    tc = cfg.train
    out, device = start_run(out_dir, device=tc.device, num_threads=tc.num_threads, seed=tc.seed)
    bb = _load_backbone(cfg, device)
    inputs = _stage_inputs(cfg, bb, chips)
    in_channels = tap_channels(bb.clf.model, bb.tap, bb.clf.input_size_px)
    branch = GreedyCamBranch(cfg.branch, in_channels).to(device)
    n_epochs = math.ceil(cfg.optim.epochs_per_stage)
    history: list[dict[str, Any]] = []
    stage_files: list[Path] = []
    for stage in range(1, last_stage + 1):
        path = stage_path(out, stage)
        saved = _stage_start(cfg, out, stage, branch, bb.fingerprint)
        start_epoch = 0 if saved is None else int(saved["epoch"])
        if saved is not None:
            history = list(saved["history"])
        stage_files.append(path)
        if 0 < start_epoch < n_epochs and stage_path(out, stage + 1).is_file():
            raise ConfigError(
                f"stage {stage} would be trained further, but stage {stage + 1} was already "
                f"trained on top of its {start_epoch}-epoch weights",
                where=str(path),
                fix="keep optim.epochs_per_stage as it was, or train into a new output folder",
            )
        if start_epoch >= n_epochs:
            log.info("stage %d already trained (%d epochs); skipping", stage, start_epoch)
            continue
        task = _StageEpochs(cfg, stage, branch, bb, inputs, history, saved)
        run_epochs(task, start_epoch=start_epoch, n_epochs=n_epochs, seed=tc.seed,
                   history=history, last_path=path, stage=stage)  # fmt: skip
    final = out / FINAL_NAME
    last = load_checkpoint_of(stage_files[-1], SEGMENTER_CHECKPOINT)
    last.pop("optimizer_state", None)
    save_checkpoint(final, last)
    return SegTrainResult(out, final, stage_files, history, inputs.counts)


def _branch_state(branch: GreedyCamBranch, upto: int) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().cpu().clone()
        for k, v in branch.state_dict().items()
        if int(k.split(".")[1]) < upto
    }


def _load_partial(branch: GreedyCamBranch, state: dict[str, torch.Tensor], upto: int) -> None:
    keep = {k: v for k, v in state.items() if int(k.split(".")[1]) < upto}
    missing = [k for k in _branch_state(branch, upto) if k not in keep]
    if missing:
        raise InputDataError(
            f"stage checkpoint lacks {missing[:3]}",
            where="segmenter checkpoint",
            fix="use a new output folder",
        )
    branch.load_state_dict(keep, strict=False)
