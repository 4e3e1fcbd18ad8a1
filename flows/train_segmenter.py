"""Flow ``train-segmenter``: DeepSolar's greedy layer-wise CAM branch on a trained classifier.

One task per stage (stage k trains alone on the frozen classifier + stages 1..k-1); each stage's
checkpoint is ``out/stage_k.pt`` and ``out/segmenter.pt`` is the last finished stage. Re-running
resumes: finished stages are skipped, a half-trained stage continues from its last epoch::

    python -m flows.train_segmenter --config configs/segmenter-deepsolar.yaml --out out/segmenter
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.core.config import validate_config
from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.train_segmenter import TrainSegmenterJob, train_stage
from deepsolar.segmentation.config import TrainSegmenterConfig


@task(name="train-cam-stage", cache_policy=NO_CACHE)
def stage_task(cfg: TrainSegmenterConfig, out_dir: Path, stage: int) -> dict[str, Any]:
    """Task ``train-cam-stage``: runs :func:`deepsolar.jobs.train_segmenter.train_stage`.

    Trains (or resumes, or skips when finished) greedy stage ``stage`` on the frozen classifier
    and the earlier stages, and logs its last epoch.

    Args:
        cfg: the training config.
        out_dir: the output folder (``stage_k.pt``, ``segmenter.pt``).
        stage: the stage to train (1-based).

    Returns:
        The run's summary (``final_checkpoint``, ...).
    """
    summary, last = train_stage(cfg, out_dir, stage)
    if last:
        get_run_logger().info(
            "stage %d: epoch %d loss %.4f accuracy %.3f", stage, last[-1]["epoch"],
            last[-1]["train_loss"], last[-1]["train_accuracy"],
        )  # fmt: skip
    return summary


@flow(name="train-segmenter", validate_parameters=False)
def train_segmenter_flow(job: TrainSegmenterJob) -> dict[str, Any]:
    """Train every stage in turn; returns the summary of the last (``final_checkpoint``).

    One ``train-cam-stage`` task per stage, ``1 .. job.config.branch.n_stages``.

    Args:
        job: the job (or its parameters as a mapping): the training config and the output
            folder.

    Returns:
        The summary of the last stage (``final_checkpoint``: ``segmenter.pt``).

    Raises:
        ConfigError: a parameter is invalid (naming the field).
    """
    job = validate_config(TrainSegmenterJob, job)
    summary: dict[str, Any] = {}
    for stage in range(1, job.config.branch.n_stages + 1):
        summary = stage_task(job.config, job.out_dir, stage)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.train_segmenter``: the same command line as ``deepsolar train-segmenter``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the job was refused or failed (one line on stderr).
    """
    return run_main("train-segmenter", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
