"""Aggregation to units, checked against plain geopandas on real data, and scanned coverage."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.geo.boundaries import load_tiger_tracts, load_units
from deepsolar.geo.tiling import TileGrid
from deepsolar.maps.aggregate import (
    AREA_COLUMNS,
    COUNT_COLUMNS,
    DENSITY_COLUMNS,
    M2_PER_MI2,
    AggregateConfig,
    ScanCoverage,
    aggregate_levels,
    aggregate_systems,
    assign_points,
    scanned_geometry,
)
from deepsolar.maps.merge import DEFAULT_RESIDENTIAL_MAX_AREA_M2, merge_panels_labelled
from deepsolar.maps.polygons import equal_area_m2, masks_to_polygons


@pytest.fixture(scope="module")
def ma_tracts(shared_data):
    return load_tiger_tracts(shared_data / "boundaries/tiger2010_tracts/tl_2010_25_tract10.zip")


@pytest.fixture(scope="module")
def uspvdb(shared_data):
    df = pd.read_csv(shared_data / "tables/uspvdb/uspvdb_v3_0_20250430.csv", encoding="utf-8-sig")
    return gpd.GeoDataFrame(
        {"case_id": df.case_id, "p_state": df.p_state, "area_m2": df.p_area.astype(float)},
        geometry=gpd.points_from_xy(df.xlong, df.ylat),
        crs=4326,
    )


@pytest.fixture(scope="module")
def duke(shared_data):
    df = pd.read_csv(
        shared_data / "tables/duke_pv_polygons/polygonDataExceptVertices.csv",
        encoding="utf-8-sig",
    )
    return gpd.GeoDataFrame(
        {
            "polygon_id": df.polygon_id,
            "city": df.city,
            # the published area_meters column is area_pixels / 0.09 (wrong); 0.3 m pixels
            "area_m2": df.area_pixels * 0.09,
        },
        geometry=gpd.points_from_xy(df.centroid_longitude, df.centroid_latitude),
        crs="EPSG:4269",  # the data set's datum is NAD83
    )


def reference_counts(points: gpd.GeoDataFrame, units: gpd.GeoDataFrame) -> pd.DataFrame:
    """Independent computation: a plain geopandas spatial join (predicate 'intersects'),
    first unit on shared edges, then groupby."""
    j = gpd.sjoin(points.to_crs(units.crs), units[["GEOID", "geometry"]], predicate="intersects")
    j = j[~j.index.duplicated(keep="first")]
    res = j["area_m2"] <= DEFAULT_RESIDENTIAL_MAX_AREA_M2
    return pd.DataFrame(
        {
            "n": j.groupby("GEOID").size(),
            "area": j.groupby("GEOID")["area_m2"].sum(),
            "n_res": j[res].groupby("GEOID").size(),
            "area_res": j[res].groupby("GEOID")["area_m2"].sum(),
        }
    ).fillna(0)


def compare(result: gpd.GeoDataFrame, ref: pd.DataFrame) -> None:
    got = result.set_index("GEOID")
    assert got["solar_system_count"].sum() == ref["n"].sum()
    nz = got[got["solar_system_count"] > 0]
    assert set(nz.index) == set(ref.index)
    np.testing.assert_array_equal(nz.loc[ref.index, "solar_system_count"], ref["n"])
    np.testing.assert_allclose(nz.loc[ref.index, "total_panel_area"], ref["area"], rtol=1e-12)
    np.testing.assert_array_equal(nz.loc[ref.index, "solar_system_count_residential"], ref["n_res"])
    np.testing.assert_allclose(
        nz.loc[ref.index, "total_panel_area_residential"], ref["area_res"], rtol=1e-12
    )


def test_uspvdb_points_over_real_ma_tracts_match_geopandas(uspvdb, ma_tracts):
    result = aggregate_systems(uspvdb, ma_tracts)
    ref = reference_counts(uspvdb, ma_tracts)
    compare(result, ref)
    n_ma = int((uspvdb.p_state == "MA").sum())
    assert result["solar_system_count"].sum() == pytest.approx(n_ma, abs=3)
    assert result.attrs["unassigned_systems"] == len(uspvdb) - result["solar_system_count"].sum()
    # unit area (equal-area CRS) against the Census' own land + water area, independently
    census_mi2 = (ma_tracts["ALAND10"] + ma_tracts["AWATER10"]) / M2_PER_MI2
    ratio = result["total_area"] / census_mi2
    assert ratio.median() == pytest.approx(1.0, abs=1e-3)
    # DeepSolar definitions: residential m² per square mile of total area
    np.testing.assert_allclose(
        result["solar_panel_area_divided_by_area"],
        result["total_panel_area_residential"] / result["total_area"],
    )
    np.testing.assert_allclose(
        result["panel_area_m2_per_km2"], result["total_panel_area"] / result["area_km2"]
    )


def test_duke_polygons_over_builtin_counties_match_geopandas(duke):
    counties = load_units("county")
    result = aggregate_systems(duke, counties)
    ref = reference_counts(duke, counties)
    compare(result, ref)
    got = result.set_index("GEOID")
    # Fresno, San Joaquin (Stockton), Ventura (Oxnard), Stanislaus (Modesto)
    for fips, city in [
        ("06019", "Fresno"),
        ("06077", "Stockton"),
        ("06111", "Oxnard"),
        ("06099", "Modesto"),
    ]:
        n_city = int((duke.city == city).sum())
        assert got.loc[fips, "solar_system_count"] == pytest.approx(n_city, rel=0.02), city
    total = got["total_panel_area"].sum()
    assert total == pytest.approx(duke.area_m2.sum(), rel=0.01)
    assert 1.0 < total / len(duke) < 10.0  # mean ~3.6 m²: the corrected 0.09 factor


def _two_units():
    a = shapely.box(-71.0, 42.0, -70.99, 42.01)
    b = shapely.box(-70.99, 42.0, -70.98, 42.01)
    return gpd.GeoDataFrame({"GEOID": ["A", "B"]}, geometry=[a, b], crs=4326)


def test_a_system_crossing_a_boundary_is_counted_once_by_its_representative_point():
    units = _two_units()
    # 70 % of this rectangle lies in A; its representative point is in A
    straddle = shapely.box(-70.9935, 42.004, -70.9885, 42.005)
    on_edge = shapely.Point(-70.99, 42.002)  # exactly on the shared edge
    systems = gpd.GeoDataFrame(
        {"area_m2": [500.0, 10.0], "is_residential": [False, True]},
        geometry=[straddle, on_edge],
        crs=4326,
    )
    out = aggregate_systems(systems, units).set_index("GEOID")
    assert out.loc["A", "solar_system_count"] == 2  # first unit wins on the edge
    assert out.loc["B", "solar_system_count"] == 0
    assert out["total_panel_area"].sum() == 510.0
    assert out.loc["A", "solar_system_count_residential"] == 1
    # centroid rule gives the same here; an L whose centroid is outside it does not
    ell = shapely.box(-70.9999, 42.0001, -70.9801, 42.0011).union(
        shapely.box(-70.9999, 42.0001, -70.9989, 42.0099)
    )
    sys_l = gpd.GeoDataFrame({"area_m2": [1.0]}, geometry=[ell], crs=4326)
    rep = aggregate_systems(sys_l, units)
    assert rep["solar_system_count"].sum() == 1
    assert ell.contains(ell.point_on_surface())


def test_partial_scan_does_not_read_as_low_adoption():
    """Two SYNTHETIC units with the same true density; B is only a quarter scanned."""
    grid = TileGrid(zoom=20, tile_size_px=256)  # ~28 m tiles
    units = _two_units()
    scanned, systems = [], []
    rng = np.random.default_rng(3)
    for geoid, frac in (("A", 1.0), ("B", 0.25)):
        g = units.set_index("GEOID").geometry[geoid]
        w, s, e, n = g.bounds
        part = shapely.box(w, s, w + (e - w) * frac, n)
        scanned += list(grid.tiles_for_geometry(part))
        # systems only where scanned, 500 per km² (same density everywhere)
        k = int(round(500 * frac * 0.01 * 0.01 * 111.32 * 111.32 * np.cos(np.radians(42))))
        systems += list(shapely.points(rng.uniform(w, w + (e - w) * frac, k), rng.uniform(s, n, k)))
    sys_gdf = gpd.GeoDataFrame({"area_m2": np.full(len(systems), 20.0)}, geometry=systems, crs=4326)
    # with the default threshold (0.9) B gets no density at all: see the next test
    out = aggregate_systems(
        sys_gdf, units, scanned=scanned, config={"min_scanned_fraction": 0.2}
    ).set_index("GEOID")
    assert out.loc["A", "scanned_fraction"] == pytest.approx(1.0, abs=0.03)
    assert out.loc["B", "scanned_fraction"] == pytest.approx(0.25, abs=0.04)  # tile overhang
    dens_area = out["panel_area_m2_per_km2"]
    dens_scan = out["panel_area_m2_per_km2_scanned"]
    assert dens_area["B"] < 0.35 * dens_area["A"]  # naive density: B looks 4x lower
    assert dens_scan["B"] == pytest.approx(dens_scan["A"], rel=0.15)  # scanned density: same
    np.testing.assert_allclose(
        out["panel_area_m2_per_mi2_scanned"],
        out["total_panel_area"] / (out["scanned_area_km2"] * 1e6 / M2_PER_MI2),
    )
    # a unit nothing was scanned in: NaN density, not zero
    units3 = pd.concat(
        [
            units,
            gpd.GeoDataFrame(
                {"GEOID": ["C"]}, geometry=[shapely.box(-70, 42, -69.99, 42.01)], crs=4326
            ),
        ],
        ignore_index=True,
    )
    out3 = aggregate_systems(
        sys_gdf, units3, scanned=scanned, config={"min_scanned_fraction": 0.2}
    ).set_index("GEOID")
    assert out3.loc["C", "scanned_fraction"] == 0.0
    assert np.isnan(out3.loc["C", "panel_area_m2_per_km2_scanned"])
    assert np.isnan(out3.loc["C", "panel_area_m2_per_km2"])  # no density where we did not look
    assert out3.loc["C", "scan_status"] == "not scanned"
    assert out3.loc["C", "solar_system_count"] == 0


def test_half_scanned_tract_gets_no_density_and_a_note(run_layers):
    """A real Suffolk tract scanned over its west half only (maps_helpers.synthetic_run)."""
    tracts = run_layers["tracts"].set_index("GEOID")
    half = tracts.loc[tracts.attrs["half_scanned_tract"]]
    assert 0.4 < half["scanned_fraction"] < 0.7  # west half of its bounding box, tile overhang
    assert half["solar_system_count"] > 0 and half["total_panel_area"] > 0  # found, and kept
    for col in DENSITY_COLUMNS:
        if col in tracts.columns:
            assert np.isnan(half[col]), col
    assert half["scan_status"] == "partial"
    pct = f"{100 * half['scanned_fraction']:.0f}%"
    assert half["scan_note"] == f"{pct} scanned (< 90%): no density"
    # the scanned area beside it, in m² and km², agreeing with the fraction
    assert half["scanned_area_m2"] == pytest.approx(half["scanned_area_km2"] * 1e6)
    assert half["scanned_area_m2"] == pytest.approx(
        half["scanned_fraction"] * half["area_km2"] * 1e6
    )
    # completely scanned tracts do get a density, and no note
    full = tracts[tracts["scanned_fraction"] >= 0.999]
    assert len(full) >= 12
    assert full["panel_area_m2_per_mi2_scanned"].notna().all()
    assert full["scan_note"].isna().all() and (full["scan_status"] == "scanned").all()


def test_threshold_is_configurable_and_validated():
    units = _two_units()
    g = units.geometry.iloc[1]
    w, s, e, n = g.bounds
    scanned = shapely.box(w, s, (w + e) / 2, n)  # B half scanned
    sys_gdf = gpd.GeoDataFrame({"area_m2": [10.0]}, geometry=[g.centroid], crs=4326)
    low = aggregate_systems(sys_gdf, units, scanned=scanned, config={"min_scanned_fraction": 0.45})
    high = aggregate_systems(sys_gdf, units, scanned=scanned)
    b_low, b_high = low.iloc[1], high.iloc[1]
    assert b_low["scanned_fraction"] == pytest.approx(0.5, abs=0.01)
    assert b_low["scan_status"] == "scanned"
    assert np.isfinite(b_low["panel_area_m2_per_mi2_scanned"])
    assert b_low["scan_note"] == "50% scanned: density over the scanned part"
    assert b_high["scan_status"] == "partial" and np.isnan(b_high["panel_area_m2_per_mi2_scanned"])
    assert high.attrs["units_partially_scanned"] == 1
    ok = aggregate_systems(sys_gdf, units, scanned=scanned, config={"min_scanned_fraction": 0.0})
    assert list(ok["scan_status"]) == ["not scanned", "scanned"]  # A: nothing to divide by
    with pytest.raises(ConfigError, match="min_scanned_fraction"):
        aggregate_systems(sys_gdf, units, config={"min_scanned_fraction": 1.5})


def test_tile_count_is_distinct_tiles_holding_a_system():
    """DeepSolar's tile_count: two systems in one tile count one tile; a system across three
    tiles counts three."""
    grid = TileGrid()
    t0 = grid.tile_at(-71.06, 42.36)
    tiles = [grid.tile(t0.x + i, t0.y) for i in range(4)]
    items = []
    two = np.zeros((320, 320), dtype=bool)
    two[20:60, 20:60] = True  # two small systems in tile 0
    two[200:240, 200:240] = True
    items.append((two, tiles[0], 0.9))
    for i in (1, 2, 3):  # one long array across tiles 1-3
        m = np.zeros((320, 320), dtype=bool)
        m[100:140, 0:320] = True
        items.append((m, tiles[i], 0.9))
    panels = masks_to_polygons(items)
    systems, labels = merge_panels_labelled(panels)
    panels["system_id"] = labels
    # summed over systems: 1 + 1 + 3 = 5 (what the old column said); distinct tiles: 4
    assert len(systems) == 3 and int(systems["tile_count"].sum()) == 5
    unit = gpd.GeoDataFrame(
        {"GEOID": ["U"]}, geometry=[shapely.box(-71.1, 42.3, -71.0, 42.4)], crs=4326
    )
    out = aggregate_systems(systems, unit, scanned=tiles, panels=panels).iloc[0]
    assert out["solar_system_count"] == 3
    assert out["tile_count"] == 4  # tiles 0..3, tile 0 once although it holds two systems
    big = systems["area_m2"] > 60
    assert out["tile_count_nonresidential"] == 3 and out["tile_count_residential"] == 1
    assert big.sum() == 1
    # without the panels the distinct count cannot be known: no tile columns
    assert "tile_count" not in aggregate_systems(systems, unit, scanned=tiles).columns
    with pytest.raises(InputDataError, match="system_id and tile_id"):
        aggregate_systems(systems, unit, panels=panels.drop(columns=["tile_id"]))


def test_scan_footprint_layer_is_the_dissolved_union_of_the_tiles(run_layers):
    fp = run_layers["scan_footprint"]
    tiles = run_layers["tiles"]
    assert len(fp) == 1 and int(fp["n_tiles"].iloc[0]) == len(tiles)
    naive = shapely.union_all(tiles.geometry.values)
    assert fp.geometry.iloc[0].symmetric_difference(naive).area < 1e-9 * naive.area
    assert fp["area_m2"].iloc[0] == pytest.approx(equal_area_m2(tiles).sum(), rel=1e-6)


def test_scan_coverage_equals_union_of_tile_footprints_and_stays_small():
    grid = TileGrid()
    region = shapely.Point(-71.06, 42.36).buffer(0.004)  # ~700 m disc at zoom 21
    tiles = list(grid.tiles_for_geometry(region))
    assert len(tiles) > 1000
    cov = ScanCoverage()
    cov.add_tiles(tiles[::2])
    cov.add_tiles([t.id for t in tiles[1::2]])  # ids work too, in any order, twice is fine
    cov.add_tiles(tiles[:100])
    assert cov.n_tiles == len(tiles)
    assert cov.n_runs < len(tiles) / 20  # runs per row, not tiles
    naive = shapely.union_all([t.footprint() for t in tiles])
    geom = cov.geometry()
    assert geom.symmetric_difference(naive).area < 1e-9 * naive.area
    # a million-tile rectangle is one run per row
    big = ScanCoverage()
    ys, xs = np.divmod(np.arange(1_000_000), 1000)
    big.add_xy(21, 320, xs + 600_000, ys + 700_000)
    assert big.n_tiles == 1_000_000 and big.n_runs == 1000
    assert shapely.get_num_coordinates(big.geometry()) == 5


def test_scanned_argument_forms_agree():
    grid = TileGrid(zoom=17, tile_size_px=320)
    tiles = list(grid.tiles_for_geometry(shapely.box(-70.995, 42.0, -70.985, 42.005)))
    frame = gpd.GeoDataFrame(
        {"tile_id": [t.id for t in tiles], "status": "ok"},
        geometry=[t.footprint() for t in tiles],
        crs=4326,
    )
    frame.loc[0, "status"] = "failed"  # a failed download was not scanned
    geoms = [
        scanned_geometry(tiles[1:]),
        scanned_geometry(frame),
        scanned_geometry(frame.loc[1:, ["geometry"]]),
        scanned_geometry(frame.geometry.iloc[1:]),
    ]
    for g in geoms[1:]:
        assert g.symmetric_difference(geoms[0]).area < 1e-12
    assert scanned_geometry(None) is None
    cov = ScanCoverage()
    cov.add_tiles(tiles[:1])
    with pytest.raises(InputDataError, match="mix grids"):
        cov.add_tiles([TileGrid().tile_at(-71, 42)])
    with pytest.raises(InputDataError, match="malformed"):
        ScanCoverage().add_tiles(["not-a-tile"])


def test_population_and_household_ratios():
    units = _two_units()
    units["population"] = [1000, 0]
    units["household_count"] = [400, 0]
    systems = gpd.GeoDataFrame(
        {"area_m2": [30.0, 40.0, 500.0, 20.0]},
        geometry=shapely.points([-70.995, -70.996, -70.997, -70.985], [42.005] * 4),
        crs=4326,
    )
    out = aggregate_systems(systems, units).set_index("GEOID")
    assert out.loc["A", "solar_panel_area_per_capita"] == pytest.approx(70.0 / 1000)
    assert out.loc["A", "panel_area_m2_per_capita"] == pytest.approx(570.0 / 1000)
    assert out.loc["A", "number_of_solar_system_per_household"] == pytest.approx(2 / 400)
    assert out.loc["A", "solar_system_count_per_household"] == pytest.approx(3 / 400)
    assert np.isnan(out.loc["B", "solar_panel_area_per_capita"])  # DeepSolar's file has inf
    units = units.rename(columns={"population": "pop_total"})
    out2 = aggregate_systems(systems, units, population_column="pop_total")
    assert "solar_panel_area_per_capita" in out2.columns
    no_pop = aggregate_systems(systems, units.drop(columns=["pop_total", "household_count"]))
    assert "solar_panel_area_per_capita" not in no_pop.columns
    with pytest.raises(InputDataError, match="no column 'people'"):
        aggregate_systems(systems, units, population_column="people")


def test_output_columns_carry_deepsolar_names(shared_data, uspvdb, ma_tracts):
    lexicon = pd.read_csv(shared_data / "tables/deepsolar_tract_va/deepsolar_lexicon.csv")
    names = set(lexicon["column_name"])
    out = aggregate_systems(uspvdb, ma_tracts.iloc[:50])
    for col in ("tile_count", "tile_count_residential", "tile_count_nonresidential"):
        assert col in names  # written when the panels are given (test above)
    deepsolar_named = [
        *COUNT_COLUMNS,
        "total_area",
        "solar_panel_area_divided_by_area",
    ]
    for col in deepsolar_named:
        assert col in names, col
        assert col in out.columns, col
    for col in AREA_COLUMNS:
        assert col in out.columns
    assert "solar_panel_area_per_capita" in names
    assert "number_of_solar_system_per_household" in names


def test_levels_at_once_equal_separate_calls(uspvdb, ma_tracts):
    counties = load_units("county")
    counties = counties[counties.STATEFP == "25"]
    levels = aggregate_levels(uspvdb, {"tracts": ma_tracts, "counties": counties})
    for name, units in (("tracts", ma_tracts), ("counties", counties)):
        alone = aggregate_systems(uspvdb, units)
        pd.testing.assert_frame_equal(
            pd.DataFrame(levels[name].drop(columns="geometry")),
            pd.DataFrame(alone.drop(columns="geometry")),
        )
    # tracts roll up to the same state total as the counties (both cover MA)
    assert (
        abs(levels["tracts"].solar_system_count.sum() - levels["counties"].solar_system_count.sum())
        <= 3  # the simplified built-in county outlines differ slightly at the coast
    )


def test_assign_points_chunks_do_not_change_the_answer():
    rng = np.random.default_rng(0)
    units = np.array([shapely.box(i, 0, i + 1, 1) for i in range(10)], dtype=object)
    pts = shapely.points(rng.uniform(-1, 11, 5000), rng.uniform(-0.5, 1.5, 5000))
    a = assign_points(pts, units, chunk_size=1000)
    b = assign_points(pts, units, chunk_size=10_000)
    np.testing.assert_array_equal(a, b)
    x, y = shapely.get_x(pts), shapely.get_y(pts)
    inside = (x >= 0) & (x <= 10) & (y >= 0) & (y <= 1)
    np.testing.assert_array_equal(a >= 0, inside)
    np.testing.assert_array_equal(a[inside & (x % 1 != 0)], np.floor(x[inside & (x % 1 != 0)]))


def test_bad_inputs():
    units = _two_units()
    pts = gpd.GeoDataFrame(geometry=shapely.points([-70.995], [42.005]), crs=4326)
    with pytest.raises(InputDataError, match="area_m2"):
        aggregate_systems(pts, units)
    with pytest.raises(InputDataError, match="negative"):
        aggregate_systems(pts.assign(area_m2=-1.0), units)
    with pytest.raises(InputDataError, match="units"):
        aggregate_systems(pts.assign(area_m2=1.0), units.set_crs(None, allow_override=True))
    with pytest.raises(ConfigError, match="assign_by"):
        aggregate_systems(pts.assign(area_m2=1.0), units, config={"assign_by": "nearest"})
    out = aggregate_systems(
        pts.assign(p_area=5.0), units, config=AggregateConfig(area_column="p_area")
    )
    assert out.total_panel_area.sum() == 5.0
