"""Area of masks (hand calculations) and evaluation metrics (hand counts)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from affine import Affine

from deepsolar.core.errors import InputDataError
from deepsolar.geo.tiling import TileGrid
from deepsolar.segmentation.area import mask_area_m2_tile, mask_area_m2_transform
from deepsolar.segmentation.evaluate import (
    dice,
    iou,
    mask_counts,
    per_tile_relative_error,
    regional_relative_error,
    summarise,
)

R = 6378137.0


def test_area_of_one_row_on_a_known_tile_by_hand():
    tile = TileGrid(21, 80).tile_at(-106.65, 35.08)
    mask = np.zeros((80, 80), np.uint8)
    mask[0, :50] = 255
    # hand: Mercator y of the first row's centre -> latitude -> (world m/px * cos(lat))^2
    top = math.pi * R - tile.y * 80 * (2 * math.pi * R / (256 * 2**21))
    res = 2 * math.pi * R / (256 * 2**21)
    lat = 2 * math.atan(math.exp((top - 0.5 * res) / R)) - math.pi / 2
    expected = 50 * (res * math.cos(lat)) ** 2
    assert mask_area_m2_tile(mask, tile) == pytest.approx(expected, rel=1e-12)
    assert 50 * 0.0025 < expected < 50 * 0.005  # ~0.06 m/px at 35 N


def test_full_and_centred_masks_match_the_tile_centre_figures():
    tile = TileGrid(21, 320).tile_at(-71.06, 42.36)
    full = np.ones((320, 320), bool)
    assert mask_area_m2_tile(full, tile) == pytest.approx(tile.width_m**2, rel=1e-6)
    block = np.zeros((320, 320), bool)
    block[110:210, 60:160] = True
    assert mask_area_m2_tile(block, tile) == pytest.approx(1e4 * tile.pixel_area_m2, rel=1e-6)
    # a coarser mask over the same tile covers the same ground
    assert mask_area_m2_tile(np.ones((80, 80), bool), tile) == pytest.approx(
        tile.width_m**2, rel=1e-6
    )


def test_area_from_a_projected_raster_transform():
    mask = np.zeros((20, 20), bool)
    mask[2:4, 5:10] = True  # 10 pixels
    tr = Affine(0.5, 0, 500000, 0, -0.5, 4000000)
    assert mask_area_m2_transform(mask, tr, "EPSG:32613") == pytest.approx(2.5)


def test_area_in_web_mercator_and_geographic_rasters():
    tile = TileGrid(21, 320).tile_at(-71.06, 42.36)
    m = np.zeros((320, 320), bool)
    m[10:50, 30:200] = True
    assert mask_area_m2_transform(m, tile.transform_3857, "EPSG:3857") == pytest.approx(
        mask_area_m2_tile(m, tile), rel=1e-9
    )
    geo = np.ones((1, 1), bool)  # one 1e-5 degree pixel on the equator: ~1.1132 m x 1.1057 m
    tr = Affine(1e-5, 0, 10.0, 0, -1e-5, 1e-5 / 2)
    assert mask_area_m2_transform(geo, tr, "EPSG:4326") == pytest.approx(
        1.113195 * 1.105743, rel=1e-4
    )


def test_bad_area_inputs_raise_one_clear_error():
    with pytest.raises(InputDataError, match="not metres"):
        mask_area_m2_transform(np.ones((2, 2)), Affine(1, 0, 0, 0, -1, 0), "EPSG:2263")
    with pytest.raises(InputDataError, match="2-D"):
        mask_area_m2_tile(np.ones((2, 2, 2)), TileGrid(21, 320).tile(0, 0))


def test_mask_metrics_against_hand_counts():
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
    truth = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], bool)
    assert mask_counts(pred, truth) == (2, 1, 2)
    assert iou(2, 1, 2) == pytest.approx(2 / 5)
    assert dice(2, 1, 2) == pytest.approx(4 / 7)
    assert math.isnan(iou(0, 0, 0))


def test_area_errors_against_hand_values():
    pred, true = np.array([12.0, 5.0, 3.0]), np.array([10.0, 10.0, 0.0])
    # per-tile: tiles with truth only: |12-10|/10 = 0.2, |5-10|/10 = 0.5 -> 0.35
    assert per_tile_relative_error(pred, true) == pytest.approx(0.35)
    # regional: |20 - 20| / 20 = 0: errors cancel, as DeepSolar notes
    assert regional_relative_error(pred, true) == pytest.approx(0.0)


def test_summarise_pipeline_vs_oracle():
    df = pd.DataFrame(
        {
            "is_positive": [True, False, True],
            "tp": [2, 0, 0], "fp": [1, 0, 4], "fn": [2, 3, 0],
            "o_tp": [2, 3, 0], "o_fp": [1, 0, 4], "o_fn": [2, 0, 0],
            "pred_area": [3.0, 0.0, 4.0], "o_pred_area": [3.0, 3.0, 4.0],
            "true_area": [4.0, 3.0, 0.0],
        }
    )  # fmt: skip
    s = summarise(df)
    assert s["pipeline_iou"] == pytest.approx(2 / (2 + 5 + 5))
    assert s["oracle_iou"] == pytest.approx(5 / (5 + 1 + 2))  # truth-positive tiles only
    assert s["pipeline_per_tile_area_error"] == pytest.approx((0.25 + 1.0) / 2)
    assert s["pipeline_regional_area_error"] == pytest.approx(0.0)
    assert s["oracle_per_tile_area_error"] == pytest.approx(0.125)
    assert s["oracle_mean_tile_iou"] == pytest.approx((2 / 5 + 1.0) / 2)
    assert (s["n_tiles"], s["n_truth_positive"], s["n_called_positive"]) == (3, 2, 2)
