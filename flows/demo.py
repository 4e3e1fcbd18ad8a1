"""The offline demo (``make demo``): the pipeline on the built-in SYNTHETIC scene.

Stages so far: generate the seeded synthetic orthophoto + ground truth over real Albuquerque
census tracts, then cut it into DeepSolar's zoom-21 / 320-px tiles with ``download-tiles`` using
the local-raster source. Later stages are added here as they land.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from prefect import flow, task
from pydantic import Field
from rasterio.warp import transform_bounds

from deepsolar.config import StrictModel, validate_config
from deepsolar.errors import DeepSolarError
from deepsolar.jobs import DownloadTilesJob
from deepsolar.region import RegionConfig
from deepsolar.sources import LocalRasterSourceConfig
from deepsolar.synthetic import SyntheticSceneConfig, generate_scene
from deepsolar.tiling import (
    ORIGIN_SHIFT_M,
    WEB_MERCATOR,
    TileGrid,
    TileGridConfig,
    mercator_to_lonlat,
)
from flows.download_tiles import download_tiles_flow


class DemoJob(StrictModel):
    out_dir: Path = Path("out/demo")
    scene: SyntheticSceneConfig = Field(default_factory=SyntheticSceneConfig)
    grid: TileGridConfig = Field(default_factory=TileGridConfig)


def inner_tile_bbox(
    bounds_3857: tuple[float, float, float, float], grid: TileGrid
) -> tuple[float, ...]:
    """Lon/lat bbox of the tiles lying wholly inside a raster's EPSG:3857 bounds.

    The demo asks only for tiles the scene covers completely, so no tile is part blank.
    """
    left, bottom, right, top = bounds_3857
    span = grid.tile_span_m
    x0 = math.ceil((left + ORIGIN_SHIFT_M) / span)
    x1 = math.floor((right + ORIGIN_SHIFT_M) / span)
    y0 = math.ceil((ORIGIN_SHIFT_M - top) / span)
    y1 = math.floor((ORIGIN_SHIFT_M - bottom) / span)
    if x1 <= x0 or y1 <= y0:
        raise DeepSolarError("the scene is smaller than one tile", fix="make the scene larger")
    eps = span * 1e-6  # stay strictly inside so edge-touching neighbours are not included
    w, n = mercator_to_lonlat(-ORIGIN_SHIFT_M + x0 * span + eps, ORIGIN_SHIFT_M - y0 * span - eps)
    e, s = mercator_to_lonlat(-ORIGIN_SHIFT_M + x1 * span - eps, ORIGIN_SHIFT_M - y1 * span + eps)
    return (w, s, e, n)


@task(name="generate-synthetic-scene")
def scene_task(cfg: SyntheticSceneConfig, out_dir: Path) -> Any:
    return generate_scene(cfg, out_dir)


@flow(name="demo", validate_parameters=True)
def demo_flow(job: DemoJob | None = None) -> dict[str, Any]:
    job = validate_config(DemoJob, job if job is not None else {})
    out = Path(job.out_dir)
    scene = scene_task(job.scene, out / "scene")
    grid = job.grid.build()
    bbox = inner_tile_bbox(transform_bounds(scene.crs, WEB_MERCATOR, *scene.bounds), grid)
    tiles = download_tiles_flow(
        DownloadTilesJob(
            region=RegionConfig(bbox=bbox),
            source=LocalRasterSourceConfig(path=scene.image_path, name="synthetic-scene"),
            grid=job.grid,
            out_dir=out / "tiles",
        )
    )
    result = {
        "synthetic": True,
        "scene_image": str(scene.image_path),
        "scene_truth": str(scene.truth_path),
        "tiles_dir": tiles["out_dir"],
        "tile_manifest": tiles["manifest_path"],
        "n_tiles": tiles["n_ok"],
    }
    (out / "demo-summary.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    ap.add_argument("--seed", type=int, default=None, help="seed of the synthetic scene")
    args = ap.parse_args(argv)
    scene = SyntheticSceneConfig() if args.seed is None else SyntheticSceneConfig(seed=args.seed)
    try:
        res = demo_flow(DemoJob(out_dir=args.out, scene=scene))
    except DeepSolarError as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    print("\nDemo finished (SYNTHETIC scene - not real imagery):")
    print(f"  scene orthophoto : {res['scene_image']}")
    print(f"  ground truth     : {res['scene_truth']}")
    print(f"  tiles ({res['n_tiles']:>5})    : {res['tiles_dir']}")
    print(f"  tile manifest    : {res['tile_manifest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
