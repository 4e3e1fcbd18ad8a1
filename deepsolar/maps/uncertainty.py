"""Totals with error bars: 95% intervals for each unit's panel area and system count.

A unit's true total differs from what the pipeline found for two reasons, both modelled here:

1. **Detector errors** (tile level, as the classifier was validated): of the ``D`` tiles that hold
   a detected system in the unit, each is a true positive with probability ``P`` (precision);
   each true positive tile is found with probability ``R`` (recall). ``P`` and ``R`` are not
   known exactly: they come from ``TP``, ``FP``, ``FN`` counts of a validation report, so each
   Monte Carlo draw takes ``P ~ Beta(TP + 1, FP + 1)``, ``R ~ Beta(TP + 1, FN + 1)``, then the
   true positives among the unit's detected tiles ``TPu ~ Binomial(D, P)`` and the missed ones
   ``Mu ~ NegativeBinomial(TPu, R)`` (Poisson-Gamma). The unit's total is scaled by
   ``m = (TPu + Mu) / D`` (mean ``P / R``): a wrongly flagged tile holds on average what a
   correctly flagged one holds, and a missed tile what a found one holds.
2. **Sampling** when only a fraction ``f`` of the unit was scanned: the whole-unit total is the
   expansion estimate ``Y / f`` over the ``n`` scanned tiles of the ``N = n / f`` in the unit,
   with the cluster-sampling variance ``N² (1 - f) s² / n`` (``s²``: variance of the per-tile
   totals, zero tiles included; ``1 - f``: finite-population correction). A fully scanned unit
   has no sampling error. Each draw adds ``sqrt(var) * z`` (``z ~ N(0, 1)``), floored at 0.

The interval is the 2.5 and 97.5 percentiles of ``max(0, Y / f + sqrt(var) z) * m`` over the
draws: it is an interval for the unit's **true** total, so it accounts for the detector's bias
(a detector with precision 0.5 gives an interval around half the found total). The bias-corrected
point estimate is the plug-in ``Y / f * P_hat / R_hat``. See docs/maps.md for the assumptions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import InputDataError

log = logging.getLogger(__name__)

LEVEL = 0.95  # the columns say 95: the level is fixed
AREA_LO, AREA_HI = "panel_area_m2_lo95", "panel_area_m2_hi95"
COUNT_LO, COUNT_HI = "solar_system_count_lo95", "solar_system_count_hi95"
AREA_CORRECTED, COUNT_CORRECTED = "panel_area_m2_corrected", "solar_system_count_corrected"
INTERVAL_COLUMNS: tuple[str, ...] = (AREA_LO, AREA_HI, COUNT_LO, COUNT_HI)
CORRECTED_COLUMNS: tuple[str, ...] = (AREA_CORRECTED, COUNT_CORRECTED)
# Beside a classifier checkpoint X.pt: X.evaluation.json (an evaluate-classifier summary) holds
# its validation counts at its decision threshold (the shipped builtin model has one).
EVALUATION_SUFFIX = ".evaluation.json"
# Draws x units held in memory at once (float64: ~16 MB per array).
CHUNK_CELLS = 2_000_000


class DetectorCounts(StrictModel):
    """Tile-level validation counts of the classifier in use (at its decision threshold)."""

    tp: int = Field(ge=1, description="true positive tiles (at least one: else P and R are 0)")
    fp: int = Field(ge=0, description="false positive tiles")
    fn: int = Field(ge=0, description="false negative (missed) tiles")
    threshold: float | None = Field(None, description="decision threshold they were measured at")
    source: str | None = Field(None, description="where the counts come from (shown in outputs)")

    @property
    def precision(self) -> float:
        """Tile precision TP / (TP + FP), a fraction 0-1."""
        return self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        """Tile recall TP / (TP + FN), a fraction 0-1."""
        return self.tp / (self.tp + self.fn)

    def describe(self) -> str:
        """One line for outputs and logs.

        Returns:
            The counts, the threshold, precision, recall and where the counts come from.
        """
        at = f" at threshold {self.threshold:g}" if self.threshold is not None else ""
        return (
            f"TP {self.tp}, FP {self.fp}, FN {self.fn}{at} (precision {self.precision:.3f}, "
            f"recall {self.recall:.3f}) from {self.source or 'config'}"
        )


class UncertaintyConfig(StrictModel):
    """95% intervals of unit totals (see docs/maps.md, "Totals with error bars")."""

    enabled: bool = Field(
        True,
        description="write panel_area_m2_lo95/hi95 and solar_system_count_lo95/hi95 per unit "
        "(needs detector counts: from detector, report_path, or the classifier checkpoint)",
    )
    detector: DetectorCounts | None = Field(
        None, description="validation counts (tp, fp, fn tiles) to use instead of the checkpoint's"
    )
    report_path: Path | None = Field(
        None,
        description="an evaluate-classifier summary.json / report.json or a metrics.json whose "
        "counts to use instead of the checkpoint's",
    )
    report_source: str | None = Field(
        None, description="row of the report to use (a source name); default: overall"
    )
    bias_correction: bool = Field(
        False,
        description="also write panel_area_m2_corrected / solar_system_count_corrected: the "
        "found totals scaled to the whole unit and by precision / recall",
    )
    draws: int = Field(2000, ge=200, le=100_000, description="Monte Carlo draws per unit")
    seed: int = Field(0, ge=0, description="random seed (same inputs + seed: same intervals)")

    @model_validator(mode="after")
    def _one_source(self) -> UncertaintyConfig:
        if self.detector is not None and self.report_path is not None:
            raise ValueError("give detector counts or report_path, not both")
        if self.report_source is not None and self.report_path is None:
            raise ValueError("report_source needs report_path")
        if self.report_path is not None:
            p = Path(self.report_path)
            if p.suffix != ".json" or not p.is_file():
                raise ValueError(
                    f"report_path {str(p)!r} is not an existing .json file "
                    "(an evaluate-classifier summary.json / report.json, or a metrics.json)"
                )
            try:  # read now: a bad report must fail before any work starts
                detector_counts_from_report(p, self.report_source)
            except InputDataError as err:
                raise ValueError(f"report_path: {err}") from None
        return self


# --------------------------------------------------------------------------- detector counts


def _counts(row: dict[str, Any], where: str, threshold: Any = None) -> DetectorCounts:
    if all(k in row for k in ("tp", "fp", "fn")):
        tp, fp, fn = row["tp"], row["fp"], row["fn"]
    elif "confusion_matrix" in row:  # rows = truth (0, 1), columns = prediction (0, 1)
        (_, fp), (fn, tp) = row["confusion_matrix"]
    else:
        raise InputDataError(
            "no tp / fp / fn or confusion_matrix in the report",
            where=where,
            fix="pass an evaluate-classifier summary.json / report.json, or uncertainty.detector",
        )
    thr = row.get("threshold", threshold)
    try:
        return DetectorCounts(
            tp=int(tp), fp=int(fp), fn=int(fn), threshold=thr, source=where
        )  # fmt: skip
    except ValueError as err:
        raise InputDataError(
            f"unusable validation counts TP {tp}, FP {fp}, FN {fn} ({err.__class__.__name__})",
            where=where,
            fix="the classifier must have found at least one true positive tile",
        ) from None


def detector_counts_from_report(path: str | Path, source: str | None = None) -> DetectorCounts:
    """Tile counts from an ``evaluate-classifier`` output.

    Reads a ``summary.json`` (its ``all`` entry, or the one source, or ``sources[source]``), a
    ``report.json`` (the model's ``overall`` or ``source`` row) or a ``metrics.json``
    (``tp``/``fp``/``fn``).

    Args:
        path: The JSON file.
        source: The evaluation source whose counts to use; None: all sources / overall.

    Returns:
        The counts, with ``source`` naming the file.

    Raises:
        InputDataError: If the file is missing, not a JSON object, or holds no usable counts.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputDataError(
            f"cannot read the report ({err.__class__.__name__})", where=str(p), fix="check it"
        ) from None
    if not isinstance(data, dict):
        raise InputDataError("not a JSON object", where=str(p), fix="pass a report's JSON")
    thr = data.get("threshold")
    if "rows" in data:  # report.json
        want = source or "overall"
        rows = [
            r for r in data["rows"] if r.get("source") == want and r.get("predictor") == "model"
        ]
        if not rows:
            raise InputDataError(
                f"no model row for source {want!r}",
                where=str(p),
                fix="name one of the report's sources with uncertainty.report_source",
            )
        return _counts(rows[0], f"{p} ({want})", thr)
    if "sources" in data:  # summary.json
        srcs = data["sources"]
        if source is not None:
            if source not in srcs:
                raise InputDataError(
                    f"no source {source!r} (sources: {', '.join(srcs)})",
                    where=str(p),
                    fix="name one of them with uncertainty.report_source",
                )
            return _counts(srcs[source], f"{p} ({source})", thr)
        if "all" in data:
            return _counts(data["all"], f"{p} (all sources)", thr)
        if len(srcs) == 1:
            name = next(iter(srcs))
            return _counts(srcs[name], f"{p} ({name})", thr)
        raise InputDataError(
            "several sources and no overall entry", where=str(p), fix="set report_source"
        )
    return _counts(data, str(p), thr)


def detector_counts_from_checkpoint(checkpoint: str | Path) -> DetectorCounts | None:
    """Validation counts of a classifier checkpoint at its decision threshold, or None.

    First ``<checkpoint stem>.evaluation.json`` beside it (an evaluate-classifier summary; the
    builtin model ships one), else the checkpoint's own validation ``metrics`` when they were
    measured at its decision threshold (a checkpoint whose threshold was changed afterwards, as
    the builtin's was, has none usable).

    Args:
        checkpoint: The classifier checkpoint (``.pt``), or ``builtin``.

    Returns:
        The counts, or None when none are available.
    """
    from deepsolar.core.checkpoints import load_checkpoint_safely, resolve_checkpoint

    path = resolve_checkpoint(checkpoint, "classifier")
    side = path.with_name(path.stem + EVALUATION_SUFFIX)
    if side.is_file():
        return detector_counts_from_report(side)
    ckpt = load_checkpoint_safely(
        path, fmt="deepsolar-classifier", kind="classifier", producer="train-classifier"
    )
    metrics = ckpt.get("metrics") or {}
    thr, used = metrics.get("threshold"), ckpt.get("threshold")
    why = None
    if not metrics:
        why = "it holds no validation metrics"
    elif thr is None or used is None or abs(float(thr) - float(used)) > 1e-9:
        why = f"its validation metrics are at threshold {thr}, but it decides at {used}"
    else:
        try:
            return _counts(metrics, f"{checkpoint} (validation metrics)", thr)
        except InputDataError as err:  # e.g. no true positive: no usable precision / recall
            why = str(err)
    log.warning("no detector counts from %s (%s): no 95%% intervals", path, why)
    return None


def resolve_detector_counts(
    config: UncertaintyConfig, classifier_checkpoint: str | Path | None = None
) -> DetectorCounts | None:
    """The counts to use: ``config.detector``, else ``config.report_path``, else the checkpoint's.

    See :func:`detector_counts_from_checkpoint`.

    Args:
        config: The uncertainty settings.
        classifier_checkpoint: The classifier checkpoint that classified the tiles, or None.

    Returns:
        The counts, or None when disabled or none is found.

    Raises:
        InputDataError: If ``config.report_path`` cannot be read.
    """
    if not config.enabled:
        return None
    if config.detector is not None:
        return config.detector
    if config.report_path is not None:
        return detector_counts_from_report(config.report_path, config.report_source)
    if classifier_checkpoint is not None:
        return detector_counts_from_checkpoint(classifier_checkpoint)
    return None


# --------------------------------------------------------------------------- the math


@dataclass(frozen=True)
class ScannedTotals:
    """Per unit (equal-length arrays): what its scanned tiles hold.

    ``total``: sum over the scanned tiles (panel area in m², or systems); ``sum_sq``: sum of the
    squared per-tile totals; ``n_tiles``: scanned tiles (fractional when derived from areas);
    ``fraction``: scanned fraction of the unit (0-1).
    """

    total: np.ndarray
    sum_sq: np.ndarray
    n_tiles: np.ndarray
    fraction: np.ndarray


def expansion_estimate(s: ScannedTotals) -> tuple[np.ndarray, np.ndarray]:
    """(whole-unit estimate ``Y / f``, its sampling variance ``N² (1 - f) s² / n``) per unit.

    ``N = n / f`` tiles in the unit; ``s² = (sum_sq - Y² / n) / (n - 1)`` over the ``n`` scanned
    tiles, zeros included. Variance 0 where ``f >= 1``; NaN where ``n < 2`` or ``f <= 0``.

    Args:
        s: Per-unit scanned totals: sum ``Y``, sum of squares, scanned tile count ``n`` and
            scanned fraction ``f`` (0-1).

    Returns:
        The estimate (in the totals' unit, e.g. m²) and its variance (that unit squared).
    """
    f = np.clip(np.asarray(s.fraction, dtype=float), 0.0, 1.0)
    y = np.asarray(s.total, dtype=float)
    n = np.asarray(s.n_tiles, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = np.where(f > 0, y / np.where(f > 0, f, 1.0), np.nan)
        s2 = np.maximum((np.asarray(s.sum_sq, dtype=float) - y * y / n) / (n - 1), 0.0)
        var = (n / f) ** 2 * (1.0 - f) * s2 / n
    full = f >= 1.0 - 1e-9
    var = np.where(full, 0.0, np.where((n >= 2) & (f > 0), var, np.nan))
    return est, np.where(f > 0, var, np.nan)


def detector_draws(
    counts: DetectorCounts, draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) draws from their posteriors ``Beta(TP+1, FP+1)``, ``Beta(TP+1, FN+1)``.

    Args:
        counts: The classifier's validation tile counts.
        draws: Number of draws.
        rng: The random generator.

    Returns:
        Precision and recall draws, each ``draws`` fractions 0-1.
    """
    p = rng.beta(counts.tp + 1, counts.fp + 1, draws)
    r = rng.beta(counts.tp + 1, counts.fn + 1, draws)
    return p, r


def detector_multiplier(
    detected_tiles: np.ndarray, precision: np.ndarray, recall: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(draws, units) ratio of true positive tiles to detected tiles ``(TPu + Mu) / D``.

    ``detected_tiles``: ``D`` per unit; ``precision`` / ``recall``: one value per draw. Per draw
    and unit, ``TPu ~ Binomial(D, P)`` and ``Mu ~ NegativeBinomial(TPu, R)`` (as Poisson with a
    Gamma(TPu, (1 - R) / R) mean). Units with ``D = 0`` get 1 (nothing found, nothing scaled).

    Args:
        detected_tiles: Detected tiles ``D`` per unit.
        precision: Precision draws (fractions 0-1).
        recall: Recall draws (fractions 0-1).
        rng: The random generator.

    Returns:
        The multipliers, shape (draws, units).
    """
    d = np.asarray(detected_tiles, dtype=np.int64)[None, :]
    tp = rng.binomial(d, precision[:, None])
    lam = rng.gamma(tp.astype(float), ((1.0 - recall) / recall)[:, None])
    true = tp + rng.poisson(lam)
    return np.where(d > 0, true / np.maximum(d, 1), 1.0)


def interval_from_draws(
    estimate: np.ndarray, variance: np.ndarray, multiplier: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): the 2.5 / 97.5 percentiles per unit of the drawn totals.

    The totals are ``max(0, estimate + sqrt(variance) z) * multiplier`` with ``z`` standard
    normal.

    Args:
        estimate: Per-unit estimate (e.g. m² or systems).
        variance: Its sampling variance (that unit squared).
        multiplier: Detector multipliers, shape (draws, units).
        rng: The random generator.

    Returns:
        Lower and upper bounds per unit, in the estimate's unit; NaN where it is undefined.
    """
    z = rng.standard_normal(multiplier.shape)
    base = np.maximum(estimate[None, :] + np.sqrt(np.nan_to_num(variance))[None, :] * z, 0.0)
    q = np.quantile(base * multiplier, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0)
    bad = ~np.isfinite(estimate) | ~np.isfinite(variance)
    return np.where(bad, np.nan, q[0]), np.where(bad, np.nan, q[1])


def unit_intervals(
    area: ScannedTotals,
    count: ScannedTotals,
    detected_tiles: np.ndarray,
    counts: DetectorCounts,
    *,
    draws: int = 2000,
    seed: int = 0,
    bias_correction: bool = False,
) -> dict[str, np.ndarray]:
    """The interval columns (and the corrected totals with ``bias_correction``) for units.

    ``area`` / ``count``: each unit's scanned panel area (m²) / system count per tile;
    ``detected_tiles``: tiles holding a detected system per unit (DeepSolar's ``tile_count``).
    Area and count of a unit share the detector draws. Counts' bounds are rounded outwards to
    whole systems. Seeded: the same inputs give the same columns.

    Args:
        area: Scanned panel area totals per unit (m²).
        count: Scanned system count totals per unit.
        detected_tiles: Tiles holding a detected system, per unit.
        counts: The classifier's validation tile counts.
        draws: Number of Monte Carlo draws.
        seed: Seed of the random generator.
        bias_correction: Also return the bias-corrected totals.

    Returns:
        Column name -> per-unit values: ``INTERVAL_COLUMNS`` (and ``CORRECTED_COLUMNS``).
    """
    rng = np.random.default_rng(seed)
    p, r = detector_draws(counts, draws, rng)
    k = len(np.asarray(detected_tiles))
    est_a, var_a = expansion_estimate(area)
    est_c, var_c = expansion_estimate(count)
    out = {c: np.full(k, np.nan) for c in INTERVAL_COLUMNS}
    step = max(1, CHUNK_CELLS // draws)
    for a in range(0, k, step):
        sl = slice(a, min(a + step, k))
        mult = detector_multiplier(np.asarray(detected_tiles)[sl], p, r, rng)
        out[AREA_LO][sl], out[AREA_HI][sl] = interval_from_draws(est_a[sl], var_a[sl], mult, rng)
        out[COUNT_LO][sl], out[COUNT_HI][sl] = interval_from_draws(est_c[sl], var_c[sl], mult, rng)
    out[COUNT_LO] = np.floor(out[COUNT_LO] + 1e-9)
    out[COUNT_HI] = np.ceil(out[COUNT_HI] - 1e-9)
    if bias_correction:
        ratio = counts.precision / counts.recall
        out[AREA_CORRECTED] = est_a * ratio
        out[COUNT_CORRECTED] = est_c * ratio
    return out
