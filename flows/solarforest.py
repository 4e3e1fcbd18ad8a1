"""Flow ``solarforest``: train / evaluate / predict the tract-level solar deployment regression.

- ``train``: fit on every tract, save the model (``.skops`` + ``.json`` sidecar), importances, PDPs.
- ``evaluate``: random and spatial (county) K-fold CV of every target x transform x model (plain
  baselines, one- and two-stage forest) with bootstrap R² intervals: metrics.json, r2_table.md,
  out-of-fold predictions, calibration, permutation importances, PDPs of the primary model.
- ``predict``: apply a saved model to a feature table: predictions.csv, and a GeoPackage ``tracts``
  layer with the predictions when tract polygons are known.

Run from a YAML config (Prefect starts a temporary API when no server is configured)::

    python -m flows.solarforest --config configs/solarforest.yaml            # prints the R² table
    python -m flows.solarforest --config configs/solarforest.yaml --quick    # smaller, ~1 min
    python -m flows.solarforest --config configs/solarforest.yaml --mode train
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar import solarforest as sf
from deepsolar.core.config import validate_config
from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.solarforest import (
    SolarForestFlowParams,
    check_inputs,
    features_path,
    predict,
    save,
)


@task(name="get-features", cache_policy=NO_CACHE)
def features_task(p: SolarForestFlowParams) -> Path:
    """Task ``get-features``: runs :func:`deepsolar.jobs.solarforest.features_path`.

    Args:
        p: the validated parameters.

    Returns:
        The local tract feature table: ``p.features_path``, else the (cached) download of
        ``p.features_url``.
    """
    return features_path(p)


@task(name="load-training-data", cache_policy=NO_CACHE)
def load_task(p: SolarForestFlowParams, features_path: Path) -> tuple[Any, Any, sf.TrainingData]:
    """Task ``load-training-data``: the tract table, joined to a target table, and the training set.

    Runs :func:`deepsolar.solarforest.load_training_table` then
    :func:`deepsolar.solarforest.prepare_data` (the first steps of the job's ``run`` in train and
    evaluate mode).

    Args:
        p: the validated parameters (model settings, lexicon, target table and layer).
        features_path: the tract feature table.

    Returns:
        The tract table (``TractDB``), the table to train on (joined to ``p.target_path`` when
        given) and the training set (tracts with a finite target, the selected features).
    """
    db, table = sf.load_training_table(
        features_path,
        p.model,
        lexicon_path=p.lexicon_path,
        target_path=p.target_path,
        target_layer=p.target_layer,
        targets=p.targets,
    )
    return db, table, sf.prepare_data(db, p.model, table)


@task(name="cross-validate", cache_policy=NO_CACHE)
def cv_task(db: Any, table: Any, p: SolarForestFlowParams) -> tuple[dict, dict]:
    """Task ``cross-validate``: runs :func:`deepsolar.solarforest.evaluate` (evaluate mode).

    Random and spatial (county) K-fold CV of every target x transform x model, with bootstrap
    intervals on the out-of-fold R².

    Args:
        db: the tract table.
        table: the table to train on.
        p: the validated parameters (``model`` and ``evaluation``).

    Returns:
        The metrics (JSON-ready) and the raw CV results keyed ``(target, transform, model,
        scheme)``.
    """
    return sf.evaluate(db, p.model, p.evaluation, table)


@task(name="permutation-importance", cache_policy=NO_CACHE)
def permutation_task(data: sf.TrainingData, p: SolarForestFlowParams) -> Any:
    """Task ``permutation-importance``: runs :func:`deepsolar.solarforest.permutation_importances`.

    Args:
        data: the training set.
        p: the validated parameters (``model``: folds, repeats, seed).

    Returns:
        A DataFrame with one row per feature (mean and std of the held-out R² drop), most
        important first.
    """
    return sf.permutation_importances(data, p.model)


@task(name="fit", cache_policy=NO_CACHE)
def fit_task(data: sf.TrainingData, p: SolarForestFlowParams) -> sf.SolarForestModel:
    """Task ``fit``: runs :func:`deepsolar.solarforest.fit_solarforest` on every tract.

    Args:
        data: the training set.
        p: the validated parameters (``model``).

    Returns:
        The fitted model, with in-sample metrics in its metadata (not a measure of skill).
    """
    return sf.fit_solarforest(data, p.model)


@task(name="diagnostics", cache_policy=NO_CACHE)
def diagnostics_task(model: sf.SolarForestModel, data: sf.TrainingData, out_dir: Path) -> dict:
    """Task ``diagnostics``: runs :func:`deepsolar.solarforest.write_model_diagnostics`.

    Writes the impurity importances (CSV + plot) and the partial-dependence plot.

    Args:
        model: the fitted model.
        data: the training set (its features ``X`` are averaged over for the partial dependence).
        out_dir: the output folder.

    Returns:
        Output name -> written path, and ``pdp_skipped``: factors the model does not use.
    """
    return sf.write_model_diagnostics(model, data.X, out_dir)


@task(name="write-evaluation", cache_policy=NO_CACHE)
def write_eval_task(out_dir: Path, metrics: dict, results: dict, perm: Any) -> dict:
    """Task ``write-evaluation``: runs :func:`deepsolar.solarforest.write_evaluation`.

    Writes ``metrics.json``, ``r2_table.md``, the out-of-fold predictions and the evaluation
    plots.

    Args:
        out_dir: the output folder.
        metrics: the metrics of :func:`cv_task`.
        results: its raw CV results.
        perm: the permutation importances, or None when not computed.

    Returns:
        Output name -> written path.
    """
    return sf.write_evaluation(out_dir, metrics, results, perm)


@task(name="save-model", cache_policy=NO_CACHE)
def save_task(model: sf.SolarForestModel, path: Path, out_dir: Path) -> dict:
    """Task ``save-model``: runs :func:`deepsolar.jobs.solarforest.save` (train mode).

    Args:
        model: the fitted model.
        path: the model file (``.skops``; a ``.json`` sidecar is written beside it).
        out_dir: the output folder (``train_metrics.json``).

    Returns:
        The written ``model`` and ``sidecar`` paths.
    """
    return save(model, path, out_dir)


@task(name="predict", cache_policy=NO_CACHE)
def predict_task(p: SolarForestFlowParams, features_path: Path) -> dict:
    """Task ``predict``: runs :func:`deepsolar.jobs.solarforest.predict` (predict mode).

    Args:
        p: the validated parameters (the saved model's path, output folder, tract polygons).
        features_path: the tract feature table to predict on.

    Returns:
        ``predictions_csv``, ``n_tracts`` and, when tract polygons are known,
        ``predictions_gpkg``.
    """
    return predict(p, features_path)


@flow(name="solarforest", validate_parameters=True)
def solarforest(params: SolarForestFlowParams) -> dict[str, Any]:
    """Train, evaluate or apply SolarForest; returns the written paths (and metrics).

    ``predict``: ``get-features`` then ``predict``. ``train``: ``load-training-data``, ``fit``,
    ``save-model``, ``diagnostics``. ``evaluate``: ``load-training-data``, ``cross-validate``,
    ``permutation-importance`` (when enabled), ``write-evaluation``, then ``fit`` and
    ``diagnostics`` of the primary model; logs the R² table.

    Args:
        params: the parameters (or a mapping of them): mode, feature table (path or URL), target
            table, model and evaluation settings, output folder.

    Returns:
        ``mode`` and the written paths; in train mode also ``in_sample`` (metrics on the training
        tracts), in evaluate mode ``metrics``.

    Raises:
        ConfigError: a parameter is invalid, or the model path does not end in ``.skops``.
        InputDataError: a named input file (or, to predict, the model file) is missing.
    """
    p = validate_config(SolarForestFlowParams, params)
    check_inputs(p)
    logger = get_run_logger()
    out_dir = p.output_dir
    features = features_task(p)
    if p.mode == "predict":
        result = predict_task(p, features)
        logger.info("predicted %d tracts -> %s", result["n_tracts"], result["predictions_csv"])
        return {"mode": p.mode, **result}
    db, table, data = load_task(p, features)
    logger.info(
        "%d tracts, %d features, target %s (%d without a target left out)",
        len(data.y), len(data.features), data.target, data.n_dropped_missing_target,
    )  # fmt: skip
    if p.mode == "train":
        model = fit_task(data, p)
        saved = save_task(model, p.resolved_model_path, out_dir)
        diag = diagnostics_task(model, data, out_dir)
        logger.info("model saved to %s", saved["model"])
        return {"mode": p.mode, **saved, **diag, "in_sample": model.metadata["in_sample"]}
    metrics, results = cv_task(db, table, p)
    perm = permutation_task(data, p) if p.permutation_importance else None
    paths = write_eval_task(out_dir, metrics, results, perm)
    diag = diagnostics_task(fit_task(data, p), data, out_dir)
    logger.info("R² table:\n%s", sf.r2_table(metrics))
    return {"mode": p.mode, **paths, **diag, "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.solarforest``: the same command line as ``deepsolar solarforest``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the job was refused or failed (one line on stderr).
    """
    return run_main("solarforest", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
