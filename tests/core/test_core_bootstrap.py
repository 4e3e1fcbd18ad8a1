"""Percentile bootstrap intervals (deepsolar.core.bootstrap): coverage, width, pairing, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from deepsolar.core.bootstrap import (
    bootstrap_ci,
    confusion_columns,
    f1_stat,
    mean_ci,
    precision_stat,
    recall_stat,
)


def test_interval_brackets_the_point_and_matches_a_direct_resampling():
    rng = np.random.default_rng(3)
    v = rng.normal(0.4, 0.2, 200)
    ci = mean_ci(v, reps=2000, seed=1)
    assert ci.point == pytest.approx(v.mean())
    assert ci.lo < ci.point < ci.hi
    # A plain index resampling gives nearly the same interval (independent RNG stream).
    idx = np.random.default_rng(9).integers(0, len(v), (2000, len(v)))
    lo, hi = np.percentile(v[idx].mean(axis=1), [2.5, 97.5])
    assert ci.lo == pytest.approx(lo, abs=0.01) and ci.hi == pytest.approx(hi, abs=0.01)
    # ... and the normal-theory width 2 * 1.96 * sd / sqrt(n)
    assert ci.hi - ci.lo == pytest.approx(2 * 1.96 * v.std() / np.sqrt(len(v)), rel=0.1)


def test_width_shrinks_with_more_items():
    rng = np.random.default_rng(0)
    widths = []
    for n in (25, 100, 400, 1600):
        ci = mean_ci(rng.uniform(0, 1, n), reps=1000, seed=0)
        widths.append(ci.hi - ci.lo)
    assert all(a > b for a, b in zip(widths, widths[1:], strict=False))
    assert widths[0] / widths[-1] == pytest.approx(8, rel=0.25)  # ~ sqrt(1600 / 25)


def test_same_seed_same_interval_and_level_orders_widths():
    v = np.linspace(0, 1, 50)
    assert mean_ci(v, seed=4) == mean_ci(v, seed=4)
    assert mean_ci(v, seed=4) != mean_ci(v, seed=5)
    ci90, ci99 = mean_ci(v, level=0.90), mean_ci(v, level=0.99)
    assert ci99.lo < ci90.lo and ci99.hi > ci90.hi


def test_degenerate_inputs():
    empty = mean_ci(np.array([]))
    assert (empty.point, empty.lo, empty.hi, empty.undefined_share) == (None, None, None, 1.0)
    one = mean_ci(np.array([0.3]))
    assert one.point == one.lo == one.hi == pytest.approx(0.3)
    same = mean_ci(np.full(40, 0.7))
    assert same.lo == pytest.approx(0.7) and same.hi == pytest.approx(0.7)
    with pytest.raises(ValueError, match="level"):
        mean_ci(np.ones(3), level=1.0)
    with pytest.raises(ValueError, match="reps"):
        mean_ci(np.ones(3), reps=0)


def test_precision_recall_f1_from_confusion_columns_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    pred = np.array([1, 1, 0, 1, 0, 0, 0, 0])  # tp 2, fp 1, fn 2
    cols = confusion_columns(y, pred)
    assert cols.sum(axis=0).tolist() == [2, 1, 2]
    p, r, f = (bootstrap_ci(cols, s, reps=300) for s in (precision_stat, recall_stat, f1_stat))
    assert p.point == pytest.approx(2 / 3) and r.point == pytest.approx(0.5)
    assert f.point == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    for ci in (p, r, f):
        assert 0.0 <= ci.lo <= ci.point <= ci.hi <= 1.0


def test_undefined_replicates_are_counted_not_averaged():
    # One predicted positive among 30 chips: many resamples miss it -> precision undefined.
    y = np.zeros(30, int)
    y[:3] = 1
    pred = np.zeros(30, int)
    pred[0] = 1
    ci = bootstrap_ci(confusion_columns(y, pred), precision_stat, reps=500, seed=0)
    assert ci.point == 1.0 and ci.lo == ci.hi == 1.0
    # P(chip 0 never drawn in 30 draws) = (29/30)^30 ~ 0.36
    assert ci.undefined_share == pytest.approx((29 / 30) ** 30, abs=0.06)
    none = bootstrap_ci(confusion_columns(y, np.zeros(30)), precision_stat, reps=50)
    assert (none.point, none.lo, none.hi, none.undefined_share) == (None, None, None, 1.0)


def test_large_item_counts_are_chunked_with_the_same_result_shape():
    v = np.random.default_rng(1).uniform(0, 1, 50_000)  # 1000 x 50k weights would be 400 MB
    ci = mean_ci(v, reps=100, seed=0)
    assert ci.reps == 100 and ci.lo < v.mean() < ci.hi
