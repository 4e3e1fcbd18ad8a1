"""Out-of-sample skill of SolarForest: cross-validation, metrics and bootstrap intervals.

Skill is measured with random K-fold and with spatially grouped K-fold (whole counties held out:
neighbouring tracts share climate, prices and policy, so random folds flatter the model).
:func:`evaluate` cross-validates every target x transform x model (one-/two-stage forest, and the
plain baselines: the training mean and a ridge regression on the same features) x CV scheme, with a
bootstrap interval of each pooled out-of-fold R².
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import Pipeline

from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.solarforest.config import (
    MODEL_ORDER,
    CVScheme,
    EvaluationConfig,
    SolarForestConfig,
)
from deepsolar.solarforest.estimators import BaselineRegressor, SolarForestEstimator
from deepsolar.solarforest.features import TrainingData, prepare_data
from deepsolar.solarforest.model import library_versions
from deepsolar.solarforest.schema import target_units
from deepsolar.solarforest.tractdb import TractDB

log = logging.getLogger(__name__)


def make_folds(
    data: TrainingData, scheme: CVScheme, n_folds: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs: shuffled K-fold, or K-fold over whole counties (spatial).

    Args:
        data: the training set (its counties for the spatial scheme).
        scheme: ``random`` or ``spatial``.
        n_folds: number of folds.
        seed: the shuffling seed.

    Returns:
        One ``(train rows, test rows)`` pair per fold.
    """
    n = len(data.y)
    if n < n_folds:
        raise InputDataError(
            f"{n} tract(s) are too few for {n_folds}-fold cross-validation",
            where="SolarForest evaluation",
            fix=f"use a region with at least {n_folds} tracts or lower model.cv_folds",
        )
    if scheme == "random":
        return list(KFold(n_folds, shuffle=True, random_state=seed).split(data.X))
    groups = data.counties.to_numpy()
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise InputDataError(
            f"{n_groups} county(ies) are too few for {n_folds}-fold spatial cross-validation",
            where="SolarForest evaluation",
            fix=f"use a region with at least {n_folds} counties or lower model.cv_folds",
        )
    # GroupKFold(shuffle=True) assigns counties to folds at random (sklearn >= 1.6).
    return list(GroupKFold(n_folds, shuffle=True, random_state=seed).split(data.X, groups=groups))


@dataclass
class CVResult:
    """Out-of-fold predictions of one (target, transform, model, CV scheme)."""

    target: str
    transform: str
    model: str  # mean | linear | one_stage | two_stage
    scheme: str
    fips: pd.Series
    y: np.ndarray
    oof: np.ndarray
    fold: np.ndarray
    p_nonzero: np.ndarray | None
    metrics: dict[str, Any]

    @property
    def variant(self) -> str:
        """The model's name (an older name of :attr:`model`)."""
        return self.model


def _regression_metrics(y: np.ndarray, pred: np.ndarray, scale: float = 1.0) -> dict[str, float]:
    """R² and MAE on the original scale, and R² on the log1p(scale x y) scale.

    MAE is in display units (column x ``scale``); the log1p R² is of the same predictions.
    """
    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    out = {"r2": float(r2_score(y, pred)), "mae": float(mean_absolute_error(y, pred) * scale)}
    if (y >= 0).all():
        out["r2_log1p"] = float(
            r2_score(np.log1p(scale * y), np.log1p(scale * np.clip(pred, 0.0, None)))
        )
    return out


@dataclass
class _OutOfFold:
    """What the folds of one cross-validation produce."""

    oof: np.ndarray
    fold: np.ndarray
    p_nonzero: np.ndarray | None
    per_fold: list[dict[str, Any]]


def _out_of_fold(
    data: TrainingData,
    base: BaseEstimator,
    folds: list[tuple[np.ndarray, np.ndarray]],
    two: bool,
    classifier_cache: dict[int, Pipeline] | None,
    scale: float,
) -> _OutOfFold:
    """Fit a clone of ``base`` per fold and predict its held-out rows."""
    n = len(data.y)
    oof = np.full(n, np.nan)
    fold_id = np.full(n, -1)
    p_oof = np.full(n, np.nan) if two else None
    per_fold = []
    for k, (tr, te) in enumerate(folds):
        est = clone(base)
        cached = classifier_cache.get(k) if (two and classifier_cache is not None) else None
        if two:
            est.fit(data.X.iloc[tr], data.y[tr], classifier=cached)
            if classifier_cache is not None:
                classifier_cache[k] = est.classifier_
        else:
            est.fit(data.X.iloc[tr], data.y[tr])
        Xte = data.X.iloc[te]
        oof[te] = est.predict(Xte)
        fold_id[te] = k
        if p_oof is not None:
            p_oof[te] = est.predict_proba_nonzero(Xte)
        m = _regression_metrics(data.y[te], oof[te], scale)
        m["n_test"] = len(te)
        per_fold.append(m)
    return _OutOfFold(oof, fold_id, p_oof, per_fold)


