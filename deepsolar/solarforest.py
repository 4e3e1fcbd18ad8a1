"""SolarForest: random-forest regression of tract solar deployment from its environment and society.

A reproduction of the SolarForest model of DeepSolar (Yu et al., Joule 2018): a random forest
predicts a tract's solar deployment density (``solar_panel_area_divided_by_area``, m² of residential
panel per square mile, by default) from climate, socio-economic, electricity-price, policy and voting
features of the DeepSolar tract database. A two-stage variant first classifies zero vs non-zero
tracts, then regresses on the non-zero ones; its prediction is ``P(non-zero) x E[y | non-zero]``
(``combine="expected"``) or the regression where ``P >= threshold`` and 0 elsewhere (``"hard"``).

Out-of-sample skill is measured with random K-fold and with spatially grouped K-fold (whole counties
held out: neighbouring tracts share climate, prices and policy, so random folds flatter the model).

Persistence: the fitted forests go to a ``.skops`` file (no pickle: loading executes no code) and
everything needed to trust and reuse them - feature list, target, config, data hash, library versions,
the file's SHA-256 - to a JSON sidecar next to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from deepsolar.config import StrictModel
from deepsolar.errors import ConfigError, InputDataError
from deepsolar.tractdb import (
    DEFAULT_TARGET,
    FEATURE_GROUPS,
    ID_COLUMNS,
    TractDB,
    atomic_replace,
    county_of,
    file_sha256,
    is_target_column,
)

log = logging.getLogger(__name__)

#: The paper's headline factors (partial-dependence plots).
HEADLINE_FACTORS: tuple[str, ...] = (
    "population_density",
    "average_household_income",
    "gini_index",
    "daily_solar_radiation",
)
FeatureGroup = Literal[
    "environment", "socioeconomic", "electricity", "policy", "voting", "location"
]
CVScheme = Literal["random", "spatial"]
Variant = Literal["one_stage", "two_stage"]
MODEL_FORMAT_VERSION = 1
# The only non-default types a SolarForest .skops file may hold: numpy dtypes and sklearn's tree
# node storage. Anything else in a file is refused before it is loaded.
_SKOPS_TRUSTED = ("numpy.dtype", "sklearn.tree._tree.Tree")


class SolarForestConfig(StrictModel):
    """Model and evaluation settings (the ``model:`` section of configs/solarforest.yaml)."""

    target: str = Field(DEFAULT_TARGET, description="column to predict (any DeepSolar target)")
    feature_groups: list[FeatureGroup] = Field(
        default_factory=lambda: ["environment", "socioeconomic", "electricity", "policy", "voting"],
        description="lexicon groups used as features ('location' = lat/lon, off by default)",
    )
    features: list[str] | None = Field(
        None, description="explicit feature list; overrides feature_groups"
    )
    exclude_features: list[str] = Field(default_factory=list)
    two_stage: bool = Field(False, description="zero/non-zero classifier, then regression")
    combine: Literal["expected", "hard"] = "expected"
    classifier_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    zero_threshold: float = Field(0.0, ge=0.0, description="y <= this counts as 'no solar'")
    target_transform: Literal["none", "log1p"] = "none"
    n_estimators: int = Field(300, ge=1, le=10_000)
    max_features: float | Literal["sqrt", "log2"] = Field(
        0.33, description="fraction of features tried per split (p/3 is the regression default)"
    )
    min_samples_leaf: int = Field(1, ge=1)
    n_jobs: int = Field(-1, description="cores for the forests (-1 = all)")
    random_state: int = 0
    cv_folds: int = Field(5, ge=2, le=100)
    cv_schemes: list[CVScheme] = Field(default_factory=lambda: ["random", "spatial"], min_length=1)
    permutation_repeats: int = Field(5, ge=1)
    pdp_features: list[str] = Field(default_factory=lambda: list(HEADLINE_FACTORS))
    pdp_grid_resolution: int = Field(30, ge=2)
    calibration_bins: int = Field(10, ge=2)

    @field_validator("max_features")
    @classmethod
    def _fraction(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not 0.0 < v <= 1.0:
            raise ValueError("a fraction of features must be in (0, 1]")
        return v


# --------------------------------------------------------------------------------------------------
# Data


@dataclass
class TrainingData:
    """Features ``X`` (DataFrame, model column order), target ``y``, tract ``fips``, county groups."""

    X: pd.DataFrame
    y: np.ndarray
    fips: pd.Series
    target: str
    features: list[str]
    n_dropped_missing_target: int = 0
    source_sha256: str | None = None

    @property
    def counties(self) -> pd.Series:
        return county_of(self.fips)

    def sha256(self) -> str:
        return data_sha256(self.X, self.y, self.fips)


def data_sha256(X: pd.DataFrame, y: np.ndarray, fips: pd.Series) -> str:
    """Content hash of a training set: column names, tract ids, every value (order-sensitive)."""
    frame = X.reset_index(drop=True).copy()
    frame.insert(0, "__fips__", fips.to_numpy())
    frame["__y__"] = np.asarray(y, dtype=float)
    h = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def select_features(
    db: TractDB, config: SolarForestConfig, table: pd.DataFrame | None = None
) -> list[str]:
    """Feature columns for ``config``: explicit list or lexicon groups, minus leakage and ids."""
    table = db.table if table is None else table
    where = db.source
    target = config.target
    if config.features is not None:
        feats = list(dict.fromkeys(config.features))
        missing = [c for c in feats if c not in table.columns]
        if missing:
            raise InputDataError(
                f"feature column(s) {missing} not in the table",
                where=where,
                fix="correct model.features (see deepsolar_lexicon.csv for the column names)",
            )
        leaky = [c for c in feats if is_target_column(c) or c == target or c in ID_COLUMNS]
        if leaky:
            raise ConfigError(
                f"feature(s) {leaky} are the target, derived from the detected panels, or "
                "identifiers: a model using them would leak the answer",
                where="model.features",
                fix="remove them from model.features",
            )
    else:
        feats = [c for c in db.features(config.feature_groups) if c in table.columns]
    excl = set(config.exclude_features)
    feats = [c for c in feats if c not in excl and c != target]
    if not feats:
        raise ConfigError(
            "no feature left after applying feature_groups / features / exclude_features",
            where="model",
            fix=f"choose at least one group of {list(FEATURE_GROUPS)} or list features",
        )
    non_numeric = [c for c in feats if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise InputDataError(
            f"feature column(s) {non_numeric} are not numeric",
            where=where,
            fix="exclude them (model.exclude_features) or store them as numbers",
        )
    all_nan = [c for c in feats if table[c].isna().all()]
    if all_nan:
        raise InputDataError(
            f"feature column(s) {all_nan} are empty (all NaN) in this table",
            where=where,
            fix="add them to model.exclude_features, or use a table where they are filled",
        )
    return feats


def prepare_data(
    db: TractDB, config: SolarForestConfig, table: pd.DataFrame | None = None
) -> TrainingData:
    """Training set: rows with a finite target, the selected feature columns, tract ids.

    ``table``: the feature table joined to an external target (:func:`tractdb.join_target`);
    by default the DeepSolar table itself.
    """
    table = db.table if table is None else table
    target = config.target
    if target not in table.columns:
        raise InputDataError(
            f"target column '{target}' not in the table (DeepSolar targets here: {db.targets})",
            where=db.source,
            fix="set model.target to one of the listed columns, or join a target table",
        )
    y_all = pd.to_numeric(table[target], errors="coerce").replace([np.inf, -np.inf], np.nan)
    if y_all.isna().all():
        raise InputDataError(
            f"target column '{target}' is empty (all NaN)",
            where=db.source,
            fix="choose another target or a table where it is filled",
        )
    feats = select_features(db, config, table)
    keep = y_all.notna().to_numpy()
    n_drop = int((~keep).sum())
    if n_drop:
        log.info("left out %d tract(s) without a value of %s", n_drop, target)
    y = y_all[keep].to_numpy(dtype=float)
    if (config.two_stage or config.target_transform == "log1p") and (y < 0).any():
        raise InputDataError(
            f"target '{target}' has negative values; the two-stage model and the log1p "
            "transform need a non-negative target",
            where=db.source,
            fix="use a non-negative target (densities, counts, areas)",
        )
    sub = table.loc[keep]
    return TrainingData(
        X=sub[feats].reset_index(drop=True).astype(float),
        y=y,
        fips=sub["fips"].reset_index(drop=True).astype(str),
        target=target,
        features=feats,
        n_dropped_missing_target=n_drop,
        source_sha256=db.sha256,
    )


# --------------------------------------------------------------------------------------------------
# Estimator


def _forest_pipeline(forest: BaseEstimator) -> Pipeline:
    # Median imputation inside the pipeline: learned on the training fold only (no leakage), and
    # partial-dependence / permutation tools see an estimator that accepts NaNs.
    return Pipeline(
        [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("forest", forest)]
    )


class SolarForestEstimator(RegressorMixin, BaseEstimator):
    """Random-forest regressor, optionally two-stage; a scikit-learn estimator.

    Fitted attributes: ``regressor_`` (Pipeline), ``classifier_`` (Pipeline or None),
    ``feature_names_in_``, ``n_features_in_``.
    """

    def __init__(
        self,
        two_stage: bool = False,
        combine: str = "expected",
        classifier_threshold: float = 0.5,
        zero_threshold: float = 0.0,
        target_transform: str = "none",
        n_estimators: int = 300,
        max_features: float | str = 0.33,
        min_samples_leaf: int = 1,
        n_jobs: int | None = -1,
        random_state: int | None = 0,
    ) -> None:
        self.two_stage = two_stage
        self.combine = combine
        self.classifier_threshold = classifier_threshold
        self.zero_threshold = zero_threshold
        self.target_transform = target_transform
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.n_jobs = n_jobs
        self.random_state = random_state

    @classmethod
    def from_config(cls, config: SolarForestConfig) -> SolarForestEstimator:
        return cls(
            two_stage=config.two_stage,
            combine=config.combine,
            classifier_threshold=config.classifier_threshold,
            zero_threshold=config.zero_threshold,
            target_transform=config.target_transform,
            n_estimators=config.n_estimators,
            max_features=config.max_features,
            min_samples_leaf=config.min_samples_leaf,
            n_jobs=config.n_jobs,
            random_state=config.random_state,
        )

    def _forest_kwargs(self) -> dict[str, Any]:
        return dict(
            n_estimators=self.n_estimators,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def _fwd(self, y: np.ndarray) -> np.ndarray:
        return np.log1p(y) if self.target_transform == "log1p" else y

    def _inv(self, y: np.ndarray) -> np.ndarray:
        return np.expm1(y) if self.target_transform == "log1p" else y

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> SolarForestEstimator:
        X = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        y = np.asarray(y, dtype=float)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        if not self.two_stage:
            self.classifier_ = None
            self.regressor_ = _forest_pipeline(RandomForestRegressor(**self._forest_kwargs()))
            self.regressor_.fit(X, self._fwd(y))
            return self
        nonzero = y > self.zero_threshold
        n_pos = int(nonzero.sum())
        if n_pos == 0 or n_pos == len(y):
            raise InputDataError(
                f"the two-stage model needs both zero and non-zero tracts; this training set has "
                f"{n_pos} non-zero of {len(y)}",
                where="two-stage SolarForest fit",
                fix="use the one-stage model (two_stage: false) or a larger region",
            )
        self.classifier_ = _forest_pipeline(RandomForestClassifier(**self._forest_kwargs()))
        self.classifier_.fit(X, nonzero)
        self.regressor_ = _forest_pipeline(RandomForestRegressor(**self._forest_kwargs()))
        self.regressor_.fit(X.loc[nonzero], self._fwd(y[nonzero]))
        return self

    def predict_proba_nonzero(self, X: pd.DataFrame) -> np.ndarray:
        """P(tract has solar) from the first stage (two-stage models only)."""
        check_is_fitted(self, "regressor_")
        if self.classifier_ is None:
            raise ConfigError(
                "P(non-zero) needs the two-stage model",
                where="SolarForestEstimator.predict_proba_nonzero",
                fix="fit with two_stage=True",
            )
        classes = list(self.classifier_.classes_)
        return self.classifier_.predict_proba(X)[:, classes.index(True)]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "regressor_")
        reg = self._inv(self.regressor_.predict(X))
        if self.classifier_ is None:
            return reg
        p = self.predict_proba_nonzero(X)
        if self.combine == "hard":
            return np.where(p >= self.classifier_threshold, reg, 0.0)
        return p * reg


@dataclass
class SolarForestModel:
    """A fitted estimator with the facts needed to reuse it safely."""

    estimator: SolarForestEstimator
    features: list[str]
    target: str
    config: SolarForestConfig
    metadata: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    import sklearn
    import skops

    import deepsolar

    return {
        "python": platform.python_version(),
        "deepsolar": deepsolar.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "skops": skops.__version__,
    }


def fit_solarforest(data: TrainingData, config: SolarForestConfig) -> SolarForestModel:
    """Fit on every tract of ``data``; records in-sample metrics (not a measure of skill)."""
    if len(data.y) < 2:
        raise InputDataError(
            f"only {len(data.y)} tract(s) with a target value; a forest needs at least 2",
            where="SolarForest training data",
            fix="use a larger region or a target that is filled",
        )
    est = SolarForestEstimator.from_config(config).fit(data.X, data.y)
    pred = est.predict(data.X)
    meta = {
        "format_version": MODEL_FORMAT_VERSION,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": data.target,
        "features": list(data.features),
        "n_train_tracts": len(data.y),
        "n_dropped_missing_target": data.n_dropped_missing_target,
        "data_sha256": data.sha256(),
        "source_sha256": data.source_sha256,
        "zero_fraction": float(np.mean(data.y <= config.zero_threshold)),
        "in_sample": {
            "r2": float(r2_score(data.y, pred)),
            "mae": float(mean_absolute_error(data.y, pred)),
        },
        "versions": library_versions(),
        "config": config.model_dump(mode="json"),
    }
    return SolarForestModel(est, list(data.features), data.target, config, meta)


def check_features(model: SolarForestModel, table: pd.DataFrame, *, where: str) -> pd.DataFrame:
    """The model's feature columns of ``table`` in training order; a clear error if any is absent."""
    missing = [c for c in model.features if c not in table.columns]
    if missing:
        raise InputDataError(
            f"the table lacks {len(missing)} of the model's {len(model.features)} feature "
            f"column(s): {missing[:10]}{' ...' if len(missing) > 10 else ''}",
            where=where,
            fix="predict from a table with the same columns as the training table (the DeepSolar "
            "tract schema), or retrain on this table",
        )
    X = table[model.features]
    non_numeric = [c for c in model.features if not pd.api.types.is_numeric_dtype(X[c])]
    if non_numeric:
        raise InputDataError(
            f"feature column(s) {non_numeric} are not numeric",
            where=where,
            fix="read the table with tractdb.read_tract_db (it repairs text-typed numbers)",
        )
    return X.astype(float)


