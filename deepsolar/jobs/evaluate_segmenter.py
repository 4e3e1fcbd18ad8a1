"""The ``evaluate-segmenter`` job: CAM masks against truth masks, beside trivial baselines.

:class:`EvaluateSegmenterJob` is the flow's parameter model; :func:`run` evaluates in this process
(no Prefect). Torch is imported only inside the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepsolar.core.config import StrictModel, validate_config
from deepsolar.segmentation.config import EvaluateSegmentationConfig


class EvaluateSegmenterJob(StrictModel):
    """Parameters of ``evaluate-segmenter``: the evaluation config and the output folder."""

    evaluation: EvaluateSegmentationConfig
    out_dir: Path = Path("out/segmenter-eval")


def evaluate_step(job: EvaluateSegmenterJob) -> dict[str, Any]:
    """Score every method's masks on every set; write the tables and reports.

    Args:
        job: the validated job.

    Returns:
        The report (rows under ``table``).
    """
    from deepsolar.segmentation.evaluate import evaluate_segmentation

    return evaluate_segmentation(job.evaluation, job.out_dir)


def run(job: EvaluateSegmenterJob | dict[str, Any]) -> dict[str, Any]:
    """Evaluate in this process (no Prefect).

    Args:
        job: the job (or its parameters as a mapping).

    Returns:
        The report.
    """
    return evaluate_step(validate_config(EvaluateSegmenterJob, job))