def _cv_metrics(
    data: TrainingData, config: SolarForestConfig, model: str, scheme: str, r: _OutOfFold
) -> dict[str, Any]:
    """The JSON-ready metrics of one cross-validation."""
    scale = config.resolved_target_scale
    r2s = [m["r2"] for m in r.per_fold]
    metrics: dict[str, Any] = {
        "target": data.target,
        "transform": config.target_transform,
        "model": model,
        "scheme": scheme,
        "variant": model,
        "n_folds": len(r.per_fold),
        "pooled": _regression_metrics(data.y, r.oof, scale),
        "r2_fold_mean": float(np.mean(r2s)),
        "r2_fold_std": float(np.std(r2s)),
        "mae_fold_mean": float(np.mean([m["mae"] for m in r.per_fold])),
        "folds": r.per_fold,
    }
    nonzero = data.y > config.zero_threshold
    if nonzero.sum() >= 2:
        metrics["nonzero_tracts"] = _regression_metrics(data.y[nonzero], r.oof[nonzero], scale)
    if r.p_nonzero is not None:
        metrics["classifier"] = classifier_metrics(
            nonzero, r.p_nonzero, config.classifier_threshold, config.calibration_bins
        )
    return metrics


def cross_validate(
    data: TrainingData,
    config: SolarForestConfig,
    scheme: CVScheme,
    *,
    model: str | None = None,
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None,
    classifier_cache: dict[int, Pipeline] | None = None,
) -> CVResult:
    """Out-of-fold predictions and metrics for one CV scheme.

    Args:
        data: the training set.
        config: the model settings (target transform, forest, folds).
        scheme: ``random`` or ``spatial``.
        model: ``one_stage`` / ``two_stage`` (default: as ``config.two_stage``) or a baseline,
            ``mean`` / ``linear``.
        folds: the folds to use (default: :func:`make_folds` with the config's settings).
        classifier_cache: fold -> fitted zero/non-zero stage, shared by two-stage runs on the same
            rows and folds (a target transform does not change the stage).

    Returns:
        The out-of-fold predictions and their metrics.
    """
    model = model or ("two_stage" if config.two_stage else "one_stage")
    if model not in MODEL_ORDER:
        raise ConfigError(
            f"unknown model '{model}'", where="cross_validate", fix=f"one of {list(MODEL_ORDER)}"
        )
    folds = (
        folds
        if folds is not None
        else make_folds(data, scheme, config.cv_folds, config.random_state)
    )
    scale = config.resolved_target_scale
    two = model == "two_stage"
    if model in ("mean", "linear"):
        base: BaseEstimator = BaselineRegressor(model, config.target_transform, scale)
    else:
        base = SolarForestEstimator.from_config(config).set_params(two_stage=two)
    r = _out_of_fold(data, base, folds, two, classifier_cache, scale)
    metrics = _cv_metrics(data, config, model, scheme, r)
    return CVResult(
        data.target, config.target_transform, model, scheme, data.fips, data.y, r.oof, r.fold,
        r.p_nonzero, metrics,
    )  # fmt: skip


def top_variance_share(y: np.ndarray, k: int = 10) -> float:
    """Share of the total sum of squares held by the ``k`` tracts farthest from the mean.

    The total sum of squares is the R² denominator: near 1, a handful of tracts decide the R².

    Args:
        y: the target.
        k: number of tracts.

    Returns:
        The share (NaN for a constant target).
    """
    d2 = (np.asarray(y, dtype=float) - np.mean(y)) ** 2
    total = d2.sum()
    return float(np.sort(d2)[-k:].sum() / total) if total > 0 else float("nan")


def bootstrap_weights(groups: np.ndarray, n_samples: int, seed: int = 0) -> np.ndarray:
    """``(n_samples, n_rows)`` resampling weights: whole groups drawn with replacement.

    Row ``i`` of a resample is counted as often as its group was drawn; with one group per row
    this is the ordinary bootstrap. The same weights serve every model of a comparison (paired).

    Args:
        groups: the group of each row.
        n_samples: number of resamples.
        seed: the random seed.

    Returns:
        The weights.
    """
    codes, uniques = pd.factorize(np.asarray(groups))
    g = len(uniques)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n_samples)
    return counts[:, codes].astype(float)