def predict_tracts(
    model: SolarForestModel, table: pd.DataFrame, *, where: str = "table"
) -> pd.DataFrame:
    """Per-tract predictions: ``fips``, ``predicted_<target>`` (+ ``p_nonzero`` for two-stage)."""
    if "fips" not in table.columns:
        raise InputDataError(
            "the table has no 'fips' column", where=where, fix="give each row its tract FIPS"
        )
    X = check_features(model, table, where=where)
    out = pd.DataFrame({"fips": table["fips"].astype(str).to_numpy()})
    out[f"predicted_{model.target}"] = model.estimator.predict(X)
    if model.estimator.classifier_ is not None:
        out["p_nonzero"] = model.estimator.predict_proba_nonzero(X)
    if model.target in table.columns:
        out[f"observed_{model.target}"] = pd.to_numeric(
            table[model.target], errors="coerce"
        ).to_numpy()
    return out


# --------------------------------------------------------------------------------------------------
# Cross-validation


def make_folds(
    data: TrainingData, scheme: CVScheme, n_folds: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs: shuffled K-fold, or K-fold over whole counties (spatial)."""
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
    scheme: str
    variant: str
    oof: np.ndarray
    fold: np.ndarray
    p_nonzero: np.ndarray | None
    metrics: dict[str, Any]


def _regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"r2": float(r2_score(y, pred)), "mae": float(mean_absolute_error(y, pred))}


def cross_validate(data: TrainingData, config: SolarForestConfig, scheme: CVScheme) -> CVResult:
    """Out-of-fold predictions and metrics for one CV scheme (the variant follows ``config``)."""
    folds = make_folds(data, scheme, config.cv_folds, config.random_state)
    n = len(data.y)
    oof = np.full(n, np.nan)
    fold_id = np.full(n, -1)
    p_oof = np.full(n, np.nan) if config.two_stage else None
    per_fold = []
    base = SolarForestEstimator.from_config(config)
    for k, (tr, te) in enumerate(folds):
        est = clone(base).fit(data.X.iloc[tr], data.y[tr])
        Xte = data.X.iloc[te]
        oof[te] = est.predict(Xte)
        fold_id[te] = k
        if p_oof is not None:
            p_oof[te] = est.predict_proba_nonzero(Xte)
        m = _regression_metrics(data.y[te], oof[te])
        m["n_test"] = len(te)
        per_fold.append(m)
    r2s = [m["r2"] for m in per_fold]
    metrics: dict[str, Any] = {
        "scheme": scheme,
        "variant": "two_stage" if config.two_stage else "one_stage",
        "n_folds": len(folds),
        "pooled": _regression_metrics(data.y, oof),
        "r2_fold_mean": float(np.mean(r2s)),
        "r2_fold_std": float(np.std(r2s)),
        "mae_fold_mean": float(np.mean([m["mae"] for m in per_fold])),
        "folds": per_fold,
    }
    nonzero = data.y > config.zero_threshold
    if nonzero.sum() >= 2:
        metrics["nonzero_tracts"] = _regression_metrics(data.y[nonzero], oof[nonzero])
    if p_oof is not None:
        metrics["classifier"] = classifier_metrics(
            nonzero, p_oof, config.classifier_threshold, config.calibration_bins
        )
    return CVResult(scheme, metrics["variant"], oof, fold_id, p_oof, metrics)


def classifier_metrics(
    is_nonzero: np.ndarray, p: np.ndarray, threshold: float = 0.5, n_bins: int = 10
) -> dict[str, Any]:
    """Zero/non-zero stage: AUC, Brier score, accuracy, reliability curve (calibration)."""
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


def evaluate(
    data: TrainingData,
    config: SolarForestConfig,
    variants: list[Variant] | tuple[Variant, ...] = ("one_stage", "two_stage"),
) -> tuple[dict[str, Any], dict[tuple[str, str], CVResult]]:
    """Cross-validate every (variant, scheme); returns metrics JSON and the raw CV results."""
    results: dict[tuple[str, str], CVResult] = {}
    out: dict[str, Any] = {
        "target": data.target,
        "n_tracts": len(data.y),
        "n_counties": int(data.counties.nunique()),
        "n_features": len(data.features),
        "zero_fraction": float(np.mean(data.y <= config.zero_threshold)),
        "data_sha256": data.sha256(),
        "source_sha256": data.source_sha256,
        "config": config.model_dump(mode="json"),
        "versions": library_versions(),
        "variants": {},
    }
    for variant in variants:
        cfg = config.model_copy(update={"two_stage": variant == "two_stage"})
        out["variants"][variant] = {}
        for scheme in config.cv_schemes:
            res = cross_validate(data, cfg, scheme)
            results[(variant, scheme)] = res
            out["variants"][variant][scheme] = res.metrics
            log.info(
                "%s / %s CV: R2 %.3f (folds %.3f +- %.3f), MAE %.2f",
                variant, scheme, res.metrics["pooled"]["r2"], res.metrics["r2_fold_mean"],
                res.metrics["r2_fold_std"], res.metrics["pooled"]["mae"],
            )  # fmt: skip
    return out, results


def oof_table(data: TrainingData, results: dict[tuple[str, str], CVResult]) -> pd.DataFrame:
    """Per-tract out-of-fold predictions, one column per (variant, scheme)."""
    df = pd.DataFrame({"fips": data.fips, f"observed_{data.target}": data.y})
    for (variant, scheme), r in results.items():
        df[f"oof_{variant}_{scheme}"] = r.oof
        df[f"fold_{variant}_{scheme}"] = r.fold
        if r.p_nonzero is not None:
            df[f"p_nonzero_{variant}_{scheme}"] = r.p_nonzero
    return df


def r2_table(metrics: dict[str, Any]) -> str:
    """Markdown table of out-of-sample R² / MAE per variant and CV scheme."""
    lines = [
        "| model | CV | R² (pooled out-of-fold) | R² per fold (mean ± sd) | MAE | P(non-zero) AUC / Brier |",
        "|---|---|---|---|---|---|",
    ]
    for variant, by_scheme in metrics["variants"].items():
        for scheme, m in by_scheme.items():
            cls = m.get("classifier")
            cls_s = (
                f"{cls['auc']:.3f} / {cls['brier']:.3f}" if cls and cls["auc"] is not None else "-"
            )
            cv = "random K-fold" if scheme == "random" else "spatial (county) K-fold"
            lines.append(
                f"| {variant.replace('_', '-')} | {cv} | {m['pooled']['r2']:.3f} | "
                f"{m['r2_fold_mean']:.3f} ± {m['r2_fold_std']:.3f} | {m['pooled']['mae']:.3g} | {cls_s} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Importances and plots


def impurity_importances(model: SolarForestModel) -> pd.DataFrame:
    """Mean decrease in impurity of the regression forest (and of the classifier, two-stage)."""
    est = model.estimator
    df = pd.DataFrame({"feature": model.features})
    df["impurity_regressor"] = est.regressor_.named_steps["forest"].feature_importances_
    if est.classifier_ is not None:
        df["impurity_classifier"] = est.classifier_.named_steps["forest"].feature_importances_
    return df.sort_values("impurity_regressor", ascending=False, ignore_index=True)


def permutation_importances(
    data: TrainingData, config: SolarForestConfig, *, max_test_rows: int | None = None
) -> pd.DataFrame:
    """Drop in held-out R² when a feature is shuffled.

    The model is fitted on the training part of the first random fold and scored on its held-out
    part (importances on training data reward memorised features).
    """
    from sklearn.inspection import permutation_importance

    tr, te = make_folds(data, "random", config.cv_folds, config.random_state)[0]
    est = SolarForestEstimator.from_config(config).fit(data.X.iloc[tr], data.y[tr])
    if max_test_rows is not None and len(te) > max_test_rows:
        te = np.random.default_rng(config.random_state).choice(te, max_test_rows, replace=False)
    r = permutation_importance(
        est,
        data.X.iloc[te],
        data.y[te],
        scoring="r2",
        n_repeats=config.permutation_repeats,
        random_state=config.random_state,
    )
    df = pd.DataFrame(
        {
            "feature": data.features,
            "permutation_r2_drop_mean": r.importances_mean,
            "permutation_r2_drop_std": r.importances_std,
        }
    )
    return df.sort_values("permutation_r2_drop_mean", ascending=False, ignore_index=True)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: flows run on servers without a display
    import matplotlib.pyplot as plt

    return plt


def _save_fig(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        atomic_replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        _pyplot().close(fig)
    return path


def plot_partial_dependence(
    model: SolarForestModel,
    X: pd.DataFrame,
    path: str | Path,
    features: list[str] | None = None,
    *,
    grid_resolution: int = 30,
    max_rows: int = 1000,
) -> tuple[Path | None, list[str]]:
    """Partial dependence of the prediction on each headline factor; returns (path, skipped)."""
    from sklearn.inspection import PartialDependenceDisplay

    wanted = list(features if features is not None else model.config.pdp_features)
    use = [f for f in wanted if f in model.features]
    skipped = [f for f in wanted if f not in model.features]
    if skipped:
        log.warning("partial dependence: %s not among the model's features, skipped", skipped)
    if not use:
        return None, skipped
    # Rows with a missing value of a plotted factor cannot place it on the grid.
    Xp = X[model.features].dropna(subset=use)
    if len(Xp) > max_rows:
        Xp = Xp.sample(max_rows, random_state=0)
    plt = _pyplot()
    ncols = min(len(use), 2)
    nrows = math.ceil(len(use) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    PartialDependenceDisplay.from_estimator(
        model.estimator,
        Xp,
        use,
        grid_resolution=grid_resolution,
        percentiles=(0.02, 0.98),
        ax=axes.ravel()[: len(use)],
    )
    for ax in axes.ravel()[len(use) :]:
        ax.set_visible(False)
    for ax in axes.ravel()[: len(use)]:
        ax.set_ylabel("prediction")
    stage = "two" if model.config.two_stage else "one"
    fig.suptitle(f"SolarForest ({stage}-stage) partial dependence of {model.target}", fontsize=10)
    return _save_fig(fig, Path(path)), skipped


def plot_importances(imp: pd.DataFrame, column: str, path: str | Path, top: int = 20) -> Path:
    plt = _pyplot()
    d = imp.sort_values(column, ascending=False).head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(d) + 1.2))
    err = d.get(column.replace("_mean", "_std")) if column.endswith("_mean") else None
    ax.barh(d["feature"], d[column], xerr=err)
    ax.set_xlabel(column.replace("_", " "))
    ax.set_title(f"SolarForest: top {len(d)} features")
    return _save_fig(fig, Path(path))


def plot_calibration(metrics: dict[str, Any], path: str | Path) -> Path | None:
    """Reliability diagram of the zero/non-zero stage, one curve per CV scheme."""
    curves = {
        scheme: m["classifier"]
        for scheme, m in metrics.get("variants", {}).get("two_stage", {}).items()
        if m.get("classifier")
    }
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
    for scheme, c in curves.items():
        cal = c["calibration"]
        ax.plot(
            cal["prob_pred"], cal["prob_true"], "o-", label=f"{scheme} CV (Brier {c['brier']:.3f})"
        )
    ax.set_xlabel("predicted P(tract has solar)")
    ax.set_ylabel("observed fraction with solar")
    ax.set_title("Two-stage SolarForest: zero/non-zero calibration")
    ax.legend(loc="upper left", fontsize=8)
    return _save_fig(fig, Path(path))


def plot_observed_vs_predicted(
    data: TrainingData, results: dict[tuple[str, str], CVResult], path: str | Path
) -> Path:
    plt = _pyplot()
    keys = list(results)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2), squeeze=False)
    hi = float(np.nanpercentile(data.y, 99.5)) * 1.05 or 1.0
    for ax, key in zip(axes.ravel(), keys, strict=True):
        r = results[key]
        ax.scatter(data.y, r.oof, s=4, alpha=0.4)
        ax.plot([0, hi], [0, hi], "k:")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_title(f"{key[0]} / {key[1]} CV: R² {r.metrics['pooled']['r2']:.2f}", fontsize=9)
        ax.set_xlabel(f"observed {data.target}", fontsize=8)
        ax.set_ylabel("out-of-fold prediction", fontsize=8)
    return _save_fig(fig, Path(path))


# --------------------------------------------------------------------------------------------------
# Persistence


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, allow_nan=False, default=_json_default)
            f.write("\n")
        atomic_replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_model(model: SolarForestModel, path: str | Path) -> Path:
    """Write ``path`` (.skops, the forests) and ``path.with_suffix('.json')`` (metadata)."""
    import skops.io as sio

    p = Path(path)
    if p.suffix != ".skops":
        raise ConfigError(
            "a SolarForest model file must end in .skops",
            where=str(p),
            fix="name it e.g. solarforest.skops",
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    est = model.estimator
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        sio.dump({"regressor": est.regressor_, "classifier": est.classifier_}, tmp)
        meta = dict(model.metadata)
        meta.update(
            {
                "format_version": MODEL_FORMAT_VERSION,
                "model_file": p.name,
                "model_sha256": file_sha256(tmp),
                "target": model.target,
                "features": list(model.features),
                "estimator_params": est.get_params(),
                "config": model.config.model_dump(mode="json"),
            }
        )
        meta.setdefault("versions", library_versions())
        atomic_replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    write_json_atomic(_sidecar(p), meta)
    model.metadata = meta
    return p


def load_model(path: str | Path) -> SolarForestModel:
    """Load a model written by :func:`save_model`, refusing a file that does not match its sidecar.

    Checks, before anything is deserialised: the sidecar exists and names this file, the file's
    SHA-256 equals the recorded one, and the file holds only scikit-learn/numpy types plus the
    allow-listed tree storage. A different scikit-learn version is reported as a warning.
    """
    import skops.io as sio

    p = Path(path)
    side = _sidecar(p)
    for f, what in ((p, "model file"), (side, "model metadata sidecar")):
        if not f.is_file():
            raise InputDataError(
                f"{what} not found",
                where=str(f),
                fix="pass the .skops file written by the solarforest train flow (its .json sidecar "
                "must sit next to it)",
            )
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputDataError(
            f"unreadable model sidecar: {err}", where=str(side), fix="retrain the model"
        ) from None
    required = {
        "format_version",
        "model_sha256",
        "features",
        "target",
        "estimator_params",
        "config",
    }
    if not isinstance(meta, dict) or required - set(meta):
        raise InputDataError(
            f"the sidecar lacks {sorted(required - set(meta if isinstance(meta, dict) else {}))}",
            where=str(side),
            fix="retrain the model with this version of deepsolar",
        )
    if meta["format_version"] != MODEL_FORMAT_VERSION:
        raise InputDataError(
            f"model format {meta['format_version']} is not supported (this code reads "
            f"{MODEL_FORMAT_VERSION})",
            where=str(side),
            fix="retrain the model with this version of deepsolar",
        )
    digest = file_sha256(p)
    if digest != meta["model_sha256"]:
        raise InputDataError(
            "the model file does not match the SHA-256 recorded in its sidecar (modified, "
            "truncated, or a different model)",
            where=str(p),
            fix="use the model file and sidecar written together, or retrain",
        )
    try:
        untrusted = sio.get_untrusted_types(file=p)
    except Exception as err:  # a corrupt archive raises zipfile/json errors
        raise InputDataError(
            f"not a skops model file: {err}", where=str(p), fix="retrain"
        ) from None
    extra = sorted(set(untrusted) - set(_SKOPS_TRUSTED))
    if extra:
        raise InputDataError(
            f"the model file holds types outside the SolarForest allow-list: {extra}",
            where=str(p),
            fix="only load models written by deepsolar's save_model",
        )
    parts = sio.load(p, trusted=list(untrusted))
    saved_sklearn = meta.get("versions", {}).get("scikit-learn")
    now = library_versions()
    if saved_sklearn and saved_sklearn != now["scikit-learn"]:
        warnings.warn(
            f"model {p} was trained with scikit-learn {saved_sklearn}, this is "
            f"{now['scikit-learn']}: predictions may differ slightly",
            stacklevel=2,
        )
    config = SolarForestConfig.model_validate(meta["config"])
    est = SolarForestEstimator(**meta["estimator_params"])
    est.regressor_ = parts["regressor"]
    est.classifier_ = parts["classifier"]
    est.feature_names_in_ = np.asarray(meta["features"], dtype=object)
    est.n_features_in_ = len(meta["features"])
    return SolarForestModel(est, list(meta["features"]), meta["target"], config, meta)


# --------------------------------------------------------------------------------------------------
# Inputs and outputs used by the flow


def load_training_table(
    features_path: str | Path,
    config: SolarForestConfig,
    *,
    lexicon_path: str | Path | None = None,
    target_path: str | Path | None = None,
    target_layer: str = "tracts",
) -> tuple[TractDB, pd.DataFrame]:
    """The feature table, joined to an external per-tract target table when one is given."""
    from deepsolar.tractdb import join_target, read_target_table, read_tract_db

    db = read_tract_db(features_path, lexicon=lexicon_path)
    if target_path is None:
        return db, db.table
    tt = read_target_table(target_path, config.target, layer=target_layer)
    return db, join_target(db, tt, config.target)


def write_predictions_gpkg(
    predictions: pd.DataFrame, tracts: Any, path: str | Path, layer: str = "tracts"
) -> Path:
    """Write tract polygons with prediction columns into ``layer`` of the GeoPackage ``path``.

    An existing GeoPackage keeps its other layers (e.g. the mapping flow's panels and styles): it is
    copied, the layer replaced in the copy, and the copy moved over the original only when complete.
    Prediction columns already in the layer (an earlier run) are replaced.
    """
    import shutil

    p = Path(path)
    pred = predictions.rename(columns={"fips": "GEOID"})
    new_cols = [c for c in pred.columns if c != "GEOID"]
    base = tracts.drop(columns=[c for c in new_cols if c in tracts.columns])
    merged = base.merge(pred, on="GEOID", how="left")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".gpkg", dir=p.parent)
    os.close(fd)
    try:
        if p.exists():
            shutil.copy2(p, tmp)
        else:
            os.unlink(tmp)  # let the driver create a fresh GeoPackage
        merged.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")
        atomic_replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def write_csv_atomic(df: pd.DataFrame, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        df.to_csv(tmp, index=False)
        atomic_replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def write_evaluation(
    out_dir: str | Path,
    metrics: dict[str, Any],
    data: TrainingData,
    results: dict[tuple[str, str], CVResult],
    permutation: pd.DataFrame | None = None,
) -> dict[str, str]:
    """metrics.json, r2_table.md, oof_predictions.csv and the evaluation plots; returns the paths."""
    out = Path(out_dir)
    paths = {
        "metrics_json": write_json_atomic(out / "metrics.json", metrics),
        "oof_predictions": write_csv_atomic(oof_table(data, results), out / "oof_predictions.csv"),
        "observed_vs_predicted": plot_observed_vs_predicted(
            data, results, out / "observed_vs_predicted.png"
        ),
    }
    table = out / "r2_table.md"
    fd, tmp = tempfile.mkstemp(prefix=".r2_table.", suffix=".tmp", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(r2_table(metrics) + "\n")
    atomic_replace(tmp, table)
    paths["r2_table"] = table
    cal = plot_calibration(metrics, out / "calibration.png")
    if cal is not None:
        paths["calibration"] = cal
    if permutation is not None:
        paths["permutation_importances"] = write_csv_atomic(
            permutation, out / "permutation_importances.csv"
        )
        paths["permutation_plot"] = plot_importances(
            permutation, "permutation_r2_drop_mean", out / "permutation_importances.png"
        )
    return {k: str(v) for k, v in paths.items()}


def write_model_diagnostics(
    model: SolarForestModel, X: pd.DataFrame, out_dir: str | Path
) -> dict[str, Any]:
    """Impurity importances (CSV + plot) and the partial-dependence plot of a fitted model."""
    out = Path(out_dir)
    imp = impurity_importances(model)
    paths: dict[str, Any] = {
        "impurity_importances": write_csv_atomic(imp, out / "impurity_importances.csv"),
        "impurity_plot": plot_importances(
            imp, "impurity_regressor", out / "impurity_importances.png"
        ),
    }
    pdp, skipped = plot_partial_dependence(
        model, X, out / "partial_dependence.png", grid_resolution=model.config.pdp_grid_resolution
    )
    if pdp is not None:
        paths["partial_dependence"] = pdp
    paths = {k: str(v) for k, v in paths.items()}
    paths["pdp_skipped"] = skipped
    return paths
