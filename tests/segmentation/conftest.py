"""Tiny real components for the segmentation tests: a random-weight 75-px classifier checkpoint
(saved exactly as train-classifier saves one), labelled chips and a tile store. SYNTHETIC pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepsolar.geo.tiling import TileGrid
from deepsolar.imagery.manifest import TileRecord, tile_relpath, write_manifest
from tests.fixtures.classifiers import random_classifier_checkpoint

INPUT_PX = 75


def synthetic_chip(rng: np.random.Generator, positive: bool, size: int = 80) -> np.ndarray:
    a = rng.integers(90, 170, (size, size, 3), dtype=np.uint8)
    if positive:  # a dark "panel" rectangle
        a[size // 4 : size // 2, size // 5 : size // 2] = 25
    return a


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    def spread_head(model: torch.nn.Module) -> None:
        # Scale a random fc to the features' size so probabilities spread across tiles (instead
        # of all ~0.5 with the tiny default head, or all 0/1 with a large one).
        model.eval()
        rng = np.random.default_rng(5)
        x = torch.stack([torch.from_numpy(synthetic_chip(rng, i % 2 == 0, INPUT_PX)).permute(2, 0, 1)
                         for i in range(6)]).float() / 127.5 - 1  # fmt: skip
        with torch.no_grad():
            model.fc = torch.nn.Identity()
            pooled = model(x)
            model.fc = torch.nn.Linear(2048, 2)
            torch.nn.init.normal_(model.fc.weight)
            centred = pooled - pooled.mean(0)
            model.fc.weight.mul_(2.0 / (centred.norm(dim=1).mean() + 1e-6))
            model.fc.bias.copy_(-model.fc.weight @ pooled.mean(0))

    return random_classifier_checkpoint(tmp_path_factory.mktemp("clf"), INPUT_PX, spread_head)


@pytest.fixture(scope="session")
def tiny_chips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chips")
    rng = np.random.default_rng(1)
    for sub, pos in (("pos", True), ("neg", False)):
        (root / sub).mkdir()
        for i in range(4):
            Image.fromarray(synthetic_chip(rng, pos)).save(root / sub / f"{i}.png")
    return root


@pytest.fixture()
def tiny_store(tmp_path) -> Path:
    """A tile store of 5 zoom-21, 80-px tiles (one unreadable) with its manifest.gpkg."""
    grid = TileGrid(21, 80)
    base = grid.tile_at(-106.65, 35.08)
    rng = np.random.default_rng(2)
    records = []
    for i in range(5):
        tile = grid.tile(base.x + i, base.y)
        rel = tile_relpath(tile)
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if i == 4:
            p.write_bytes(b"not a png")
        else:
            Image.fromarray(synthetic_chip(rng, i % 2 == 0)).save(p)
        records.append(TileRecord.for_tile(tile, "synthetic", "ok", path=rel, checksum="x"))
    outside = grid.tile(base.x + 9, base.y)
    records.append(TileRecord.for_tile(outside, "synthetic", "outside"))
    write_manifest(records, tmp_path / "manifest.gpkg")
    return tmp_path


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_classifier, tiny_chips, tmp_path_factory) -> Path:
    from deepsolar.segmentation.config import TrainSegmenterConfig
    from deepsolar.segmentation.train import fit_segmenter

    cfg = TrainSegmenterConfig.model_validate(
        {
            "classifier_checkpoint": str(tiny_classifier),
            "branch": {"channels": 8, "n_stages": 2},
            "optim": {"batch_size": 4, "epochs_per_stage": 1},
            "data": {"train": [{"kind": "folder", "path": str(tiny_chips)}]},
            "train": {"progress": False},
        }
    )
    return fit_segmenter(cfg, tmp_path_factory.mktemp("seg")).final_checkpoint
