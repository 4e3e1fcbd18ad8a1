"""Helpers for the maps tests (imported by conftest.py and the test modules).

The run built here has SYNTHETIC systems (rectangular arrays drawn as masks on real zoom-21 tiles
around Boston; scanned tracts chosen by size, see synthetic_run) on real boundaries: TIGER 2010 tracts of Suffolk County, MA, and the built-in
TIGER 2009 counties and states.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from deepsolar.geo.boundaries import load_tiger_tracts, load_units
from deepsolar.geo.tiling import TileGrid
from deepsolar.maps.aggregate import (
    ScanCoverage,
    aggregate_levels,
    scan_footprint_frame,
    tiles_frame,
)
from deepsolar.maps.merge import merge_panels_labelled
from deepsolar.maps.polygons import equal_area_m2, masks_to_polygons
from deepsolar.maps.uncertainty import DetectorCounts

SYSTEM_PYTHON = "/usr/bin/python3"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip locally, fail in CI (where .ci/install-qgis.sh must have installed the tools)."""
    if in_ci():
        pytest.fail(reason + " (CI=true: run .ci/install-qgis.sh)")
    pytest.skip(reason + " (install with .ci/install-qgis.sh)")


def system_python_has(module: str) -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    r = subprocess.run(
        [SYSTEM_PYTHON, "-c", f"import {module}"],
        capture_output=True,
        timeout=120,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    return r.returncode == 0


HALF_SCANNED_TRACT = "half_scanned_tract"  # key of synthetic_run's attrs


SUFFOLK_TRACTS = (
    Path(__file__).resolve().parent.parent / "fixtures/boundaries/tl_2010_25025_tract10.zip"
)


def synthetic_run(tracts_zip: Path = SUFFOLK_TRACTS) -> dict[str, gpd.GeoDataFrame]:
    """scan_footprint / tiles / panels / systems / tracts / counties / states for a small
    synthetic scan: the 12 smallest Suffolk tracts scanned completely (a different density of
    SYNTHETIC arrays in each), the west half of the 13th smallest, and 3x3-tile blocks in 30
    other tracts. ``attrs["half_scanned_tract"]`` is the GEOID of the half-scanned tract."""
    grid = TileGrid()  # zoom 21, 320 px: DeepSolar's grid
    rng = np.random.default_rng(7)
    tracts = load_tiger_tracts(tracts_zip)  # real TIGER 2010 tracts (tests/fixtures/boundaries)
    tracts = tracts[tracts["GEOID"].str.startswith("25025")].reset_index(drop=True)  # Suffolk
    counties = load_units("county")
    counties = counties[counties["STATEFP"] == "25"].reset_index(drop=True)
    states = load_units("state")
    states = states[states["STUSPS"].isin(["MA", "RI", "CT", "NH", "VT"])].reset_index(drop=True)

    def rect_mask() -> np.ndarray:
        mask = np.zeros((320, 320), dtype=bool)
        r0, c0 = rng.integers(0, 250, 2)
        mask[r0 : r0 + rng.integers(20, 70), c0 : c0 + rng.integers(20, 70)] = True
        return mask

    items, scanned = [], []
    by_size = tracts.assign(a=equal_area_m2(tracts)).sort_values("a")
    full, half = by_size.iloc[:12], by_size.iloc[12]
    for i, geom in enumerate(full.geometry):
        rate = 0.02 * (i + 1)  # a different panel density in each fully scanned tract
        for t in grid.tiles_for_geometry(geom):
            scanned.append(t)
            if rng.random() < rate:
                items.append((rect_mask(), t, float(rng.uniform(0.5, 1.0))))
    w, s, e, n = half.geometry.bounds
    west = half.geometry.intersection(shapely.box(w, s, (w + e) / 2, n))
    for t in grid.tiles_for_geometry(west):
        scanned.append(t)
        if rng.random() < 0.1:
            items.append((rect_mask(), t, float(rng.uniform(0.5, 1.0))))

    # 3x3-tile blocks around points inside 30 other random tracts.
    others = tracts[~tracts["GEOID"].isin([*full["GEOID"], half["GEOID"]])]
    pts = others.sample(30, random_state=1).representative_point()
    for p in pts:
        c = grid.tile_at(p.x, p.y)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                t = grid.tile(c.x + dx, c.y + dy)
                scanned.append(t)
                mask = rect_mask() if rng.random() < 0.5 else np.zeros((320, 320), dtype=bool)
                if dx == 0 and dy in (0, 1):  # one large array across two tiles
                    mask[300 if dy == 0 else 0 : 320 if dy == 0 else 60, 40:300] = True
                if mask.any():
                    items.append((mask, t, float(rng.uniform(0.5, 1.0))))
    panels = masks_to_polygons(items)
    systems, labels = merge_panels_labelled(panels)
    panels["system_id"] = labels
    cov = ScanCoverage()
    cov.add_tiles(scanned)
    agg = aggregate_levels(
        systems,
        {"tracts": tracts, "counties": counties, "states": states},
        scanned=cov,
        panels=panels,
        # the builtin model's held-out counts: the unit layers get their 95% interval columns
        detector=DetectorCounts(tp=96, fp=12, fn=8, source="builtin (valid splits)"),
    )
    ids = {t.id for (t,) in ((it[1],) for it in items)}
    uniq = list({t.id: t for t in scanned}.values())
    tiles = tiles_frame(uniq, is_positive=np.array([t.id in ids for t in uniq]))
    layers = {
        "scan_footprint": scan_footprint_frame(cov),
        "tiles": tiles,
        "panels": panels,
        "systems": systems,
        **agg,
    }
    agg["tracts"].attrs[HALF_SCANNED_TRACT] = str(half["GEOID"])
    return layers
