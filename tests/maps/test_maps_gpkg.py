"""GeoPackage 1.2 with default QGIS styles, PNG maps and tables (read back with GDAL/sqlite)."""

from __future__ import annotations

import re
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from deepsolar.core.errors import InputDataError
from deepsolar.maps.aggregate import DEFAULT_DENSITY_FIELD
from deepsolar.maps.gpkg import (
    GPKG_APPLICATION_ID,
    GPKG_USER_VERSION_1_2,
    class_breaks,
    default_style,
    write_choropleth_png,
    write_run_geopackage,
    write_tables,
)

LAYERS = ["scan_footprint", "tiles", "panels", "systems", "tracts", "counties", "states"]


def style_rows(path: Path) -> pd.DataFrame:
    with sqlite3.connect(path) as con:
        df = pd.read_sql(
            "SELECT f_table_catalog, f_table_schema, typeof(f_table_schema) AS schema_type, "
            "f_table_name, f_geometry_column, styleName, styleQML, useAsDefault FROM layer_styles",
            con,
        )
    return df.set_index("f_table_name")


def test_geopackage_is_version_1_2_with_all_layers(run_gpkg, run_layers):
    with sqlite3.connect(run_gpkg) as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == GPKG_APPLICATION_ID
        assert con.execute("PRAGMA user_version").fetchone()[0] == GPKG_USER_VERSION_1_2
        geom_cols = dict(con.execute("SELECT table_name, column_name FROM gpkg_geometry_columns"))
    layers = dict(pyogrio.list_layers(run_gpkg))
    assert set(LAYERS) <= set(layers)
    assert layers["layer_styles"] is None  # an attributes table
    for name in LAYERS:
        back = gpd.read_file(run_gpkg, layer=name)
        assert len(back) == len(run_layers[name]), name
        assert back.crs.to_epsg() == 4326
        assert name in geom_cols
    tracts = gpd.read_file(run_gpkg, layer="tracts")
    assert tracts.GEOID.str.len().eq(11).all()  # FIPS kept as text
    assert set(layers[n] for n in ("panels", "systems", "tracts")) == {"MultiPolygon"}


def test_every_layer_has_one_default_style_qgis_will_pick_up(run_gpkg):
    rows = style_rows(run_gpkg)
    assert set(rows.index) == set(LAYERS)
    assert (rows.schema_type == "text").all() and (rows.f_table_schema == "").all()
    assert (rows.f_table_catalog == "").all()
    assert (rows.useAsDefault == 1).all()
    assert (rows.f_geometry_column == "geom").all()
    for name, row in rows.iterrows():
        root = ET.fromstring(row.styleQML.split("\n", 1)[1])  # after the DOCTYPE line
        renderer = root.find("renderer-v2")
        aliases = {a.get("field"): a.get("name") for a in root.iter("alias")}
        assert aliases["data_label"] == "Data label"
        if name in ("tracts", "counties", "states", "tiles", "scan_footprint"):
            assert renderer.get("type") == "RuleRenderer"
        else:
            assert renderer.get("type") == "singleSymbol"
        if name in ("tracts", "counties", "states"):
            head = renderer.find("rules/rule")
            # the legend's first line: the field's readable name with its unit, and the column
            assert head.get("label") == (
                f"Panel density, scanned area (m²/sq mi)\nfield: {DEFAULT_DENSITY_FIELD}"
            )
            assert head.get("symbol") is None and head.get("filter") is None
            top = [r.get("label") for r in renderer.findall("rules/rule")]
            assert top[1].startswith("partially scanned (< 90% of area scanned)")
            assert root.get("labelsEnabled") == "1"
            assert '"scan_note"' in root.find("labeling/settings/text-style").get("fieldName")
            assert aliases["panel_area_m2_lo95"] == "Panel area, whole unit, 95% interval low (m²)"
        if name == "tiles":
            labels = [r.get("label") for r in renderer.iter("rule")]
            assert labels[1:3] == ["classified positive (solar)", "classified negative"]
        if name == "systems":
            props = {p.get("k"): p.get("v") for p in renderer.iter("prop")}
            assert props["style"] == "no"  # outlined, not filled
            assert float(props["outline_width"]) >= 0.5
            assert aliases["capacity_kw"] == "Estimated capacity (kW)"


