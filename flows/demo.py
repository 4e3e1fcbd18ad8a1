"""The offline demo (``make demo``): the whole pipeline on built-in SYNTHETIC scenes.

1. generate seeded synthetic orthophotos with ground truth over real Albuquerque (NM) census
   tracts: two *training* scenes and a held-out *evaluation* scene;
2. cut them into DeepSolar's zoom-21 / 320-px tiles (``download-tiles``, local-raster source);
3. fine-tune the shipped reference classifier (ImageNet-pretrained EfficientNet-Lite0, see
   data/models/MODEL_CARD.md) on the training scenes' tiles (``train-classifier``,
   configs/classifier-demo.yaml, about 2 minutes on 2 cores);
4. train the greedy CAM branch on the training tiles (``train-segmenter``, DeepSolar's greedy
   recipe, 3 epochs per stage), or with ``train_segmenter: false`` reuse the builtin branch (its
   tap, blocks.2, is frozen in step 3, so its features are unchanged; the fingerprint is checked);
5. calibrate the CAM threshold on the *training* scenes' truth masks (the one whose total mask
   area matches theirs; DeepSolar's 0.37 was tuned on its own data);
6. train the supervised mask head (``train-mask-head``, a light decoder on the frozen classifier)
   on the training scenes' truth masks, rasterised per tile; with ``map_method: greedy`` the map
   uses DeepSolar's greedy CAM instead (both are compared on the held-out scene's masks either way);
7. map the evaluation scene (``map-region``: classify, segment, polygons, systems, tract / county /
   state aggregates, GeoPackage + PNG maps + tables);
8. score the result against the evaluation scene's truth: tile precision / recall, system count
   error, area error per tract and in total, CAM IoU beside the whole-tile baseline.

Nothing is downloaded; everything is written under ``--out`` (default ``out/demo``). Nothing in
steps 3-7 sees the evaluation scene's truth.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from rasterio.warp import transform_bounds

from deepsolar.classifier.config import SceneSource
from deepsolar.core.checkpoints import BUILTIN, resolve_checkpoint
from deepsolar.core.config import validate_config
from deepsolar.core.errors import DeepSolarError
from deepsolar.geo.region import RegionConfig
from deepsolar.geo.tiling import (
    ORIGIN_SHIFT_M,
    WEB_MERCATOR,
    TileGrid,
    mercator_to_lonlat,
)
from deepsolar.imagery.sources import LocalRasterSourceConfig
from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.demo import DemoJob, fresh_if_stale
from deepsolar.jobs.download_tiles import DownloadTilesJob
from deepsolar.jobs.map_region import MapRegionJob
from deepsolar.jobs.train_classifier import TrainClassifierParams
from deepsolar.jobs.train_mask_head import TrainMaskHeadJob
from deepsolar.jobs.train_segmenter import TrainSegmenterJob
from deepsolar.maps.accuracy import region_scores, tile_scores
from deepsolar.maps.aggregate import scanned_geometry
from deepsolar.maps.mapping import MapOutputsConfig
from deepsolar.segmentation.calibrate import fit_cam_threshold
from deepsolar.segmentation.config import CamConfig, TrainMaskHeadConfig, TrainSegmenterConfig
from deepsolar.segmentation.evaluate import (
    EvaluateSegmentationConfig,
    SceneMaskSet,
    evaluate_segmentation,
)
from deepsolar.segmentation.maskhead import stale_run
from deepsolar.segmentation.pipeline import Segmenter
from deepsolar.segmentation.train import stale_stages
from deepsolar.synthetic import SyntheticSceneConfig, generate_scene, read_truth
from flows.download_tiles import download_tiles_flow
from flows.map_region import map_region_flow
from flows.train_classifier import train_classifier_flow
from flows.train_mask_head import train_mask_head_flow
from flows.train_segmenter import train_segmenter_flow

REPO = Path(__file__).resolve().parent.parent
DEMO_THREADS = 2  # torch threads for every step, so a bigger machine computes the same figures


def inner_tile_bbox(bounds_3857: tuple[float, ...], grid: TileGrid) -> tuple[float, ...]:
    """Lon/lat bbox of the tiles lying wholly inside a raster's EPSG:3857 bounds.

    The demo asks only for tiles the scene covers completely, so no tile is part blank.

    Args:
        bounds_3857: the raster's (left, bottom, right, top) in EPSG:3857 metres.
        grid: the tile grid (its tile span in metres).

    Returns:
        (west, south, east, north) in degrees, shrunk by a millionth of a tile so that tiles
        touching the edge are not included.

    Raises:
        DeepSolarError: no whole tile lies inside the bounds.
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