def weighted_r2(weights: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R² of ``pred`` under each row of ``weights`` (one value per bootstrap resample).

    Args:
        weights: ``(n_samples, n_rows)`` resampling weights.
        y: observed values.
        pred: predictions.

    Returns:
        One R² per resample (NaN where the resample's target is constant).
    """
    y = np.asarray(y, dtype=float)
    c = y - y.mean()  # centred once: the sums of squares below lose no precision
    sw = weights.sum(axis=1)
    sse = weights @ (y - np.asarray(pred, dtype=float)) ** 2
    mc = (weights @ c) / sw
    sst = weights @ c**2 - sw * mc**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 0, 1.0 - sse / sst, np.nan)


def bootstrap_interval(
    weights: np.ndarray, y: np.ndarray, pred: np.ndarray, confidence: float = 0.95
) -> list[float]:
    """Percentile interval of the R² over the resamples in ``weights``.

    Args:
        weights: ``(n_samples, n_rows)`` resampling weights.
        y: observed values.
        pred: predictions.
        confidence: the interval's coverage.

    Returns:
        ``[low, high]``.
    """
    r2 = weighted_r2(weights, y, pred)
    a = (1.0 - confidence) / 2.0
    lo, hi = np.nanquantile(r2, [a, 1.0 - a])
    return [float(lo), float(hi)]


def _add_intervals(res: CVResult, weights: np.ndarray, scale: float, confidence: float) -> None:
    m = res.metrics["pooled"]
    m["r2_ci"] = bootstrap_interval(weights, res.y, res.oof, confidence)
    if "r2_log1p" in m:
        m["r2_log1p_ci"] = bootstrap_interval(
            weights,
            np.log1p(scale * res.y),
            np.log1p(scale * np.clip(res.oof, 0.0, None)),
            confidence,
        )


def _target_entry(data: TrainingData, config: SolarForestConfig, scale: float) -> dict[str, Any]:
    """The description of one evaluated target's data (``metrics["targets"][target]``)."""
    target = data.target
    default_scale, unit = target_units(target)
    if scale != default_scale or not unit:
        unit = f"{target} x {scale:g}"
    return {
        "unit": unit,
        "scale": scale,
        "n_tracts": len(data.y),
        "n_counties": int(data.counties.nunique()),
        "n_features": len(data.features),
        "n_dropped_missing_target": data.n_dropped_missing_target,
        "n_dropped_min_households": data.n_dropped_min_households,
        "zero_fraction": float(np.mean(data.y <= config.zero_threshold)),
        "top10_variance_share": top_variance_share(data.y, 10),
        "data_sha256": data.sha256(),
        "runs": {},
    }


def _evaluate_target(
    db: TractDB,
    config: SolarForestConfig,
    ev: EvaluationConfig,
    target: str,
    table: pd.DataFrame | None,
    results: dict[tuple[str, str, str, str], CVResult],
) -> dict[str, Any]:
    """Cross-validate every transform x model x CV scheme of one target into ``results``.

    Returns the target's entry of the metrics.
    """
    models = ev.models()
    cfg_t = config.model_copy(
        update={
            "target": target,
            "target_scale": config.target_scale if target == config.target else None,
        }
    )
    check = cfg_t.model_copy(
        update={
            "two_stage": "two_stage" in models,
            "target_transform": "log1p" if "log1p" in ev.transforms else "none",
        }
    )
    data = prepare_data(db, check, table)
    scale = cfg_t.resolved_target_scale
    entry = _target_entry(data, config, scale)
    groups = data.counties.to_numpy() if ev.bootstrap_by == "county" else np.arange(len(data.y))
    for scheme in config.cv_schemes:
        folds = make_folds(data, scheme, config.cv_folds, config.random_state)
        weights = (
            bootstrap_weights(groups, ev.bootstrap_samples, config.random_state)
            if ev.bootstrap_samples
            else None
        )
        cache: dict[int, Pipeline] = {}
        for transform in ev.transforms:
            cfg = cfg_t.model_copy(update={"target_transform": transform})
            for model in models:
                res = cross_validate(
                    data, cfg, scheme, model=model, folds=folds, classifier_cache=cache
                )
                if weights is not None:
                    _add_intervals(res, weights, scale, ev.confidence)
                results[(target, transform, model, scheme)] = res
                runs = entry["runs"].setdefault(transform, {}).setdefault(model, {})
                runs[scheme] = res.metrics
                log.info(
                    "%s / %s / %s / %s CV: R2 %.3f %s, MAE %.3g", target, transform, model,
                    scheme, res.metrics["pooled"]["r2"], res.metrics["pooled"].get("r2_ci"),
                    res.metrics["pooled"]["mae"],
                )  # fmt: skip
    # keep the table's order: transforms, then models, as configured
    entry["runs"] = {t: {m: entry["runs"][t][m] for m in models} for t in ev.transforms}
    return entry


def _primary_summary(
    out: dict[str, Any], config: SolarForestConfig, ev: EvaluationConfig, targets: list[str]
) -> dict[str, Any]:
    """The primary model's figures, repeated at the top level of the metrics."""
    models = ev.models()
    primary = config.target if config.target in out["targets"] else targets[0]
    prim = out["targets"][primary]
    ptrans = (
        config.target_transform if config.target_transform in ev.transforms else ev.transforms[0]
    )
    return {
        "target": primary,
        "unit": prim["unit"],
        "n_tracts": prim["n_tracts"],
        "n_counties": prim["n_counties"],
        "n_features": prim["n_features"],
        "zero_fraction": prim["zero_fraction"],
        "data_sha256": prim["data_sha256"],
        "variants": {v: prim["runs"][ptrans][v] for v in ("one_stage", "two_stage") if v in models},
    }


def evaluate(
    db: TractDB,
    config: SolarForestConfig,
    evaluation: EvaluationConfig | None = None,
    table: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], dict[tuple[str, str, str, str], CVResult]]:
    """Cross-validate every target x transform x model x CV scheme on the same folds.

    Models: the plain baselines and the one-/two-stage forest (``evaluation``); every pooled
    out-of-fold R² gets a bootstrap interval (whole counties resampled by default, the same
    resamples for every model of a target and scheme). ``metrics["variants"]`` repeats the forest
    runs of ``config.target`` / ``config.target_transform`` (the primary model).

    Args:
        db: the DeepSolar tract table.
        config: the primary model's settings.
        evaluation: what to compare (default: :class:`EvaluationConfig`'s defaults).
        table: the feature table joined to an external target (default: ``db.table``).

    Returns:
        The metrics (JSON-ready) and the raw results keyed ``(target, transform, model, scheme)``.
    """
    ev = evaluation or EvaluationConfig()
    targets = ev.resolved_targets(config.target)
    results: dict[tuple[str, str, str, str], CVResult] = {}
    out: dict[str, Any] = {
        "primary_target": config.target,
        "primary_transform": config.target_transform,
        "source_sha256": db.sha256,
        "config": config.model_dump(mode="json"),
        "evaluation": ev.model_dump(mode="json"),
        "versions": library_versions(),
        "targets": {},
    }
    for target in targets:
        out["targets"][target] = _evaluate_target(db, config, ev, target, table, results)
    out.update(_primary_summary(out, config, ev, targets))
    return out, results


def oof_table(results: dict[tuple[str, str, str, str], CVResult]) -> pd.DataFrame:
    """Per-tract out-of-fold predictions, one row per tract and (target, transform, model, scheme).

    Args:
        results: the raw results of :func:`evaluate`.

    Returns:
        The long table (fips, target, transform, model, scheme, fold, observed, predicted,
        p_nonzero).
    """
    frames = []
    for r in results.values():
        frames.append(
            pd.DataFrame(
                {
                    "fips": r.fips.to_numpy(),
                    "target": r.target,
                    "transform": r.transform,
                    "model": r.model,
                    "scheme": r.scheme,
                    "fold": r.fold,
                    "observed": r.y,
                    "predicted": r.oof,
                    "p_nonzero": r.p_nonzero if r.p_nonzero is not None else np.nan,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def classifier_metrics(
    is_nonzero: np.ndarray, p: np.ndarray, threshold: float = 0.5, n_bins: int = 10
) -> dict[str, Any]:
    """Zero/non-zero stage: AUC, Brier score, accuracy, reliability curve (calibration).

    Args:
        is_nonzero: whether each tract has solar.
        p: the predicted P(tract has solar).
        threshold: the probability above which a tract is called non-zero.
        n_bins: bins of the reliability curve and of the calibration error.

    Returns:
        The metrics (AUC None when only one class is present).
    """
    from sklearn.calibration import calibration_curve

    prob_true, prob_pred = calibration_curve(is_nonzero, p, n_bins=n_bins, strategy="uniform")
    both = 0 < is_nonzero.sum() < len(is_nonzero)
    return {
        "auc": float(roc_auc_score(is_nonzero, p)) if both else None,
        "brier": float(brier_score_loss(is_nonzero, p)),
        "accuracy": float(accuracy_score(is_nonzero, p >= threshold)),
        "nonzero_fraction": float(np.mean(is_nonzero)),
        "calibration": {"prob_pred": prob_pred.tolist(), "prob_true": prob_true.tolist()},
        # Expected calibration error over the same bins, weighted by bin size.
        "ece": _ece(is_nonzero, p, n_bins),
    }


def _ece(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    err = 0.0
    for b in np.unique(bins):
        m = bins == b
        err += m.mean() * abs(float(np.mean(y[m])) - float(np.mean(p[m])))
    return float(err)
