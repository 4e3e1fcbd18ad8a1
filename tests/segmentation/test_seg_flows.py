"""segment-tiles and train-segmenter under a temporary Prefect API, and the evaluation on a tiny
SYNTHETIC scene (tile store + truth polygons)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shapely.geometry import box

from deepsolar.core.errors import ConfigError
from deepsolar.geo.tiling import TileGrid
from deepsolar.segmentation.area import mask_area_m2_tile
from deepsolar.segmentation.config import CamConfig
from deepsolar.segmentation.evaluate import EvaluateSegmentationConfig, evaluate_segmentation
from deepsolar.segmentation.pipeline import TABLE_COLUMNS, Segmenter


def _probs(clf_ckpt, seg_ckpt, store):
    seg = Segmenter.from_checkpoints(clf_ckpt, seg_ckpt, CamConfig(), "cpu")
    paths = sorted((store / "tiles").rglob("*.png"))
    imgs = []
    for p in paths:
        try:
            imgs.append(Image.open(p).convert("RGB"))
        except OSError:
            pass
    return sorted(r.prob for r in seg.segment(imgs))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_segment_tiles_flow_masks_only_positives_and_resumes(
    tiny_classifier, tiny_segmenter, tiny_store
):
    from flows.segment_tiles import segment_tiles_flow

    probs = _probs(tiny_classifier, tiny_segmenter, tiny_store)
    assert probs[0] < probs[-1], "the test needs tiles on both sides of the threshold"
    thr = (probs[1] + probs[2]) / 2  # 2 tiles below, 2 above
    job = {
        "manifest": str(tiny_store / "manifest.gpkg"),
        "classifier_checkpoint": str(tiny_classifier),
        "segmenter_checkpoint": str(tiny_segmenter),
        "cam": {"classifier_threshold": thr},
        "batch_size": 3,
        "device": "cpu",
        "overlays": 1,
    }
    summary = segment_tiles_flow(job)
    table = pd.read_parquet(summary["table_path"])
    assert tuple(table.columns) == TABLE_COLUMNS
    assert len(table) == 5  # 'outside' tile skipped; unreadable tile recorded with its error
    bad = table[table["error"].notna()]
    assert len(bad) == 1 and np.isnan(bad["prob"].iloc[0]) and not bad["is_positive"].iloc[0]
    good = table[table["error"].isna()]
    assert (good["is_positive"] == (good["prob"] >= thr)).all()
    assert good["is_positive"].sum() == 2 == summary["n_positive"]
    grid = TileGrid(21, 80)
    for row in table.itertuples():
        if not row.is_positive:
            assert pd.isna(row.mask_path) and row.area_m2 == 0.0
            continue
        png = np.asarray(Image.open(tiny_store / row.mask_path))
        assert png.shape == (80, 80) and set(np.unique(png)) <= {0, 255}
        assert row.mask_path.startswith("masks/21-80/")
        assert row.area_m2 == pytest.approx(mask_area_m2_tile(png, grid.tile_from_id(row.tile_id)))
        assert row.area_m2 > 0
    masks = list((tiny_store / "masks").rglob("*.png"))
    assert len(masks) == 2
    assert len(summary["overlays"]) == 1
    again = segment_tiles_flow(job)
    assert again["n_done_before"] == 5
    pd.testing.assert_frame_equal(pd.read_parquet(again["table_path"]), table)
    # Other CAM settings are a different run: every tile is redone.
    job2 = {**job, "cam": {"classifier_threshold": thr, "threshold": 0.6}, "overlays": 0}
    assert segment_tiles_flow(job2)["n_done_before"] == 0


def test_greedy_needs_the_segmenters_own_backbone(tiny_classifier, tiny_segmenter, tmp_path):
    import torch

    from deepsolar.classifier.checkpoint import load_checkpoint
    from deepsolar.core.checkpoints import save_checkpoint

    ckpt = load_checkpoint(tiny_classifier)
    ckpt["model_state"]["Mixed_5b.branch1x1.conv.weight"] += 0.01
    other = save_checkpoint(tmp_path / "other.pt", ckpt)
    with pytest.raises(ConfigError, match="different classifier backbone"):
        Segmenter.from_checkpoints(other, tiny_segmenter, CamConfig(), "cpu")
    with pytest.raises(ConfigError, match="cam.stage 3"):
        Segmenter.from_checkpoints(tiny_classifier, tiny_segmenter, CamConfig(stage=3), "cpu")
    assert torch.is_tensor(ckpt["model_state"]["fc.weight"])


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_train_segmenter_flow(tiny_classifier, tiny_chips, tmp_path):
    from flows.train_segmenter import train_segmenter_flow

    cfg = {
        "classifier_checkpoint": str(tiny_classifier),
        "branch": {"channels": 8, "n_stages": 2},
        "optim": {"batch_size": 4, "epochs_per_stage": 1},
        "data": {"train": [{"kind": "folder", "path": str(tiny_chips)}]},
        "train": {"progress": False},
    }
    summary = train_segmenter_flow({"config": cfg, "out_dir": str(tmp_path)})
    assert summary["final_checkpoint"].endswith("segmenter.pt")
    assert (tmp_path / "stage_1.pt").is_file() and (tmp_path / "stage_2.pt").is_file()


@pytest.mark.slow
def test_evaluation_on_a_tiny_synthetic_scene(
    tiny_classifier, tiny_segmenter, tiny_store, tmp_path
):
    # SYNTHETIC truth: one panel polygon covering the top-left quarter of the first tile.
    tile = TileGrid(21, 80).tile_from_id(
        gpd.read_file(tiny_store / "manifest.gpkg", layer="tiles")["tile_id"].iloc[0]
    )
    left, bottom, right, top = tile.bounds_3857
    panel = box(left, (top + bottom) / 2, (left + right) / 2, top)
    truth = gpd.GeoDataFrame({"visible": [True]}, geometry=[panel], crs="EPSG:3857").to_crs(4326)
    truth.to_file(tmp_path / "truth.gpkg", layer="panels")
    cfg = EvaluateSegmentationConfig.model_validate(
        {
            "classifier_checkpoint": str(tiny_classifier),
            "segmenter_checkpoint": str(tiny_segmenter),
            "classifier_threshold": 0.001,  # every readable tile called positive
            "sets": [
                {
                    "kind": "scene",
                    "manifest": str(tiny_store / "manifest.gpkg"),
                    "truth_path": str(tmp_path / "truth.gpkg"),
                    "truth_layer": "panels",
                    "max_chips": 4,
                    "name": "synthetic",
                }
            ],  # fmt: skip
            "device": "cpu",
            "overlays": 1,
        }
    )
    report = evaluate_segmentation(cfg, tmp_path / "eval")
    methods = report["sets"]["synthetic"]
    assert set(methods) == {"plain", "stage1", "stage2"}
    s = methods["stage2"]
    assert (s["n_tiles"], s["n_truth_positive"]) == (4, 1)
    assert s["true_area_total"] == pytest.approx(tile.width_m**2 / 4, rel=1e-3)
    per_tile = pd.read_csv(tmp_path / "eval" / "per_tile.csv")
    t = per_tile[(per_tile["method"] == "stage2") & (per_tile["true_area"] > 0)].iloc[0]
    assert t["o_tp"] + t["o_fn"] == 40 * 40  # the quarter, rasterised exactly
    assert (tmp_path / "eval" / "report.md").read_text().count("| stage2 |") == 1
    assert len(list((tmp_path / "eval" / "overlays").rglob("*.png"))) == 1
