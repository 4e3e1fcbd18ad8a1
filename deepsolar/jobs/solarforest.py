"""The ``solarforest`` job: train / evaluate / predict the tract-level deployment regression.

The parameter model and its overrides live in :mod:`deepsolar.solarforest.job` (re-exported
here); :func:`run` does the job in this process (no Prefect). The steps import pandas and
scikit-learn only when they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepsolar.core.config import apply_override, config_with_sets, validate_config
from deepsolar.jobs.cli_options import bind_flags
from deepsolar.solarforest.job import SolarForestFlowParams, check_inputs

__all__ = [
    "PARAMETERS", "QUICK", "SolarForestFlowParams", "check", "check_inputs", "features_path",
    "format_result", "parameters_from_args", "predict", "run", "save",
]  # fmt: skip

#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"params": SolarForestFlowParams}

#: ``--quick``: the same table with fewer trees and resamples (for a first look).
QUICK = {
    "model.n_estimators": 30,
    "evaluation.bootstrap_samples": 200,
    "permutation_importance": "false",
}


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters: ``--config`` with ``--set``, ``--mode``, ``--out``, ``--quick``.

    Applied in that order.

    Args:
        args: the parsed command line.

    Returns:
        ``{"params": mapping}``.
    """
    parameters = {"params": config_with_sets(args.config, args.set)}
    bind_flags(parameters, args, "solarforest")
    if args.quick:
        for item, value in QUICK.items():
            apply_override(parameters["params"], f"{item}={value}")
    return parameters


def check(params: dict[str, Any], where: str) -> None:
    """The input files exist, the model path is a ``.skops``, predict has a model.

    Args:
        params: the validated parameters.
        where: where they came from (the config file), for error messages.
    """
    check_inputs(params["params"])


def evaluation_summary(m: dict[str, Any]) -> str:
    """One line per evaluated target: tracts, counties, features, share of zero tracts.

    Args:
        m: the evaluation metrics (``metrics.json``).

    Returns:
        The lines, joined.
    """
    c = m["config"]
    lines = [
        f"SolarForest out-of-sample skill ({c['n_estimators']} trees, max_features "
        f"{c['max_features']}, {c['cv_folds']} folds, seed {c['random_state']}); primary model: "
        f"{m['target']} / {m['primary_transform']}"
    ]
    for target, e in m["targets"].items():
        households = (
            f", {e['n_dropped_min_households']} with < {c['min_households']} households"
            if c["min_households"]
            else ""
        )
        lines.append(
            f"  {target} [{e['unit']}]: {e['n_tracts']} tracts ({e['n_dropped_missing_target']} "
            f"without a value left out{households}) in {e['n_counties']} counties, "
            f"{e['n_features']} features, {100 * e['zero_fraction']:.0f}% zero tracts; the 10 "
            f"most extreme tracts hold {100 * e['top10_variance_share']:.0f}% of its variance"
        )
    return "\n".join(lines)


def format_result(result: dict[str, Any], params: dict[str, Any]) -> str:
    """What ``solarforest`` prints: the R² table (evaluate mode) and the written paths.

    Args:
        result: the flow's result.
        params: the parameters it ran with.

    Returns:
        The lines to print.
    """
    from deepsolar import solarforest as sf

    lines: list[str] = []
    if result["mode"] == "evaluate":
        m = result["metrics"]
        lines += [evaluation_summary(m), sf.r2_table(m)]
        cls = sf.classifier_table(m)
        if cls:
            lines.append("\nTwo-stage SolarForest, zero/non-zero stage:\n" + cls)
    lines += [
        f"{k}: {v}"
        for k, v in result.items()
        if k not in ("metrics", "mode") and isinstance(v, str)
    ]
    return "\n".join(lines)


def features_path(p: SolarForestFlowParams) -> Path:
    """The tract feature table: ``features_path``, else the download of ``features_url``.

    Args:
        p: the validated parameters.

    Returns:
        The local feature table.
    """
    from deepsolar.solarforest.tractdb import get_tract_db

    return (
        p.features_path
        if p.features_path is not None
        else get_tract_db(p.features_url, p.cache_dir)
    )


