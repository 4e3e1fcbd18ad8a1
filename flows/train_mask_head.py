"""Flow ``train-mask-head``: a supervised mask head (light decoder) on a frozen classifier.

Trained on the chips' PV masks (chips cut into tile-sized cells as the classifier was); the
classifier's tapped feature maps are cached once. ``out/last.pt`` is written after every epoch (a
re-run resumes from it) and ``out/mask_head.pt`` holds the epoch with the best validation IoU on
a held-out share of the train chips. Use it with ``segment-tiles --method mask_head --segmenter
out/mask_head.pt`` or ``evaluate-segmenter --mask-head out/mask_head.pt``::

    python -m flows.train_mask_head --config configs/mask-head-reference.yaml --out out/mask-head
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.core.config import validate_config
from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.train_mask_head import TrainMaskHeadJob, train_step
from deepsolar.segmentation.config import TrainMaskHeadConfig


@task(name="train-mask-head", cache_policy=NO_CACHE)
def train_task(cfg: TrainMaskHeadConfig, out_dir: Path) -> dict[str, Any]:
    """Task ``train-mask-head``: runs :func:`deepsolar.jobs.train_mask_head.train_step`.

    Trains (or resumes from ``last.pt``) the decoder and logs the last epoch's loss and
    validation IoU.

    Args:
        cfg: the training config.
        out_dir: the output folder (``last.pt``, ``mask_head.pt``).

    Returns:
        The training summary (``final_checkpoint``, ...).
    """
    summary, res = train_step(cfg, out_dir)
    if res.history:
        last = res.history[-1]
        get_run_logger().info(
            "epoch %d loss %.4f val IoU %s (best epoch %d)", last["epoch"], last["train_loss"],
            last.get("val_iou"), res.best_epoch,
        )  # fmt: skip
    return summary


@flow(name="train-mask-head", validate_parameters=False)
def train_mask_head_flow(job: TrainMaskHeadJob) -> dict[str, Any]:
    """Train (or resume) the decoder; returns the summary (``final_checkpoint``).

    Args:
        job: the job (or its parameters as a mapping): the training config and the output
            folder.

    Returns:
        The training summary (``final_checkpoint``: the epoch with the best validation IoU).

    Raises:
        ConfigError: a parameter is invalid (naming the field).
    """
    job = validate_config(TrainMaskHeadJob, job)
    return train_task(job.config, job.out_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.train_mask_head``: the same command line as ``deepsolar train-mask-head``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the job was refused or failed (one line on stderr).
    """
    return run_main("train-mask-head", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
