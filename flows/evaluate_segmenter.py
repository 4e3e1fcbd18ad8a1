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

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.core.config import validate_config
from deepsolar.core.errors import DeepSolarError
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
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--classifier", type=Path, help="classifier checkpoint (best.pt)")
    ap.add_argument("--segmenter", type=Path, help="segmenter checkpoint (none: plain CAM only)")
    ap.add_argument(
        "--mask-head", type=Path, help="a train-mask-head checkpoint, reported beside the CAMs"
    )
    ap.add_argument(
        "--mask-threshold", type=float, help="mask head: probability threshold (default 0.5)"
    )
    ap.add_argument(
        "--source",
        action="append",
        metavar="PATH",
        help="chips with masks: a folder with images/ + masks/ or a manifest.csv; repeatable",
    )
    ap.add_argument("--split", help="with a manifest source: keep rows of this split")
    ap.add_argument("--config", type=Path, help="YAML with an EvaluateSegmentationConfig")
    ap.add_argument("--out", type=Path, default=Path("out/segmenter-eval"), help="output folder")
    ap.add_argument("--cam-threshold", type=float, help="threshold on the normalised CAM")
    ap.add_argument(
        "--cam-floor", type=float,
        help="absolute floor on the raw map (--cam-floor-on); default none (DeepSolar)",
    )  # fmt: skip
    ap.add_argument(
        "--cam-floor-on", choices=["margin", "positive"],
        help="margin (logit-margin map, 0 = votes solar; default) or positive (raw CAM)",
    )  # fmt: skip
    ap.add_argument(
        "--cam-floor-scope", choices=["pixel", "tile"],
        help="pixel (default): pixels above the floor; tile: the whole tile's mask or nothing",
    )  # fmt: skip
    ap.add_argument("--open-m", type=float, help="mask opening disc diameter in metres")
    ap.add_argument("--close-m", type=float, help="mask closing disc diameter in metres")
    ap.add_argument("--fill-holes-m2", type=float, help="fill mask holes up to this area (m²)")
    ap.add_argument("--device", help="auto, cpu, cuda, cuda:1 or mps")
    ap.add_argument("--bootstrap-reps", type=int, help="bootstrap resamples (default 1000)")
    ap.add_argument("--overlays", type=int, help="comparison PNGs per set (default 6)")
    ap.add_argument("--ground-m-per-px", type=float, help="metres per pixel of the --source chips")
    ap.add_argument(
        "--whole-chips", action="store_true", help="resize whole chips instead of sub-tiling"
    )
    args = ap.parse_args(argv)
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
