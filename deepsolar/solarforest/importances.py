"""Which features SolarForest relies on.

Impurity importances of a fitted model, and held-out permutation importances.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepsolar.solarforest.config import SolarForestConfig
from deepsolar.solarforest.estimators import SolarForestEstimator
from deepsolar.solarforest.evaluation import make_folds
from deepsolar.solarforest.features import TrainingData
from deepsolar.solarforest.model import SolarForestModel


def impurity_importances(model: SolarForestModel) -> pd.DataFrame:
    """Mean decrease in impurity of the regression forest (and of the classifier, two-stage).

    Args:
        model: the fitted model.

    Returns:
        One row per feature, most important first.
    """
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

    Args:
        data: the training set.
        config: the model settings (folds, repeats, seed).
        max_test_rows: score on at most this many held-out rows (drawn at random).

    Returns:
        One row per feature (mean and std of the R² drop), most important first.
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
