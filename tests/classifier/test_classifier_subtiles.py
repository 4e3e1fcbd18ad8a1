"""Ground resolution: chips much larger than a tile are cut into tile-sized, mask-labelled cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepsolar.classifier.config import ManifestSource, SubtileConfig
from deepsolar.classifier.data import Chip, ChipDataset, load_source
from deepsolar.classifier.model import preprocess
from deepsolar.classifier.subtiles import (
    AMBIGUOUS,
    cell_labels,
    cells_per_side,
    chip_ground_m_per_px,
    chip_level,
    expand_chips,
    grid_windows,
    split_chip,
)

CFG = SubtileConfig(footprint_m=20.0, min_positive_px=4)


def test_cells_per_side_follows_the_ground_width():
    assert cells_per_side(640, 0.15, CFG) == 5  # 96 m -> 5 cells of 19.2 m
    assert cells_per_side(416, 0.2, CFG) == 4  # 83 m
    assert cells_per_side(320, 0.06, CFG) == 1  # a DeepSolar tile: not cut
    assert cells_per_side(200, 0.15, CFG) == 1  # 30 m <= 20 m x 1.5
    assert cells_per_side(640, None, CFG) == 1  # unknown resolution: not cut


@pytest.mark.parametrize(("w", "h", "n"), [(640, 640, 5), (416, 400, 4), (7, 9, 3)])
def test_grid_windows_tile_the_image_exactly(w, h, n):
    cover = np.zeros((h, w), dtype=int)
    windows = grid_windows(w, h, n)
    assert len(windows) == n * n
    for left, top, right, bottom in windows:
        assert right > left and bottom > top
        cover[top:bottom, left:right] += 1
    assert (cover == 1).all()


def test_cell_labels_positive_negative_ambiguous():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:3, 0:3] = True  # 9 px in the first cell
    mask[9, 9] = True  # 1 px in the last
    labels = cell_labels(mask, grid_windows(10, 10, 2), min_positive_px=4)
    assert labels == [1, 0, 0, AMBIGUOUS]


def _chip_with_mask(tmp_path: Path, mask: np.ndarray, gsd: float | None = 0.2) -> Chip:
    h, w = mask.shape
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "c_mask.png")
    return Chip(tmp_path / "c.png", int(mask.any()), "synthetic", tmp_path / "c_mask.png",
                ground_m_per_px=gsd)  # fmt: skip


def test_split_expand_and_aggregate_a_synthetic_chip(tmp_path):
    mask = np.zeros((400, 400), dtype=bool)  # 80 m at 0.2 m/px -> 4 x 4 cells of 100 px
    mask[10:30, 10:30] = True  # cell 0: 400 px
    mask[399, 399] = True  # cell 15: 1 px -> ambiguous
    chip = _chip_with_mask(tmp_path, mask)
    cells = split_chip(chip, CFG)
    assert len(cells) == 16 and cells[0].window == (0, 0, 100, 100)
    assert [c.label for c in cells].count(1) == 1 and cells[15].label == AMBIGUOUS
    train = expand_chips([chip], CFG, training=True)
    assert len(train) == 15 and all(c.label in (0, 1) for c in train)
    capped = expand_chips([chip], CFG.model_copy(update={"negatives_per_chip": 2}), training=True)
    assert [c.label for c in capped].count(0) == 2 and [c.label for c in capped].count(1) == 1
    assert capped == expand_chips(
        [chip], CFG.model_copy(update={"negatives_per_chip": 2}), training=True
    )  # seeded
    evaluation = expand_chips([chip], CFG, training=False)
    assert len(evaluation) == 16 and evaluation[15].label == 1  # it holds PV pixels
    probs = np.linspace(0.0, 0.9, 16)
    chips, labels, best = chip_level(evaluation, probs)
    assert len(chips) == 1 and chips[0].window is None
    assert labels.tolist() == [1] and best.tolist() == [pytest.approx(0.9)]


def test_positive_chip_without_mask_stays_whole_for_training(tmp_path):
    chip = _chip_with_mask(tmp_path, np.ones((400, 400), dtype=bool))
    chip = Chip(chip.path, 1, "synthetic", None, ground_m_per_px=0.2)
    assert expand_chips([chip], CFG, training=True) == [chip]
    assert len(expand_chips([chip], CFG, training=False)) == 16
    assert expand_chips([chip], None, training=True) == [chip]


def test_dataset_reads_the_cell_window(tmp_path):
    mask = np.zeros((400, 400), dtype=bool)
    chip = _chip_with_mask(tmp_path, mask)
    cell = split_chip(chip, CFG)[5]  # window (100, 100, 200, 200)
    item = ChipDataset([cell], 64)[0]
    expected = preprocess(Image.open(chip.path).convert("RGB").crop(cell.window), 64)
    torch.testing.assert_close(item["image"], expected)
    assert item["error"] == ""


def test_geotiff_resolution_comes_from_its_transform(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "chip.tif"
    with rasterio.open(path, "w", driver="GTiff", width=600, height=600, count=3, dtype="uint8",
                       crs="EPSG:3857", transform=from_origin(0, 0, 0.1, 0.1)) as ds:  # fmt: skip
        ds.write(np.zeros((3, 600, 600), dtype=np.uint8))
    assert chip_ground_m_per_px(Chip(path, 0, "synthetic")) == pytest.approx(0.1)
    assert len(split_chip(Chip(path, 0, "synthetic"), CFG)) == 9  # 60 m -> 3 x 3 cells
    assert chip_ground_m_per_px(Chip(tmp_path / "x.png", 0, "s", ground_m_per_px=0.3)) == 0.3


def test_real_skylight_chip_cells_keep_every_pv_pixel(shared_data):
    src = ManifestSource(path=shared_data / "pv_chips/skylight_roof/manifest.csv", split="valid",
                         ground_m_per_px=0.15)  # fmt: skip
    chips = [c for c in load_source(src) if c.label == 1][:3]
    assert chips and all(c.ground_m_per_px == 0.15 for c in chips)
    for chip in chips:
        cells = split_chip(chip, SubtileConfig())
        assert len(cells) == 25
        assert any(c.label in (1, AMBIGUOUS) for c in cells)