@task(name="generate-synthetic-scene", cache_policy=NO_CACHE)
def scene_task(cfg: SyntheticSceneConfig, out_dir: Path) -> Any:
    """Task ``generate-synthetic-scene``: a SYNTHETIC orthophoto and its truth (demo step 1).

    Runs :func:`deepsolar.synthetic.generate_scene`.

    Args:
        cfg: the scene config (seed, centre, size in pixels, ...).
        out_dir: the scene's folder; created if missing.

    Returns:
        The scene's ``SceneResult``: image and truth paths, CRS and bounds, ground metres per
        pixel, counts of arrays and look-alikes.

    Raises:
        ConfigError: the config is invalid or ``out_dir`` cannot be created.
    """
    return generate_scene(cfg, out_dir)


@task(name="score-against-truth", cache_policy=NO_CACHE)
def score_task(gpkg: Path, truth_path: Path, min_pv_area_m2: float, merge: Any) -> dict[str, Any]:
    """Task ``score-against-truth``: the map's accuracy on the held-out scene (demo step 8).

    Compares the GeoPackage's ``tiles`` layer with the truth panels
    (:func:`deepsolar.maps.accuracy.tile_scores`) and its ``systems`` layer, per tract of its
    ``tracts`` layer, with the truth clipped to the scanned tiles
    (:func:`deepsolar.maps.accuracy.region_scores`).

    Args:
        gpkg: the map-region GeoPackage.
        truth_path: the scene's truth GeoPackage (layer ``panels``).
        min_pv_area_m2: a tile is truly positive from this much truth panel area, in m².
        merge: the merge settings (``MergeConfig``) that group the truth panels into systems.

    Returns:
        ``synthetic`` (True), ``tiles`` (precision / recall / F1 with 95% bootstrap intervals
        and the confusion counts), system counts and their relative error, total detected / true
        areas in m² and their relative error, and ``per_tract`` rows.
    """
    tiles = gpd.read_file(gpkg, layer="tiles")
    systems = gpd.read_file(gpkg, layer="systems")
    tracts = gpd.read_file(gpkg, layer="tracts")
    truth = read_truth(truth_path, layer="panels")
    scanned = scanned_geometry(tiles)
    return {
        "synthetic": True,
        "tiles": tile_scores(tiles, truth, min_pv_area_m2),
        **region_scores(systems, truth, tracts, scanned, merge),
    }


def _tiles_for_scene(scene: Any, job: DemoJob, store: Path, name: str) -> dict[str, Any]:
    """Run ``download-tiles`` on a scene's whole tiles (local-raster source) into ``store``."""
    bbox = inner_tile_bbox(
        transform_bounds(scene.crs, WEB_MERCATOR, *scene.bounds), job.grid.build()
    )
    return download_tiles_flow(
        DownloadTilesJob(
            region=RegionConfig(bbox=bbox),
            source=LocalRasterSourceConfig(path=scene.image_path, name=name),
            grid=job.grid,
            out_dir=store,
        )
    )


@task(name="compare-cam-methods", cache_policy=NO_CACHE)
def cam_eval_task(
    clf: Path, seg: Path, head: Path, manifest: Path, truth: Path, cam: CamConfig, out_dir: Path
) -> dict[str, Any]:
    """Plain CAM vs greedy stage 1 vs stage 2 (DeepSolar's claim) vs the mask head, held out.

    Task ``compare-cam-methods``: runs :func:`deepsolar.segmentation.evaluate.evaluate_segmentation`
    on the evaluation scene's tiles and truth masks, with 4 overlays.

    Args:
        clf: the classifier checkpoint.
        seg: the greedy CAM branch checkpoint.
        head: the mask head checkpoint.
        manifest: the evaluation store's ``manifest.gpkg``.
        truth: the evaluation scene's truth GeoPackage (layer ``panels``).
        cam: the CAM settings (threshold, floor, mask-head threshold).
        out_dir: the output folder; created if missing.

    Returns:
        The report: per-set scores per method under ``sets`` and the baseline table's rows
        under ``table``.

    Raises:
        InputDataError: a checkpoint or a sample cannot be read.
    """
    cfg = EvaluateSegmentationConfig(
        classifier_checkpoint=clf,
        segmenter_checkpoint=seg,
        mask_head_checkpoint=head,
        mask_threshold=cam.mask_threshold,
        sets=[
            SceneMaskSet(
                manifest=manifest, truth_path=truth, truth_layer="panels", name="synthetic-scene"
            )
        ],  # fmt: skip
        cam_threshold=cam.threshold,
        cam_floor=cam.floor,
        cam_floor_on=cam.floor_on,
        overlays=4,
        num_threads=DEMO_THREADS,
    )
    return evaluate_segmentation(cfg, out_dir)


