"""SYNTHETIC scene objects: exact truth polygons, mask vs occluders, look-alikes, colour realism."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from rasterio.features import rasterize

from deepsolar.synthetic import (
    COMMERCIAL_AREA_RANGE_M2,
    EQUAL_AREA_CRS,
    RESIDENTIAL_AREA_RANGE_M2,
    Label,
    SceneResult,
    read_truth,
)
from tests.synthetic.synthetic_helpers import footprint_lonlat

# ---------------------------------------------------------------------------------- truth


def test_truth_polygons_inside_valid_and_sized(small: SceneResult) -> None:
    panels = read_truth(small.truth_path)
    assert set(panels["kind"]) == {"residential", "commercial"}
    assert panels.crs.to_epsg() == 4326
    assert panels["synthetic"].all()
    assert panels["array_id"].is_unique
    footprint = footprint_lonlat(small)
    assert all(g.is_valid and footprint.contains(g) for g in panels.geometry)
    # area_m2 is the EPSG:5070 area of the polygon
    assert np.allclose(panels["area_m2"], panels.to_crs(EQUAL_AREA_CRS).area, rtol=1e-9)
    res = panels[panels.kind == "residential"]["area_m2"]
    com = panels[panels.kind == "commercial"]["area_m2"]
    assert res.between(*RESIDENTIAL_AREA_RANGE_M2).all()
    assert com.between(*COMMERCIAL_AREA_RANGE_M2).all()
    assert panels["occluded_fraction"].between(0, 1).all()
    assert (panels["occluded_fraction"] > 0.02).any(), "some arrays are partly hidden by trees"
    # arrays do not overlap one another
    ea = panels.to_crs(EQUAL_AREA_CRS).geometry
    assert shapely.union_all(ea.values).area == pytest.approx(ea.area.sum(), rel=1e-9)


def test_mask_matches_polygons_minus_occluders(
    small: SceneResult, small_arrays: dict[str, np.ndarray]
) -> None:
    panels = read_truth(small.truth_path).to_crs(small.crs)
    mask = small_arrays["mask"].astype(bool)
    px_m2 = small.m_per_px**2
    covered = np.zeros_like(mask)
    for _, row in panels.iterrows():
        fp = rasterize(
            [row.geometry], out_shape=mask.shape, transform=small.transform, dtype=np.uint8
        ).astype(bool)
        covered |= fp
        area = row["area_m2"]
        assert fp.sum() * px_m2 == pytest.approx(area, rel=0.03, abs=0.3)
        visible = (mask & fp).sum() * px_m2
        assert visible == pytest.approx(area * (1 - row["occluded_fraction"]), rel=0.03, abs=0.3)
        assert visible == pytest.approx(row["visible_area_m2"], rel=0.03, abs=0.3)
    assert not (mask & ~covered).any(), "every PV pixel belongs to a truth polygon"
    assert (mask == (small_arrays["labels"] == Label.PV)).all()
    assert ((small_arrays["labels"] == Label.TREE) & covered).any(), "trees hide some panel pixels"


def test_lookalikes_present_and_inside(small: SceneResult) -> None:
    look = read_truth(small.truth_path, "lookalikes")
    assert len(look) == small.n_lookalikes > 0
    assert set(look["kind"]) <= {"dark_roof", "skylight", "car", "pool"}
    assert {"dark_roof", "skylight"} <= set(look["kind"])
    assert look["synthetic"].all()
    footprint = footprint_lonlat(small).buffer(1e-7)
    assert all(footprint.contains(g) for g in look.geometry)


def test_colour_alone_does_not_separate_pv_from_lookalikes(
    small_arrays: dict[str, np.ndarray],
) -> None:
    img, labels = small_arrays["img"], small_arrays["labels"]
    pv = img[labels == Label.PV].astype(float)
    dark = img[np.isin(labels, [Label.DARK_ROOF, Label.SKYLIGHT])].astype(float)
    assert len(pv) > 1000 and len(dark) > 1000
    lo, hi = np.percentile(dark, 5, axis=0), np.percentile(dark, 95, axis=0)
    mean_pv = pv.mean(axis=0)
    assert ((mean_pv >= lo) & (mean_pv <= hi)).all(), (mean_pv, lo, hi)
