"""CAM threshold calibration (``deepsolar calibrate-cam --fit threshold``) on tiny
SYNTHETIC chips with masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepsolar.classifier.config import ImagesSource
from deepsolar.core.errors import InputDataError
from deepsolar.segmentation.calibrate import pick_threshold, threshold_sweep
from deepsolar.segmentation.config import CamConfig
from deepsolar.segmentation.evaluate import batched_items, items_cell_maps, iter_set, stitch_masks
from deepsolar.segmentation.pipeline import Segmenter
from tests.fixtures.commands import run_command_line


def synthetic_chip(rng: np.random.Generator, positive: bool, size: int = 80) -> np.ndarray:
    a = rng.integers(90, 170, (size, size, 3), dtype=np.uint8)
    if positive:  # a dark "panel" rectangle, the mask below
        a[size // 4 : size // 2, size // 5 : size // 2] = 25
    return a


@pytest.fixture(scope="module")
def masked_chips(tmp_path_factory):
    root = tmp_path_factory.mktemp("masked")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        positive = i % 2 == 0
        Image.fromarray(synthetic_chip(rng, positive)).save(root / "images" / f"{i}.png")
        mask = np.zeros((80, 80), np.uint8)
        if positive:
            mask[80 // 4 : 80 // 2, 80 // 5 : 80 // 2] = 255
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def _sweep(**kw) -> pd.DataFrame:
    rows = [dict(zip(("threshold", "area_ratio", "iou"), r, strict=True)) for r in kw["rows"]]
    df = pd.DataFrame(rows)
    df["true_area"] = 100.0
    df["pred_area"] = df["area_ratio"] * 100.0
    return df


def test_pick_threshold_matches_the_area_and_breaks_ties_by_iou():
    sweep = _sweep(rows=[(0.3, 1.6, 0.5), (0.5, 1.1, 0.4), (0.6, 0.9, 0.45), (0.8, 0.5, 0.2)])
    assert pick_threshold(sweep, "area") == 0.6  # |0.9-1| == |1.1-1|: the higher IoU wins
    assert pick_threshold(sweep, "iou") == 0.3
    with pytest.raises(ValueError):
        pick_threshold(sweep, "f1")
    empty = _sweep(rows=[(0.3, np.nan, np.nan)])
    empty["true_area"] = 0.0
    with pytest.raises(InputDataError, match="no PV pixel"):
        pick_threshold(empty)


@pytest.mark.parametrize("clean", [False, True])
def test_sweep_equals_the_pipeline_masks_at_each_threshold(
    tiny_classifier, tiny_segmenter, masked_chips, clean
):
    cam = CamConfig(floor=0.0, clean={"open_m": 0.5} if clean else {})
    seg = Segmenter.from_checkpoints(tiny_classifier, tiny_segmenter, cam, "cpu")
    src = ImagesSource(path=masked_chips, ground_m_per_px=0.1)
    grid = (0.2, 0.4, 0.6, 0.8)
    sweep = threshold_sweep(seg, [src], grid, batch_size=4)
    # the same by brute force: one stitch per threshold, what segment-tiles would keep
    expect = dict.fromkeys(grid, 0)
    true_px = 0
    for batch in batched_items(iter_set(src), 4):
        for item, cm in zip(batch, items_cell_maps(seg, batch, None), strict=True):
            true_px += int(item.truth.sum())
            for t in grid:
                expect[t] += int(stitch_masks(cm, t, seg.cam, seg.threshold).pipe["stage2"].sum())
    assert sweep["true_area"].iloc[0] == pytest.approx(true_px)
    assert sweep["pred_area"].tolist() == pytest.approx([expect[t] for t in grid])
    assert sweep["pred_area"].is_monotonic_decreasing  # a higher threshold never adds a pixel


def test_fit_threshold_from_the_command_line(tiny_classifier, tiny_segmenter, masked_chips, capsys):
    argv = ["--fit", "threshold", "--classifier", str(tiny_classifier), "--segmenter",
            str(tiny_segmenter), "--source", str(masked_chips), "--device", "cpu"]  # fmt: skip
    out = run_command_line("calibrate-cam", argv)
    assert "<- chosen" in out and "cam:\n  threshold: " in out
    chosen = float(out.split("threshold: ")[-1])
    assert 0.1 <= chosen <= 0.95
