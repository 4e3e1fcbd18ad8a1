"""One training skeleton for every trained stage (classifier, greedy CAM stages, mask head).

In the spirit of torchgeo's ``BaseTask``: a stage says what one epoch does and what its checkpoint
holds (:class:`EpochTask`); :func:`run_epochs` owns the rest: the per-epoch seed, the history, the
best epoch by a monitored score (higher is better), ``last.pt`` written atomically after every
epoch (with the optimiser state, so a re-run resumes) and the best checkpoint whenever the score
improves. :func:`start_run` sets up the output folder, device, threads and seeds, and
:func:`check_resume_config` refuses to resume under a changed recipe.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deepsolar.core.checkpoints import save_checkpoint
from deepsolar.core.config import changed_fields
from deepsolar.core.device import CLASSIFIER_SEED_STAGE, epoch_seed, resolve_device, seed_everything
from deepsolar.core.errors import StaleCheckpointError


def start_run(
    out_dir: str | Path, *, device: str, num_threads: int | None, seed: int
) -> tuple[Path, torch.device]:
    """Create the output folder, pick the device, cap CPU threads and seed every generator.

    Args:
        out_dir: the run's output folder (created with its parents).
        device: the config's device (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        num_threads: ``torch.set_num_threads`` on the CPU; None: torch's default.
        seed: the run's seed (:func:`~deepsolar.core.device.seed_everything`).

    Returns:
        (the output folder, the device).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    if num_threads and dev.type == "cpu":
        torch.set_num_threads(num_threads)
    seed_everything(seed)
    return out, dev


def check_resume_config(
    saved: dict[str, Any],
    current: dict[str, Any],
    free: set[str],
    *,
    where: str,
    fix: str,
    what: str = "checkpoint",
) -> None:
    """Refuse to resume when the config changed outside the resume-free keys.

    Args:
        saved: the checkpoint's config (JSON dump).
        current: this run's config (JSON dump).
        free: dotted keys that may change on resume (they do not alter what the next epoch
            computes); a mapping key is ignored as a whole.
        where: the checkpoint's path, for the error.
        fix: what to do instead, for the error.
        what: how the error names the checkpoint.

    Raises:
        StaleCheckpointError: a key outside ``free`` changed (a ConfigError naming the keys).
    """
    diff = changed_fields(saved, current, free)
    if diff:
        raise StaleCheckpointError(
            f"the config differs from the {what}'s in {', '.join(diff)}", where=where, fix=fix
        )


def stale_fields(path: Path, kind: Any, current: dict[str, Any], free: set[str]) -> list[str]:
    """The config keys outside ``free`` in which a checkpoint differs from ``current``.

    Lets a caller see, before it trains, that a folder's checkpoint cannot be resumed (the
    training itself raises :class:`StaleCheckpointError` on the same keys).

    Args:
        path: the checkpoint (it must exist).
        kind: its :class:`~deepsolar.core.checkpoints.CheckpointKind`.
        current: this run's config (JSON dump).
        free: dotted keys that may change on resume.

    Returns:
        The differing keys (empty: resumable as far as the config goes).
    """
    from deepsolar.core.checkpoints import load_checkpoint_of

    return changed_fields(load_checkpoint_of(path, kind)["config"], current, free)


def epoch_steps(epochs: float, epoch: int, n_batches: int) -> int:
    """Batches to train in 0-based ``epoch``: all of them, or the share of a fractional last one.

    Args:
        epochs: the configured number of epochs (may be fractional, e.g. 2.5).
        epoch: the 0-based epoch.
        n_batches: batches in one full epoch.

    Returns:
        ``n_batches``, or ``max(1, round((epochs - epoch) x n_batches))`` in a fractional last epoch.
    """
    if epochs - epoch < 1:
        return max(1, round((epochs - epoch) * n_batches))
    return n_batches


@dataclass
class BestEpoch:
    """The best epoch so far by a monitored score (higher is better; the first epoch always is).

    Attributes:
        score: the best score (``-inf`` before the first epoch, or a resumed run's value).
        epoch: its 1-based epoch; None before the first epoch.
    """

    score: float = -math.inf
    epoch: int | None = None

    def update(self, score: float, epoch: int) -> bool:
        """Record ``score`` of 1-based ``epoch`` if it is the new best.

        Args:
            score: The epoch's monitored score (higher is better).
            epoch: The 1-based epoch.

        Returns:
            True when it is the new best (always for the first epoch).
        """
        if self.epoch is None or score > self.score:
            self.score, self.epoch = score, epoch
            return True
        return False


