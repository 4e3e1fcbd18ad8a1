"""Flow ``evaluate-segmenter``: CAM masks against truth masks, beside trivial baselines.

For each set and overall: mean per-chip IoU on the truly positive chips with a 95% bootstrap
interval, per-chip and regional area errors, for plain CAM and each greedy stage (and the
supervised mask head with ``--mask-head``), beside the
whole-tile mask and the mean-panel-fraction area baseline (``table.{json,csv,md}``, printed);
plus ``report.{json,md}``, ``per_tile.csv`` and overlays. Sets: ``--source PATH`` (repeatable; a
folder with ``images/`` + ``masks/`` with the same file names, or a manifest.csv with a ``mask``
column, ``--split`` to keep one split), or the ``sets`` of ``--config``::

    python -m flows.evaluate_segmenter --classifier out/clf/best.pt \\
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
    return evaluate_step(job)


@flow(name="evaluate-segmenter", validate_parameters=False)
def evaluate_segmenter_flow(job: EvaluateSegmenterJob) -> dict[str, Any]:
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
    """``python -m flows.evaluate_segmenter``: the same command line as ``deepsolar evaluate-segmenter``."""
    return run_main("evaluate-segmenter", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
