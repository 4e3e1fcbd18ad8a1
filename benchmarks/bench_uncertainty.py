"""Cost of the 95% intervals (deepsolar.maps.uncertainty) in aggregation, against no intervals.

SYNTHETIC systems (seeded random points, ``--n``, 20-60 m² each) inside the 1,478 real TIGER 2010
tracts of Massachusetts (``../shared/data/boundaries``), aggregated onto those tracts plus the
built-in counties and states by :func:`deepsolar.maps.aggregate.aggregate_levels`. The scan is a
zoom-15 grid of 320-px tiles over the state with 5% of the tiles dropped at random, so most units
are partly scanned (the sampling term is computed) and the densities' threshold is 0 (every unit
with a scan gets an interval). Both runs in the same process, each timed ``--repeat`` times (best
kept); prints seconds and the ratio with / without intervals.

Usage: ``python benchmarks/bench_uncertainty.py [--n 300000] [--draws 2000] [--repeat 2]``.
"""

from __future__ import annotations

import argparse
import time

import geopandas as gpd
import numpy as np
import shapely

from deepsolar.core.paths import shared_data_dir
from deepsolar.geo.boundaries import load_tiger_tracts, load_units
from deepsolar.geo.tiling import TileGrid
from deepsolar.maps.aggregate import ScanCoverage, aggregate_levels
from deepsolar.maps.uncertainty import DetectorCounts


def synthetic_inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tracts = load_tiger_tracts(
        shared_data_dir() / "boundaries/tiger2010_tracts/tl_2010_25_tract10.zip"
    ).to_crs(4326)
    state = shapely.union_all(tracts.geometry.values)
    w, s, e, nn = state.bounds
    pts: list[np.ndarray] = []
    while sum(len(p) for p in pts) < n:
        xy = np.column_stack([rng.uniform(w, e, n), rng.uniform(s, nn, n)])
        cand = shapely.points(xy)
        pts.append(cand[shapely.contains_xy(state, xy[:, 0], xy[:, 1])])
    geoms = np.concatenate(pts)[:n]
    systems = gpd.GeoDataFrame({"area_m2": rng.uniform(20, 60, n)}, geometry=geoms, crs=4326)
    grid = TileGrid(15, 320)
    tiles = list(grid.tiles_for_geometry(state))
    keep = rng.random(len(tiles)) >= 0.05
    cov = ScanCoverage()
    cov.add_tiles(t for t, k in zip(tiles, keep, strict=True) if k)
    units = {
        "tracts": tracts,
        "counties": load_units("county"),
        "states": load_units("state"),
    }
    return systems, units, cov


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    systems, units, cov = synthetic_inputs(args.n)
    cfg = {"min_scanned_fraction": 0.0, "uncertainty": {"draws": args.draws}}
    counts = DetectorCounts(tp=96, fp=12, fn=8)

    def run(detector):
        return aggregate_levels(systems, units, scanned=cov, config=cfg, detector=detector)

    base_s, _ = best_of(args.repeat, lambda: run(None))
    unc_s, out = best_of(args.repeat, lambda: run(counts))
    n_units = sum(int(g["panel_area_m2_lo95"].notna().sum()) for g in out.values())
    print(f"{args.n:,} SYNTHETIC systems, {cov.n_tiles:,} scanned zoom-15 tiles (5% dropped)")
    print(f"units with an interval: {n_units:,} ({args.draws} draws each)")
    print(f"aggregate_levels without intervals: {base_s:.2f} s")
    print(f"aggregate_levels with intervals:    {unc_s:.2f} s  ({unc_s / base_s:.2f}x)")


if __name__ == "__main__":
    main()
