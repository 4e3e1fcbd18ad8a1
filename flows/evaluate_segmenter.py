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
from deepsolar.core.errors import DeepSolarError
from deepsolar.jobs.cli_options import build_parser
from deepsolar.jobs.evaluate_segmenter import EvaluateSegmenterJob, evaluate_step
from deepsolar.segmentation.config import evaluation_config_from_args as build_config
from deepsolar.segmentation.evaluate import format_table


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
    args = build_parser("evaluate-segmenter", description=__doc__).parse_args(argv)
    try:
        cfg = build_config(args)
        report = evaluate_segmenter_flow(EvaluateSegmenterJob(evaluation=cfg, out_dir=args.out))
    except DeepSolarError as err:
        print(f"evaluate-segmenter failed: {err}", file=sys.stderr)
        return 1
    print(format_table(report))
    print(
        f"[lo, hi]: 95% bootstrap intervals ({cfg.bootstrap_reps} resamples of the positive "
        "chips); whole-tile = every pixel panel; mean-fraction = the chips' mean panel fraction "
        "(in-sample); notes in table.md"
    )
    print(f"written to {args.out} (table.md/.csv/.json, report.md, per_tile.csv, overlays/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
