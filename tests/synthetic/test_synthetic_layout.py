"""SYNTHETIC scene layout: where the default scene lies and what it contains."""

from __future__ import annotations

import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import Point, box
from sklearn.model_selection import cross_val_score
from sklearn.tree import DecisionTreeClassifier

from deepsolar.geo.tiling import (
    TileGrid,
)
from deepsolar.synthetic import (
    EQUAL_AREA_CRS,
    Label,
    SyntheticSceneConfig,
    generate_scene,
    read_truth,
    scene_georeference,
)
from tests.synthetic.synthetic_helpers import albuquerque_tracts, footprint_lonlat

# ---------------------------------------------------------------------------------- default scene


def test_default_centre_inside_tracts_and_scene_spans_three() -> None:
    tracts = albuquerque_tracts()
    cfg = SyntheticSceneConfig()
    centre = Point(cfg.center_lon, cfg.center_lat)
    assert tracts.geometry.contains(centre).sum() == 1
    transform, _ = scene_georeference(cfg)
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * cfg.width_px, top + transform.e * cfg.height_px
    scene = (
        gpd.GeoSeries([box(left, bottom, right, top)], crs=cfg.crs).to_crs(EQUAL_AREA_CRS).iloc[0]
    )
    overlap = tracts[tracts.to_crs(EQUAL_AREA_CRS).intersection(scene).area > 1.0]
    assert len(overlap) >= 3, overlap["STFID"].tolist()


@pytest.mark.slow
def test_default_scene(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    out = generate_scene(None, tmp_path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 120, f"default scene took {elapsed:.0f} s"
    assert (out.width_px, out.height_px) == (6400, 6400)
    panels = read_truth(out.truth_path)
    grid = TileGrid(21, 320)
    tiles = np.array([grid.count_tiles(g) for g in panels.geometry])
    assert (tiles >= 4).sum() >= 3, "several arrays span many 320 px tiles"
    assert (panels.kind == "residential").sum() >= 10 and (panels.kind == "commercial").sum() >= 3
    assert (panels["occluded_fraction"] > 0.02).sum() >= 3
    look = read_truth(out.truth_path, "lookalikes")
    assert set(look["kind"]) == {"dark_roof", "skylight", "car", "pool"}
    # the scene overlaps at least three built-in tracts
    tracts = albuquerque_tracts()
    scene = gpd.GeoSeries([footprint_lonlat(out)], crs="EPSG:4326").to_crs(EQUAL_AREA_CRS).iloc[0]
    assert (tracts.to_crs(EQUAL_AREA_CRS).intersection(scene).area > 1.0).sum() >= 3
    # a shallow colour rule (depth-3 tree on RGB) cannot separate PV from dark look-alikes
    with rasterio.open(out.image_path) as src:
        img = np.moveaxis(src.read(), 0, 2)
    with rasterio.open(out.labels_path) as src:
        labels = src.read(1)
    rng = np.random.default_rng(0)
    pv = img[labels == Label.PV]
    dark = img[np.isin(labels, [Label.DARK_ROOF, Label.SKYLIGHT])]
    n = 20000
    x = np.concatenate(
        [pv[rng.integers(0, len(pv), n)], dark[rng.integers(0, len(dark), n)]]
    ).astype(float)
    y = np.r_[np.ones(n), np.zeros(n)]
    acc = cross_val_score(
        DecisionTreeClassifier(max_depth=3), x, y, cv=3, scoring="balanced_accuracy"
    ).mean()
    assert acc < 0.85, f"colour alone separates PV from look-alikes too well ({acc:.2f})"
