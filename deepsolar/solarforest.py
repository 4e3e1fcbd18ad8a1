"""SolarForest: random-forest regression of tract solar deployment from its environment and society.

A reproduction of the SolarForest model of DeepSolar (Yu et al., Joule 2018): a random forest
predicts a tract's solar deployment density - by default the paper's target, residential systems per
household (``number_of_solar_system_per_household``, shown per thousand households) - from climate,
socio-economic, electricity-price, policy and voting features of the DeepSolar tract database. Panel
area per square mile, system counts or any other DeepSolar target can be chosen instead, and the
target can be modelled on a log1p scale (predictions and R² are always reported on the original
scale too). A two-stage variant first classifies zero vs non-zero
tracts, then regresses on the non-zero ones; its prediction is ``P(non-zero) x E[y | non-zero]``
(``combine="expected"``) or the regression where ``P >= threshold`` and 0 elsewhere (``"hard"``).

Out-of-sample skill is measured with random K-fold and with spatially grouped K-fold (whole counties
held out: neighbouring tracts share climate, prices and policy, so random folds flatter the model).
:func:`evaluate` cross-validates every target x transform x model (one-/two-stage forest, and the
plain baselines: the training mean and a ridge regression on the same features) x CV scheme, with a
bootstrap interval of each pooled out-of-fold R².

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
from sklearn.linear_model import RidgeCV
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.tractdb import (
    DEFAULT_TARGET,
    FEATURE_GROUPS,
    HOUSEHOLD_COLUMN,
    ID_COLUMNS,
    STANDARD_TARGETS,
    TractDB,
    atomic_replace,
    county_of,
    file_sha256,
    is_target_column,
    target_units,
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
Baseline = Literal["mean", "linear"]
Transform = Literal["none", "log1p"]
#: Every model the evaluation can compare, in table order.
MODEL_ORDER: tuple[str, ...] = ("mean", "linear", "one_stage", "two_stage")
MODEL_LABELS = {
    "mean": "baseline: training mean",
    "linear": "baseline: ridge regression",
    "one_stage": "SolarForest one-stage",
    "two_stage": "SolarForest two-stage",
}
SCHEME_LABELS = {"random": "random CV", "spatial": "county CV"}
MODEL_FORMAT_VERSION = 1
# The only non-default types a SolarForest .skops file may hold: numpy dtypes and sklearn's tree
# node storage. Anything else in a file is refused before it is loaded.
_SKOPS_TRUSTED = ("numpy.dtype", "sklearn.tree._tree.Tree")


class SolarForestConfig(StrictModel):
    """Model and evaluation settings (the ``model:`` section of configs/solarforest.yaml)."""

    target: str = Field(
        DEFAULT_TARGET,
        description="column to predict: the paper's number_of_solar_system_per_household by "
        "default, or any DeepSolar target (solar_panel_area_divided_by_area, solar_system_count...)",
    )
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
    min_households: int = Field(
        0,
        ge=0,
        description="leave out tracts with fewer households (ACS household_count): a per-household "
        "density of a tract with 10 households is one system away from an extreme value",
    )
    target_transform: Transform = Field(
        "none", description="none | log1p: the forest is fitted to log(1 + target_scale x y)"
    )
    target_scale: float | None = Field(
        None,
        gt=0.0,
        description="units the target is shown and log1p-transformed in, as a multiplier of the "
        "column (None: 1000 for per-household targets = per thousand households, else 1)",
    )
    n_estimators: int = Field(100, ge=1, le=10_000)
    max_features: float | Literal["sqrt", "log2"] = Field(
        "sqrt",
        description="features tried per split: sqrt(p) (fast: the full evaluation table in minutes "
        "on 2 cores), or a fraction such as 0.33 (p/3)",
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

    @property
    def resolved_target_scale(self) -> float:
        return self.target_scale if self.target_scale is not None else target_units(self.target)[0]

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
    n_dropped_min_households: int = 0

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
    n_few = 0
    if config.min_households > 0:
        if HOUSEHOLD_COLUMN not in table.columns:
            raise InputDataError(
                f"model.min_households needs the '{HOUSEHOLD_COLUMN}' column",
                where=db.source,
                fix="use the DeepSolar tract table as features, or set min_households: 0",
            )
        hh = pd.to_numeric(table[HOUSEHOLD_COLUMN], errors="coerce").to_numpy(dtype=float)
        enough = hh >= config.min_households  # NaN households: not enough
        n_few = int((keep & ~enough).sum())
        keep = keep & enough
        log.info("left out %d tract(s) with < %d households", n_few, config.min_households)
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
        n_dropped_min_households=n_few,
    )


# --------------------------------------------------------------------------------------------------
# Estimator


def forward_transform(y: np.ndarray, transform: str, scale: float = 1.0) -> np.ndarray:
    """The scale a model is fitted on: ``y`` itself, or ``log1p(scale * y)``."""
    y = np.asarray(y, dtype=float)
    return np.log1p(scale * y) if transform == "log1p" else y


def inverse_transform(z: np.ndarray, transform: str, scale: float = 1.0) -> np.ndarray:
    """Back to the target's own units (the inverse of :func:`forward_transform`)."""
    z = np.asarray(z, dtype=float)
    return np.expm1(z) / scale if transform == "log1p" else z


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
        target_scale: float = 1.0,
        n_estimators: int = 100,
        max_features: float | str = "sqrt",
        min_samples_leaf: int = 1,
        n_jobs: int | None = -1,
        random_state: int | None = 0,
    ) -> None:
        self.two_stage = two_stage
        self.combine = combine
        self.classifier_threshold = classifier_threshold
        self.zero_threshold = zero_threshold
        self.target_transform = target_transform
        self.target_scale = target_scale
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
            target_scale=config.resolved_target_scale,
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
        return forward_transform(y, self.target_transform, self.target_scale)

    def _inv(self, z: np.ndarray) -> np.ndarray:
        return inverse_transform(z, self.target_transform, self.target_scale)

    def fit(
        self, X: pd.DataFrame, y: np.ndarray, *, classifier: Pipeline | None = None
    ) -> SolarForestEstimator:
        """Fit; ``classifier``: an already fitted zero/non-zero stage for these very rows and
        labels (cross-validation reuses it across target transforms, which do not change it)."""
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
        if classifier is not None:
            self.classifier_ = classifier
        else:
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


