"""Evaluation on plain labelled chip folders (``--source PATH``, no config): per-source and
overall rows, trivial baselines beside the model, bootstrap intervals. Tiny random-weight
checkpoints from conftest; SYNTHETIC chips written here."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from deepsolar.classifier.config import FolderSource, ImagesSource
from deepsolar.classifier.predict import evaluate_checkpoint, format_report_table
from deepsolar.segmentation.evaluate import (
    MEAN_FRACTION,
    OVERALL,
    WHOLE_TILE,
    EvaluateSegmentationConfig,
    baseline_table,
    evaluate_segmentation,
    format_table,
)
from tests.fixtures.chips import synthetic_images_folder


def test_classifier_report_per_source_overall_and_baseline(tiny_classifier, tiny_chips, tmp_path):
    mine = synthetic_images_folder(tmp_path / "mine")
    sources = [ImagesSource(path=mine), FolderSource(path=tiny_chips, name="pn")]
    out = tmp_path / "eval"
    summary = evaluate_checkpoint(
        tiny_classifier, sources, out, device="cpu", bootstrap_reps=200, threshold=0.5
    )
    rows = summary["table"]
    assert [(r["source"], r["predictor"]) for r in rows] == [
        (s, p) for s in ("mine", "pn", "overall") for p in ("model", "all-positive")
    ]
    by = {(r["source"], r["predictor"]): r for r in rows}
    assert by["overall", "model"]["n"] == 5 + 8 and by["overall", "model"]["n_positive"] == 3 + 4
    assert by["mine", "all-positive"]["precision"] == pytest.approx(3 / 5)
    assert by["mine", "all-positive"]["recall"] == 1.0
    # 3 positives / 4 negatives per source: too few for ROC-AUC; 7 / 6 overall: enough.
    assert by["mine", "model"]["roc_auc"] is None and by["pn", "model"]["roc_auc"] is None
    assert by["overall", "model"]["roc_auc"] == pytest.approx(summary["all"]["roc_auc"])
    assert by["overall", "all-positive"]["roc_auc"] == 0.5
    m = by["overall", "model"]
    if m["precision"] is not None:
        assert m["precision_lo"] <= m["precision"] <= m["precision_hi"]
    assert m["recall"] == pytest.approx(summary["all"]["recall"])
    text = format_report_table(summary)
    assert "overall" in text and "all-positive" in text and "n/a" in text
    csv = pd.read_csv(out / "report.csv")
    assert len(csv) == 6 and {"precision_lo", "precision_hi", "roc_auc"} <= set(csv.columns)
    assert json.loads((out / "report.json").read_text())["rows"][0]["source"] == "mine"
    assert "| overall | all-positive |" in (out / "report.md").read_text()


def _per_tile(rows):
    base = {"fp": 0, "tp": 0, "fn": 0, "o_fp": 0, "is_positive": True, "prob": 0.9}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_baseline_table_by_hand():
    # Two 10x10 chips with 20 and 10 truth pixels, one empty chip; method "plain" only.
    rows = [
        {"set": "a", "tile": "1", "method": "plain", "o_tp": 10, "o_fp": 10, "o_fn": 10,
         "true_area": 20.0, "o_pred_area": 20.0, "pred_area": 20.0, "n_px": 100,
         "chip_area": 100.0},
        {"set": "a", "tile": "2", "method": "plain", "o_tp": 10, "o_fp": 30, "o_fn": 0,
         "true_area": 10.0, "o_pred_area": 40.0, "pred_area": 40.0, "n_px": 100,
         "chip_area": 100.0},
        {"set": "b", "tile": "3", "method": "plain", "o_tp": 0, "o_fp": 5, "o_fn": 0,
         "true_area": 0.0, "o_pred_area": 5.0, "pred_area": 0.0, "n_px": 100,
         "chip_area": 100.0},
    ]  # fmt: skip
    table = baseline_table(_per_tile(rows), reps=200)
    by = {(r["source"], r["predictor"]): r for r in table}
    assert set(by) == {(s, p) for s in ("a", "b", OVERALL)
                       for p in ("plain", WHOLE_TILE, MEAN_FRACTION)}  # fmt: skip
    a = by["a", "plain"]
    assert a["mean_iou"] == pytest.approx((10 / 30 + 10 / 40) / 2)
    assert a["mean_iou_lo"] <= a["mean_iou"] <= a["mean_iou_hi"]
    assert a["median_area_error"] == pytest.approx((0.0 + 3.0) / 2)
    assert a["regional_area_error_pos"] == pytest.approx(abs(60 - 30) / 30)
    w = by["a", WHOLE_TILE]
    assert w["mean_iou"] == pytest.approx((0.2 + 0.1) / 2)
    assert w["mean_area_error"] == pytest.approx((80 / 20 + 90 / 10) / 2)
    mf = by["a", MEAN_FRACTION]  # mean fraction 0.15 -> 15 px on each chip
    assert mf["mean_iou"] is None
    assert mf["mean_area_error"] == pytest.approx((5 / 20 + 5 / 10) / 2)
    assert mf["regional_area_error_pos"] == pytest.approx(0.0)
    o = by[OVERALL, "plain"]
    assert (o["n"], o["n_positive"]) == (3, 2)
    assert o["regional_area_error_all"] == pytest.approx(abs(60 - 30) / 30)
    assert by[OVERALL, WHOLE_TILE]["regional_area_error_all"] == pytest.approx(270 / 30)
    assert by["b", "plain"]["mean_iou"] is None  # no positive chip: nothing to average


def test_segmentation_evaluation_on_a_plain_folder(tiny_classifier, tiny_segmenter, tmp_path):
    mine = synthetic_images_folder(tmp_path / "mine")
    cfg = EvaluateSegmentationConfig.model_validate(
        {
            "classifier_checkpoint": str(tiny_classifier),
            "segmenter_checkpoint": str(tiny_segmenter),
            "sets": [{"kind": "images", "path": str(mine)}],
            "device": "cpu",
            "overlays": 0,
            "bootstrap_reps": 100,
        }
    )
    report = evaluate_segmentation(cfg, tmp_path / "eval")
    by = {(r["source"], r["predictor"]): r for r in report["table"]}
    assert set(by) == {(s, p) for s in ("mine", OVERALL)
                       for p in ("plain", "stage1", "stage2", WHOLE_TILE, MEAN_FRACTION)}  # fmt: skip
    w = by["mine", WHOLE_TILE]
    assert (w["n"], w["n_positive"]) == (5, 3)
    assert w["mean_iou"] == pytest.approx(20 * 30 / 80**2)  # truth share of each chip
    for m in ("plain", "stage1", "stage2"):
        r = by["mine", m]
        assert 0.0 <= r["mean_iou_lo"] <= r["mean_iou"] <= r["mean_iou_hi"] <= 1.0
    text = format_table(report)
    assert "whole-tile" in text and "mean-fraction" in text and "overall" in text
    assert (tmp_path / "eval" / "table.md").read_text().count("| whole-tile |") == 2
    assert len(pd.read_csv(tmp_path / "eval" / "table.csv")) == 10


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_both_commands_take_source_paths_without_a_config(
    tiny_classifier, tiny_segmenter, tiny_chips, tmp_path, capsys
):
    from flows.evaluate_classifier import main as clf_main
    from flows.evaluate_segmenter import main as seg_main

    mine = synthetic_images_folder(tmp_path / "mine")
    argv = ["--checkpoint", str(tiny_classifier), "--source", str(mine), "--source",
            str(tiny_chips), "--out", str(tmp_path / "c"), "--bootstrap-reps", "50",
            "--device", "cpu"]  # fmt: skip
    assert clf_main(argv) == 0
    out = capsys.readouterr().out
    assert "all-positive" in out and "overall" in out and "[" in out
    argv = ["--classifier", str(tiny_classifier), "--segmenter", str(tiny_segmenter), "--source",
            str(mine), "--out", str(tmp_path / "s"), "--bootstrap-reps", "50", "--overlays", "0",
            "--device", "cpu"]  # fmt: skip
    assert seg_main(argv) == 0
    out = capsys.readouterr().out
    assert "whole-tile" in out and "stage2" in out
    assert seg_main(["--source", str(mine)]) == 1
    assert "no classifier checkpoint" in capsys.readouterr().err
