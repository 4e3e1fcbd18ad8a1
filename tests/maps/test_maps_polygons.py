"""Masks -> polygons: georeferencing, ground area in an equal-area CRS, simplification, errors."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Geod

from deepsolar.core.errors import InputDataError
from deepsolar.geo.tiling import TileGrid
from deepsolar.maps.polygons import (
    PANEL_COLUMNS,
    PolygonConfig,
    equal_area_m2,
    mask_to_polygons,
    masks_to_polygons,
)

GRID = TileGrid()  # zoom 21, 320 px
BOSTON = GRID.tile_at(-71.06, 42.36)
GEOD = Geod(ellps="WGS84")


def geodesic_tile_pixel_area_m2(tile) -> float:
    """Independent reference: geodesic area of the tile footprint / pixels per tile."""
    area, _ = GEOD.geometry_area_perimeter(tile.footprint())
    return abs(area) / tile.size_px**2


def test_rectangle_area_matches_pixel_count_times_ground_pixel_area():
    mask = np.zeros((320, 320), dtype=bool)
    mask[10:60, 20:120] = True  # 5000 px
    out = mask_to_polygons(mask, BOSTON, 0.9)
    assert list(out.columns) == [*PANEL_COLUMNS, "geometry"]
    assert out.crs.to_epsg() == 4326
    assert len(out) == 1
    row = out.iloc[0]
    assert row.area_px == 5000
    assert row.tile_id == BOSTON.id
    assert row.confidence == pytest.approx(0.9)
    expected = 5000 * geodesic_tile_pixel_area_m2(BOSTON)
    assert row.area_m2 == pytest.approx(expected, rel=1e-3)
    # Web-Mercator area would be ~1.83x too large at 42 N: make sure that is not what we report
    assert row.area_m2 < 0.6 * 5000 * BOSTON.mercator_m_per_px**2


def test_polygon_lies_where_the_pixels_are():
    mask = np.zeros((320, 320), dtype=bool)
    mask[0:160, 0:160] = True  # the tile's north-west quarter
    out = mask_to_polygons(mask, BOSTON, None, config=PolygonConfig(simplify_tolerance_px=0))
    w, s, e, n = BOSTON.bounds_lonlat
    minx, miny, maxx, maxy = out.geometry.iloc[0].bounds
    assert minx == pytest.approx(w, abs=1e-9)
    assert maxy == pytest.approx(n, abs=1e-9)
    assert maxx == pytest.approx((w + e) / 2, abs=1e-9)
    assert np.isnan(out.confidence.iloc[0])


def test_coarse_cam_mask_is_stretched_over_the_tile():
    mask = np.ones((100, 100), dtype=np.uint8)  # the original CAM grid: 100x100 for 320 px
    out = mask_to_polygons(mask, BOSTON, 0.7)
    assert len(out) == 1
    assert out.area_px.iloc[0] == 100 * 100
    tile_area = equal_area_m2(gpd.GeoSeries([BOSTON.footprint()], crs=4326))[0]
    assert out.area_m2.iloc[0] == pytest.approx(tile_area, rel=1e-9)


def test_separate_pieces_and_corner_touching_pixels():
    mask = np.zeros((320, 320), dtype=bool)
    mask[10:20, 10:20] = True
    mask[100:130, 200:260] = True
    mask[20, 20] = True  # touches the first square only at a corner
    out = mask_to_polygons(mask, BOSTON, 0.5)
    assert len(out) == 3  # 4-connectivity: corner contact is not adjacency
    assert sorted(out.area_px) == [1, 100, 1800]
    assert out.geometry.is_valid.all()
    eight = mask_to_polygons(mask, BOSTON, 0.5, config=PolygonConfig(connectivity=8))
    assert len(eight) == 2


def test_outside_conus_uses_geodesic_area():
    for lon, lat in [(10.0, 50.0), (-149.9, 61.2), (151.2, -33.9)]:  # Germany, Alaska, Sydney
        tile = GRID.tile_at(lon, lat)
        mask = np.zeros((320, 320), dtype=bool)
        mask[:200, :100] = True
        out = mask_to_polygons(mask, tile, 1.0)
        expected = 20000 * geodesic_tile_pixel_area_m2(tile)
        assert out.area_m2.iloc[0] == pytest.approx(expected, rel=1e-3), (lon, lat)


def test_conus_albers_and_geodesic_areas_agree():
    boxes = gpd.GeoSeries(
        [shapely.box(-120, 35, -119.9, 35.1), shapely.box(-72, 42, -71.99, 42.01)], crs=4326
    )
    albers = equal_area_m2(boxes)
    geodesic = [abs(GEOD.geometry_area_perimeter(g)[0]) for g in boxes]
    np.testing.assert_allclose(albers, geodesic, rtol=5e-4)


def test_transform_and_crs_input():
    # A 0.3 m UTM raster (like the Duke/USGS orthophotos): 1000 px -> about 90 m²
    transform = Affine(0.3, 0, 500000.0, 0, -0.3, 4080000.0)
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[10:30, 10:60] = 1
    out = mask_to_polygons(mask, transform, 0.8, crs="EPSG:32611", tile_id="fresno-1")
    assert out.tile_id.iloc[0] == "fresno-1"
    assert out.area_px.iloc[0] == 1000
    # UTM's scale factor at the central meridian (0.9996) shrinks grid areas by 0.08 %
    assert out.area_m2.iloc[0] == pytest.approx(90.0 / 0.9996**2, rel=2e-3)
    same = mask_to_polygons(mask, (transform, "EPSG:32611"), 0.8)
    assert same.area_m2.iloc[0] == pytest.approx(out.area_m2.iloc[0])


def test_simplification_keeps_exact_area_and_drops_staircase_vertices():
    yy, xx = np.mgrid[:320, :320]
    disk = (yy - 160) ** 2 + (xx - 160) ** 2 < 90**2
    raw = mask_to_polygons(disk, BOSTON, 1.0, config=PolygonConfig(simplify_tolerance_px=0))
    simp = mask_to_polygons(disk, BOSTON, 1.0)
    assert shapely.get_num_coordinates(simp.geometry.iloc[0]) < 0.5 * shapely.get_num_coordinates(
        raw.geometry.iloc[0]
    )
    assert simp.area_m2.iloc[0] == raw.area_m2.iloc[0]  # area is from the pixels, not the outline
    shown = equal_area_m2(simp)[0]
    assert shown == pytest.approx(simp.area_m2.iloc[0], rel=0.02)


def test_empty_mask_and_min_area():
    empty = mask_to_polygons(np.zeros((320, 320), dtype=bool), BOSTON, 0.2)
    assert len(empty) == 0 and list(empty.columns) == [*PANEL_COLUMNS, "geometry"]
    mask = np.zeros((320, 320), dtype=bool)
    mask[0:2, 0:2] = True  # 4 px, about 0.01 m²
    mask[100:200, 100:200] = True
    kept = mask_to_polygons(mask, BOSTON, 0.2, config=PolygonConfig(min_area_m2=1.0))
    assert list(kept.area_px) == [10000]


def test_masks_to_polygons_numbers_pieces_across_tiles():
    a = np.zeros((320, 320), dtype=bool)
    a[:10, :10] = True
    other = GRID.tile(BOSTON.x + 1, BOSTON.y)
    out = masks_to_polygons([(a, BOSTON, 0.9), (np.zeros_like(a), other, 0.1), (a, other, 0.6)])
    assert list(out.panel_id) == [1, 2]
    assert list(out.tile_id) == [BOSTON.id, other.id]
    assert len(masks_to_polygons([])) == 0


@pytest.mark.parametrize(
    "mask, kw, match",
    [
        (np.zeros((2, 3, 3)), {}, "2-D"),
        (np.linspace(0, 1, 100).reshape(10, 10), {}, "heat map"),
        (np.array([["a"]]), {}, "dtype"),
    ],
)
def test_bad_masks_get_one_clear_error(mask, kw, match):
    with pytest.raises(InputDataError, match=match):
        mask_to_polygons(mask, BOSTON, 0.5, **kw)


def test_transform_without_crs_is_an_error():
    with pytest.raises(InputDataError, match="without a CRS"):
        mask_to_polygons(np.ones((4, 4), bool), Affine.identity(), 0.5)
    with pytest.raises(InputDataError, match="cannot georeference"):
        mask_to_polygons(np.ones((4, 4), bool), "not a tile", 0.5)
