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

Modules:

- :mod:`.schema` - the tract table's columns: roles (feature groups, targets, ids), target units
- :mod:`.tractdb` - reading the DeepSolar tract database and our per-tract target tables
- :mod:`.config` - pydantic settings (``SolarForestConfig``, ``EvaluationConfig``)
- :mod:`.job` - the ``solarforest`` flow's parameters, overrides and input checks
- :mod:`.features` - the training set: feature selection (no leakage), rows with a target
- :mod:`.estimators` - the scikit-learn estimators: one-/two-stage forest, baselines
- :mod:`.model` - a fitted model with its metadata; fitting, per-tract predictions
- :mod:`.persistence` - ``.skops`` + JSON sidecar, checked on load
- :mod:`.evaluation` - folds, cross-validation, bootstrap intervals, the evaluation grid
- :mod:`.importances` - impurity and permutation importances
- :mod:`.plots` - partial dependence, importances, calibration, observed vs predicted
- :mod:`.report` - the R² and classifier tables, the evaluation's and a model's output files
- :mod:`.outputs` - atomic JSON / CSV / GeoPackage writers
"""

from __future__ import annotations

from deepsolar import lazy_exports

# name -> submodule; imported on first use, so that ``deepsolar.solarforest.job`` and ``.config``
# (pydantic models only) import without scikit-learn or pandas: the CLI refuses a bad config
# before it imports the model code.
_EXPORTS = {
    "HEADLINE_FACTORS": "config",
    "MODEL_LABELS": "config",
    "MODEL_ORDER": "config",
    "SCHEME_LABELS": "config",
    "Baseline": "config",
    "CVScheme": "config",
    "EvaluationConfig": "config",
    "FeatureGroup": "config",
    "SolarForestConfig": "config",
    "Transform": "config",
    "Variant": "config",
    "TrainingData": "features",
    "data_sha256": "features",
    "load_training_table": "features",
    "prepare_data": "features",
    "select_features": "features",
    "BaselineRegressor": "estimators",
    "SolarForestEstimator": "estimators",
    "forward_transform": "estimators",
    "inverse_transform": "estimators",
    "MODEL_FORMAT_VERSION": "model",
    "SolarForestModel": "model",
    "check_features": "model",
    "fit_solarforest": "model",
    "library_versions": "model",
    "predict_tracts": "model",
    "load_model": "persistence",
    "save_model": "persistence",
    "CVResult": "evaluation",
    "bootstrap_interval": "evaluation",
    "bootstrap_weights": "evaluation",
    "classifier_metrics": "evaluation",
    "cross_validate": "evaluation",
    "evaluate": "evaluation",
    "make_folds": "evaluation",
    "oof_table": "evaluation",
    "top_variance_share": "evaluation",
    "weighted_r2": "evaluation",
    "impurity_importances": "importances",
    "permutation_importances": "importances",
    "plot_calibration": "plots",
    "plot_importances": "plots",
    "plot_observed_vs_predicted": "plots",
    "plot_partial_dependence": "plots",
    "TARGET_LABELS": "report",
    "classifier_table": "report",
    "r2_table": "report",
    "write_evaluation": "report",
    "write_model_diagnostics": "report",
    "write_csv": "outputs",
    "write_json": "outputs",
    "write_predictions_gpkg": "outputs",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "Baseline",
    "BaselineRegressor",
    "CVResult",
    "CVScheme",
    "EvaluationConfig",
    "FeatureGroup",
    "HEADLINE_FACTORS",
    "MODEL_FORMAT_VERSION",
    "MODEL_LABELS",
    "MODEL_ORDER",
    "SCHEME_LABELS",
    "SolarForestConfig",
    "SolarForestEstimator",
    "SolarForestModel",
    "TARGET_LABELS",
    "TrainingData",
    "Transform",
    "Variant",
    "bootstrap_interval",
    "bootstrap_weights",
    "check_features",
    "classifier_metrics",
    "classifier_table",
    "cross_validate",
    "data_sha256",
    "evaluate",
    "fit_solarforest",
    "forward_transform",
    "impurity_importances",
    "inverse_transform",
    "library_versions",
    "load_model",
    "load_training_table",
    "make_folds",
    "oof_table",
    "permutation_importances",
    "plot_calibration",
    "plot_importances",
    "plot_observed_vs_predicted",
    "plot_partial_dependence",
    "predict_tracts",
    "prepare_data",
    "r2_table",
    "save_model",
    "select_features",
    "top_variance_share",
    "weighted_r2",
    "write_csv",
    "write_evaluation",
    "write_json",
    "write_model_diagnostics",
    "write_predictions_gpkg",
]
