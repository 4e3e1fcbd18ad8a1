"""Boundaries (built-in and real TIGER files) and region resolution."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import box

from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, InputDataError, RegionError
from deepsolar.geo.boundaries import (
    BoundarySourcesConfig,
    load_tiger_tracts,
    load_units,
    read_boundary_file,
)
from deepsolar.geo.region import RegionConfig, resolve_region


def test_builtin_layers_have_string_geoids_and_lonlat() -> None:
    for level, n, length in (("state", 51, 2), ("county", 3233, 5), ("tract", 195, 11)):
        gdf = load_units(level)
        assert len(gdf) == n
        assert gdf.crs.to_epsg() == 4326
        assert gdf["GEOID"].map(type).eq(str).all()
        assert gdf["GEOID"].str.len().eq(length).all()
        assert gdf.geometry.is_valid.all()
    tracts = load_units("tract")
    assert tracts["GEOID"].str.startswith("35").all()  # Albuquerque metro, NM
    assert (tracts["GEOID"].str[:5] == "35001").sum() > 100  # mostly Bernalillo County


@pytest.mark.parametrize("state", ["MA", "25", "Massachusetts", "ma"])
def test_state_by_code_fips_or_name(state: str) -> None:
    r = resolve_region(RegionConfig(state=state))
    w, s, e, n = r.geometry.bounds
    assert -73.6 < w < -73.4 and 42.8 < n < 42.9


def test_county_and_tract_lookup() -> None:
    a = resolve_region(RegionConfig(county="35001"))
    b = resolve_region(RegionConfig(county="Bernalillo, NM"))
    assert a.geometry.equals(b.geometry)
    t = resolve_region(RegionConfig(tract=["35001000107", "35001000108"]))
    assert len(t.units) == 2
    assert a.geometry.buffer(1e-3).contains(t.geometry)


def test_unknown_region_suggests_and_says_what_to_do() -> None:
    with pytest.raises(RegionError) as info:
        resolve_region(RegionConfig(state="Masachusets"))
    msg = str(info.value)
    assert "Massachusetts" in msg and "What to do" in msg
    with pytest.raises(RegionError, match="unknown tract"):
        resolve_region(RegionConfig(tract="99999999999"))


def test_exactly_one_region_kind_is_validated() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        validate_config(RegionConfig, {"state": "MA", "county": "25017"})
    with pytest.raises(ConfigError, match="exactly one"):
        validate_config(RegionConfig, {})
    with pytest.raises(ConfigError, match="bbox"):
        validate_config(RegionConfig, {"bbox": [10, 0, 5, 1]})
    with pytest.raises(ConfigError, match="stat: Extra inputs are not permitted"):
        validate_config(RegionConfig, {"stat": "MA"})


def test_real_tiger_zip_tracts(shared_data) -> None:
    z = shared_data / "boundaries/tiger2010_tracts/tl_2010_44_tract10.zip"
    tracts = load_tiger_tracts(z)
    assert tracts["GEOID"].str.len().eq(11).all() and tracts["GEOID"].str.startswith("44").all()
    assert tracts.crs.to_epsg() == 4326
    geoid = tracts["GEOID"].iloc[0]
    r = resolve_region(RegionConfig(tract=geoid, boundaries=BoundarySourcesConfig(tracts_path=z)))
    assert r.geometry.area > 0
    r2 = resolve_region(RegionConfig(boundary_path=z, boundary_where={"GEOID10": geoid}))
    assert r2.geometry.equals_exact(r.geometry, 1e-9)
    with pytest.raises(RegionError, match="column 'NOPE'"):
        resolve_region(RegionConfig(boundary_path=z, boundary_where={"NOPE": "1"}))
    with pytest.raises(RegionError, match="no feature matches"):
        resolve_region(RegionConfig(boundary_path=z, boundary_where={"GEOID10": "0"}))


def test_bad_boundary_files(tmp_path) -> None:
    with pytest.raises(InputDataError, match="not found"):
        read_boundary_file(tmp_path / "missing.gpkg")
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"not a geopackage")
    with pytest.raises(InputDataError, match="cannot read"):
        read_boundary_file(junk)
    nocrs = tmp_path / "nocrs.geojson"
    gpd.GeoDataFrame({"a": [1]}, geometry=[box(0, 0, 1, 1)]).to_file(nocrs)
    # GeoJSON is always WGS84 by spec, so write a shapefile without .prj instead
    shp = tmp_path / "nocrs.shp"
    gpd.GeoDataFrame({"a": [1]}, geometry=[box(0, 0, 1, 1)]).to_file(shp)
    with pytest.raises(InputDataError, match="no coordinate reference system"):
        read_boundary_file(shp)


def test_unknown_key_value_is_never_echoed() -> None:
    # a secret pasted under a wrong key must not appear in the error message
    with pytest.raises(ConfigError) as info:
        validate_config(RegionConfig, {"state": "MA", "api_key": "AIzaSECRET123"})
    assert "api_key" in str(info.value) and "AIzaSECRET123" not in str(info.value)


def test_changed_fields_ignores_free_keys_and_free_subtrees() -> None:
    from deepsolar.core.config import changed_fields

    saved = {"train": {"epochs": 4, "seed": 0}, "cam": {"threshold": 0.37}, "lr": 1e-3}
    now = {"train": {"epochs": 8, "seed": 1}, "cam": {"threshold": 0.5}, "lr": 1e-3, "new": 1}
    assert changed_fields(saved, now, {"train.epochs", "cam"}) == ["new", "train.seed"]
    assert changed_fields(saved, saved, set()) == []