class EpochTask(ABC):
    """What one trained stage does per epoch and what its checkpoints hold."""

    @abstractmethod
    def train_epoch(self, epoch: int, seed: int) -> dict[str, Any]:
        """Train 0-based ``epoch`` from ``seed`` (:func:`~deepsolar.core.device.epoch_seed`).

        Args:
            epoch: the 0-based epoch.
            seed: the epoch's seed, for ``torch.manual_seed`` and the shuffling generator.

        Returns:
            The epoch's history row.
        """

    def score(self, row: dict[str, Any]) -> float | None:
        """The monitored score of an epoch (higher is better); None: no best checkpoint.

        Args:
            row: The epoch's history row (from :meth:`train_epoch`).

        Returns:
            The score, or None when the task keeps no best checkpoint (the default).
        """
        return None

    @abstractmethod
    def checkpoint(self, epoch: int, best: BestEpoch) -> dict[str, Any]:
        """Weights and metadata after 1-based ``epoch`` (``best`` already updated), as plain data.

        Args:
            epoch: The 1-based epoch just trained.
            best: The best epoch so far, including this one.

        Returns:
            The checkpoint payload (tensors and plain data).
        """

    def resume_state(self) -> dict[str, Any]:
        """What only ``last.pt`` holds to resume (optimiser and scheduler states).

        Returns:
            Extra checkpoint entries (``{}`` by default).
        """
        return {}

    def after_epoch(self, epoch: int) -> None:  # noqa: B027 (an optional hook)
        """Called after 1-based ``epoch``'s checkpoints are written (e.g. to write reports).

        Args:
            epoch: The 1-based epoch just checkpointed.
        """


def run_epochs(
    task: EpochTask,
    *,
    start_epoch: int,
    n_epochs: int,
    seed: int,
    history: list[dict[str, Any]],
    last_path: Path,
    best_path: Path | None = None,
    best: BestEpoch | None = None,
    stage: int = CLASSIFIER_SEED_STAGE,
    keep_every_epoch: bool = False,
) -> BestEpoch:
    """Train epochs ``start_epoch`` .. ``n_epochs - 1`` (0-based), checkpointing after each.

    After every epoch: the row is appended to ``history``; when the task scores epochs and this
    one is the best, ``best_path`` gets the checkpoint; ``last_path`` always gets it with the
    resume state (and ``epoch_NNN.pt`` beside it with ``keep_every_epoch``), written atomically.

    Args:
        task: the stage's epoch and checkpoint contents.
        start_epoch: the first 0-based epoch (a resumed checkpoint's ``epoch``).
        n_epochs: the number of epochs in all.
        seed: the run's seed; epoch e trains from ``epoch_seed(seed, e, stage)``.
        history: the rows so far (a resumed checkpoint's), appended to in place.
        last_path: the resumable checkpoint written after every epoch.
        best_path: the best epoch's checkpoint; None: none.
        best: the best epoch so far (a resumed run's); None: none yet.
        stage: the ``stage`` of :func:`~deepsolar.core.device.epoch_seed`.
        keep_every_epoch: also keep ``epoch_NNN.pt`` beside ``last_path`` for every epoch.

    Returns:
        The best epoch after training.
    """
    best = BestEpoch() if best is None else best
    for epoch in range(start_epoch, n_epochs):
        row = task.train_epoch(epoch, epoch_seed(seed, epoch, stage))
        history.append(row)
        score = task.score(row)
        is_best = score is not None and best.update(score, epoch + 1)
        state = task.checkpoint(epoch + 1, best)
        if is_best and best_path is not None:
            save_checkpoint(best_path, state)
        full = {**state, **task.resume_state()}
        save_checkpoint(last_path, full)
        if keep_every_epoch:
            save_checkpoint(last_path.parent / f"epoch_{epoch + 1:03d}.pt", full)
        task.after_epoch(epoch + 1)
    return best
