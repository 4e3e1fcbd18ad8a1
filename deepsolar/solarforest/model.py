"""A fitted SolarForest: the estimator with the facts needed to reuse it safely.

The facts are the features, target, config, data hash and library versions. Also fitting on every
tract and per-tract predictions.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, r2_score

from deepsolar.core.errors import InputDataError
from deepsolar.solarforest.config import SolarForestConfig
from deepsolar.solarforest.estimators import SolarForestEstimator
from deepsolar.solarforest.features import TrainingData

MODEL_FORMAT_VERSION = 1


@dataclass
class SolarForestModel:
    """A fitted estimator with the facts needed to reuse it safely."""

    estimator: SolarForestEstimator
    features: list[str]
    target: str
    config: SolarForestConfig
    metadata: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a model depends on.

    Returns:
        Name -> version (python, deepsolar, scikit-learn, numpy, pandas, skops).
    """
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
    """Fit on every tract of ``data``; records in-sample metrics (not a measure of skill).

    Args:
        data: the training set.
        config: the model settings.

    Returns:
        The fitted model with its metadata.
    """
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
    """The model's feature columns of ``table`` in training order; a clear error if any is absent.

    Args:
        model: the fitted model.
        table: the table to predict from.
        where: the table's source, for error messages.

    Returns:
        The features as floats.
    """
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
    """Per-tract predictions: ``fips``, ``predicted_<target>`` (+ ``p_nonzero`` for two-stage).

    Args:
        model: the fitted model.
        table: the feature table (with ``fips``; ``observed_<target>`` is added when it holds the
            target).
        where: the table's source, for error messages.

    Returns:
        One row per tract.
    """
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
