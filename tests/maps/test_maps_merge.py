"""Adjacent-panel merging on SYNTHETIC arrays with known truth, cut by the real tile grid."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio.features
import shapely

from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.geo.tiling import TileGrid
from deepsolar.maps.merge import (
    DEFAULT_M2_PER_KW,
    DEFAULT_RESIDENTIAL_MAX_AREA_M2,
    SYSTEM_COLUMNS,
    MergeConfig,
    label_systems,
    merge_panels,
    merge_panels_labelled,
)
from deepsolar.maps.polygons import equal_area_m2, mask_to_polygons, reproject

GRID = TileGrid()  # zoom 21, 320 px (~17.6 m tiles at 42 N)


def synthetic_arrays(seed: int, n: int, origin_lonlat=(-71.2, 42.3), max_tiles=8):
    """SYNTHETIC truth: rectangles, L shapes and discs (EPSG:3857), pairwise > 2 m apart."""
    rng = np.random.default_rng(seed)
    t0 = GRID.tile_at(*origin_lonlat)
    left, _, _, top = t0.bounds_3857
    span = GRID.tile_span_m
    truth: list = []
    while len(truth) < n:
        cx, cy = left + rng.uniform(0, 50) * span, top - rng.uniform(0, 50) * span
        w, h = rng.uniform(0.1, max_tiles) * span, rng.uniform(0.1, max_tiles) * span
        kind = len(truth) % 3
        if kind == 0:
            poly = shapely.box(cx, cy, cx + w, cy + h)
        elif kind == 1:
            poly = shapely.box(cx, cy, cx + w, cy + h / 5).union(
                shapely.box(cx, cy, cx + w / 5, cy + h)
            )
        else:
            poly = shapely.Point(cx, cy).buffer(w / 2, quad_segs=16)
        if all(poly.distance(q) > 3.0 for q in truth):  # 3 projected m ~ 2.2 ground m
            truth.append(poly)
    return truth


def cut_by_tiles(truth_3857):
    """Cut each true polygon by the tile grid: one piece per (polygon, tile), with tile_id."""
    pieces, tile_ids, owner = [], [], []
    for k, poly in enumerate(truth_3857):
        ll = reproject(np.array([poly], dtype=object), "EPSG:3857", "EPSG:4326")[0]
        for tile in GRID.tiles_for_geometry(ll):
            piece = poly.intersection(tile.footprint_3857())
            if piece.area > 0:
                pieces.append(piece)
                tile_ids.append(tile.id)
                owner.append(k)
    return pieces, tile_ids, np.array(owner)


def test_pieces_cut_by_the_tile_grid_merge_back_to_the_truth():
    truth = synthetic_arrays(seed=1, n=25)
    pieces, tile_ids, owner = cut_by_tiles(truth)
    assert len(pieces) > 5 * len(truth)  # arrays really span many tiles
    perm = np.random.default_rng(0).permutation(len(pieces))  # order must not matter
    panels = gpd.GeoDataFrame(
        {"tile_id": np.array(tile_ids)[perm], "confidence": 0.9},
        geometry=gpd.GeoSeries(np.array(pieces, dtype=object)[perm], crs=3857).to_crs(4326),
    )
    panels["area_m2"] = equal_area_m2(panels)
    systems, labels = merge_panels_labelled(panels, MergeConfig(gap_m=0))
    assert list(systems.columns) == [*SYSTEM_COLUMNS, "geometry"]
    assert len(systems) == len(truth)
    # each system holds exactly the pieces of one true array
    pairs = pd.DataFrame({"sys": labels, "truth": owner[perm]}).drop_duplicates()
    assert pairs["sys"].is_unique and pairs["truth"].is_unique
    true_area = equal_area_m2(gpd.GeoSeries(truth, crs=3857))
    got = systems.set_index(pairs.set_index("sys").loc[systems.system_id, "truth"].to_numpy())
    np.testing.assert_allclose(got.sort_index().area_m2, true_area, rtol=1e-7)
    true_tiles = np.bincount(owner)
    np.testing.assert_array_equal(got.sort_index().tile_count, true_tiles)
    # outlines are the true shapes again (one polygon, same area)
    assert (systems.geom_type == "Polygon").all()
    outline_area = equal_area_m2(got.sort_index())
    np.testing.assert_allclose(outline_area, true_area, rtol=1e-4)  # 0.1 mm snapping


def test_masks_rasterised_per_tile_round_trip_through_polygons_and_merge():
    """End to end: true arrays -> per-tile masks -> mask_to_polygons -> merge_panels."""
    truth = synthetic_arrays(seed=5, n=12, max_tiles=5)
    masks: dict[str, tuple] = {}
    for poly in truth:
        ll = reproject(np.array([poly], dtype=object), "EPSG:3857", "EPSG:4326")[0]
        for tile in GRID.tiles_for_geometry(ll):
            m = rasterio.features.rasterize(
                [poly], out_shape=(320, 320), transform=tile.transform_3857, dtype="uint8"
            ).astype(bool)
            prev = masks.get(tile.id, (np.zeros((320, 320), bool), tile))[0]
            masks[tile.id] = (prev | m, tile)
    frames = [mask_to_polygons(m, t, 0.8) for m, t in masks.values() if m.any()]
    panels = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=4326)
    systems = merge_panels(panels)  # default gap 1 m; arrays are >2 m apart
    assert len(systems) == len(truth)
    true_area = np.sort(equal_area_m2(gpd.GeoSeries(truth, crs=3857)))
    got = np.sort(systems.area_m2.to_numpy())
    # rasterisation error is at most a pixel (~5 cm) along each edge
    np.testing.assert_allclose(got, true_area, rtol=0.03)
    assert got.sum() == pytest.approx(true_area.sum(), rel=0.005)


def test_an_array_spanning_thousands_of_tiles_is_one_system():
    t0 = GRID.tile_at(-100.0, 35.0)
    left, _, _, top = t0.bounds_3857
    span = GRID.tile_span_m
    farm = shapely.box(left + 0.3 * span, top - 60.6 * span, left + 60.2 * span, top - 0.4 * span)
    pieces, tile_ids, _ = cut_by_tiles([farm])
    assert len(pieces) > 3000
    panels = gpd.GeoDataFrame(
        {"tile_id": tile_ids}, geometry=gpd.GeoSeries(pieces, crs=3857).to_crs(4326)
    )
    systems = merge_panels(panels, gap_m=0)
    assert len(systems) == 1
    assert systems.tile_count.iloc[0] == len(pieces)
    assert systems.area_m2.iloc[0] == pytest.approx(
        equal_area_m2(gpd.GeoSeries([farm], crs=3857))[0], rel=1e-6
    )
    assert systems.system_class.iloc[0] == "nonresidential"


def _two_squares(lat: float, gap_ground_m: float, side_m: float = 3.0):
    """Two squares ``gap_ground_m`` apart on the ground, as lon/lat polygons."""
    m_per_deg_lon = 111_320.0 * np.cos(np.radians(lat))
    m_per_deg_lat = 110_950.0
    side_lon, side_lat = side_m / m_per_deg_lon, side_m / m_per_deg_lat
    gap_lon = gap_ground_m / m_per_deg_lon
    a = shapely.box(-70.0, lat, -70.0 + side_lon, lat + side_lat)
    b = shapely.box(-70.0 + side_lon + gap_lon, lat, -70.0 + 2 * side_lon + gap_lon, lat + side_lat)
    return gpd.GeoDataFrame(geometry=[a, b], crs=4326)


@pytest.mark.parametrize("lat", [30.0, 60.0])
def test_gap_is_in_ground_metres_at_any_latitude(lat):
    pair = _two_squares(lat, gap_ground_m=0.8)
    assert len(merge_panels(pair, gap_m=1.0)) == 1
    assert len(merge_panels(pair, gap_m=0.5)) == 2
    assert len(merge_panels(pair, gap_m=0.0)) == 2
    touching = _two_squares(lat, gap_ground_m=0.0)
    assert len(merge_panels(touching, gap_m=0.0)) == 1


def test_chains_merge_transitively():
    # a row of squares each 0.5 m from the next: one system although the ends are far apart
    lat = 40.0
    sq = []
    for i in range(30):
        pair = _two_squares(lat, 0.5, side_m=2.0)
        g = pair.geometry.iloc[0]
        dx = i * (2.5 / (111_320.0 * np.cos(np.radians(lat))))
        sq.append(shapely.affinity.translate(g, xoff=dx))
    panels = gpd.GeoDataFrame(geometry=sq, crs=4326)
    assert len(np.unique(label_systems(panels, gap_m=1.0))) == 1
    assert len(np.unique(label_systems(panels, gap_m=0.2))) == 30


def test_classes_capacity_and_confidence():
    small = _two_squares(40.0, 10.0, side_m=5.0)  # two 25 m² systems
    big = _two_squares(41.0, 0.0, side_m=10.0)  # one 200 m² system
    panels = gpd.GeoDataFrame(pd.concat([small, big], ignore_index=True), crs=4326)
    panels["confidence"] = [0.6, 0.7, 0.5, 1.0]
    panels["tile_id"] = ["a", "b", "c", "c"]
    systems = merge_panels(panels).sort_values("area_m2").reset_index(drop=True)
    assert list(systems.system_class) == ["residential", "residential", "nonresidential"]
    assert list(systems.is_residential) == [True, True, False]
    np.testing.assert_allclose(systems.capacity_kw, systems.area_m2 / DEFAULT_M2_PER_KW)
    assert systems.confidence.iloc[2] == pytest.approx(0.75, abs=1e-6)  # equal areas
    assert systems.confidence_max.iloc[2] == 1.0
    assert systems.tile_count.iloc[2] == 1  # both pieces from tile "c"
    assert systems.n_panels.iloc[2] == 2
    strict = merge_panels(panels, residential_max_area_m2=20.0, m2_per_kw=5.0)
    assert (strict.system_class == "nonresidential").all()
    np.testing.assert_allclose(strict.capacity_kw, strict.area_m2 / 5.0)
    reps = gpd.GeoSeries(gpd.points_from_xy(systems.lon, systems.lat), crs=4326)
    assert systems.geometry.contains(reps).all()


def test_residential_threshold_reproduces_the_real_deepsolar_split(shared_data):
    """The 60 m² default separates DeepSolar's own residential and non-residential systems
    (real Virginia tract database: tracts holding exactly one system of a class)."""
    df = pd.read_csv(
        shared_data / "tables/deepsolar_tract_va/deepsolar_tract_VA.csv", dtype={"fips": str}
    )
    res = df.loc[df.solar_system_count_residential == 1, "total_panel_area_residential"]
    non = df.loc[df.solar_system_count_nonresidential == 1, "total_panel_area_nonresidential"]
    assert len(res) > 300 and len(non) > 250
    assert (res <= DEFAULT_RESIDENTIAL_MAX_AREA_M2).mean() >= 0.99
    assert (non > DEFAULT_RESIDENTIAL_MAX_AREA_M2).mean() >= 0.98


def test_empty_input_gives_empty_systems():
    empty = gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs=4326))
    out = merge_panels(empty)
    assert len(out) == 0 and list(out.columns) == [*SYSTEM_COLUMNS, "geometry"]


def test_area_is_computed_when_absent_and_validated_when_present():
    pair = _two_squares(40.0, 0.0, side_m=4.0)
    out = merge_panels(pair, gap_m=0)
    assert out.area_m2.iloc[0] == pytest.approx(32.0, rel=0.01)
    pair["area_m2"] = [np.nan, 1.0]
    with pytest.raises(InputDataError, match="area_m2"):
        merge_panels(pair)


def test_bad_inputs_and_configs():
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy([0, 1], [0, 1]), crs=4326)
    with pytest.raises(InputDataError, match="polygons"):
        merge_panels(pts)
    nocrs = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)])
    with pytest.raises(InputDataError, match="CRS"):
        merge_panels(nocrs)
    with pytest.raises(InputDataError, match="GeoDataFrame"):
        merge_panels(pd.DataFrame({"a": [1]}))
    with pytest.raises(ConfigError, match="gap_m"):
        merge_panels(_two_squares(40, 1), gap_m=-1)
    with pytest.raises(ConfigError, match="surprise"):
        merge_panels(_two_squares(40, 1), {"surprise": 1})


# ---------------------------------------------------------------- issue 11: masks that measure area


def _far_apart(arrays, min_gap_m: float):
    """Greedily keep arrays at least ``min_gap_m`` projected metres from every kept one."""
    kept: list = []
    for poly in arrays:
        if all(poly.distance(q) > min_gap_m for q in kept):
            kept.append(poly)
    return kept


def _pieces_short_of_tile_edges(truth, short_ground_m: float, lat: float = 42.3):
    """SYNTHETIC CAM-like pieces: each tile's piece of an array stops ``short_ground_m`` before
    every tile edge it was cut by (as per-tile min-max masks fade out at tile borders)."""
    pieces, tile_ids, owner = cut_by_tiles(truth)
    inset = short_ground_m / np.cos(np.radians(lat))  # ground -> Web-Mercator metres
    out, ids, own = [], [], []
    for piece, tid, k in zip(pieces, tile_ids, owner, strict=True):
        z, s, x, y = (int(v) for v in tid.split("-"))
        from deepsolar.geo.tiling import Tile

        shrunk = piece.intersection(Tile(z, s, x, y).footprint_3857().buffer(-inset, join_style=2))
        if shrunk.area > 0.05:
            out.append(shrunk)
            ids.append(tid)
            own.append(k)
    panels = gpd.GeoDataFrame(
        {"tile_id": ids, "confidence": 0.9},
        geometry=gpd.GeoSeries(np.array(out, dtype=object), crs=3857).to_crs(4326),
    )
    panels["area_m2"] = equal_area_m2(panels)
    return panels, np.array(own)


def test_tile_edge_rule_rejoins_arrays_whose_pieces_stop_short_of_the_edge():
    truth = _far_apart(synthetic_arrays(seed=3, n=40, max_tiles=4), min_gap_m=10.0)
    panels, owner = _pieces_short_of_tile_edges(truth, short_ground_m=1.0)
    n_true = len(np.unique(owner))
    assert n_true >= 8
    # DeepSolar-like merging (touching / within 1 m): the 2 m gaps at tile edges split arrays.
    plain, _ = merge_panels_labelled(panels, MergeConfig(gap_m=1.0))
    assert len(plain) > n_true + 5
    systems, labels = merge_panels_labelled(panels, MergeConfig(gap_m=1.0, tile_edge_gap_m=1.5))
    assert len(systems) == n_true
    pairs = pd.DataFrame({"sys": labels, "truth": owner}).drop_duplicates()
    assert pairs["sys"].is_unique and pairs["truth"].is_unique  # one system per true array
    assert systems["area_m2"].sum() == pytest.approx(panels["area_m2"].sum())
    # too small an edge gap does not bridge 2 m
    assert len(merge_panels(panels, gap_m=1.0, tile_edge_gap_m=0.8)) == len(plain)


def test_tile_edge_rule_joins_only_across_tile_edges_and_only_overlapping_spans():
    t = GRID.tile_at(-71.2, 42.3)
    left, bottom, right, top = t.bounds_3857
    east = GRID.tile(t.x + 1, t.y)
    k = 1 / np.cos(np.radians(42.3))  # ground -> Mercator metres
    mid = (bottom + top) / 2

    def frame(geoms, tiles):
        return gpd.GeoDataFrame(
            {"tile_id": [x.id for x in tiles]}, geometry=gpd.GeoSeries(geoms, crs=3857).to_crs(4326)
        )

    # two houses in the same tile, 1.5 m apart: not one system, whatever the edge gap
    a = shapely.box(left + 2 * k, mid, left + 5 * k, mid + 3 * k)
    b = shapely.box(left + 6.5 * k, mid, left + 9.5 * k, mid + 3 * k)
    assert len(merge_panels(frame([a, b], [t, t]), tile_edge_gap_m=2.0)) == 2
    # the same 1.5 m, across the east edge with overlapping spans: one system
    c = shapely.box(right - 3.75 * k, mid, right - 0.75 * k, mid + 3 * k)
    d = shapely.box(right + 0.75 * k, mid + 1 * k, right + 3.75 * k, mid + 4 * k)
    assert len(merge_panels(frame([c, d], [t, east]), tile_edge_gap_m=1.0)) == 1
    assert len(merge_panels(frame([c, d], [t, east]), tile_edge_gap_m=0.5)) == 2
    # across the edge but offset along it by 5 m: two systems
    e = shapely.box(right + 0.5 * k, mid + 8 * k, right + 3.5 * k, mid + 11 * k)
    assert len(merge_panels(frame([c, e], [t, east]), tile_edge_gap_m=1.0)) == 2
    # north-south neighbours (tile y grows southwards)
    south = GRID.tile(t.x, t.y + 1)
    f = shapely.box(left + 3 * k, bottom + 0.5 * k, left + 6 * k, bottom + 3 * k)
    g = shapely.box(left + 4 * k, bottom - 3 * k, left + 7 * k, bottom - 0.5 * k)
    assert len(merge_panels(frame([f, g], [t, south]), tile_edge_gap_m=1.0)) == 1
    assert len(merge_panels(frame([f, g], [t, south]))) == 2  # default: off
    # pieces without a tile id are merged by gap_m alone
    nt = frame([f, g], [t, south]).drop(columns="tile_id")
    assert len(merge_panels(nt, tile_edge_gap_m=1.0)) == 2


def test_min_system_area_drops_specks_after_merging():
    lat = 40.0
    big = _two_squares(lat, 0.5, side_m=3.0)  # two 9 m² pieces within the gap: one 18 m² system
    speck = _two_squares(lat, 0.5, side_m=1.0).iloc[[0]]  # 1 m², far away
    speck = speck.set_geometry(speck.geometry.translate(xoff=0.01))
    panels = gpd.GeoDataFrame(pd.concat([speck, big], ignore_index=True), crs=4326)
    panels["area_m2"] = equal_area_m2(panels)
    systems, labels = merge_panels_labelled(panels, MergeConfig(min_system_area_m2=5.0))
    assert len(systems) == 1
    assert labels.tolist() == [0, 1, 1]
    assert systems.area_m2.iloc[0] == pytest.approx(panels.area_m2.iloc[1:].sum())
    assert systems.n_panels.iloc[0] == 2
    # two 9 m² pieces pass a 10 m² minimum only together (the minimum is on systems)
    assert len(merge_panels(panels, min_system_area_m2=10.0)) == 1
    assert len(merge_panels(panels, min_system_area_m2=10.0, gap_m=0.1)) == 0
    assert len(merge_panels(panels)) == 2  # default keeps everything (DeepSolar)
    with pytest.raises(ConfigError, match="min_system_area_m2"):
        merge_panels(panels, min_system_area_m2=-1)
