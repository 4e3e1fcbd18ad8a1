"""The supervised mask head (issue 10 item 6): decoder shapes on every backbone's taps, training
reduces the loss, checkpoints round-trip and refuse another classifier, CamConfig, and the
``mask_head`` method through the Segmenter, the tile store and the evaluation. SYNTHETIC chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from deepsolar.classifier.config import TrainClassifierConfig
from deepsolar.classifier.model import build_classifier
from deepsolar.classifier.predict import load_classifier
from deepsolar.core.checkpoints import save_checkpoint
from deepsolar.core.errors import ConfigError, InputDataError, StaleCheckpointError
from deepsolar.segmentation.branch import taps_features
from deepsolar.segmentation.cam import upsample
from deepsolar.segmentation.config import CamConfig, TrainMaskHeadConfig, default_segmenter
from deepsolar.segmentation.evaluate import EvaluateSegmentationConfig, evaluate_segmentation
from deepsolar.segmentation.maskhead import (
    MASK_HEAD,
    MaskDecoder,
    fit_mask_head,
    load_mask_head,
    mask_head_mask,
    mask_loss,
    ordered_taps,
    resolve_mask_taps,
    stale_run,
)
from deepsolar.segmentation.pipeline import Segmenter, SegmentTilesJob, segment_tile_store

INPUT_PX = 75  # the tiny_classifier fixture's input size (tests/segmentation/conftest.py)


def synthetic_chip(rng: np.random.Generator, positive: bool, size: int) -> np.ndarray:
    """SYNTHETIC: grey noise, with a dark rectangle standing in for a panel when positive."""
    a = rng.integers(90, 170, (size, size, 3), dtype=np.uint8)
    if positive:
        a[size // 4 : size // 2, size // 5 : size // 2] = 25
    return a


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one torch thread (two spin-wait on a busy 2-core machine, ~100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lite_model() -> torch.nn.Module:
    cfg = TrainClassifierConfig.model_validate(
        {
            "model": {"arch": "efficientnet_lite0", "weights": "none", "input_size_px": 80},
            "data": {"train": [{"kind": "folder", "path": "x"}]},
        }
    )
    torch.manual_seed(0)
    return build_classifier(cfg.model).eval()


@pytest.mark.parametrize("arch", ["inception_v3", "efficientnet_lite0"])
def test_decoder_output_is_the_input_size_on_each_backbones_taps(arch, tiny_classifier, lite_model):
    if arch == "inception_v3":
        model, px = load_classifier(tiny_classifier, "cpu").model, INPUT_PX
    else:
        model, px = lite_model, 80
    taps, channels = ordered_taps(model, resolve_mask_taps(None, arch), px)
    assert taps == resolve_mask_taps(None, arch)  # the defaults run shallow to deep
    x = torch.zeros(2, 3, px, px)
    with torch.no_grad():
        feats = taps_features(model, x, taps)
        assert [int(feats[t].shape[1]) for t in taps] == channels
        logits = MaskDecoder(channels, 8).eval()([feats[t] for t in taps])
    # native grid = the shallowest tap's; the mask comes at the tile's own (non-square) size
    assert tuple(logits.shape[-2:]) == tuple(feats[taps[0]].shape[-2:])
    for size in ((px, px), (90, 70)):
        prob, mask = mask_head_mask(logits, size)
        assert prob.shape == mask.shape == (2, *size) and mask.dtype == torch.bool
    with pytest.raises(ValueError, match="feature maps expected"):
        MaskDecoder(channels, 8)([feats[taps[0]]])


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    f0, f1 = torch.randn(8, 6, 16, 16), torch.randn(8, 10, 8, 8)
    target = (upsample(f0[:, 0], 32) > 0.5).float()  # learnable from the shallow map
    dec = MaskDecoder([6, 10], 16)
    opt = torch.optim.AdamW(dec.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = mask_loss(upsample(dec([f0, f1]), 32), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_loss_is_bce_plus_soft_dice():
    logits, target = torch.zeros(1, 2, 2), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # BCE of p=0.5 is log 2 everywhere; soft Dice = 1 - (2*0.5 + 1) / (2 + 1 + 1)
    assert float(mask_loss(logits, target)) == pytest.approx(np.log(2) + 0.5)
    assert float(mask_loss(logits, target, dice_weight=0)) == pytest.approx(np.log(2))


@pytest.fixture(scope="module")
def masked_chips(tmp_path_factory) -> Path:
    """images/ + masks/: 6 chips with a dark rectangle (its mask) and 4 without."""
    root = tmp_path_factory.mktemp("masked")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(3)
    for i in range(10):
        pos = i < 6
        a = synthetic_chip(rng, pos, 80)
        m = np.zeros((80, 80), np.uint8)
        if pos:
            m[20:40, 16:40] = 255
        Image.fromarray(a).save(root / "images" / f"{i}.png")
        Image.fromarray(m).save(root / "masks" / f"{i}.png")
    return root


def _cfg(classifier: Path, chips: Path, **optim) -> TrainMaskHeadConfig:
    return TrainMaskHeadConfig.model_validate(
        {
            "classifier_checkpoint": str(classifier),
            "head": {"channels": 8},
            "optim": {"batch_size": 4, "epochs": 2, **optim},
            "data": {"train": [{"kind": "images", "path": str(chips)}], "val_fraction": 0.3},
            "train": {"progress": False},
        }
    )


@pytest.fixture(scope="module")
def mask_head_ckpt(tiny_classifier, masked_chips, tmp_path_factory) -> Path:
    res = fit_mask_head(_cfg(tiny_classifier, masked_chips), tmp_path_factory.mktemp("mh"))
    assert len(res.history) == 2 and "val_iou" in res.history[0]
    return res.final_checkpoint


def test_checkpoint_round_trip_resume_and_changed_recipe(
    tiny_classifier, masked_chips, mask_head_ckpt
):
    out = mask_head_ckpt.parent
    assert (out / "last.pt").is_file()
    head = load_mask_head(mask_head_ckpt)
    assert head.taps == ("Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e")
    again = load_mask_head(mask_head_ckpt)
    feats = [torch.randn(1, c, 5, 5) for c in head.decoder.in_channels]
    with torch.no_grad():
        assert torch.equal(head.decoder(feats), again.decoder(feats))
    before = (out / "last.pt").stat().st_mtime_ns
    res = fit_mask_head(_cfg(tiny_classifier, masked_chips), out)  # finished: nothing to do
    assert (out / "last.pt").stat().st_mtime_ns == before and res.best_epoch >= 1
    assert stale_run(_cfg(tiny_classifier, masked_chips), out) is None
    assert stale_run(_cfg(tiny_classifier, masked_chips, lr=0.5), out) == (
        "last.pt: the config differs in optim.lr"
    )
    with pytest.raises(StaleCheckpointError, match="optim.lr"):
        fit_mask_head(_cfg(tiny_classifier, masked_chips, lr=0.5), out)


def test_another_classifier_is_refused(tiny_classifier, mask_head_ckpt, tmp_path):
    ckpt = torch.load(tiny_classifier, map_location="cpu", weights_only=True)
    state = dict(ckpt["model_state"])
    state["Conv2d_1a_3x3.conv.weight"] = state["Conv2d_1a_3x3.conv.weight"] + 0.01
    other = save_checkpoint(tmp_path / "other.pt", {**ckpt, "model_state": state})
    with pytest.raises(ConfigError, match="different classifier backbone") as err:
        Segmenter.from_checkpoints(other, mask_head_ckpt, CamConfig(method="mask_head"), "cpu")
    assert "\n" not in str(err.value)


def test_positive_chip_without_mask_is_refused(tiny_classifier, tiny_chips, tmp_path):
    cfg = _cfg(tiny_classifier, tiny_chips).model_copy(deep=True)
    cfg.data.train = [TrainMaskHeadConfig.model_validate(
        {"classifier_checkpoint": "x", "data": {"train": [{"kind": "folder",
                                                          "path": str(tiny_chips)}]}}
    ).data.train[0]]  # fmt: skip
    with pytest.raises(InputDataError, match="no mask"):
        fit_mask_head(cfg, tmp_path)


def test_cam_config_and_defaults():
    assert CamConfig().method == "greedy"  # DeepSolar's CAM stays the default
    assert CamConfig(method="mask_head").mask_threshold == 0.5
    for bad in ({"method": "unet"}, {"mask_threshold": 0.0}, {"mask_threshold": 1.0}):
        with pytest.raises(ValidationError):
            CamConfig(**bad)
    assert CamConfig().key_dict() == CamConfig(mask_threshold=0.5).key_dict()  # old journals
    assert "mask_threshold" in CamConfig(mask_threshold=0.7).key_dict()
    assert default_segmenter(Path("builtin"), None, "mask_head") == Path("builtin")
    assert default_segmenter(Path("builtin"), None, "plain") is None


def test_mask_head_method_needs_a_checkpoint_of_its_kind(tiny_classifier, tiny_segmenter):
    with pytest.raises(ConfigError, match="mask-head checkpoint"):
        Segmenter.from_checkpoints(tiny_classifier, None, CamConfig(method="mask_head"), "cpu")
    with pytest.raises(InputDataError, match="not a deepsolar mask_head checkpoint"):
        Segmenter.from_checkpoints(
            tiny_classifier, tiny_segmenter, CamConfig(method="mask_head"), "cpu"
        )


def test_mask_head_method_through_the_segmenter(tiny_classifier, mask_head_ckpt):
    seg = Segmenter.from_checkpoints(
        tiny_classifier, mask_head_ckpt,
        CamConfig(method="mask_head", classifier_threshold=1e-6, mask_threshold=0.3), "cpu",
    )  # fmt: skip
    rng = np.random.default_rng(9)
    images = [Image.fromarray(synthetic_chip(rng, True, 80)[:, :70]) for _ in range(2)]
    out = seg.segment(images)
    x = seg.preprocess(images)
    probs, maps = seg.native_cam_maps(x)
    with torch.no_grad():
        expected = torch.sigmoid(upsample(maps[MASK_HEAD].positive, (80, 70))) > 0.3
    for j, res in enumerate(out):
        assert res.is_positive and res.mask.shape == (80, 70)
        assert np.array_equal(res.mask, expected[j].numpy())
        assert res.prob == pytest.approx(float(probs[j]), abs=1e-6)
    assert set(maps) == {"plain", MASK_HEAD}


def test_mask_head_in_a_tile_store_and_in_the_evaluation_table(
    tiny_classifier, tiny_segmenter, mask_head_ckpt, masked_chips, tiny_store, tmp_path
):
    job = SegmentTilesJob(
        manifest=tiny_store, classifier_checkpoint=tiny_classifier,
        segmenter_checkpoint=mask_head_ckpt,
        cam=CamConfig(method="mask_head", classifier_threshold=1e-6), device="cpu",
    )  # fmt: skip
    summary = segment_tile_store(job)
    table = pd.read_parquet(summary.table_path)
    assert summary.n_positive == 4 and table["mask_path"].notna().sum() == 4
    report = evaluate_segmentation(
        EvaluateSegmentationConfig(
            classifier_checkpoint=tiny_classifier, segmenter_checkpoint=tiny_segmenter,
            mask_head_checkpoint=mask_head_ckpt, sets=[{"kind": "images", "path": masked_chips}],
            device="cpu", bootstrap_reps=20, overlays=0,
        ),
        tmp_path / "eval",
    )  # fmt: skip
    predictors = [r["predictor"] for r in report["table"] if r["source"] == "overall"]
    assert predictors == ["plain", "stage1", "stage2", MASK_HEAD, "whole-tile", "mean-fraction"]
    row = next(r for r in report["table"] if r["predictor"] == MASK_HEAD)
    assert row["n_positive"] == 6 and 0 <= row["mean_iou"] <= 1


def test_export_is_half_precision_and_still_matches_its_classifier(
    tiny_classifier, mask_head_ckpt, tmp_path
):
    from deepsolar.segmentation.export import export_mask_head

    path = export_mask_head(mask_head_ckpt, tmp_path, classifier=tiny_classifier)
    raw = torch.load(path, weights_only=True)
    assert raw["precision"] == "float16" and "optimizer_state" not in raw
    assert raw["decoder_state"]["out.weight"].dtype == torch.float16
    seg = Segmenter.from_checkpoints(tiny_classifier, path, CamConfig(method="mask_head"), "cpu")
    full = load_mask_head(mask_head_ckpt)
    feats = [torch.randn(1, c, 5, 5) for c in full.decoder.in_channels]
    with torch.no_grad():
        a, b = seg.mask_head.decoder(feats), full.decoder(feats)
    assert torch.allclose(a, b, rtol=0.01, atol=0.01 * float(b.abs().max()))