@task(name="calibrate-cam-threshold", cache_policy=NO_CACHE)
def calibrate_task(
    clf: Path, seg: Path, cam: CamConfig, sets: list[SceneMaskSet], out_dir: Path
) -> dict[str, Any]:
    """The CAM threshold whose masks on the training scenes add up to their true panel area.

    Task ``calibrate-cam-threshold`` (demo step 5): runs
    :func:`deepsolar.segmentation.calibrate.fit_cam_threshold` with the ``area`` objective and
    writes the sweep to ``cam-threshold-sweep.csv``.

    Args:
        clf: the classifier checkpoint.
        seg: the greedy CAM branch checkpoint.
        cam: the CAM settings (all but the threshold are kept).
        sets: the training scenes' tiles with their truth masks.
        out_dir: the output folder; created if missing.

    Returns:
        ``threshold`` (normalised CAM, 0-1) and the ``sweep`` as one record per threshold tried.

    Raises:
        InputDataError: a sample cannot be read, or the samples hold no PV pixel.
    """
    torch.set_num_threads(DEMO_THREADS)
    segmenter = Segmenter.from_checkpoints(clf, seg, cam, "cpu")
    threshold, sweep = fit_cam_threshold(segmenter, sets, objective="area")
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep.to_csv(out_dir / "cam-threshold-sweep.csv", index=False)
    return {"threshold": threshold, "sweep": sweep.to_dict(orient="records")}


def _scene_source(name: str, store: Path, scene: Any, job: DemoJob) -> SceneSource:
    """A training scene's tile store as a labelled set (labels from its truth panels)."""
    return SceneSource(
        name=name,
        path=store / "manifest.gpkg",
        truth_path=scene.truth_path,
        truth_layer="panels",
        min_pv_area_m2=job.min_pv_area_m2,
    )


def _segmenter(
    job: DemoJob, clf: Path, sources: list[SceneSource], out: Path, warn: Callable[[str], Any]
) -> Path:
    """Run ``train-segmenter`` on the training tiles (demo step 4), or take the builtin branch."""
    if not job.train_segmenter:
        return resolve_checkpoint(BUILTIN, "segmenter")
    seg_job = TrainSegmenterJob(
        config=TrainSegmenterConfig(
            classifier_checkpoint=clf,
            branch={"tap": "blocks.2"},
            data={"train": sources},
            optim={"epochs_per_stage": job.segmenter_epochs_per_stage},
            train={
                "seed": 0,
                "num_threads": DEMO_THREADS,
                "cache_features": True,
                "progress": False,
            },
        ),
        out_dir=out / "segmenter",
    )
    seg = fresh_if_stale(
        lambda: train_segmenter_flow(seg_job), seg_job.out_dir, warn,
        lambda: stale_stages(seg_job.config, seg_job.out_dir),
    )  # fmt: skip
    return Path(seg["final_checkpoint"])


def _mask_head(
    clf: Path, sources: list[SceneSource], out: Path, epochs: int, warn: Callable[[str], Any]
) -> Path:
    """Run ``train-mask-head`` on the training scenes' truth masks (demo step 6)."""
    head_job = TrainMaskHeadJob(
        config=TrainMaskHeadConfig(
            classifier_checkpoint=clf,
            data={
                "train": [s.model_copy(update={"masks": True}) for s in sources],
                "rot90": True,
                "val_fraction": 0.1,
            },
            optim={"epochs": epochs},
            train={"seed": 0, "num_threads": DEMO_THREADS, "progress": False},
        ),
        out_dir=out / "mask-head",
    )
    head = fresh_if_stale(
        lambda: train_mask_head_flow(head_job), head_job.out_dir, warn,
        lambda: stale_run(head_job.config, head_job.out_dir),
    )  # fmt: skip
    return Path(head["final_checkpoint"])


