"""SolarForest's figures.

Partial dependence, feature importances, the zero/non-zero stage's calibration, and observed vs
out-of-fold predicted. Headless (matplotlib's Agg backend); every figure is written atomically.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepsolar.core.io import atomic_output
from deepsolar.solarforest.config import MODEL_LABELS, SCHEME_LABELS
from deepsolar.solarforest.evaluation import CVResult
from deepsolar.solarforest.model import SolarForestModel
from deepsolar.solarforest.schema import target_units

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: flows run on servers without a display
    import matplotlib.pyplot as plt

    return plt


def _save_fig(fig: Any, path: Path) -> Path:
    try:
        with atomic_output(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
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
    """Partial dependence of the prediction on each headline factor.

    Args:
        model: the fitted model.
        X: the features (rows with a missing plotted factor are left out).
        path: the PNG to write.
        features: the factors to plot (default: ``model.config.pdp_features``).
        grid_resolution: grid points per factor.
        max_rows: rows sampled to average over.

    Returns:
        The PNG's path (None when no factor is among the model's features) and the factors
        skipped because the model does not use them.
    """
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
    """Horizontal bars of the ``top`` features by ``column`` (with its ``_std`` as error bars).

    Args:
        imp: an importance table (``feature`` and the importance columns).
        column: the column to rank and plot.
        path: the PNG to write.
        top: number of features shown.

    Returns:
        The PNG's path.
    """
    plt = _pyplot()
    d = imp.sort_values(column, ascending=False).head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(d) + 1.2))
    err = d.get(column.replace("_mean", "_std")) if column.endswith("_mean") else None
    ax.barh(d["feature"], d[column], xerr=err)
    ax.set_xlabel(column.replace("_", " "))
    ax.set_title(f"SolarForest: top {len(d)} features")
    return _save_fig(fig, Path(path))


def plot_calibration(metrics: dict[str, Any], path: str | Path) -> Path | None:
    """Reliability diagram of the zero/non-zero stage, one curve per CV scheme.

    Args:
        metrics: the metrics of :func:`~deepsolar.solarforest.evaluation.evaluate`.
        path: the PNG to write.

    Returns:
        The PNG's path, or None when the two-stage model was not evaluated.
    """
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
    """Observed vs out-of-fold predicted, one panel per forest model and CV scheme.

    Args:
        results: the raw results of :func:`~deepsolar.solarforest.evaluation.evaluate`.
        path: the PNG to write.
        target: the target shown (default: the first evaluated).
        transform: the transform shown (default: the first evaluated).

    Returns:
        The PNG's path.
    """
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
