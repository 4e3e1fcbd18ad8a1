"""Metrics against hand counts; the threshold sweep; JSON + PNG outputs."""

from __future__ import annotations

import json

import pytest

from deepsolar.classifier.metrics import classification_metrics, threshold_sweep, write_metrics

LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
PROBS = [0.9, 0.8, 0.4, 0.6, 0.7, 0.2, 0.1, 0.3, 0.05, 0.55]


def test_against_hand_counts():
    m = classification_metrics(LABELS, PROBS, threshold=0.5)
    # >= 0.5 -> predicted positive: 0.9, 0.8, 0.6 (true); 0.7, 0.55 (false). 0.4 is missed.
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 2, 1, 4)
    assert m["confusion_matrix"] == [[4, 2], [1, 3]]
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert m["accuracy"] == pytest.approx(7 / 10)
    # ROC-AUC = share of (positive, negative) pairs ranked correctly. Positives 0.9 and 0.8 beat
    # all 6 negatives, 0.6 beats 5 (not 0.7), 0.4 beats 4 (not 0.7, 0.55): 21 of 24 pairs.
    assert m["roc_auc"] == pytest.approx(21 / 24)
    assert (m["n"], m["n_positive"], m["n_negative"]) == (10, 4, 6)


def test_threshold_is_inclusive_and_sweep_is_consistent():
    assert classification_metrics([1, 0], [0.5, 0.49], threshold=0.5)["tp"] == 1
    rows = threshold_sweep(LABELS, PROBS, thresholds=[0.3, 0.5, 0.75])
    assert [r["tp"] for r in rows] == [4, 3, 2]
    assert [r["fp"] for r in rows] == [3, 2, 0]
    recalls = [r["recall"] for r in rows]
    assert recalls == sorted(recalls, reverse=True)


def test_undefined_values_are_none():
    one_class = classification_metrics([1, 1, 1], [0.9, 0.2, 0.6])
    assert one_class["roc_auc"] is None and one_class["pr_auc"] is None
    assert one_class["recall"] == pytest.approx(2 / 3)
    nothing_predicted = classification_metrics([1, 0], [0.1, 0.2])
    assert nothing_predicted["precision"] is None and nothing_predicted["recall"] == 0.0


def test_write_metrics_json_and_png(tmp_path):
    m = write_metrics(LABELS, PROBS, tmp_path / "out", threshold=0.5, name="unit")
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["precision"] == pytest.approx(0.6) and on_disk["name"] == "unit"
    assert len(on_disk["threshold_sweep"]) == 19
    for png in ("roc.png", "pr.png"):
        data = (tmp_path / "out" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert m["plots"] == ["roc.png", "pr.png"]
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left