def save(model: Any, path: Path, out_dir: Path) -> dict[str, str]:
    """Save a fitted model (``.skops`` + ``.json`` sidecar) and its ``train_metrics.json``.

    Args:
        model: the fitted ``SolarForestModel``.
        path: the model file (``.skops``).
        out_dir: the output folder.

    Returns:
        The written model and sidecar paths.
    """
    from deepsolar import solarforest as sf

    saved = sf.save_model(model, path)
    sf.write_json(out_dir / "train_metrics.json", model.metadata)
    return {"model": str(saved), "sidecar": str(saved.with_suffix(".json"))}


def predict(p: SolarForestFlowParams, features: Path) -> dict[str, Any]:
    """Apply the saved model to a feature table: predictions.csv (and a GeoPackage layer).

    Args:
        p: the validated parameters.
        features: the tract feature table.

    Returns:
        ``predictions_csv``, ``n_tracts`` and, when tract polygons are known, ``predictions_gpkg``.
    """
    from deepsolar import solarforest as sf
    from deepsolar.solarforest.tractdb import read_tract_polygons

    model = sf.load_model(p.resolved_model_path)
    db, table = sf.load_training_table(
        features, model.config, lexicon_path=p.lexicon_path,
        target_path=p.target_path, target_layer=p.target_layer,
    )  # fmt: skip
    pred = sf.predict_tracts(model, table, where=db.source)
    out: dict[str, Any] = {
        "predictions_csv": str(sf.write_csv(pred, p.output_dir / "predictions.csv"))
    }
    out["n_tracts"] = len(pred)
    tracts_path = p.tracts_path
    layer = p.tracts_layer
    if (
        tracts_path is None
        and p.target_path is not None
        and p.target_path.suffix.lower() == ".gpkg"
    ):
        tracts_path, layer = p.target_path, p.target_layer
    if tracts_path is not None:
        polys = read_tract_polygons(tracts_path, layer=layer)
        if polys is not None:
            gpkg = p.predictions_gpkg or p.output_dir / "solarforest_predictions.gpkg"
            out["predictions_gpkg"] = str(sf.write_predictions_gpkg(pred, polys, gpkg, "tracts"))
    return out


def run(params: SolarForestFlowParams | dict[str, Any]) -> dict[str, Any]:
    """Train, evaluate or apply SolarForest in this process (no Prefect).

    Args:
        params: the parameters (or a mapping of them).

    Returns:
        ``mode`` and the written paths (and ``metrics`` in evaluate mode), as the flow returns.
    """
    from deepsolar import solarforest as sf

    p = validate_config(SolarForestFlowParams, params)
    check_inputs(p)
    features = features_path(p)
    if p.mode == "predict":
        return {"mode": p.mode, **predict(p, features)}
    db, table = sf.load_training_table(
        features, p.model, lexicon_path=p.lexicon_path, target_path=p.target_path,
        target_layer=p.target_layer, targets=p.targets,
    )  # fmt: skip
    data = sf.prepare_data(db, p.model, table)
    if p.mode == "train":
        model = sf.fit_solarforest(data, p.model)
        saved = save(model, p.resolved_model_path, p.output_dir)
        diag = sf.write_model_diagnostics(model, data.X, p.output_dir)
        return {"mode": p.mode, **saved, **diag, "in_sample": model.metadata["in_sample"]}
    metrics, results = sf.evaluate(db, p.model, p.evaluation, table)
    perm = sf.permutation_importances(data, p.model) if p.permutation_importance else None
    paths = sf.write_evaluation(p.output_dir, metrics, results, perm)
    diag = sf.write_model_diagnostics(sf.fit_solarforest(data, p.model), data.X, p.output_dir)
    return {"mode": p.mode, **paths, **diag, "metrics": metrics}
