"""Percentile bootstrap intervals for statistics that are functions of per-item sums.

Precision, recall, F1, micro IoU, a mean, a regional area error: each is a function of a few
column sums over the evaluated items (chips). Resampling the items with replacement is the same as
drawing multinomial counts ``w`` (how often each item is drawn) and taking ``w @ X``, so one
replicate costs a matrix product and no copy of the data.

>>> x = np.array([[1, 0], [1, 1], [0, 1]])  # columns: tp, fp for three chips
>>> ci = bootstrap_ci(x, lambda s: s[..., 0] / (s[..., 0] + s[..., 1]), reps=200)
>>> round(ci.point, 3), ci.lo <= ci.point <= ci.hi
(0.5, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_REPS = 1000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0
# Keep each chunk's weight matrix (reps x items) under ~16 MB.
_MAX_CELLS = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval (None where undefined).

    ``undefined_share``: the share of replicates in which the statistic was undefined (e.g.
    precision of a resample with no predicted positive); they are left out of the percentiles.
    """

    point: float | None
    lo: float | None
    hi: float | None
    reps: int
    level: float
    undefined_share: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The interval as a plain dict (for JSON reports).

        Returns:
            ``{"point", "lo", "hi", "reps", "level", "undefined_share"}``.
        """
        return asdict(self)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def bootstrap_ci(
    columns: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Point estimate and percentile interval of ``statistic`` over items resampled with replacement.

    ``columns``: one row per item (n x k, or n for one column). ``statistic`` maps column sums,
    an array of shape (..., k), to values of shape (...); it must be vectorised and may return NaN
    (or inf) where undefined. With the same ``seed`` and item count, two calls draw the same
    resamples, so intervals of a model and a baseline on the same items are paired.

    Args:
        columns: Per-item values, one row per item (n x k, or n for one column).
        statistic: Vectorised map from column sums of shape (..., k) to values of shape (...);
            NaN or inf where undefined.
        reps: Number of bootstrap replicates.
        seed: Seed of the resampling generator.
        level: Coverage of the interval, a fraction in (0, 1) (0.95: the 2.5th-97.5th
            percentiles).

    Returns:
        The point estimate on all items and the percentile interval over the replicates where
        the statistic is defined (all ``None`` for zero items).

    Raises:
        ValueError: If ``level`` is not in (0, 1) or ``reps`` < 1.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    x = np.asarray(columns, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    if n == 0:
        return Interval(None, None, None, reps, level, 1.0)
    point = _finite(np.asarray(statistic(x.sum(axis=0)), dtype=float))
    rng = np.random.default_rng(seed)
    p = np.full(n, 1.0 / n)
    chunk = max(1, min(reps, _MAX_CELLS // n))
    values = []
    done = 0
    while done < reps:
        m = min(chunk, reps - done)
        w = rng.multinomial(n, p, size=m).astype(float)  # (m, n) draw counts
        values.append(np.asarray(statistic(w @ x), dtype=float).reshape(m))
        done += m
    v = np.concatenate(values)
    ok = np.isfinite(v)
    undefined = float(1.0 - ok.mean())
    if not ok.any():
        return Interval(point, None, None, reps, level, undefined)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(v[ok], [tail, 100 - tail])
    return Interval(point, float(lo), float(hi), reps, level, undefined)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def precision_stat(s: np.ndarray) -> np.ndarray:
    """Precision tp / (tp + fp) from sums of (tp, fp, fn) columns.

    Args:
        s: Column sums, shape (..., 3): tp, fp, fn counts.

    Returns:
        Precision as a fraction 0-1, shape (...); NaN where tp + fp = 0.
    """
    return _ratio(s[..., 0], s[..., 0] + s[..., 1])


def recall_stat(s: np.ndarray) -> np.ndarray:
    """Recall tp / (tp + fn) from sums of (tp, fp, fn) columns.

    Args:
        s: Column sums, shape (..., 3): tp, fp, fn counts.

    Returns:
        Recall as a fraction 0-1, shape (...); NaN where tp + fn = 0.
    """
    return _ratio(s[..., 0], s[..., 0] + s[..., 2])


def f1_stat(s: np.ndarray) -> np.ndarray:
    """F1 score 2tp / (2tp + fp + fn) from sums of (tp, fp, fn) columns.

    Args:
        s: Column sums, shape (..., 3): tp, fp, fn counts.

    Returns:
        F1 as a fraction 0-1, shape (...); NaN where 2tp + fp + fn = 0.
    """
    return _ratio(2 * s[..., 0], 2 * s[..., 0] + s[..., 1] + s[..., 2])


def mean_stat(s: np.ndarray) -> np.ndarray:
    """From sums of (value, 1) columns: the mean of the values.

    Args:
        s: Column sums, shape (..., 2): sum of values, item count.

    Returns:
        The mean (in the values' unit), shape (...); NaN where the count is 0.
    """
    return _ratio(s[..., 0], s[..., 1])


def confusion_columns(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-item (tp, fp, fn) indicators (n x 3) for :func:`precision_stat` and friends.

    Args:
        labels: True labels, one per item (truthy = positive).
        predicted: Predicted labels, one per item (truthy = positive).

    Returns:
        A float array (n x 3) of 0/1 indicators: tp, fp, fn.
    """
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predicted).astype(bool)
    return np.stack([y & p, ~y & p, y & ~p], axis=1).astype(float)


def mean_ci(values: np.ndarray, **kw: Any) -> Interval:
    """Interval of the mean of ``values`` (NaN items dropped first).

    Args:
        values: One value per item, in any unit.
        **kw: ``reps``, ``seed`` and ``level``, passed to :func:`bootstrap_ci`.

    Returns:
        The mean and its percentile bootstrap interval, in the values' unit.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bootstrap_ci(np.stack([v, np.ones_like(v)], axis=1), mean_stat, **kw)