@flow(name="demo", validate_parameters=True)
def demo_flow(job: DemoJob | None = None) -> dict[str, Any]:
    """The offline demo: the whole pipeline on SYNTHETIC scenes, scored against their truth.

    Runs steps 1-8 of this module's docstring: scenes, ``download-tiles``, ``train-classifier``,
    ``train-segmenter``, CAM threshold calibration, ``train-mask-head``, ``map-region`` on the
    evaluation scene, then the CAM comparison and the scores. Torch uses ``DEMO_THREADS`` (2)
    threads throughout, so any machine computes the same figures. Writes
    ``demo-summary.json`` into ``job.out_dir``.

    Args:
        job: the demo's settings (or a mapping of them); None: the documented defaults
            (``out/demo``).

    Returns:
        The demo summary: ``elapsed_s`` (seconds), the paths of every output (scene, tiles,
        checkpoints, GeoPackage, maps, overlays, CAM report), ``n_tiles``, the CAM settings and
        calibration, ``accuracy`` (tile, system and area scores) and the CAM comparison.

    Raises:
        ConfigError: a setting is invalid (naming the field).
        DeepSolarError: a step failed (e.g. a scene smaller than one tile).
    """
    job = validate_config(DemoJob, job if job is not None else {})
    out = Path(job.out_dir).resolve()
    t0 = time.monotonic()
    torch.set_num_threads(DEMO_THREADS)  # same reduction order on any machine (README)
    sources = []
    for k, cfg in enumerate(job.train_scenes, start=1):
        scene = scene_task(cfg, out / f"train-scene-{k}")
        name = f"synthetic-train-scene-{k}"
        _tiles_for_scene(scene, job, out / f"train-store-{k}", name)
        sources.append(_scene_source(name, out / f"train-store-{k}", scene, job))
    eval_scene = scene_task(job.eval_scene, out / "scene")
    tiles = _tiles_for_scene(eval_scene, job, out / "store", "synthetic-scene")

    clf_run = train_classifier_flow(
        TrainClassifierParams(
            config_path=job.classifier_config,
            overrides={
                "data": {"train": [s.model_dump(mode="json") for s in sources], "test_fraction": 0}
            },
            out_dir=out / "classifier",
            evaluate_test=False,
        )
    )
    clf = Path(clf_run["best_checkpoint"])
    warn = get_run_logger().warning
    seg = _segmenter(job, clf, sources, out, warn)
    cam = job.cam
    calib = None
    if job.calibrate_cam_threshold:
        calib_sets = [
            SceneMaskSet(
                manifest=s.path, truth_path=s.truth_path, truth_layer="panels", name=s.name
            )
            for s in sources
        ]
        calib = calibrate_task(clf, seg, cam, calib_sets, out / "calibration")
        cam = cam.model_copy(update={"threshold": calib["threshold"]})
    head = _mask_head(clf, sources, out, job.mask_head_epochs, warn)
    map_cam = (
        cam.model_copy(update={"method": "mask_head"}) if job.map_method == "mask_head" else cam
    )
    outputs = MapOutputsConfig(
        name="deepsolar-demo",
        title="SYNTHETIC demo scene",
        note="SYNTHETIC imagery - not a real solar inventory",
        merge=job.merge,
    )
    mapped = map_region_flow(
        MapRegionJob(
            store_dir=out / "store",
            classifier_checkpoint=clf,
            segmenter_checkpoint=head if job.map_method == "mask_head" else seg,
            cam=map_cam,
            outputs=outputs,
            overlays=job.overlays,
            out_dir=out / "maps",
        )
    )
    cams = cam_eval_task(
        clf, seg, head, out / "store" / "manifest.gpkg", eval_scene.truth_path, cam,
        out / "segmentation-eval",
    )  # fmt: skip
    gpkg = Path(mapped["maps"]["paths"]["geopackage"])
    scores = score_task(gpkg, eval_scene.truth_path, job.min_pv_area_m2, outputs.merge)
    result = {
        "synthetic": True,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "scene_image": str(eval_scene.image_path),
        "scene_truth": str(eval_scene.truth_path),
        "tiles_dir": tiles["out_dir"],
        "tile_manifest": tiles["manifest_path"],
        "n_tiles": tiles["n_ok"],
        "classifier_checkpoint": str(clf),
        "classifier_validation": clf_run.get("val_metrics"),
        "segmenter_checkpoint": str(seg),
        "mask_head_checkpoint": str(head),
        "map_method": job.map_method,
        "cam": cam.model_dump(mode="json"),
        "cam_threshold_calibration": calib,
        "merge": job.merge.model_dump(mode="json"),
        "geopackage": str(gpkg),
        "maps": mapped["maps"]["paths"].get("maps"),
        "overlays": mapped["segmentation"].get("overlays"),
        "accuracy": scores,
        "cam_comparison": cams["sets"]["synthetic-scene"],
        "cam_table": [r for r in cams["table"] if r["source"] == "synthetic-scene"],
        "cam_report": str(out / "segmentation-eval" / "report.md"),
    }
    (out / "demo-summary.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.demo``: the same command line as ``deepsolar demo``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the job was refused or failed (one line on stderr).
    """
    return run_main("demo", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
