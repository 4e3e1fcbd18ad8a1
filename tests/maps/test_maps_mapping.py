"""Segmented tile store -> map layers, and accuracy against truth, on hand-made masks."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shapely.geometry import box

from deepsolar.core.errors import InputDataError
from deepsolar.geo.boundaries import load_units
from deepsolar.geo.tiling import TileGrid
from deepsolar.imagery.manifest import TileRecord, tile_relpath, write_manifest
from deepsolar.maps.accuracy import region_scores, tile_scores
from deepsolar.maps.aggregate import scanned_geometry
from deepsolar.maps.gpkg import outputs_summary
from deepsolar.maps.mapping import MapOutputsConfig, build_map_layers, write_region_maps
from deepsolar.maps.polygons import equal_area_m2

# Albuquerque, inside the built-in tracts
LON, LAT = -106.5175, 35.1105


@pytest.fixture()
def store(tmp_path):
    """3 x 2 tiles of 320 px; one 'panel' square straddling the border of tiles (0,0) and (1,0)."""
    grid = TileGrid(21, 320)
    base = grid.tile_at(LON, LAT)
    records, rows = [], []
    for dy in range(2):
        for dx in range(3):
            t = grid.tile(base.x + dx, base.y + dy)
            rel = tile_relpath(t)
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((320, 320, 3), np.uint8)).save(tmp_path / rel)
            records.append(TileRecord.for_tile(t, "hand-made", "ok", path=rel, checksum="x"))
            mask = np.zeros((320, 320), np.uint8)
            if (dx, dy) == (0, 0):
                mask[100:200, 220:320] = 255  # right edge of the first tile ...
            if (dx, dy) == (1, 0):
                mask[100:200, 0:60] = 255  # ... continues into the second
            positive = bool(mask.any())
            mrel = None
            if positive:
                mrel = "masks/" + rel
                (tmp_path / mrel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(tmp_path / mrel)
            px_area = t.pixel_area_m2
            rows.append(
                {"tile_id": t.id, "prob": 0.9 if positive else 0.1, "is_positive": positive,
                 "mask_path": mrel, "area_m2": float((mask > 0).sum() * px_area), "error": None}
            )  # fmt: skip
    write_manifest(records, tmp_path / "manifest.gpkg")
    pd.DataFrame(rows).to_parquet(tmp_path / "segmentation.parquet")
    return tmp_path, base


def test_pieces_across_tiles_merge_into_one_system_in_its_tract(store) -> None:
    root, base = store
    layers = build_map_layers(root)
    assert set(layers) == {
        "scan_footprint", "tiles", "panels", "systems", "tracts", "counties", "states"
    }  # fmt: skip
    assert int(layers["scan_footprint"]["n_tiles"].iloc[0]) == 6
    assert len(layers["tiles"]) == 6 and layers["tiles"]["is_positive"].sum() == 2
    assert len(layers["panels"]) == 2
    systems = layers["systems"]
    assert len(systems) == 1 and int(systems["tile_count"].iloc[0]) == 2
    # 100 x 160 pixels of ~0.061 m: ~59.7 m² (exact pixel areas, equal-area CRS)
    expected = 100 * 160 * base.pixel_area_m2
    assert systems["area_m2"].iloc[0] == pytest.approx(expected, rel=0.01)
    tracts = layers["tracts"]
    hit = tracts[tracts["solar_system_count"] > 0]
    # independent check: the tract that contains the system's representative point
    units = load_units("tract")
    rp = systems.geometry.representative_point().iloc[0]
    assert list(hit["GEOID"]) == list(units[units.contains(rp)]["GEOID"])
    assert hit["total_panel_area"].iloc[0] == pytest.approx(expected, rel=0.01)
    assert int(hit["tile_count"].iloc[0]) == 2  # distinct tiles holding the system
    # 6 tiles cover a sliver of the tract: no density, a note, the scanned area beside it
    assert np.isnan(hit["panel_area_m2_per_mi2_scanned"].iloc[0])
    assert hit["scan_status"].iloc[0] == "partial"
    assert hit["scan_note"].iloc[0].endswith("scanned (< 90%): no density")
    assert hit["scanned_area_m2"].iloc[0] == pytest.approx(
        6 * 320 * 320 * base.pixel_area_m2, rel=0.01
    )
    assert list(layers["counties"]["GEOID"]) == ["35001"]
    assert list(layers["states"]["GEOID"]) == ["35"]


def test_region_maps_are_written(store, tmp_path) -> None:
    root, _ = store
    res = write_region_maps(root, tmp_path / "maps")
    gpkg = res["paths"]["geopackage"]
    assert set(gpd.list_layers(gpkg)["name"]) >= {"scan_footprint", "tiles", "systems", "tracts"}
    assert res["counts"]["systems"] == 1
    assert res["paths"]["data_label"] is None  # a real-looking run is not labelled
    assert "tile store" in res["paths"]["provenance"]
    lines = "\n".join(outputs_summary(res["paths"]))
    for what in ("GeoPackage", "maps (PNG)", "tables (csv/parquet)", "figures computed from"):
        assert what in lines
    # a note saying SYNTHETIC labels the GeoPackage itself
    syn = write_region_maps(root, tmp_path / "syn", MapOutputsConfig(note="SYNTHETIC scene"))
    assert syn["paths"]["data_label"] == "SYNTHETIC"
    tracts = gpd.read_file(syn["paths"]["geopackage"], layer="tracts")
    assert (tracts["data_label"] == "SYNTHETIC").all()


def test_missing_segmentation_is_a_clear_error(tmp_path) -> None:
    write_manifest([], tmp_path / "manifest.gpkg")
    with pytest.raises(InputDataError, match="run the segment-tiles flow"):
        build_map_layers(tmp_path)


def test_accuracy_against_truth(store) -> None:
    root, base = store
    layers = build_map_layers(root)
    tiles = layers["tiles"]
    # truth = the detected system itself: zero error everywhere
    truth = layers["systems"][["geometry"]].copy()
    scanned = scanned_geometry(tiles)
    tracts = load_units("tract")
    tracts = tracts[tracts.intersects(scanned)]
    s = region_scores(layers["systems"], truth, tracts, scanned)
    assert s["systems_detected"] == s["systems_true"] == 1
    assert s["area_total_rel_error"] == pytest.approx(0.0, abs=1e-4)  # pixel vs outline area
    t = tile_scores(tiles, truth, min_pv_area_m2=1.0)
    assert (t["tp"], t["fp"], t["fn"]) == (2, 0, 0) and t["precision"] == 1.0
    # a truth array in a third tile that was missed: recall 2/3, area error negative
    w, s_, e, n = (
        layers["tiles"].set_index("tile_id").loc[f"21-320-{base.x + 2}-{base.y}"].geometry.bounds
    )
    extra = gpd.GeoDataFrame(geometry=[box(w + (e - w) * 0.3, s_ + (n - s_) * 0.3,
                                           w + (e - w) * 0.6, s_ + (n - s_) * 0.6)], crs=4326)  # fmt: skip
    truth2 = pd.concat([truth, extra], ignore_index=True)
    t2 = tile_scores(tiles, truth2, min_pv_area_m2=1.0)
    assert (t2["tp"], t2["fn"]) == (2, 1) and t2["recall"] == pytest.approx(2 / 3)
    # bootstrap intervals: precision is 1 in every resample; recall's spans the point estimate
    assert t2["precision_lo"] == t2["precision_hi"] == 1.0
    assert 0.0 <= t2["recall_lo"] < 2 / 3 < t2["recall_hi"] <= 1.0
    s2 = region_scores(layers["systems"], truth2, tracts, scanned)
    true_area = float(equal_area_m2(truth2).sum())
    assert s2["area_true_m2"] == pytest.approx(true_area, rel=1e-6)
    assert s2["area_total_rel_error"] < 0 and s2["systems_true"] == 2


def test_map_layers_carry_intervals_from_the_classifier_checkpoint(store, tmp_path) -> None:
    root, _ = store
    # default threshold: the 6-tile scan is a sliver of its tract, so no density and no interval
    layers = build_map_layers(root, classifier_checkpoint="builtin")
    hit = layers["tracts"][layers["tracts"]["solar_system_count"] > 0].iloc[0]
    assert np.isnan(hit["panel_area_m2_lo95"]) and np.isnan(hit["panel_area_m2_per_mi2_scanned"])
    assert "TP 96, FP 12, FN 8" in layers["tracts"].attrs["detector_counts"]
    # every scanned unit reported: a (wide) interval around the whole-tract expansion estimate
    cfg = MapOutputsConfig(aggregate={"min_scanned_fraction": 0, "uncertainty": {"draws": 500}})
    res = write_region_maps(root, tmp_path / "m", cfg, classifier_checkpoint="builtin")
    tracts = gpd.read_file(res["paths"]["geopackage"], layer="tracts")
    hit = tracts[tracts["solar_system_count"] > 0].iloc[0]
    assert 0 <= hit["panel_area_m2_lo95"] < hit["panel_area_m2_hi95"]
    assert hit["solar_system_count_lo95"] <= hit["solar_system_count_hi95"]
    assert "500 Monte Carlo draws" in res["paths"]["provenance"]["95% intervals"]
