"""Tile grid checked against an independent implementation (mercantile)."""

from __future__ import annotations

import math
import random

import mercantile
import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box

from deepsolar.core.errors import RegionError
from deepsolar.geo.tiling import (
    Tile,
    TileGrid,
    TileGridConfig,
    ground_resolution_m_per_px,
    lonlat_to_mercator,
)

rng = random.Random(1234)
US_POINTS = [(rng.uniform(-124, -67), rng.uniform(25, 49)) for _ in range(200)]


@pytest.mark.parametrize("zoom", [1, 12, 18, 21, 23])
def test_256px_grid_matches_mercantile_tile_numbers_and_bounds(zoom: int) -> None:
    grid = TileGrid(zoom, 256)
    for lon, lat in US_POINTS:
        t = grid.tile_at(lon, lat)
        ref = mercantile.tile(lon, lat, zoom)
        assert (t.x, t.y) == (ref.x, ref.y)
        assert t.bounds_lonlat == pytest.approx(tuple(mercantile.bounds(ref)), abs=1e-9)
        assert t.bounds_3857 == pytest.approx(tuple(mercantile.xy_bounds(ref)), abs=1e-6)


def test_320px_grid_corners_match_mercantile_where_grids_align() -> None:
    # Every 4th 320-px tile edge falls on a 256-px tile edge: 4 * 320 = 5 * 256.
    grid = TileGrid(21, 320)
    for lon, lat in US_POINTS[:50]:
        t = grid.tile_at(lon, lat)
        x4, y4 = t.x - t.x % 4, t.y - t.y % 4
        aligned = grid.tile(x4, y4)
        ul = mercantile.ul(x4 * 5 // 4, y4 * 5 // 4, 21)
        w, _, _, n = aligned.bounds_lonlat
        assert (w, n) == pytest.approx((ul.lng, ul.lat), abs=1e-9)
        # and the point is inside its tile
        w, s, e, n = t.bounds_lonlat
        assert w <= lon < e and s < lat <= n


def test_ground_resolution_is_deepsolar_formula() -> None:
    for lat in (0.0, 25.0, 35.08, 49.0):
        expected = 156543.03392 * math.cos(math.radians(lat)) / 2**21
        assert ground_resolution_m_per_px(lat, 21) == pytest.approx(expected, rel=1e-9)
    t = TileGrid().tile_at(-106.6, 35.08)
    assert 0.05 < t.m_per_px < 0.07  # "about 0.05-0.07 m/px in the US"
    assert t.width_m == pytest.approx(320 * t.m_per_px)
    assert t.pixel_area_m2 == pytest.approx(t.m_per_px**2)
    # the transform maps pixel (0,0) and (320,320) to the tile's corners
    left, bottom, right, top = t.bounds_3857
    assert t.transform_3857 @ (0, 0) == pytest.approx((left, top))
    assert t.transform_3857 @ (320, 320) == pytest.approx((right, bottom))


def test_tile_ids_are_stable_and_round_trip() -> None:
    grid = TileGrid(21, 320)
    t = grid.tile(336000, 650000)
    assert t.id == "21-320-336000-650000"
    assert grid.tile_from_id(t.id) == t
    with pytest.raises(RegionError, match="belongs to grid"):
        TileGrid(20, 320).tile_from_id(t.id)
    with pytest.raises(RegionError, match="malformed"):
        grid.tile_from_id("21/320/1/2")
    with pytest.raises(RegionError, match="outside"):
        grid.tile(grid.n_tiles, 0)


def _brute_force(grid: TileGrid, geom) -> set[tuple[int, int]]:
    """Every tile in the bbox whose interior meets the geometry (independent of the row scan)."""
    g = shapely.transform(geom, lambda c: np.array([lonlat_to_mercator(*p) for p in c]))
    minx, miny, maxx, maxy = g.bounds
    t0 = grid.tile_at(*geom.bounds[:2])
    t1 = grid.tile_at(*geom.bounds[2:])
    out = set()
    for y in range(min(t0.y, t1.y) - 1, max(t0.y, t1.y) + 2):
        for x in range(min(t0.x, t1.x) - 1, max(t0.x, t1.x) + 2):
            fp = Tile(grid.zoom, grid.tile_size_px, x, y).footprint_3857()
            if fp.intersection(g).area > 0:
                out.add((x, y))
    return out


def _concave_shape(lon: float, lat: float, r_deg: float) -> Polygon:
    pts = []
    for i in range(24):
        a = 2 * math.pi * i / 24
        rr = r_deg * (1.0 if i % 2 == 0 else 0.35)
        pts.append((lon + rr * math.cos(a), lat + rr * math.sin(a)))
    return Polygon(pts)


@pytest.mark.parametrize("tile_size", [256, 320])
def test_tiles_for_geometry_equals_brute_force(tile_size: int) -> None:
    grid = TileGrid(19, tile_size)
    star = _concave_shape(-106.6, 35.08, 0.004)
    holed = Point(-71.06, 42.36).buffer(0.003).difference(Point(-71.06, 42.36).buffer(0.0012))
    multi = MultiPolygon(
        [box(-100.0, 40.0, -99.998, 40.001), box(-99.9975, 40.0003, -99.996, 40.0006)]
    )
    for geom in (star, holed, multi):
        got = [(t.x, t.y) for t in grid.tiles_for_geometry(geom)]
        assert len(got) == len(set(got)), "a tile was listed twice"
        assert set(got) == _brute_force(grid, geom)
        assert grid.count_tiles(geom) == len(got)


def test_bbox_and_tile_count_scale() -> None:
    grid = TileGrid()
    tiles = list(grid.tiles_for_bbox(-106.61, 35.08, -106.60, 35.09))
    # ~906 m x 1111 m at ~19.5 m per tile -> about 47 x 57 tiles
    assert 2400 < len(tiles) < 3000
    assert all(isinstance(t, Tile) and t.size_px == 320 for t in tiles)


@pytest.mark.parametrize(
    "geom, match",
    [
        (Polygon(), "empty"),
        (Point(-100, 40), "must be a polygon"),
        (Polygon([(0, 0), (1, 1), (1, 0), (0, 1)]), "invalid"),
        (box(500000, 4000000, 501000, 4001000), "not longitude/latitude"),
    ],
)
def test_bad_region_geometries_get_clear_errors(geom, match: str) -> None:
    with pytest.raises(RegionError, match=match) as info:
        list(TileGrid().tiles_for_geometry(geom))
    assert "What to do" in str(info.value)


def test_bad_bbox_and_grid_config() -> None:
    with pytest.raises(RegionError, match="inverted"):
        list(TileGrid().tiles_for_bbox(-100, 40, -101, 41))
    with pytest.raises(ValueError):
        TileGridConfig(zoom=30)
    assert TileGridConfig().build() == TileGrid(21, 320)
