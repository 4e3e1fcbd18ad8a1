"""Greedy CAM on an EfficientNet-Lite classifier (configurable tap), sub-tiled segmentation of chips
wider than a tile, and the builtin checkpoint name. SYNTHETIC chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepsolar.classifier.checkpoint import checkpoint_meta
from deepsolar.classifier.config import SubtileConfig, TrainClassifierConfig
from deepsolar.classifier.model import build_classifier
from deepsolar.core.checkpoints import resolve_checkpoint, save_checkpoint
from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.segmentation.branch import backbone_fingerprint, resolve_tap
from deepsolar.segmentation.config import TrainSegmenterConfig
from deepsolar.segmentation.evaluate import EvalItem, item_masks
from deepsolar.segmentation.pipeline import Segmenter
from deepsolar.segmentation.train import fit_segmenter, load_segmenter

PX = 80


def synthetic_chip(rng: np.random.Generator, positive: bool, size: int) -> np.ndarray:
    """SYNTHETIC: grey noise, with a dark rectangle standing in for a panel when positive."""
    a = rng.integers(90, 170, (size, size, 3), dtype=np.uint8)
    if positive:
        a[size // 4 : size // 2, size // 5 : size // 2] = 25
    return a


@pytest.fixture(scope="module")
def lite_classifier(tmp_path_factory) -> Path:
    """An 80-px EfficientNet-Lite0 classifier checkpoint (ImageNet backbone, fresh head)."""
    root = tmp_path_factory.mktemp("lite")
    cfg = TrainClassifierConfig.model_validate(
        {
            "model": {"arch": "efficientnet_lite0", "input_size_px": PX, "threshold": 0.3},
            "data": {"train": [{"kind": "folder", "path": str(root)}], "subtiles": {}},
        }
    )
    torch.manual_seed(0)
    model = build_classifier(cfg.model)
    payload = {**checkpoint_meta(cfg), "model_state": model.state_dict(), "epoch": 0}
    return save_checkpoint(root / "best.pt", payload)


def test_taps_default_per_arch_and_unknown_tap_is_refused():
    assert resolve_tap(None, "inception_v3") == "Mixed_5d"
    assert resolve_tap(None, "efficientnet_lite0") == "blocks.4"
    assert resolve_tap("blocks.2", "efficientnet_lite0") == "blocks.2"
    model = build_classifier(
        TrainClassifierConfig.model_validate(
            {
                "model": {"arch": "efficientnet_lite0", "weights": "none"},
                "data": {"train": [{"kind": "folder", "path": "x"}]},
            }  # fmt: skip
        ).model
    )
    with pytest.raises(ValueError, match="not a module"):
        backbone_fingerprint(model, "blocks.99")


@pytest.mark.slow
def test_greedy_branch_trains_on_a_lite_tap_and_segments(lite_classifier, tiny_chips, tmp_path):
    cfg = TrainSegmenterConfig.model_validate(
        {
            "classifier_checkpoint": str(lite_classifier),
            "branch": {"tap": "blocks.2", "channels": 8, "n_stages": 2},
            "optim": {"batch_size": 4, "epochs_per_stage": 1},
            "data": {"train": [{"kind": "folder", "path": str(tiny_chips)}]},
            "train": {"progress": False},
        }
    )
    res = fit_segmenter(cfg, tmp_path)
    seg = load_segmenter(res.final_checkpoint)
    assert seg.branch.in_channels == 40 and seg.stages_trained == 2  # blocks.2: 40 channels
    segmenter = Segmenter.from_checkpoints(lite_classifier, res.final_checkpoint, device="cpu")
    images = [Image.open(p).convert("RGB") for p in sorted(tiny_chips.rglob("*.png"))]
    probs, cams = segmenter.native_cams(segmenter.preprocess(images))
    assert set(cams) == {"plain", "stage1", "stage2"}
    assert cams["stage2"].shape[-2:] == (PX // 8, PX // 8)  # stride 8: 10 x 10
    out = segmenter.segment(images)
    for r in out:
        assert (r.mask is not None) == r.is_positive
        if r.mask is not None:
            assert r.mask.shape == (80, 80)
    # A different tap of the same classifier is a different branch input: refused.
    bad = cfg.model_copy(update={"branch": cfg.branch.model_copy(update={"tap": "blocks.99"})})
    with pytest.raises(ConfigError, match="not a module"):
        fit_segmenter(bad, tmp_path / "bad")


def test_chip_wider_than_a_tile_is_segmented_cell_by_cell(lite_classifier):
    from deepsolar.segmentation.config import CamConfig

    segmenter = Segmenter.from_checkpoints(
        lite_classifier, None, CamConfig(method="plain"), device="cpu"
    )
    rng = np.random.default_rng(0)
    tiles = [synthetic_chip(rng, i % 2 == 0, 100) for i in range(9)]
    image = Image.fromarray(np.concatenate([np.concatenate(tiles[3 * r : 3 * r + 3], axis=1)
                                            for r in range(3)], axis=0))  # fmt: skip
    truth = np.zeros((300, 300), bool)
    item = EvalItem("synthetic", image, truth, 1.0, ground_m_per_px=0.2)  # 60 m: 3 x 3 cells
    cut = item_masks(segmenter, item, 0.37, SubtileConfig())
    whole = item_masks(segmenter, item, 0.37, None)
    for res in (cut, whole):
        assert res.oracle["plain"].shape == (300, 300)
    # per-cell min-max: every 100-px cell has its own maximum at 1
    for r in range(3):
        for c in range(3):
            cell = cut.norm["plain"][100 * r : 100 * r + 100, 100 * c : 100 * c + 100]
            assert cell.max() == pytest.approx(1.0)
    # the pipeline keeps only cells the classifier calls positive
    assert not (cut.pipe["plain"] & ~cut.oracle["plain"]).any()
    assert not cut.is_positive or cut.pipe["plain"].any()


def test_builtin_name_resolves_to_the_models_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPSOLAR_MODELS_DIR", str(tmp_path))
    assert resolve_checkpoint("builtin", "classifier") == tmp_path / "builtin-classifier.pt"
    assert resolve_checkpoint("builtin", "segmenter") == tmp_path / "builtin-segmenter.pt"
    assert resolve_checkpoint("mine.pt", "classifier") == Path("mine.pt")
    from deepsolar.classifier.checkpoint import load_checkpoint

    with pytest.raises(InputDataError, match="not found"):
        load_checkpoint("builtin")


def test_jobs_default_to_the_builtin_pair():
    from deepsolar.jobs import MapRegionJob
    from deepsolar.segmentation.pipeline import SegmentTilesJob

    job = MapRegionJob(store_dir="store")
    assert (str(job.classifier_checkpoint), str(job.segmenter_checkpoint)) == ("builtin",) * 2
    own = MapRegionJob(store_dir="store", classifier_checkpoint="mine.pt")
    assert own.segmenter_checkpoint is None  # a builtin branch would not fit another backbone
    plain = SegmentTilesJob(manifest="m.gpkg", cam={"method": "plain"})
    assert plain.segmenter_checkpoint is None and str(plain.classifier_checkpoint) == "builtin"


def test_the_shipped_reference_model_loads_by_name():
    from deepsolar.classifier.predict import load_classifier
    from deepsolar.core.checkpoints import builtin_models_dir

    if not (builtin_models_dir() / "builtin-classifier.pt").is_file():
        pytest.fail("data/models/builtin-classifier.pt is missing from the repository")
    clf = load_classifier("builtin", "cpu")
    assert clf.config.model.arch == "efficientnet_lite0"
    assert clf.config.data.subtiles is not None
    seg = load_segmenter("builtin")
    assert seg.stages_trained >= 1
    Segmenter(clf, seg)  # the branch fits the builtin classifier's backbone


@pytest.mark.slow
def test_exported_half_precision_pair_still_fits(tiny_classifier, tiny_segmenter, tmp_path,
                                                 monkeypatch):  # fmt: skip
    from deepsolar.classifier.predict import load_classifier
    from deepsolar.segmentation.export import export_pair

    clf_path, seg_path = export_pair(tiny_classifier, tiny_segmenter, tmp_path)
    raw = torch.load(clf_path, weights_only=True)
    assert raw["model_state"]["fc.weight"].dtype == torch.float16
    assert "optimizer_state" not in torch.load(seg_path, weights_only=True)
    assert clf_path.stat().st_size < 0.6 * Path(tiny_classifier).stat().st_size
    monkeypatch.setenv("DEEPSOLAR_MODELS_DIR", str(tmp_path))
    clf = load_classifier("builtin", "cpu")
    seg = load_segmenter("builtin")
    Segmenter(clf, seg)  # fingerprint recomputed on the half-precision backbone: accepted
    from deepsolar.segmentation.branch import tap_features

    full = load_classifier(tiny_classifier, "cpu")
    x = torch.rand(2, 3, 75, 75) * 2 - 1
    with torch.no_grad():  # the backbone's features survive float16 storage
        half_f, full_f = tap_features(clf.model, x), tap_features(full.model, x)
    assert (half_f - full_f).abs().max() < 0.1 * full_f.abs().max()
    assert (half_f - full_f).abs().mean() < 0.005 * full_f.abs().mean() + 1e-3
