r"""Flow ``evaluate-segmenter``: CAM masks against truth masks, beside trivial baselines.

For each set and overall: mean per-chip IoU on the truly positive chips with a 95% bootstrap
interval, per-chip and regional area errors, for plain CAM and each greedy stage (and the
supervised mask head with ``--mask-head``), beside the
whole-tile mask and the mean-panel-fraction area baseline (``table.{json,csv,md}``, printed);
plus ``report.{json,md}``, ``per_tile.csv`` and overlays. Sets: ``--source PATH`` (repeatable; a
folder with ``images/`` + ``masks/`` with the same file names, or a manifest.csv with a ``mask``
column, ``--split`` to keep one split), or the ``sets`` of ``--config``::

    python -m flows.evaluate_segmenter --classifier out/clf/best.pt \
        --segmenter out/seg/segmenter.pt --source ../shared/data/pv_chips/skylight_roof/valid
    python -m flows.evaluate_segmenter --config configs/segmenter-eval-real-chips.yaml
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.core.config import validate_config
from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.evaluate_segmenter import EvaluateSegmenterJob, evaluate_step


@task(name="evaluate-masks", cache_policy=NO_CACHE)
def evaluate_task(job: EvaluateSegmenterJob) -> dict[str, Any]:
    """Task ``evaluate-masks``: runs :func:`deepsolar.jobs.evaluate_segmenter.evaluate_step`.

    Scores every method's masks on every set and writes the tables, reports and overlays into
    ``job.out_dir``.

    Args:
        job: the validated job.

    Returns:
        The report (one row per set and predictor under ``table``).
    """
    return evaluate_step(job)


@flow(name="evaluate-segmenter", validate_parameters=False)
def evaluate_segmenter_flow(job: EvaluateSegmenterJob) -> dict[str, Any]:
    """Score CAM (and mask-head) masks against truth masks; log the IoU of each set and method.

    Args:
        job: the job (or its parameters as a mapping): the evaluation config (checkpoints, sets,
            CAM settings) and the output folder.

    Returns:
        The report (one row per set and predictor under ``table``, with ``mean_iou`` and its
        95% interval ``mean_iou_lo`` / ``mean_iou_hi``).

    Raises:
        ConfigError: a parameter is invalid (naming the field).
        InputDataError: a checkpoint or a sample cannot be read.
    """
    job = validate_config(EvaluateSegmenterJob, job)
    report = evaluate_task(job)
    logger = get_run_logger()
    for r in report["table"]:
        logger.info(
            "%s %s: IoU %s [%s, %s]", r["source"], r["predictor"], r["mean_iou"],
            r["mean_iou_lo"], r["mean_iou_hi"],
        )  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.evaluate_segmenter``: the same command line as ``deepsolar evaluate-segmenter``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the job was refused or failed (one line on stderr).
    """
    return run_main("evaluate-segmenter", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
