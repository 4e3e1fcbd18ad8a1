"""Flow ``segment-tiles``: a tile store + classifier + segmenter -> masks, areas, a table.

For every tile with status 'ok' in the store's ``manifest.gpkg`` (layer ``tiles``): the positive
probability; for tiles the classifier calls positive, a CAM mask (PNG 0/255) in
``<store>/masks/<zoom>-<size>/<x>/<y>.png`` and its ground area in m² (per-row latitude). The table
``<store>/segmentation.parquet`` has tile_id, prob, is_positive, mask_path, area_m2, error.
Resumable: finished tiles are journalled and skipped on a re-run with the same checkpoints and
CAM settings. Optional PNG overlays of CAM + mask for a sample of positive tiles::

    python -m flows.segment_tiles --manifest out/demo/tiles/manifest.gpkg \\
        --classifier out/classifier/best.pt --segmenter out/segmenter/segmenter.pt --overlays 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.config import load_yaml, validate_config
from deepsolar.errors import DeepSolarError
from deepsolar.segmentation.config import CamConfig
from deepsolar.segmentation.pipeline import SegmentTilesJob, segment_tile_store


@task(name="segment-tile-store", cache_policy=NO_CACHE)
def segment_task(job: SegmentTilesJob) -> dict[str, Any]:
    return segment_tile_store(job).as_dict()


@flow(name="segment-tiles", validate_parameters=False)
def segment_tiles_flow(job: SegmentTilesJob | dict[str, Any]) -> dict[str, Any]:
    job = validate_config(SegmentTilesJob, job)
    summary = segment_task(job)
    get_run_logger().info(
        "%d tiles (%d done before), %d positive, %d unreadable, %.1f m² of panels; table %s",
        summary["n_tiles"], summary["n_done_before"], summary["n_positive"],
        summary["n_errors"], summary["total_area_m2"], summary["table_path"],
    )  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, help="YAML with a SegmentTilesJob (or use the flags)")
    ap.add_argument("--manifest", type=Path, help="tile store manifest.gpkg or folder")
    ap.add_argument("--classifier", type=Path, help="classifier checkpoint (best.pt)")
    ap.add_argument("--segmenter", type=Path, help="segmenter checkpoint (segmenter.pt)")
    ap.add_argument("--method", choices=["greedy", "plain"], default="greedy")
    ap.add_argument("--stage", type=int, help="greedy stage (default: the last trained)")
    ap.add_argument("--cam-threshold", type=float, default=0.37)
    ap.add_argument("--overlays", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        if args.config:
            job = validate_config(SegmentTilesJob, load_yaml(args.config), where=str(args.config))
        else:
            job = validate_config(
                SegmentTilesJob,
                {
                    "manifest": args.manifest,
                    "classifier_checkpoint": args.classifier,
                    "segmenter_checkpoint": args.segmenter,
                    "cam": CamConfig(
                        method=args.method, stage=args.stage, threshold=args.cam_threshold
                    ),
                    "overlays": args.overlays,
                },
                where="command line",
            )
        summary = segment_tiles_flow(job)
    except DeepSolarError as err:
        print(f"segment-tiles failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