def test_choropleth_classes_are_computed_from_the_data(run_gpkg, run_layers):
    qml = style_rows(run_gpkg).loc["tracts", "styleQML"]
    root = ET.fromstring(qml.split("\n", 1)[1])
    head = root.find("renderer-v2/rules/rule")
    filters = [r.get("filter") for r in head.findall("rule")]
    nums = [[float(x) for x in re.findall(r"[<>]=? ([0-9.]+)", f)] for f in filters]
    ranges = [(lo, hi) for lo, hi in nums]
    vals = run_layers["tracts"][DEFAULT_DENSITY_FIELD].dropna()
    assert len(ranges) == 5
    assert ranges[0][0] == vals.min() and ranges[-1][1] == vals.max()  # exact ends
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    expected = class_breaks(vals, 5, "jenks")
    np.testing.assert_allclose([r[0] for r in ranges] + [ranges[-1][1]], expected)
    assert ">=" in filters[0] and all(" > " in f for f in filters[1:])  # no gaps, no overlaps
    syms = {s.get("name"): s for s in root.find("renderer-v2/symbols")}
    colours = [
        {p.get("k"): p.get("v") for p in syms[r.get("symbol")].iter("prop")}["color"]
        for r in head.findall("rule")
    ]
    assert len(set(colours)) == 5  # a ramp, not one colour
    # every density falls in exactly one class
    for v in vals:
        assert (
            sum(lo <= v <= hi if i == 0 else lo < v <= hi for i, (lo, hi) in enumerate(ranges)) == 1
        )


def test_synthetic_geopackage_is_labelled_in_its_metadata(run_gpkg):
    with sqlite3.connect(run_gpkg) as con:
        contents = dict(con.execute("SELECT table_name, description FROM gpkg_contents"))
        ident = dict(con.execute("SELECT table_name, identifier FROM gpkg_contents"))
        md = con.execute(
            "SELECT r.reference_scope, r.table_name, m.md_scope, m.metadata "
            "FROM gpkg_metadata_reference r JOIN gpkg_metadata m ON m.id = r.md_file_id"
        ).fetchall()
        ext = {r[0] for r in con.execute("SELECT table_name FROM gpkg_extensions")}
    for name in LAYERS:
        assert contents[name].startswith("SYNTHETIC: "), name
        assert ident[name] == f"{name} (SYNTHETIC)"
        # unit layers say what their interval columns are
        assert ("95% interval" in contents[name]) == (name in ("tracts", "counties", "states"))
    whole = [m for m in md if m[0] == "geopackage"]
    assert whole and "SYNTHETIC" in whole[0][3]
    assert "SYNTHETIC systems on real boundaries" in whole[0][3]  # the note
    assert "synthetic_run" in whole[0][3]  # where the figures came from
    per_table = {m[1] for m in md if m[0] == "table" and "SYNTHETIC" in m[3]}
    assert per_table >= set(LAYERS)
    assert {"gpkg_metadata", "gpkg_metadata_reference"} <= ext  # the extension is registered
    for name in LAYERS:
        back = gpd.read_file(run_gpkg, layer=name)
        assert (back["data_label"] == "SYNTHETIC").all(), name


def test_unlabelled_geopackage_has_no_label(tmp_path, run_layers):
    out = write_run_geopackage(tmp_path / "real.gpkg", {"tiles": run_layers["tiles"]})
    with sqlite3.connect(out) as con:
        desc = con.execute("SELECT description FROM gpkg_contents").fetchone()[0]
    assert "SYNTHETIC" not in desc
    assert "data_label" not in gpd.read_file(out, layer="tiles").columns


