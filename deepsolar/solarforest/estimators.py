"""SolarForest's scikit-learn estimators: the random forest and its baselines.

The (optionally two-stage) random forest and the plain baselines it is compared with, on the same
features and target scale.

A two-stage forest first classifies zero vs non-zero tracts, then regresses on the non-zero ones;
its prediction is ``P(non-zero) x E[y | non-zero]`` (``combine="expected"``) or the regression where
``P >= threshold`` and 0 elsewhere (``"hard"``). The target can be modelled on a log1p scale
(:func:`forward_transform`); predictions are always in the target's own units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.solarforest.config import SolarForestConfig


def forward_transform(y: np.ndarray, transform: str, scale: float = 1.0) -> np.ndarray:
    """The scale a model is fitted on: ``y`` itself, or ``log1p(scale * y)``.

    Args:
        y: target values, in the column's units.
        transform: ``none`` or ``log1p``.
        scale: display multiplier applied before log1p.

    Returns:
        The values the model is fitted to.
    """
    y = np.asarray(y, dtype=float)
    return np.log1p(scale * y) if transform == "log1p" else y


def inverse_transform(z: np.ndarray, transform: str, scale: float = 1.0) -> np.ndarray:
    """Back to the target's own units (the inverse of :func:`forward_transform`).

    Args:
        z: values on the fitted scale.
        transform: ``none`` or ``log1p``.
        scale: the display multiplier used by :func:`forward_transform`.

    Returns:
        The values in the column's units.
    """
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
        """An unfitted estimator with the settings of ``config``.

        Args:
            config: the model settings.

        Returns:
            The estimator.
        """
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
        """Fit the forest(s).

        Args:
            X: features (rows = tracts).
            y: target, in the column's units.
            classifier: an already fitted zero/non-zero stage for these very rows and labels
                (cross-validation reuses it across target transforms, which do not change it).

        Returns:
            self, fitted.
        """
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
        """P(tract has solar) from the first stage (two-stage models only).

        Args:
            X: features.

        Returns:
            The probability of each row.
        """
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
        """Predicted target, in the column's units.

        Args:
            X: features.

        Returns:
            One prediction per row.
        """
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
        """Fit the baseline.

        Args:
            X: features.
            y: target, in the column's units.

        Returns:
            self, fitted.
        """
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
        """Predicted target, in the column's units (clipped to the training range).

        Args:
            X: features.

        Returns:
            One prediction per row.
        """
        check_is_fitted(self, "range_")
        if self.model_ is None:
            z = np.full(len(X), self.mean_)
        else:
            z = np.clip(self.model_.predict(X), *self.range_)
        return inverse_transform(z, self.target_transform, self.target_scale)
