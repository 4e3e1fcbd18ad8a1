"""Aggregation at national scale: 1.5 M systems onto every tract of the 7 TIGER states.

The systems are SYNTHETIC (seeded random points, 1.5 M: about DeepSolar's national count, all
packed into the 3,431 real TIGER 2010 tracts of CT, DE, DC, MA, NH, RI and VT from
``../shared/data/boundaries``: a far denser load per tract than the real database). Each
measurement runs in its own process pinned to 2 CPU cores, so its peak memory is its own:

- ``ours``: :func:`deepsolar.maps.aggregate.aggregate_systems` onto all tracts (every output column:
  counts, areas, unit areas in EPSG:5070, densities);
- ``levels``: :func:`aggregate_levels` onto tracts, counties and states at once;
- ``baseline``: a plain ``geopandas.sjoin(predicate="within")`` + groupby (counts and areas only);
- ``scan N``: the same aggregation with a scanned coverage streamed from N zoom-21 tiles
  (square blocks of 1 M, 16 M and 64 M tiles): peak memory must not grow with N.

Prints seconds and peak RSS above the process's footprint after loading the inputs, and the
baseline / ours time ratio. Usage: ``python benchmarks/bench_aggregate.py [--n 1500000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_CORES = 2


def pin_cores() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(N_CORES)
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:N_CORES]
        os.sched_setaffinity(0, cpus)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def tract_zips() -> list[Path]:
    from deepsolar.core.paths import shared_data_dir

    zips = sorted((shared_data_dir() / "boundaries/tiger2010_tracts").glob("tl_2010_*_tract10.zip"))
    if not zips:
        sys.exit(f"no TIGER tract zips under {shared_data_dir()}; set DEEPSOLAR_SHARED_DATA")
    return zips


def make_systems(n: int, path: Path) -> None:
    """SYNTHETIC systems: a random tract each, a uniform point in its bounding box, a lognormal
    panel area (median ~30 m²: mostly residential, some large)."""
    import geopandas as gpd
    import numpy as np
    import shapely

    from deepsolar.geo.boundaries import load_tiger_tracts

    tracts = load_tiger_tracts(tract_zips())
    rng = np.random.default_rng(2018)
    b = shapely.bounds(np.asarray(tracts.geometry.values))
    i = rng.integers(0, len(tracts), n)
    x, y = rng.uniform(b[i, 0], b[i, 2]), rng.uniform(b[i, 1], b[i, 3])
    area = rng.lognormal(np.log(30.0), 0.9, n)
    gdf = gpd.GeoDataFrame(
        {"area_m2": area, "is_residential": area <= 60.0, "synthetic": True},
        geometry=shapely.points(x, y),
        crs="EPSG:4326",
    )
    gdf.to_parquet(path)


def child(mode: str, systems_path: Path, side: int) -> dict:
    pin_cores()
    import geopandas as gpd
    import numpy as np

    from deepsolar.geo.boundaries import load_tiger_tracts, load_units
    from deepsolar.maps.aggregate import ScanCoverage, aggregate_levels, aggregate_systems

    tracts = load_tiger_tracts(tract_zips())
    systems = gpd.read_parquet(systems_path)
    out: dict = {"mode": mode, "systems": len(systems), "tracts": len(tracts)}
    if mode == "levels":
        fips = set(tracts["GEOID"].str[:2])
        counties = load_units("county")
        counties = counties[counties["STATEFP"].isin(fips)]
        states = load_units("state")
        states = states[states["GEOID"].isin(fips)]
    base = rss_mb()
    t0 = time.perf_counter()
    if mode == "ours":
        res = aggregate_systems(systems, tracts)
        out["assigned"] = int(res["solar_system_count"].sum())
    elif mode == "levels":
        res = aggregate_levels(systems, {"tracts": tracts, "counties": counties, "states": states})
        out["assigned"] = {k: int(v["solar_system_count"].sum()) for k, v in res.items()}
    elif mode == "baseline":
        j = gpd.sjoin(systems, tracts[["GEOID", "geometry"]], predicate="within")
        agg = j.groupby("GEOID").agg(n=("area_m2", "size"), area=("area_m2", "sum"))
        out["assigned"] = int(agg["n"].sum())
    elif mode == "scan":
        # a side x side block of zoom-21 tiles over central Massachusetts, streamed in chunks
        from deepsolar.geo.tiling import TileGrid

        t = TileGrid().tile_at(-72.3, 42.6)
        cov = ScanCoverage()
        rows_per_chunk = max(1, 2_000_000 // side)
        xs = np.arange(t.x, t.x + side, dtype=np.int64)
        for r0 in range(0, side, rows_per_chunk):
            rows = np.arange(t.y + r0, t.y + min(side, r0 + rows_per_chunk), dtype=np.int64)
            cov.add_xy(21, 320, np.tile(xs, len(rows)), np.repeat(rows, side))
        out["scan_tiles"] = cov.n_tiles
        out["scan_build_s"] = round(time.perf_counter() - t0, 2)
        res = aggregate_systems(systems, tracts, scanned=cov)
        out["assigned"] = int(res["solar_system_count"].sum())
        out["tracts_scanned"] = int((res["scanned_fraction"] > 0).sum())
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["peak_above_inputs_mb"] = round(peak_mb() - base, 1)
    out["peak_rss_mb"] = round(peak_mb(), 1)
    return out


def run_child(mode: str, systems_path: Path, side: int = 0) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--systems",
            str(systems_path),
            "--side",
            str(side),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_500_000, help="synthetic systems")
    ap.add_argument(
        "--child", choices=["ours", "levels", "baseline", "scan"], help=argparse.SUPPRESS
    )
    ap.add_argument("--systems", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--side", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--no-scan", action="store_true", help="skip the scanned-coverage runs")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.systems, args.side)))
        return
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "systems.parquet"
        t0 = time.perf_counter()
        make_systems(args.n, path)
        print(f"{args.n:,} SYNTHETIC systems generated in {time.perf_counter() - t0:.1f} s")
        print(
            f"each measurement: own process pinned to {N_CORES} cores; "
            "peak = max RSS above the footprint after loading inputs\n"
        )
        results = [run_child("ours", path), run_child("levels", path), run_child("baseline", path)]
        if not args.no_scan:
            results += [run_child("scan", path, side) for side in (1000, 4000, 8000)]
    print(f"{'run':<28}{'seconds':>9}{'peak MB':>10}  notes")
    for r in results:
        label = r["mode"] if r["mode"] != "scan" else f"scan {r['scan_tiles'] / 1e6:.0f} M tiles"
        notes = f"assigned {r['assigned']}"
        if r["mode"] == "scan":
            notes += (
                f", coverage built in {r['scan_build_s']} s, {r['tracts_scanned']} tracts touched"
            )
        print(f"{label:<28}{r['seconds']:>9.2f}{r['peak_above_inputs_mb']:>10.0f}  {notes}")
    ours, base = results[0], results[2]
    print(
        f"\n{ours['systems']:,} systems onto {ours['tracts']:,} tracts: {ours['seconds']:.1f} s "
        f"(goal < 60 s); baseline geopandas sjoin {base['seconds']:.1f} s "
        f"-> ours is {base['seconds'] / ours['seconds']:.1f}x faster"
    )


if __name__ == "__main__":
    main()
