"""Issue 11 mask options beside DeepSolar's rule: an absolute floor on the raw CAM (a tile may mark
nothing), and morphological clean-up in metres. SYNTHETIC masks and tiny real models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from deepsolar.core.errors import ConfigError
from deepsolar.segmentation.branch import GreedyCamBranch
from deepsolar.segmentation.cam import (
    CamMaps,
    cam_to_mask,
    classify_with_taps,
    clean_mask,
    greedy_cam_maps,
    mask_from_cam,
    plain_cam_maps,
)
from deepsolar.segmentation.config import BranchConfig, CamConfig, MaskCleanConfig
from deepsolar.segmentation.pipeline import Segmenter, SegmentTilesJob, run_key, segment_tile_store

# ---------------------------------------------------------------- the floor


def test_margin_map_decomposes_the_greedy_heads_logit_margin():
    torch.manual_seed(1)
    branch = GreedyCamBranch(BranchConfig(channels=16, n_stages=2)).eval()
    feats = torch.relu(torch.randn(3, 288, 7, 7))
    for stage in (1, 2):
        maps = greedy_cam_maps(branch, feats, stage)
        with torch.no_grad():
            a = branch.feature_map(feats, stage)
            logits = branch.heads[stage - 1](a.mean(dim=(2, 3)))
        # GAP + bias-free linear head: the tile's margin is the spatial mean of the margin map
        torch.testing.assert_close(
            maps.margin.mean(dim=(1, 2)), logits[:, 1] - logits[:, 0], rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(
            maps.positive.mean(dim=(1, 2)), logits[:, 1], rtol=1e-4, atol=1e-5
        )


def test_plain_margin_map_includes_the_fc_bias(tiny_classifier):
    from deepsolar.classifier.predict import load_classifier

    clf = load_classifier(tiny_classifier, "cpu")
    x = torch.rand(2, 3, 75, 75) * 2 - 1
    fwd = classify_with_taps(clf.model, x)
    with torch.no_grad():
        logits = clf.model(x)
    maps = plain_cam_maps(clf.model, fwd.final)
    torch.testing.assert_close(
        maps.margin.mean(dim=(1, 2)), logits[:, 1] - logits[:, 0], rtol=1e-4, atol=1e-4
    )


def test_no_floor_is_deepsolars_rule_and_a_floor_may_mark_nothing():
    torch.manual_seed(0)
    pos = torch.randn(2, 5, 5)
    margin = torch.stack([torch.full((5, 5), -1.0), torch.randn(5, 5)])
    maps = CamMaps(pos, margin)
    norm, mask = mask_from_cam(maps, (20, 20))
    ref_norm, ref_mask = cam_to_mask(pos, (20, 20), 0.37)
    torch.testing.assert_close(norm, ref_norm)
    assert torch.equal(mask, ref_mask) and mask[0].any()  # min-max always marks something
    _, floored = mask_from_cam(maps, (20, 20), floor=0.0)
    assert not floored[0].any()  # every pixel votes "no solar": nothing marked
    up_margin = torch.nn.functional.interpolate(margin[:, None], (20, 20), mode="bilinear")[:, 0]
    assert torch.equal(floored[1], ref_mask[1] & (up_margin[1] > 0))
    # on the positive-class CAM: a floor above its maximum empties the tile
    _, high = mask_from_cam(maps, (20, 20), floor=float(pos.max()) + 1, floor_on="positive")
    assert not high.any()
    _, low = mask_from_cam(maps, (20, 20), floor=float(pos.min()) - 1, floor_on="positive")
    assert torch.equal(low, ref_mask)
    # tile scope: a tile keeps its whole DeepSolar mask when its maximum clears the floor
    up_max = torch.nn.functional.interpolate(pos[:, None], (20, 20), mode="bilinear")
    up_max = up_max[:, 0].flatten(1).max(dim=1).values
    assert up_max[0] < up_max[1]  # (seeded) tile 0 is the weaker one
    mid = float(up_max[0] + up_max[1]) / 2
    _, pix = mask_from_cam(maps, (20, 20), floor=mid, floor_on="positive")
    _, til = mask_from_cam(maps, (20, 20), floor=mid, floor_on="positive", floor_scope="tile")
    assert not til[0].any() and torch.equal(til[1], ref_mask[1])
    assert pix[1].sum() < ref_mask[1].sum()


def test_cam_config_validates_and_keeps_old_run_keys():
    legacy = {"method": "greedy", "stage": None, "threshold": 0.37, "classifier_threshold": None}
    assert CamConfig().key_dict() == legacy  # stores segmented before the options still resume
    assert CamConfig(floor=0.0).key_dict() == {**legacy, "floor": 0.0}
    assert CamConfig(clean={"open_m": 0.5}).key_dict()["clean"] == {"open_m": 0.5}
    for bad in ({"floor": float("nan")}, {"floor_on": "negative"}, {"clean": {"open_m": -1}},
                {"floor_scope": "chip"},
                {"clean": {"closing": 1}}):  # fmt: skip
        with pytest.raises(ValueError):
            CamConfig(**bad)


# ---------------------------------------------------------------- cleaning


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_opening_removes_specks_by_size_in_metres_and_keeps_edge_pieces():
    m = np.zeros((100, 100), bool)
    m[40:44, 40:44] = True  # a 4 px speck
    m[10:40, 70:100] = True  # a block cut by the right tile edge
    m |= _disc(m.shape, 75, 25, 12)
    cfg = MaskCleanConfig(open_m=0.5)
    out = clean_mask(m, 0.05, cfg)  # 0.5 m = 10 px disc: the 4 px speck goes
    assert not out[40:44, 40:44].any()
    assert out[10:40, 75:100].all()  # not eaten from the tile edge (inner corners round off)
    assert out[:, -1].sum() == 30 and out[10:40, 70].sum() >= 20
    assert abs(int(out.sum()) - int(m.sum() - 16)) <= 0.05 * m.sum()
    # the same size in metres at a coarser pixel (0.2 m: a 2-3 px disc) keeps the speck
    assert clean_mask(m, 0.2, cfg)[40:44, 40:44].sum() >= 12


def test_closing_bridges_gaps_and_holes_are_filled_up_to_an_area():
    m = np.zeros((80, 80), bool)
    m[20:40, 10:30] = True
    m[20:40, 32:52] = True  # 2 px gap between two panel rows
    out = clean_mask(m, 0.05, MaskCleanConfig(close_m=0.25))  # 5 px disc
    assert out[25:35, 30:32].all()
    assert not clean_mask(m, 0.05, MaskCleanConfig(close_m=0.05))[25:35, 30:32].any()
    ring = np.zeros((80, 80), bool)
    ring[10:30, 10:30] = True
    ring[15:18, 15:18] = False  # 9 px hole = 0.0225 m² at 0.05 m
    ring[20:28, 20:28] = False  # 64 px hole = 0.16 m²
    ring[50:70, 60:80] = True
    ring[55:60, 75:80] = False  # a notch open to the tile edge is not a hole
    out = clean_mask(ring, 0.05, MaskCleanConfig(fill_holes_m2=0.05))
    assert out[15:18, 15:18].all() and not out[20:28, 20:28].any()
    assert not out[55:60, 75:80].any()
    assert clean_mask(ring, 0.05, MaskCleanConfig(fill_holes_m2=0.2))[20:28, 20:28].all()
    assert np.array_equal(clean_mask(ring, 0.05, MaskCleanConfig()), ring)  # all off: as is
    with pytest.raises(ValueError, match="pixel size"):
        clean_mask(ring, float("nan"), MaskCleanConfig(open_m=1))


# ---------------------------------------------------------------- wired through the pipeline


def _tile_probs(clf, seg, store):
    s = Segmenter.from_checkpoints(clf, seg, CamConfig(), "cpu")
    imgs = [Image.open(p).convert("RGB") for p in sorted((store / "tiles").rglob("*.png"))
            if p.read_bytes()[:4] == b"\x89PNG"]  # fmt: skip
    return sorted(r.prob for r in s.segment(imgs))


def test_segment_tile_store_with_a_floor_and_cleaning(tiny_classifier, tiny_segmenter, tiny_store):
    probs = _tile_probs(tiny_classifier, tiny_segmenter, tiny_store)
    thr = (probs[1] + probs[2]) / 2

    def run(**cam):
        job = SegmentTilesJob(
            manifest=tiny_store / "manifest.gpkg", classifier_checkpoint=tiny_classifier,
            segmenter_checkpoint=tiny_segmenter, device="cpu",
            cam={"classifier_threshold": thr, **cam},
        )  # fmt: skip
        summary = segment_tile_store(job)
        return job, pd.read_parquet(summary.table_path)

    job0, plain = run()
    pos = plain[plain["is_positive"]]
    assert len(pos) == 2 and (pos["area_m2"] > 0).all()
    job1, floored = run(floor=1e9, floor_on="positive")
    assert run_key(job1) != run_key(job0)
    fpos = floored[floored["is_positive"]]
    assert len(fpos) == 2 and (fpos["area_m2"] == 0).all()  # positive, but no panel pixel
    for p in fpos["mask_path"]:
        assert not np.asarray(Image.open(tiny_store / p)).any()
    _, opened = run(clean={"open_m": 3.0})  # a disc of 2/3 of the ~4.5 m tile: blobs shrink
    assert (opened["area_m2"] <= plain["area_m2"] + 1e-9).all()
    assert opened["area_m2"].sum() < plain["area_m2"].sum()
    journal = [
        json.loads(x) for x in (tiny_store / "segmentation.journal.jsonl").read_text().splitlines()
    ]
    assert len({r["run_key"] for r in journal}) == 3


def test_cleaning_needs_the_pixel_size(tiny_classifier, tiny_segmenter):
    seg = Segmenter.from_checkpoints(
        tiny_classifier, tiny_segmenter, CamConfig(classifier_threshold=0.01, clean={"open_m": 1}),
        "cpu",
    )  # fmt: skip
    img = Image.fromarray(np.full((80, 80, 3), 60, np.uint8))
    with pytest.raises(ConfigError, match="pixel size"):
        seg.segment([img])
    assert seg.segment([img], 0.05)[0].is_positive


def test_evaluate_segmenter_options_from_the_command_line(tmp_path):
    from deepsolar.jobs.cli_options import build_parser
    from deepsolar.jobs.command_line import flow_parameters

    args = build_parser("evaluate-segmenter").parse_args([
        "--source", str(tmp_path), "--ground-m-per-px", "0.1", "--classifier", "builtin",
        "--cam-floor", "0.0", "--cam-floor-on", "margin", "--open-m", "0.5",
        "--fill-holes-m2", "1.0", "--cam-floor-scope", "tile",
    ])  # fmt: skip
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
    cfg = flow_parameters("evaluate-segmenter", args)["job"].evaluation
    assert cfg.cam_floor == 0.0 and cfg.cam_floor_on == "margin" and cfg.cam_floor_scope == "tile"
    assert cfg.clean == MaskCleanConfig(open_m=0.5, fill_holes_m2=1.0)


def test_calibrated_floor_from_positive_training_chips(tiny_classifier, tiny_segmenter, tiny_chips):
    from deepsolar.classifier.data import source_from_path
    from deepsolar.segmentation.calibrate import cam_maxima, floor_from_maxima
    from tests.fixtures.commands import run_command_line

    seg = Segmenter.from_checkpoints(tiny_classifier, tiny_segmenter, CamConfig(), "cpu")
    maxima = cam_maxima(seg, [source_from_path(tiny_chips)], batch_size=3)
    assert len(maxima) == 8 and maxima["label"].sum() == 4
    pos = maxima.loc[maxima["label"] == 1, "max_positive"].to_numpy()
    # the maxima are those of the native maps the pipeline thresholds
    img = Image.open(maxima.loc[maxima["label"] == 1, "path"].iloc[0]).convert("RGB")
    _, maps = seg.native_cam_maps(seg.preprocess([img]))
    assert float(maps["stage2"].positive.max()) == pytest.approx(pos[0], rel=1e-5)
    assert floor_from_maxima(maxima, 0.0) == pytest.approx(pos.min())
    assert floor_from_maxima(maxima, 0.5) == pytest.approx(np.quantile(pos, 0.5))
    with pytest.raises(ValueError):
        floor_from_maxima(maxima, 1.0)
    out = run_command_line(
        "calibrate-cam",
        [
            "--classifier",
            str(tiny_classifier),
            "--segmenter",
            str(tiny_segmenter),
            "--source",
            str(tiny_chips),
            "--device",
            "cpu",
        ],
    )
    assert "4 positive / 4 negative samples" in out and "cam:\n  floor: " in out  # fmt: skip


@pytest.mark.parametrize("command", ["segment-tiles", "evaluate-segmenter"])
def test_deepsolar_cli_forwards_the_mask_options(command, tmp_path, capsys):
    import importlib

    from deepsolar.cli import COMMANDS, build_parser, command_argv

    cmd = next(c for c in COMMANDS if c.name == command)
    extra = ["--cam-floor", "0", "--cam-floor-on", "positive", "--cam-floor-scope", "tile",
             "--open-m", "0.5", "--close-m", "0.25", "--fill-holes-m2", "1"]  # fmt: skip
    base = (["--manifest", str(tmp_path / "missing.gpkg")] if command == "segment-tiles"
            else ["--classifier", str(tmp_path / "missing.pt"), "--source", str(tmp_path)])  # fmt: skip
    build_parser().parse_args([command, *base, *extra])  # the CLI accepts them
    argv = command_argv([command, *base, *extra], command)  # what the CLI hands the flow
    assert all(x in argv for x in extra)
    # the flow's own parser accepts them: it fails on the missing input (1), not on usage (2)
    assert importlib.import_module(cmd.module).main(argv) == 1