class BaselineRegressor(RegressorMixin, BaseEstimator):
    """The plain baselines SolarForest is compared with, on the same features and target scale.

    ``kind="mean"``: the training mean (of the transformed target, back-transformed).
    ``kind="linear"``: median imputation, standardisation and ridge regression (penalty chosen by
    efficient leave-one-out over ``alphas``). Predictions are clipped to the training target's range:
    a linear model extrapolates wildly on heavy-tailed features (population density), and one such
    tract would otherwise decide the R² alone.
    """

    def __init__(
        self,
        kind: str = "linear",
        target_transform: str = "none",
        target_scale: float = 1.0,
        alphas: tuple[float, ...] = tuple(np.logspace(-2, 4, 13)),
    ) -> None:
        self.kind = kind
        self.target_transform = target_transform
        self.target_scale = target_scale
        self.alphas = alphas

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> BaselineRegressor:
        X = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        z = forward_transform(y, self.target_transform, self.target_scale)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.range_ = (float(np.min(z)), float(np.max(z)))
        if self.kind == "mean":
            self.mean_ = float(np.mean(z))
            self.model_ = None
        elif self.kind == "linear":
            self.model_ = Pipeline(
                [
                    ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                    ("scale", StandardScaler()),
                    ("ridge", RidgeCV(alphas=list(self.alphas))),
                ]
            ).fit(X, z)
        else:
            raise ConfigError(
                f"unknown baseline '{self.kind}'", where="BaselineRegressor", fix="mean | linear"
            )
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "range_")
        if self.model_ is None:
            z = np.full(len(X), self.mean_)
        else:
            z = np.clip(self.model_.predict(X), *self.range_)
        return inverse_transform(z, self.target_transform, self.target_scale)


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
        return self.model


