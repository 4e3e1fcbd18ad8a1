"""Optional decision-threshold calibration on the validation chips."""

from __future__ import annotations

import numpy as np
import pytest

from deepsolar.classifier.train import calibrated_threshold


def test_calibrated_threshold_maximises_validation_f1() -> None:
    # positives score 0.62-0.9, negatives 0.1-0.58: any threshold in (0.58, 0.62] is perfect
    labels = np.array([1] * 5 + [0] * 7)
    probs = np.array([0.62, 0.7, 0.8, 0.85, 0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.58])
    t = calibrated_threshold(labels, probs, default=0.5)
    assert t == pytest.approx(0.6)
    assert ((probs >= t) == labels.astype(bool)).all()


def test_ties_keep_the_threshold_nearest_the_default() -> None:
    labels = np.array([1, 1, 0, 0])
    probs = np.array([0.9, 0.95, 0.05, 0.08])  # every threshold in 0.1..0.9 is perfect
    assert calibrated_threshold(labels, probs, default=0.5) == pytest.approx(0.5)
    assert calibrated_threshold(labels, probs, default=0.68) == pytest.approx(0.7)


def test_no_positives_keeps_the_default() -> None:
    assert calibrated_threshold(np.zeros(4, int), np.array([0.1, 0.2, 0.3, 0.4]), 0.5) == 0.5
