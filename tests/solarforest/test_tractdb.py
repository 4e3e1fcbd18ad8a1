"""DeepSolar tract-database loader on the real Virginia subset (../shared/data/tables)."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepsolar.core.errors import DownloadError, InputDataError, OfflineError
from deepsolar.core.io import file_sha256
from deepsolar.solarforest.schema import (
    DEFAULT_TARGET,
    FEATURE_GROUPS,
    TARGET_COLUMNS,
    group_columns,
    is_target_column,
    target_units,
)
from deepsolar.solarforest.tractdb import (
    county_of,
    deployment_density,
    get_tract_db,
    join_target,
    read_lexicon,
    read_target_table,
    read_tract_db,
    read_tract_polygons,
)

VA = "tables/deepsolar_tract_va/deepsolar_tract_VA.csv"
AREA = "solar_panel_area_divided_by_area"
PH = "number_of_solar_system_per_household"
LEX = "tables/deepsolar_tract_va/deepsolar_lexicon.csv"


@pytest.fixture(scope="module")
def va_path(shared_data: Path) -> Path:
    return shared_data / VA


@pytest.fixture(scope="module")
def db(va_path: Path):
    return read_tract_db(va_path)


@pytest.fixture(scope="module")
def raw(va_path: Path) -> pd.DataFrame:
    return pd.read_csv(va_path, dtype={"fips": str})


def test_reads_real_va_subset_with_documented_shape_and_fips(db, raw) -> None:
    t = db.table
    assert t.shape == (1907, 169)
    assert t["fips"].map(type).eq(str).all()
    assert t["fips"].str.fullmatch(r"51\d{9}").all()  # Virginia = state 51
    assert t["fips"].is_unique
    assert county_of(t["fips"]).nunique() == 133  # VA's 95 counties + 38 independent cities
    assert db.sha256 == file_sha256(db.source)


def test_inf_ratios_become_nan_and_are_counted(db, raw) -> None:
    num = raw.select_dtypes("number")
    n_inf = int(np.isinf(num.to_numpy(dtype=float)).sum())
    assert n_inf > 0  # the documented quirk exists in the real file
    assert db.repairs["inf_values"] == n_inf
    numeric = db.table.select_dtypes("number")
    assert not np.isinf(numeric.to_numpy(dtype=float)).any()
    # the inf cells are NaN now, the finite cells unchanged
    col = "solar_panel_area_per_capita"
    was_inf = np.isinf(raw[col])
    assert was_inf.any() and db.table.loc[was_inf, col].isna().all()
    pd.testing.assert_series_equal(db.table.loc[~was_inf, col], raw.loc[~was_inf, col])


def test_booleans_become_numbers(db, raw) -> None:
    assert db.table["voting_2016_dem_win"].dtype == float
    assert (db.table["voting_2016_dem_win"] == raw["voting_2016_dem_win"].astype(float)).all()


def test_lexicon_groups_and_name_fallback_agree_on_the_real_schema(shared_data, db) -> None:
    lex = read_lexicon(shared_data / LEX)
    cols = list(db.table.columns)
    assert group_columns(cols, lex) == group_columns(cols, None)
    assert set(db.groups) == set(FEATURE_GROUPS)
    assert "daily_solar_radiation" in db.groups["environment"]
    assert "gini_index" in db.groups["socioeconomic"]
    assert "electricity_price_residential" in db.groups["electricity"]
    assert "net_metering" in db.groups["policy"]
    assert "voting_2016_dem_percentage" in db.groups["voting"]
    assert db.groups["location"] == ["lat", "lon"]


def test_every_detector_derived_column_is_a_target_never_a_feature(shared_data, db) -> None:
    lex = read_lexicon(shared_data / LEX)
    from_deepsolar = set(lex.loc[lex["source"] == "deepsolar", "column_name"])
    assert from_deepsolar == set(TARGET_COLUMNS) == set(db.targets)
    feats = db.features()
    assert not set(feats) & from_deepsolar
    assert not any(is_target_column(c) for c in feats)
    assert not {"fips", "county", "state", "row_index_in_deepsolar_tract"} & set(feats)
    # every numeric non-target, non-id column is some group's feature
    numeric = set(db.table.select_dtypes("number").columns)
    assert numeric - set(feats) == from_deepsolar | {"row_index_in_deepsolar_tract"}
    # a new detector column in a later release is caught by its name
    assert is_target_column("total_panel_area_commercial")
    assert not is_target_column("heating_fuel_solar")  # ACS survey count, not the detector's


def test_national_file_quirks_are_repaired(tmp_path, raw) -> None:
    """Real VA rows written the way the national file stores them (edited copy, not real fips):
    a leading unnamed index column, fips as numbers of a state below 10 (leading zero lost), a
    text-typed price column with a non-numeric entry, booleans as text."""
    df = raw.head(20).copy()
    df.insert(0, "Unnamed: 0", range(len(df)))
    df["fips"] = ("1" + df["fips"].str[2:]).astype(np.int64)  # 10 digits, like Alabama (01)
    price = df["electricity_price_transportation"].astype(str)
    price.iloc[3] = "unknown"
    df["electricity_price_transportation"] = price
    df["voting_2016_dem_win"] = df["voting_2016_dem_win"].map({True: "True", False: "False"})
    path = tmp_path / "deepsolar_tract.csv"
    df.to_csv(path, index=False)
    db = read_tract_db(path)
    t = db.table
    assert "Unnamed: 0" not in t.columns
    assert t["fips"].str.len().eq(11).all() and t["fips"].str.startswith("01").all()
    assert db.repairs["fips_zero_padded"] == 20
    assert t["electricity_price_transportation"].dtype == float
    assert np.isnan(t["electricity_price_transportation"].iloc[3])
    assert t["electricity_price_transportation"].iloc[0] == pytest.approx(8.11)
    assert db.repairs["unparseable_values"] == 1
    assert set(t["voting_2016_dem_win"]) <= {0.0, 1.0}
    assert "electricity_price_transportation" in db.features()
    # no lexicon beside the copy: grouping falls back to column names, same groups
    assert db.groups["electricity"][0] == "electricity_price_residential"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.drop(columns="fips"), "no 'fips' column"),
        (lambda d: d.assign(fips=["x"] + list(d["fips"][1:])), "non-numeric tract FIPS"),
        (lambda d: pd.concat([d, d.head(1)]), "duplicated tract FIPS"),
        (lambda d: d.head(0), "no rows"),
    ],
)
def test_bad_tables_raise_one_clear_error(tmp_path, raw, edit, message) -> None:
    path = tmp_path / "t.csv"
    edit(raw.head(5)).to_csv(path, index=False)
    with pytest.raises(InputDataError, match=message) as err:
        read_tract_db(path)
    assert err.value.where == str(path) and err.value.fix


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(InputDataError, match="not found"):
        read_tract_db(tmp_path / "nope.csv")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_when_offline_says_what_to_do(tmp_path) -> None:
    # Nothing listens on this port: the same failure as a machine without internet.
    url = f"http://127.0.0.1:{_free_port()}/group/deepsolar/deepsolar_tract.csv"
    with pytest.raises(OfflineError) as err:
        get_tract_db(url, tmp_path / "cache", timeout_s=5)
    msg = str(err.value)
    assert url in msg and "deepsolar_tract.csv" in msg and "features_path" in msg
    assert not any((tmp_path / "cache").iterdir())  # no half-written file left


@pytest.fixture()
def http_dir(tmp_path, va_path):
    """A local HTTP server on 127.0.0.1 serving a copy of the real VA CSV."""
    root = tmp_path / "www"
    (root / "group" / "deepsolar").mkdir(parents=True)
    (root / "group" / "deepsolar" / "deepsolar_tract.csv").write_bytes(va_path.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.network
def test_download_then_cache_then_read(tmp_path, http_dir, va_path) -> None:
    url = f"{http_dir}/group/deepsolar/deepsolar_tract.csv"
    cache = tmp_path / "cache"
    path = get_tract_db(url, cache)
    assert path == cache / "deepsolar_tract.csv"
    assert file_sha256(path) == file_sha256(va_path)
    assert [p.name for p in cache.iterdir()] == ["deepsolar_tract.csv"]  # no temp file left
    assert read_tract_db(path).table.shape == (1907, 169)
    # the cached copy is used without contacting the server
    assert get_tract_db(f"http://127.0.0.1:{_free_port()}/deepsolar_tract.csv", cache) == path


@pytest.mark.network
def test_download_http_error_is_a_download_error(tmp_path, http_dir) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        get_tract_db(f"{http_dir}/missing/deepsolar_tract.csv", tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


# ---- target tables from our own mapping flow ----------------------------------------------------


def _target_frame(raw: pd.DataFrame, n: int = 300) -> pd.DataFrame:
    """GEOIDs and target values of real VA tracts, scaled x2 so the source is recognisable."""
    t = raw.head(n)
    return pd.DataFrame(
        {
            "GEOID": t["fips"],
            "solar_panel_area_divided_by_area": 2 * t["solar_panel_area_divided_by_area"],
        }
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet", "gpkg"])
def test_target_table_formats_join_on_geoid(tmp_path, raw, db, fmt) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    tf = _target_frame(raw)
    path = tmp_path / f"tracts.{fmt}"
    if fmt == "csv":
        tf.to_csv(path, index=False)
    elif fmt == "parquet":
        tf.to_parquet(path)
    else:
        # geometry: SYNTHETIC unit boxes (only the attribute table matters here)
        geo = gpd.GeoDataFrame(tf, geometry=[box(i, 0, i + 1, 1) for i in range(len(tf))], crs=4326)
        geo.to_file(path, layer="tracts", driver="GPKG")
    tt = read_target_table(path, AREA)
    assert tt["GEOID"].map(type).eq(str).all()
    assert ("geometry" in tt.columns) == (fmt == "gpkg")
    joined = join_target(db, tt, AREA)
    assert len(joined) == len(tf)
    expected = tf.set_index("GEOID")["solar_panel_area_divided_by_area"]
    got = joined.set_index("fips")["solar_panel_area_divided_by_area"]
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False)
    # every detector column of the DeepSolar table is gone: the target comes from our table only
    assert not set(db.targets) - {"solar_panel_area_divided_by_area"} & set(joined.columns)


def test_target_table_errors(tmp_path, raw, db) -> None:
    tf = _target_frame(raw, 10)
    p = tmp_path / "t.csv"
    tf.drop(columns="GEOID").to_csv(p, index=False)
    with pytest.raises(InputDataError, match="no column 'GEOID'"):
        read_target_table(p, AREA)
    tf.to_csv(p, index=False)
    with pytest.raises(InputDataError, match="no column 'tile_count'"):
        read_target_table(p, "tile_count")
    tf.assign(solar_panel_area_divided_by_area="lots").to_csv(p, index=False)
    with pytest.raises(InputDataError, match="non-numeric"):
        read_target_table(p, AREA)
    x = tmp_path / "t.xlsx"
    x.write_bytes(b"")
    with pytest.raises(InputDataError, match="unsupported"):
        read_target_table(x, AREA)
    tf.assign(GEOID=[f"06{i:09d}" for i in range(10)]).to_csv(p, index=False)  # California ids
    with pytest.raises(InputDataError, match="no tract of the target table matches"):
        join_target(db, read_target_table(p, AREA), AREA)


def test_gpkg_without_the_layer(tmp_path, raw) -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    path = tmp_path / "m.gpkg"
    gpd.GeoDataFrame(_target_frame(raw, 3), geometry=[Point(0, 0)] * 3, crs=4326).to_file(
        path, layer="panels"
    )
    with pytest.raises(InputDataError, match="no layer 'tracts'"):
        read_target_table(path, AREA)


def test_default_target_is_the_papers_deployment_density_shown_per_thousand_households() -> None:
    assert DEFAULT_TARGET == PH
    assert target_units(PH) == (1000.0, "systems per 1000 households")
    assert target_units(AREA) == (1.0, "m² per mi²")
    assert target_units("solar_system_count") == (1.0, "systems")


def test_deepsolar_deployment_density_is_residential_systems_over_households(raw) -> None:
    """The definition we reproduce on our own map output, checked on every real VA tract."""
    ours = deployment_density(raw["solar_system_count_residential"], raw["household_count"])
    theirs = raw[PH].replace([np.inf, -np.inf], np.nan)
    assert ours.notna().sum() > 1800
    np.testing.assert_allclose(ours.dropna(), theirs[ours.notna()], rtol=1e-9)
    assert ours[raw["household_count"] == 0].isna().all()  # DeepSolar: inf (or NaN)


def _our_map_tracts(raw: pd.DataFrame, n: int = 200, **extra) -> pd.DataFrame:
    """A tract table shaped like map-region's: our system counts (the real VA counts, x3 so the
    source is recognisable), area density, no households unless given."""
    t = raw.head(n)
    return pd.DataFrame(
        {
            "GEOID": t["fips"].to_numpy(),
            "solar_system_count": 3 * t["solar_system_count"].to_numpy(),
            "solar_system_count_residential": 3 * t["solar_system_count_residential"].to_numpy(),
            AREA: 3 * t[AREA].to_numpy(),
            **extra,
        }
    )


def test_map_output_gets_the_deployment_density_from_our_systems_and_feature_households(
    tmp_path, raw, db
) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    tf = _our_map_tracts(raw, scanned_fraction=np.r_[np.full(150, 1.0), np.full(50, 0.4)])
    geo = gpd.GeoDataFrame(tf, geometry=[box(i, 0, i + 1, 1) for i in range(len(tf))], crs=4326)
    path = tmp_path / "region.gpkg"
    geo.to_file(path, layer="tracts", driver="GPKG")
    households = db.table.set_index("fips")["household_count"]
    tt = read_target_table(path, [PH, AREA, "solar_system_count"], households=households)
    assert tt.attrs["derived"] == [PH] and tt.attrs["partially_scanned_tracts"] == 50
    hh = raw.head(200)["household_count"].to_numpy(float)
    expected = np.where(
        hh > 0, tf["solar_system_count_residential"] / np.where(hh > 0, hh, 1), np.nan
    )
    np.testing.assert_allclose(tt[PH].to_numpy(), expected)
    # three times DeepSolar's own density, since our counts are the real ones x3
    real = raw.head(200)[PH].replace([np.inf, -np.inf], np.nan).to_numpy()
    ok = np.isfinite(real) & (hh > 0)
    np.testing.assert_allclose(tt[PH].to_numpy()[ok], 3 * real[ok], rtol=1e-9)
    joined = join_target(db, tt, [PH, AREA, "solar_system_count"])
    assert len(joined) == 200
    np.testing.assert_allclose(joined.set_index("fips").loc[tf["GEOID"], PH], tt[PH].to_numpy())


def test_map_output_households_and_existing_density_take_precedence(tmp_path, raw, db) -> None:
    households = db.table.set_index("fips")["household_count"]
    p = tmp_path / "t.csv"
    tf = _our_map_tracts(raw, 20, household_count=np.full(20, 100.0))
    tf.to_csv(p, index=False)
    tt = read_target_table(p, PH, households=households)  # the layer's own households win
    np.testing.assert_allclose(tt[PH], tf["solar_system_count_residential"] / 100.0)
    tf.assign(**{PH: 0.5}).to_csv(p, index=False)  # map-region already wrote the density
    tt = read_target_table(p, PH, households=households)
    assert tt.attrs["derived"] == [] and (tt[PH] == 0.5).all()
    _our_map_tracts(raw, 20).to_csv(p, index=False)
    with pytest.raises(InputDataError, match="no 'household_count'"):
        read_target_table(p, PH)
    _our_map_tracts(raw, 20).drop(columns="solar_system_count_residential").to_csv(p, index=False)
    with pytest.raises(InputDataError, match="or 'solar_system_count_residential'"):
        read_target_table(p, PH, households=households)


def test_tract_polygons_from_real_tiger_file(shared_data) -> None:
    zp = shared_data / "boundaries/tiger2010_tracts/tl_2010_11_tract10.zip"
    gdf = read_tract_polygons(f"zip://{zp}")
    assert gdf is not None and len(gdf) > 100
    assert gdf["GEOID"].str.fullmatch(r"11001\d{6}").all()  # DC
    assert set(gdf.geom_type) <= {"Polygon", "MultiPolygon"}