class EvaluationConfig(StrictModel):
    """What :func:`evaluate` compares (the ``evaluation:`` section of configs/solarforest.yaml)."""

    targets: list[str] | None = Field(
        None,
        description="targets to evaluate; None: model.target, then the paper's deployment density, "
        "panel area per square mile and the system count",
    )
    transforms: list[Transform] = Field(default_factory=lambda: ["none", "log1p"], min_length=1)
    variants: list[Variant] = Field(
        default_factory=lambda: ["one_stage", "two_stage"], min_length=1
    )
    baselines: list[Baseline] = Field(
        default_factory=lambda: ["mean", "linear"],
        description="plain models on the same features and folds: what the forest adds",
    )
    bootstrap_samples: int = Field(
        1000, ge=0, le=100_000, description="resamples for the R² interval (0: none)"
    )
    bootstrap_by: Literal["county", "tract"] = Field(
        "county", description="resample whole counties (tracts in a county are not independent)"
    )
    confidence: float = Field(0.95, gt=0.0, lt=1.0)

    def resolved_targets(self, primary: str) -> list[str]:
        wanted = self.targets if self.targets is not None else [primary, *STANDARD_TARGETS]
        return list(dict.fromkeys(wanted))

    def models(self) -> list[str]:
        chosen = set(self.baselines) | set(self.variants)
        return [m for m in MODEL_ORDER if m in chosen]


def _regression_metrics(y: np.ndarray, pred: np.ndarray, scale: float = 1.0) -> dict[str, float]:
    """R² and MAE on the original scale (MAE in display units: column x ``scale``) and the R² of
    the same predictions on the log1p(scale x y) scale."""
    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    out = {"r2": float(r2_score(y, pred)), "mae": float(mean_absolute_error(y, pred) * scale)}
    if (y >= 0).all():
        out["r2_log1p"] = float(
            r2_score(np.log1p(scale * y), np.log1p(scale * np.clip(pred, 0.0, None)))
        )
    return out


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

    ``model``: ``one_stage`` / ``two_stage`` (default: as ``config.two_stage``) or a baseline,
    ``mean`` / ``linear``. ``classifier_cache``: fold -> fitted zero/non-zero stage, shared by
    two-stage runs on the same rows and folds (a target transform does not change the stage).
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
    n = len(data.y)
    oof = np.full(n, np.nan)
    fold_id = np.full(n, -1)
    two = model == "two_stage"
    p_oof = np.full(n, np.nan) if two else None
    per_fold = []
    if model in ("mean", "linear"):
        base: BaseEstimator = BaselineRegressor(model, config.target_transform, scale)
    else:
        base = SolarForestEstimator.from_config(config).set_params(two_stage=two)
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
    r2s = [m["r2"] for m in per_fold]
    metrics: dict[str, Any] = {
        "target": data.target,
        "transform": config.target_transform,
        "model": model,
        "scheme": scheme,
        "variant": model,
        "n_folds": len(folds),
        "pooled": _regression_metrics(data.y, oof, scale),
        "r2_fold_mean": float(np.mean(r2s)),
        "r2_fold_std": float(np.std(r2s)),
        "mae_fold_mean": float(np.mean([m["mae"] for m in per_fold])),
        "folds": per_fold,
    }
    nonzero = data.y > config.zero_threshold
    if nonzero.sum() >= 2:
        metrics["nonzero_tracts"] = _regression_metrics(data.y[nonzero], oof[nonzero], scale)
    if p_oof is not None:
        metrics["classifier"] = classifier_metrics(
            nonzero, p_oof, config.classifier_threshold, config.calibration_bins
        )
    return CVResult(
        data.target, config.target_transform, model, scheme, data.fips, data.y, oof, fold_id,
        p_oof, metrics,
    )  # fmt: skip


def top_variance_share(y: np.ndarray, k: int = 10) -> float:
    """Share of the total sum of squares (the R² denominator) held by the ``k`` tracts farthest
    from the mean: near 1, a handful of tracts decide the R²."""
    d2 = (np.asarray(y, dtype=float) - np.mean(y)) ** 2
    total = d2.sum()
    return float(np.sort(d2)[-k:].sum() / total) if total > 0 else float("nan")


def bootstrap_weights(groups: np.ndarray, n_samples: int, seed: int = 0) -> np.ndarray:
    """``(n_samples, n_rows)`` resampling weights: whole groups drawn with replacement.

    Row ``i`` of a resample is counted as often as its group was drawn; with one group per row
    this is the ordinary bootstrap. The same weights serve every model of a comparison (paired).
    """
    codes, uniques = pd.factorize(np.asarray(groups))
    g = len(uniques)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n_samples)
    return counts[:, codes].astype(float)