def test_class_breaks():
    rng = np.random.default_rng(0)
    clusters = np.r_[rng.normal(0, 1, 100), rng.normal(20, 1, 100), rng.normal(50, 1, 100)]
    jb = class_breaks(clusters, 3, "jenks")
    assert len(jb) == 4
    # natural breaks: each class ends at the top of one cluster
    assert jb[1] == clusters[:100].max() and jb[2] == clusters[100:200].max()
    q = class_breaks(np.arange(101.0), 4, "quantile")
    assert q == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert class_breaks(np.arange(11.0), 5, "equal") == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    zeros = np.r_[np.zeros(800), rng.exponential(5.0, 200)]
    z = class_breaks(zeros, 5, "quantile")
    assert z == sorted(set(z)) and z[0] == 0.0  # duplicate zero edges dropped
    assert class_breaks([], 5) == []
    assert class_breaks([np.nan, np.inf, 2.0], 5) == [2.0, 2.0]
    big = rng.lognormal(3, 1, 200_000)
    bb = class_breaks(big, 5, "jenks")
    assert bb[0] == big.min() and bb[-1] == big.max() and len(bb) == 6
    with pytest.raises(InputDataError, match="method"):
        class_breaks([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 3, "kmeans")


def test_custom_style_override_and_point_layers(tmp_path, run_layers):
    pts = gpd.GeoDataFrame(
        {"area_m2": [1.0, 2.0]}, geometry=shapely.points([-71, -71.1], [42, 42.1]), crs=4326
    )
    qml, _ = default_style("tiles", run_layers["tiles"])
    out = write_run_geopackage(
        tmp_path / "x.gpkg", {"systems": pts, "tiles": run_layers["tiles"]}, styles={"tiles": qml}
    )
    rows = style_rows(out)
    assert rows.loc["tiles", "styleQML"] == qml
    assert "SimpleMarker" in rows.loc["systems", "styleQML"]
    assert dict(pyogrio.list_layers(out))["systems"] == "Point"


def test_infinities_become_null_and_nullable_columns_survive(tmp_path):
    gdf = gpd.GeoDataFrame(
        {
            "ratio": [1.0, np.inf, -np.inf],
            "n": pd.array([1, None, 3], dtype="Int64"),
            "name": pd.array(["a", None, "c"], dtype="string"),
            "flag": [True, False, True],
        },
        geometry=[shapely.box(0, 0, 1, 1)] * 3,
        crs=4326,
    )
    out = write_run_geopackage(tmp_path / "n.gpkg", {"units": gdf}, density_field="ratio")
    back = gpd.read_file(out, layer="units")
    assert back.ratio.iloc[0] == 1.0 and back.ratio.iloc[1:].isna().all()
    assert back.n.iloc[0] == 1 and np.isnan(back.n.iloc[1])
    assert back.name.iloc[0] == "a" and pd.isna(back.name.iloc[1])
    assert back.flag.tolist() == [True, False, True]


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, run_layers):
    target = tmp_path / "run.gpkg"
    write_run_geopackage(target, {"tiles": run_layers["tiles"]})
    before = target.read_bytes()
    bad = run_layers["tiles"].copy()
    bad["fid"] = "text"  # GDAL refuses a text column named like the GeoPackage's primary key
    with pytest.raises(Exception):  # noqa: B017 - whatever GDAL raises, nothing may be left
        write_run_geopackage(target, {"tiles": run_layers["tiles"], "bad": bad})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.gpkg"]


@pytest.mark.parametrize(
    "layers, match",
    [
        ({}, "no layers"),
        ({"t": pd.DataFrame({"a": [1]})}, "not a GeoDataFrame"),
        ({"t": gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)])}, "no CRS"),
        ({"layer_styles": gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs=4326)}, "name"),
    ],
)
def test_bad_layers_get_one_clear_error(tmp_path, layers, match):
    with pytest.raises(InputDataError, match=match):
        write_run_geopackage(tmp_path / "x.gpkg", layers)
    assert not list(tmp_path.iterdir())


def test_png_maps_are_real_pictures(run_outputs):
    import matplotlib.image as mpimg

    for name in ("tracts", "counties", "states"):
        p = run_outputs["maps"][name]
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        rgb = (mpimg.imread(p)[..., :3] * 255).astype(np.uint32)
        colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
        assert len(colours) > 10, name  # ramp classes, outlines, legend text
        footprint_blue = (8 << 16) | (81 << 8) | 156  # #08519c: the scanned footprint's outline
        assert footprint_blue in set(colours.tolist()), name


def test_png_needs_the_field(tmp_path, run_layers):
    with pytest.raises(InputDataError, match="no column"):
        write_choropleth_png(run_layers["tiles"], tmp_path / "x.png")


def test_tables_csv_and_parquet(run_outputs, run_layers, tmp_path):
    for name in ("systems", "tracts"):
        csv_path, pq_path = run_outputs["tables"][name]
        csv = pd.read_csv(csv_path, dtype={"GEOID": str})
        pq = pd.read_parquet(pq_path)
        assert len(csv) == len(pq) == len(run_layers[name])
        assert "geometry" not in csv.columns and "geometry" not in pq.columns
        if name == "tracts":
            assert pq.GEOID.str.len().eq(11).all()
            assert not np.isinf(pq.select_dtypes("number").to_numpy()).any()
    with pytest.raises(InputDataError, match="format"):
        write_tables(tmp_path, {"t": run_layers["tiles"]}, formats=("xlsx",))
