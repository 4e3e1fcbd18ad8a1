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
    summary, last = train_stage(cfg, out_dir, stage)
    if last:
        get_run_logger().info(
            "stage %d: epoch %d loss %.4f accuracy %.3f", stage, last[-1]["epoch"],
            last[-1]["train_loss"], last[-1]["train_accuracy"],
        )  # fmt: skip
    return summary


@flow(name="train-segmenter", validate_parameters=False)
def train_segmenter_flow(job: TrainSegmenterJob) -> dict[str, Any]:
    """Train every stage in turn; returns the summary of the last (``final_checkpoint``)."""
    job = validate_config(TrainSegmenterJob, job)
    summary: dict[str, Any] = {}
    for stage in range(1, job.config.branch.n_stages + 1):
        summary = stage_task(job.config, job.out_dir, stage)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.train_segmenter``: the same command line as ``deepsolar train-segmenter``."""
    return run_main("train-segmenter", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