def weighted_r2(weights: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R² of ``pred`` under each row of ``weights`` (one value per bootstrap resample)."""
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
    """Percentile interval of the R² over the resamples in ``weights``."""
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


def evaluate(
    db: TractDB,
    config: SolarForestConfig,
    evaluation: EvaluationConfig | None = None,
    table: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], dict[tuple[str, str, str, str], CVResult]]:
    """Cross-validate every target x transform x model x CV scheme on the same folds.

    Returns the metrics (JSON-ready) and the raw results keyed ``(target, transform, model,
    scheme)``. Models: the plain baselines and the one-/two-stage forest (``evaluation``); every
    pooled out-of-fold R² gets a bootstrap interval (whole counties resampled by default, the same
    resamples for every model of a target and scheme). ``metrics["variants"]`` repeats the forest
    runs of ``config.target`` / ``config.target_transform`` (the primary model).
    """
    ev = evaluation or EvaluationConfig()
    targets = ev.resolved_targets(config.target)
    models = ev.models()
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
        default_scale, unit = target_units(target)
        if scale != default_scale or not unit:
            unit = f"{target} x {scale:g}"
        entry: dict[str, Any] = {
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
        out["targets"][target] = entry
    primary = config.target if config.target in out["targets"] else targets[0]
    prim = out["targets"][primary]
    ptrans = (
        config.target_transform if config.target_transform in ev.transforms else ev.transforms[0]
    )
    out.update(
        {
            "target": primary,
            "unit": prim["unit"],
            "n_tracts": prim["n_tracts"],
            "n_counties": prim["n_counties"],
            "n_features": prim["n_features"],
            "zero_fraction": prim["zero_fraction"],
            "data_sha256": prim["data_sha256"],
            "variants": {
                v: prim["runs"][ptrans][v] for v in ("one_stage", "two_stage") if v in models
            },
        }
    )
    return out, results


def oof_table(results: dict[tuple[str, str, str, str], CVResult]) -> pd.DataFrame:
    """Per-tract out-of-fold predictions, one row per tract and (target, transform, model, scheme)."""
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


TARGET_LABELS = {
    "number_of_solar_system_per_household": "deployment density (paper)",
    "solar_panel_area_divided_by_area": "panel area density",
    "solar_system_count": "system count",
}


def _fmt_r2(m: dict[str, Any], key: str = "r2") -> str:
    v = m.get(key)
    if v is None:
        return "-"
    ci = m.get(f"{key}_ci")
    return f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.3f}"


def r2_table(metrics: dict[str, Any]) -> str:
    """Markdown table: every target x transform x model, pooled out-of-fold R² per CV scheme with
    its bootstrap interval, the R² of the same predictions on the log1p scale, and the MAE."""
    schemes = list(metrics["config"]["cv_schemes"])
    conf = round(100 * metrics.get("evaluation", {}).get("confidence", 0.95))
    by = metrics.get("evaluation", {}).get("bootstrap_by", "county")
    head = ["target (unit)", "transform", "model"]
    head += [f"R² {SCHEME_LABELS[s]} [{conf}% CI]" for s in schemes]
    head += [f"R² log1p scale ({' / '.join(SCHEME_LABELS[s].split()[0] for s in schemes)})"]
    head += [f"MAE ({' / '.join(SCHEME_LABELS[s].split()[0] for s in schemes)})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for target, entry in metrics["targets"].items():
        label = TARGET_LABELS.get(target, target)
        for transform, by_model in entry["runs"].items():
            for model, by_scheme in by_model.items():
                ms = [by_scheme[s]["pooled"] for s in schemes]
                row = [f"{label} ({entry['unit']})", transform, MODEL_LABELS[model]]
                row += [_fmt_r2(m) for m in ms]
                row += [" / ".join(f"{m['r2_log1p']:.3f}" if "r2_log1p" in m else "-" for m in ms)]
                row += [" / ".join(f"{m['mae']:.3g}" for m in ms)]
                lines.append("| " + " | ".join(row) + " |")
    n_boot = metrics.get("evaluation", {}).get("bootstrap_samples", 0)
    lines.append("")
    lines.append(
        f"R²: pooled out-of-fold, original units (log1p rows back-transformed); [CI]: "
        f"{n_boot} bootstrap resamples of whole {'counties' if by == 'county' else 'tracts'} "
        "(test-set sampling only, no refit); "
        "log1p scale: R² of log(1 + y) for the same predictions; MAE in the target's unit."
    )
    return "\n".join(lines)


def classifier_table(metrics: dict[str, Any]) -> str:
    """Markdown table of the two-stage model's zero/non-zero stage per target and CV scheme."""
    lines = [
        "| target | CV | share with solar | AUC | Brier | accuracy | calibration error (ECE) |",
        "|---|---|---|---|---|---|---|",
    ]
    found = False
    for target, entry in metrics["targets"].items():
        first = next(iter(entry["runs"].values()))
        for scheme, m in first.get("two_stage", {}).items():
            c = m.get("classifier")
            if not c:
                continue
            found = True
            auc = f"{c['auc']:.3f}" if c["auc"] is not None else "-"
            lines.append(
                f"| {TARGET_LABELS.get(target, target)} | {SCHEME_LABELS[scheme]} | "
                f"{c['nonzero_fraction']:.2f} | {auc} | {c['brier']:.3f} | {c['accuracy']:.3f} | "
                f"{c['ece']:.3f} |"
            )
    return "\n".join(lines) if found else ""


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
    results: dict[tuple[str, str, str, str], CVResult],
    path: str | Path,
    target: str | None = None,
    transform: str | None = None,
) -> Path:
    """Observed vs out-of-fold predicted, one panel per forest model and CV scheme (one target and
    transform: by default the first evaluated)."""
    plt = _pyplot()
    first = next(iter(results.values()))
    target = target or first.target
    transform = transform or first.transform
    keys = [
        k
        for k in results
        if k[0] == target and k[1] == transform and k[2] in ("one_stage", "two_stage")
    ] or [k for k in results if k[0] == target and k[1] == transform]
    scale = target_units(target)[0]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2), squeeze=False)
    y = results[keys[0]].y * scale
    hi = float(np.nanpercentile(y, 99.5)) * 1.05 or 1.0
    for ax, key in zip(axes.ravel(), keys, strict=True):
        r = results[key]
        ax.scatter(y, r.oof * scale, s=4, alpha=0.4)
        ax.plot([0, hi], [0, hi], "k:")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_title(
            f"{MODEL_LABELS[r.model]}, {transform}\n{SCHEME_LABELS[r.scheme]}: "
            f"R² {r.metrics['pooled']['r2']:.2f}",
            fontsize=9,
        )
        ax.set_xlabel(f"observed {target} (x{scale:g})", fontsize=8)
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
    targets: list[str] | None = None,
) -> tuple[TractDB, pd.DataFrame]:
    """The feature table, joined to an external per-tract target table when one is given.

    ``targets``: every target column to take from ``target_path`` (default: ``config.target``).
    The paper's deployment density is computed from our residential systems and the tract's
    households when our table lacks it; the households then come from the feature table's ACS
    ``household_count`` (see :func:`deepsolar.tractdb.read_target_table`).
    """
    from deepsolar.tractdb import join_target, read_target_table, read_tract_db

    db = read_tract_db(features_path, lexicon=lexicon_path)
    if target_path is None:
        return db, db.table
    wanted = list(dict.fromkeys(targets or [config.target]))
    households = (
        db.table.set_index("fips")[HOUSEHOLD_COLUMN] if HOUSEHOLD_COLUMN in db.table else None
    )
    tt = read_target_table(target_path, wanted, layer=target_layer, households=households)
    return db, join_target(db, tt, wanted)


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
    results: dict[tuple[str, str, str, str], CVResult],
    permutation: pd.DataFrame | None = None,
) -> dict[str, str]:
    """metrics.json, r2_table.md, oof_predictions.csv and the evaluation plots; returns the paths."""
    out = Path(out_dir)
    paths = {
        "metrics_json": write_json_atomic(out / "metrics.json", metrics),
        "oof_predictions": write_csv_atomic(oof_table(results), out / "oof_predictions.csv"),
        "observed_vs_predicted": plot_observed_vs_predicted(
            results,
            out / "observed_vs_predicted.png",
            metrics.get("target"),
            metrics.get("primary_transform"),
        ),
    }
    table = out / "r2_table.md"
    fd, tmp = tempfile.mkstemp(prefix=".r2_table.", suffix=".tmp", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(r2_table(metrics) + "\n")
        cls = classifier_table(metrics)
        if cls:
            f.write("\nTwo-stage SolarForest, zero/non-zero stage:\n\n" + cls + "\n")
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
