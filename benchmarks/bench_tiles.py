"""Tile planning and local-source tile throughput, as ratios to baselines measured in the same run.

Prints:
- tile planning: tiles/s of ``TileGrid.count_tiles`` / ``tiles_for_geometry`` on a real county
  (built-in Bernalillo County, NM) at zoom 21;
- the local-raster tile loop (``download_tiles`` with a GeoTIFF: WarpedVRT read + PNG encode +
  atomic write + journal) in tiles/s, against the bare baseline of reading the same tile windows
  with plain ``rasterio`` window reads (no warp, no encode, no write).

Usage: ``python benchmarks/bench_tiles.py [--tiles N]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from deepsolar.core.http import DownloadConfig
from deepsolar.geo.region import RegionConfig, resolve_region
from deepsolar.geo.tiling import ORIGIN_SHIFT_M, TileGrid, mercator_m_per_px
from deepsolar.imagery.download import download_tiles
from deepsolar.imagery.sources import LocalRasterSourceConfig


def bench_planning(grid: TileGrid) -> None:
    county = resolve_region(RegionConfig(county="35001")).geometry
    t0 = time.perf_counter()
    n = grid.count_tiles(county)
    dt_count = time.perf_counter() - t0
    t0 = time.perf_counter()
    k = sum(1 for _ in islice(grid.tiles_for_geometry(county), 2_000_000))
    dt_iter = time.perf_counter() - t0
    print(f"planning: Bernalillo County at z{grid.zoom}/{grid.tile_size_px}px = {n:,} tiles")
    print(f"  count_tiles        {dt_count:8.2f} s  ({n / dt_count:,.0f} tiles/s)")
    print(f"  tiles_for_geometry {dt_iter:8.2f} s for {k:,} tiles ({k / dt_iter:,.0f} tiles/s)")


def make_raster(path: Path, grid: TileGrid, n_side: int) -> tuple[float, float, float, float]:
    """An RGB GeoTIFF in EPSG:3857 aligned to the grid, ``n_side`` tiles a side (noise texture)."""
    res = mercator_m_per_px(grid.zoom)
    x0, y0 = 335_000 * grid.tile_size_px, 650_000 * grid.tile_size_px  # near Albuquerque at z21
    left, top = -ORIGIN_SHIFT_M + x0 * res, ORIGIN_SHIFT_M - y0 * res
    size = n_side * grid.tile_size_px
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (3, size, size), dtype=np.uint8)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:3857",
        transform=rasterio.Affine(res, 0, left, 0, -res, top),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
    return left, top - size * res, left + size * res, top


def bench_local_loop(grid: TileGrid, n_side: int) -> None:
    from deepsolar.geo.tiling import mercator_to_lonlat

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ortho.tif"
        left, bottom, right, top = make_raster(path, grid, n_side)
        eps = 0.01
        w, s = mercator_to_lonlat(left + eps, bottom + eps)
        e, n = mercator_to_lonlat(right - eps, top - eps)
        tiles = list(grid.tiles_for_bbox(w, s, e, n))
        # baseline: plain window reads of the same pixels (the raster is aligned to the grid)
        t0 = time.perf_counter()
        with rasterio.open(path) as src:
            for t in tiles:
                ox, oy = t.pixel_origin()
                col = ox - 335_000 * grid.tile_size_px
                row = oy - 650_000 * grid.tile_size_px
                src.read(window=Window(col, row, grid.tile_size_px, grid.tile_size_px))
        base = time.perf_counter() - t0
        src_obj = LocalRasterSourceConfig(path=path).build()
        t0 = time.perf_counter()
        summary = download_tiles(
            tiles, src_obj, Path(tmp) / "store", DownloadConfig(max_concurrency=2), progress=False
        )
        loop = time.perf_counter() - t0
        assert summary.n_ok == len(tiles), summary
        print(f"local source: {len(tiles)} tiles of {grid.tile_size_px} px")
        print(f"  baseline window reads {len(tiles) / base:8.1f} tiles/s")
        print(
            f"  download_tiles loop   {len(tiles) / loop:8.1f} tiles/s"
            f"  (ratio to baseline: {base / loop:.3f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--side", type=int, default=12, help="raster size in tiles per side")
    args = ap.parse_args()
    grid = TileGrid(21, 320)
    bench_planning(grid)
    bench_local_loop(grid, args.side)


if __name__ == "__main__":
    main()
