"""Measure issue 11's mask options on a SYNTHETIC scene with truth: what each step does to
systems, area and pixel overlap, against DeepSolar's rule (min-max + 0.37, merge within 1 m).

    python benchmarks/measure_mask_options.py --classifier builtin --out out/mask-options

1. renders the SYNTHETIC scene (the demo's held-out evaluation scene by default) and cuts it
   into zoom-21 / 320-px tiles (the library calls the demo's flows make);
2. classifies every tile once and keeps each positive tile's native CAM maps (positive-class
   CAM and logit margin): every variant below then re-thresholds the same maps, so differences
   come from the mask rule alone;
3. calibrates the "quantile" floor on a second SYNTHETIC scene (another seed, not the one
   scored): the q-quantile of the positive-class CAM maxima over its truly positive tiles;
4. per variant: masks -> polygons -> systems, scored with ``deepsolar.maps.accuracy.region_scores``
   (truth merged by one fixed rule for every variant), pixel IoU over all tiles, area marked on
   tiles without PV, and how many of the truth's multi-tile arrays come back as one system.

Writes ``table.md`` / ``table.csv`` / ``table.json`` and prints the table. SYNTHETIC data only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
from rasterio.features import rasterize
from rasterio.warp import transform_bounds

from deepsolar.classifier.data import labels_from_truth, read_chip
from deepsolar.geo.boundaries import BoundarySourcesConfig
from deepsolar.geo.region import RegionConfig
from deepsolar.geo.tiling import WEB_MERCATOR, Tile, TileGrid
from deepsolar.imagery.manifest import read_manifest
from deepsolar.imagery.sources import LocalRasterSourceConfig
from deepsolar.jobs.download_tiles import DownloadTilesJob, run_download_tiles
from deepsolar.maps.accuracy import region_scores
from deepsolar.maps.aggregate import scanned_geometry
from deepsolar.maps.mapping import units_in_scan
from deepsolar.maps.merge import MergeConfig, merge_panels_labelled
from deepsolar.maps.polygons import PolygonConfig, masks_to_polygons
from deepsolar.segmentation.calibrate import cam_kind
from deepsolar.segmentation.cam import CamMaps
from deepsolar.segmentation.config import CamConfig, default_segmenter
from deepsolar.segmentation.pipeline import Segmenter
from deepsolar.synthetic import SyntheticSceneConfig, generate_scene, read_truth
from flows.demo import inner_tile_bbox

TRUTH_MERGE = MergeConfig()  # how truth arrays are grouped into systems: fixed for all variants


def build_store(cfg: SyntheticSceneConfig, out: Path, name: str) -> tuple[Any, Path]:
    tag = f"{name}-s{cfg.seed}-{cfg.width_px}x{cfg.height_px}"
    scene_dir, store = out / f"{tag}-scene", out / f"{tag}-store"
    if (scene_dir / "scene.json").is_file():  # re-use: the same config gives the same bytes
        scene = _load_scene(scene_dir)
    else:
        scene = generate_scene(cfg, scene_dir)
    if not (store / "manifest.gpkg").is_file():
        bbox = inner_tile_bbox(
            transform_bounds(scene.crs, WEB_MERCATOR, *scene.bounds), TileGrid(21, 320)
        )
        run_download_tiles(
            DownloadTilesJob(
                region=RegionConfig(bbox=bbox),
                source=LocalRasterSourceConfig(path=scene.image_path, name=name),
                grid={"zoom": 21, "tile_size_px": 320},
                out_dir=store,
            ),
            progress=False,
        )
    return scene, store


def _load_scene(scene_dir: Path) -> Any:
    """The fields of a generated scene that this script uses."""
    from types import SimpleNamespace

    import rasterio

    from deepsolar.synthetic import IMAGE_NAME, TRUTH_NAME

    with rasterio.open(scene_dir / IMAGE_NAME) as ds:
        bounds, crs = tuple(ds.bounds), ds.crs.to_string()
    return SimpleNamespace(
        image_path=scene_dir / IMAGE_NAME, truth_path=scene_dir / TRUTH_NAME, bounds=bounds, crs=crs
    )


def _with(cfg: Any, changes: dict[str, Any]) -> Any:
    """A validated copy of a config with some fields changed."""
    return type(cfg).model_validate({**cfg.model_dump(), **changes})


def tile_of(tile_id: str) -> Tile:
    z, s, x, y = (int(p) for p in tile_id.split("-"))
    return Tile(z, s, x, y)


def forward_store(seg: Segmenter, store: Path, batch: int = 16) -> dict[str, Any]:
    """Probabilities of every tile, native CAM maps of the positives (the configured kind)."""
    tiles = read_manifest(store / "manifest.gpkg")
    tiles = tiles[tiles["status"] == "ok"].reset_index(drop=True)
    probs, maps, sizes = {}, {}, {}
    rows = list(tiles[["tile_id", "path"]].itertuples(index=False))
    kind = cam_kind(seg)
    for i in range(0, len(rows), batch):
        part = rows[i : i + batch]
        images = [read_chip(store / str(r.path)) for r in part]
        p, cams = seg.native_cam_maps(seg.preprocess(images))
        for j, r in enumerate(part):
            probs[r.tile_id] = float(p[j])
            sizes[r.tile_id] = (images[j].size[1], images[j].size[0])
            if p[j] >= seg.threshold:
                maps[r.tile_id] = cams[kind][j : j + 1]
                maps[r.tile_id] = CamMaps(
                    maps[r.tile_id].positive.cpu(), maps[r.tile_id].margin.cpu()
                )
    return {"tiles": tiles, "probs": probs, "maps": maps, "sizes": sizes}


def truth_masks(tiles: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> dict[str, np.ndarray]:
    geoms = [g for g in truth.to_crs(WEB_MERCATOR).geometry if g is not None and not g.is_empty]
    out = {}
    for tid in tiles["tile_id"]:
        t = tile_of(tid)
        out[tid] = rasterize(
            geoms, out_shape=(t.size_px, t.size_px), transform=t.transform_3857, fill=0,
            default_value=1, dtype="uint8",
        ).astype(bool)  # fmt: skip
    return out


def score_variant(
    name: str, seg: Segmenter, fwd: dict[str, Any], cam: CamConfig, merge: MergeConfig,
    truth: gpd.GeoDataFrame, tmasks: dict[str, np.ndarray], tile_pos: pd.Series,
    tracts: gpd.GeoDataFrame, scanned: Any, big_truth: gpd.GeoDataFrame,
) -> dict[str, Any]:  # fmt: skip
    seg.cam = cam
    masks = {}
    for tid, maps in fwd["maps"].items():
        t = tile_of(tid)
        h, w = fwd["sizes"][tid]
        gsd = t.m_per_px * t.size_px / w
        masks[tid] = seg.mask(maps, (h, w), gsd)[1]
    tp = fp = fn = 0
    fp_tile_px_area = 0.0
    for tid, tm in tmasks.items():
        pm = masks.get(tid, np.zeros_like(tm))
        tp += int((pm & tm).sum())
        fp += int((pm & ~tm).sum())
        fn += int((~pm & tm).sum())
        if not tile_pos.get(tid, 0):
            fp_tile_px_area += float(pm.sum()) * tile_of(tid).pixel_area_m2
    panels = masks_to_polygons(
        ((m, tile_of(t), fwd["probs"][t]) for t, m in masks.items()), config=PolygonConfig()
    )
    systems, _ = merge_panels_labelled(panels, merge)
    sc = region_scores(systems, truth, tracts, scanned, TRUTH_MERGE)
    per = pd.DataFrame(sc["per_tract"])
    per = per[per["true_area_m2"] > 0]
    # each multi-tile truth array: how many detected systems overlap it
    if len(systems) and len(big_truth):
        hits = gpd.sjoin(big_truth[["geometry"]], systems[["geometry"]], predicate="intersects")
        n_per = hits.groupby(level=0).size().reindex(big_truth.index, fill_value=0)
    else:
        n_per = pd.Series(0, index=big_truth.index)
    return {
        "variant": name,
        "systems": sc["systems_detected"],
        "systems_true": sc["systems_true"],
        "system_count_error": sc["system_count_rel_error"],
        "area_m2": sc["area_detected_m2"],
        "area_true_m2": sc["area_true_m2"],
        "area_error": sc["area_total_rel_error"],
        "worst_tract_error": float(per["area_rel_error"].abs().max()) if len(per) else np.nan,
        "pixel_iou": tp / (tp + fp + fn) if tp + fp + fn else np.nan,
        "area_on_tiles_without_pv_m2": fp_tile_px_area,
        "small_systems_lt_5m2": int((systems["area_m2"] < 5).sum()) if len(systems) else 0,
        "big_arrays_as_one": f"{int((n_per == 1).sum())}/{len(big_truth)}",
        "big_arrays_mean_pieces": float(n_per[n_per > 0].mean()) if (n_per > 0).any() else np.nan,
    }


def markdown(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--classifier", default="builtin")
    ap.add_argument("--segmenter", default=None)
    ap.add_argument("--method", choices=["greedy", "plain"], default="greedy")
    ap.add_argument("--out", type=Path, default=Path("out/mask-options"))
    ap.add_argument("--scene-px", type=int, default=6400, help="evaluation scene size (demo: 6400)")
    ap.add_argument("--calib-px", type=int, default=3200, help="calibration scene size")
    ap.add_argument("--quantile", type=float, default=0.1, help="floor = this quantile of maxima")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    seg_ckpt = default_segmenter(
        Path(args.classifier), args.segmenter and Path(args.segmenter), args.method
    )
    seg = Segmenter.from_checkpoints(
        args.classifier,
        seg_ckpt if args.method == "greedy" else None,
        CamConfig(method=args.method),
        "cpu",
    )
    base = SyntheticSceneConfig(width_px=args.scene_px, height_px=args.scene_px)
    scene, store = build_store(base, out, "eval")
    calib_cfg = SyntheticSceneConfig(
        seed=1, center_lon=base.center_lon + 0.0088, width_px=args.calib_px, height_px=args.calib_px
    )  # the demo's training scene location, smaller
    calib_scene, calib_store = build_store(calib_cfg, out, "calib")
    print(f"scenes ready ({time.monotonic() - t0:.0f} s)", flush=True)

    # calibration: positive-class CAM maxima on the truly positive tiles of the other scene
    fwd_c = forward_store(seg, calib_store)
    truth_c = read_truth(calib_scene.truth_path, layer="panels")
    pos_c = labels_from_truth(fwd_c["tiles"], truth_c, 1.0)
    maxima = [float(m.positive.max()) for t, m in fwd_c["maps"].items() if pos_c.get(t, 0) == 1]
    q_floor = float(np.quantile(maxima, args.quantile)) if maxima else None
    neg_max = [float(m.positive.max()) for t, m in fwd_c["maps"].items() if pos_c.get(t, 0) == 0]
    print(
        f"calibration: {len(maxima)} true-positive / {len(neg_max)} false-positive called tiles; "
        f"floor (q={args.quantile}) = {q_floor}; FP maxima median {np.median(neg_max) if neg_max else 'n/a'}"
        f" ({time.monotonic() - t0:.0f} s)", flush=True,
    )  # fmt: skip

    fwd = forward_store(seg, store)
    truth = read_truth(scene.truth_path, layer="panels")
    tiles = fwd["tiles"]
    tile_pos = labels_from_truth(tiles, truth, 1.0)
    scanned = scanned_geometry(tiles)
    tracts = units_in_scan("tract", scanned, BoundarySourcesConfig())
    clipped = gpd.GeoDataFrame(geometry=truth.geometry.intersection(scanned), crs=truth.crs)
    tsys = merge_panels_labelled(clipped[~clipped.geometry.is_empty], TRUTH_MERGE)[0]
    # multi-tile arrays: truth systems crossing a tile edge
    tile_fp = tiles.to_crs(4326)
    crossing = gpd.sjoin(tsys[["geometry"]], tile_fp[["geometry"]], predicate="intersects")
    ntiles = crossing.groupby(level=0).size()
    big_truth = tsys.loc[ntiles[ntiles > 1].index]
    tmasks = truth_masks(tiles, truth)
    n_pos_called = len(fwd["maps"])
    print(
        f"eval scene: {len(tiles)} tiles, {int(tile_pos.sum())} with PV, {n_pos_called} called "
        f"positive; {len(tsys)} true systems, {len(big_truth)} span several tiles "
        f"({time.monotonic() - t0:.0f} s)", flush=True,
    )  # fmt: skip

    ds = CamConfig(method=args.method)
    clean = {"open_m": 0.5, "close_m": 0.5, "fill_holes_m2": 1.0}
    m0 = MergeConfig()
    variants: list[tuple[str, CamConfig, MergeConfig]] = [
        ("DeepSolar (min-max 0.37, merge within 1 m)", ds, m0),
        ("a: floor margin > 0", _with(ds, {"floor": 0.0}), m0),
        (
            "a: tile scope: margin max > 0 or nothing",
            _with(ds, {"floor": 0.0, "floor_scope": "tile"}),
            m0,
        ),
    ]
    if q_floor is not None:
        variants.append((
            f"a: floor positive CAM > q{args.quantile:g} of calib. maxima ({q_floor:.3g})",
            _with(ds, {"floor": q_floor, "floor_on": "positive"}), m0,
        ))  # fmt: skip
        variants.append((
            f"a: tile scope: positive CAM max > q{args.quantile:g} ({q_floor:.3g}) or nothing",
            _with(ds, {"floor": q_floor, "floor_on": "positive", "floor_scope": "tile"}), m0,
        ))  # fmt: skip
    variants += [
        ("b: open 0.5 m", _with(ds, {"clean": {"open_m": 0.5}}), m0),
        ("b: close 0.5 m", _with(ds, {"clean": {"close_m": 0.5}}), m0),
        ("b: open 1 m + close 0.5 m + holes 1 m2",
         _with(ds, {"clean": {"open_m": 1.0, "close_m": 0.5, "fill_holes_m2": 1.0}}), m0),
        ("b: open+close 0.5 m + holes 1 m2", _with(ds, {"clean": clean}), m0),
        ("c: min system 2 m2", ds, _with(m0, {"min_system_area_m2": 2.0})),
        ("c: min system 5 m2", ds, _with(m0, {"min_system_area_m2": 5.0})),
        ("d: tile edge gap 1.5 m", ds, _with(m0, {"tile_edge_gap_m": 1.5})),
        ("d: tile edge gap 3 m", ds, _with(m0, {"tile_edge_gap_m": 3.0})),
    ]  # fmt: skip
    combos = [(0.0, "margin", "margin>0", "pixel")]
    if q_floor is not None:
        combos += [(q_floor, "positive", "quantile", "pixel"),
                   (q_floor, "positive", "quantile tile", "tile")]  # fmt: skip
    for fl, fl_on, label, scope in combos:
        for mn in (2.0, 5.0):
            variants.append((
                f"a+b+c+d: {label}, clean, min {mn:g} m2, edge 1.5 m",
                CamConfig(
                    method=args.method, floor=fl, floor_on=fl_on, floor_scope=scope, clean=clean
                ),
                MergeConfig(min_system_area_m2=mn, tile_edge_gap_m=1.5),
            ))  # fmt: skip
    variants.append((
        "b+c+d (no floor): clean, min 5 m2, edge 1.5 m",
        CamConfig(method=args.method, clean=clean),
        MergeConfig(min_system_area_m2=5.0, tile_edge_gap_m=1.5),
    ))  # fmt: skip
    rows = []
    for name, cam, merge in variants:
        rows.append(
            score_variant(
                name, seg, fwd, cam, merge, truth, tmasks, tile_pos, tracts, scanned, big_truth
            )
        )
        r = rows[-1]
        print(
            f"{name:60s} systems {r['systems']:4d}/{r['systems_true']} area {r['area_m2']:9.0f} "
            f"({100 * r['area_error']:+.0f}%) IoU {r['pixel_iou']:.3f} big-as-one {r['big_arrays_as_one']}",
            flush=True,
        )
    df = pd.DataFrame(rows)
    meta = {
        "classifier": str(args.classifier), "segmenter": str(seg_ckpt), "method": args.method,
        "classifier_threshold": seg.threshold, "scene_px": args.scene_px,
        "n_tiles": int(len(tiles)), "n_tiles_with_pv": int(tile_pos.sum()),
        "n_called_positive": n_pos_called, "calibration_floor": q_floor,
        "calibration_quantile": args.quantile, "n_calibration_positive_tiles": len(maxima),
        "elapsed_s": round(time.monotonic() - t0, 1), "synthetic": True,
    }  # fmt: skip
    df.to_csv(out / "table.csv", index=False)
    (out / "table.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2, default=float)
    )
    (out / "table.md").write_text(f"SYNTHETIC scene; {json.dumps(meta)}\n\n" + markdown(df))
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
