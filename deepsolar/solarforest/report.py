"""SolarForest's report: the R² and classifier tables (Markdown) and the report files.

The files of an evaluation (metrics, out-of-fold predictions, tables, plots) and of a fitted model
(importances, partial dependence).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from deepsolar.core.io import atomic_write_text
from deepsolar.solarforest.config import MODEL_LABELS, SCHEME_LABELS
from deepsolar.solarforest.evaluation import CVResult, oof_table
from deepsolar.solarforest.importances import impurity_importances
from deepsolar.solarforest.model import SolarForestModel
from deepsolar.solarforest.outputs import write_csv, write_json
from deepsolar.solarforest.plots import (
    plot_calibration,
    plot_importances,
    plot_observed_vs_predicted,
    plot_partial_dependence,
)

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
    """Markdown table of every target x transform x model.

    Pooled out-of-fold R² per CV scheme with its bootstrap interval, the R² of the same predictions
    on the log1p scale, and the MAE.

    Args:
        metrics: the metrics of :func:`~deepsolar.solarforest.evaluation.evaluate`.

    Returns:
        The table and a note on how to read it.
    """
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
    """Markdown table of the two-stage model's zero/non-zero stage per target and CV scheme.

    Args:
        metrics: the metrics of :func:`~deepsolar.solarforest.evaluation.evaluate`.

    Returns:
        The table, or "" when the two-stage model was not evaluated.
    """
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


def write_evaluation(
    out_dir: str | Path,
    metrics: dict[str, Any],
    results: dict[tuple[str, str, str, str], CVResult],
    permutation: pd.DataFrame | None = None,
) -> dict[str, str]:
    """metrics.json, r2_table.md, oof_predictions.csv and the evaluation plots.

    Args:
        out_dir: the output folder.
        metrics: the metrics of :func:`~deepsolar.solarforest.evaluation.evaluate`.
        results: its raw results.
        permutation: permutation importances to write and plot, if computed.

    Returns:
        Output name -> written path.
    """
    out = Path(out_dir)
    paths = {
        "metrics_json": write_json(out / "metrics.json", metrics),
        "oof_predictions": write_csv(oof_table(results), out / "oof_predictions.csv"),
        "observed_vs_predicted": plot_observed_vs_predicted(
            results,
            out / "observed_vs_predicted.png",
            metrics.get("target"),
            metrics.get("primary_transform"),
        ),
    }
    text = r2_table(metrics) + "\n"
    cls = classifier_table(metrics)
    if cls:
        text += "\nTwo-stage SolarForest, zero/non-zero stage:\n\n" + cls + "\n"
    paths["r2_table"] = atomic_write_text(out / "r2_table.md", text)
    cal = plot_calibration(metrics, out / "calibration.png")
    if cal is not None:
        paths["calibration"] = cal
    if permutation is not None:
        paths["permutation_importances"] = write_csv(
            permutation, out / "permutation_importances.csv"
        )
        paths["permutation_plot"] = plot_importances(
            permutation, "permutation_r2_drop_mean", out / "permutation_importances.png"
        )
    return {k: str(v) for k, v in paths.items()}


def write_model_diagnostics(
    model: SolarForestModel, X: pd.DataFrame, out_dir: str | Path
) -> dict[str, Any]:
    """Impurity importances (CSV + plot) and the partial-dependence plot of a fitted model.

    Args:
        model: the fitted model.
        X: the features to average the partial dependence over.
        out_dir: the output folder.

    Returns:
        Output name -> written path, and ``pdp_skipped``: factors the model does not use.
    """
    out = Path(out_dir)
    imp = impurity_importances(model)
    paths: dict[str, Any] = {
        "impurity_importances": write_csv(imp, out / "impurity_importances.csv"),
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
