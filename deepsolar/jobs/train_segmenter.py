"""The ``train-segmenter`` job: DeepSolar's greedy layer-wise CAM branch on a trained classifier.

:class:`TrainSegmenterJob` is the flow's parameter model; :func:`run` trains every stage in turn
in this process (no Prefect); ``flows.train_segmenter`` runs :func:`train_stage` as one task per
stage. Torch is imported only inside the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepsolar.core.config import StrictModel, validate_config
from deepsolar.segmentation.config import TrainSegmenterConfig


class TrainSegmenterJob(StrictModel):
    """Parameters of ``train-segmenter``: the training config and the output folder."""

    config: TrainSegmenterConfig
    out_dir: Path = Path("out/segmenter")


def train_stage(cfg: TrainSegmenterConfig, out_dir: Path, stage: int) -> tuple[dict, list[dict]]:
    """Train (or resume, or skip when finished) greedy stages up to ``stage``.

    Args:
        cfg: the training config.
        out_dir: the output folder (``stage_k.pt``, ``segmenter.pt``).
        stage: the stage to train (1-based).

    Returns:
        The run's summary and the history rows of this stage.
    """
    from deepsolar.segmentation.train import fit_segmenter

    res = fit_segmenter(cfg, out_dir, upto_stage=stage)
    return res.summary(), [h for h in res.history if h["stage"] == stage]


def run(job: TrainSegmenterJob | dict[str, Any]) -> dict[str, Any]:
    """Train every stage in turn, in this process (no Prefect).

    Args:
        job: the job (or its parameters as a mapping).

    Returns:
        The summary of the last stage (``final_checkpoint``).
    """
    job = validate_config(TrainSegmenterJob, job)
    summary: dict[str, Any] = {}
    for stage in range(1, job.config.branch.n_stages + 1):
        summary, _ = train_stage(job.config, job.out_dir, stage)
    return summary
