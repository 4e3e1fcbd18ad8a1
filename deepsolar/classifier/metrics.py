"""Tile-classification metrics (sklearn), a threshold sweep, and JSON + PNG curve outputs.

Undefined values (precision with no predicted positive, ROC-AUC with one class) are ``None`` in
Python and ``null`` in JSON rather than a misleading 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from deepsolar.core.bootstrap import (
    bootstrap_ci,
    confusion_columns,
    f1_stat,
    precision_stat,
    recall_stat,
)
from deepsolar.core.io import atomic_output, atomic_write_text
from deepsolar.core.report_table import Column, ci_cells

DEFAULT_SWEEP = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def classification_metrics(
    labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """Precision, recall, F1, accuracy and the confusion matrix at ``threshold``; ROC/PR-AUC.

    Args:
        labels: the true labels (0 or 1).
        probs: the predicted probabilities of PV, 0-1.
        threshold: a chip is called positive at ``prob >= threshold``, probability 0-1.

    Returns:
        The metrics by name: counts, ``precision``, ``recall``, ``f1``, ``accuracy``,
        ``roc_auc``, ``pr_auc`` (None where undefined) and ``confusion_matrix`` (rows truth,
        columns prediction).
    """
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel().tolist()
    both = len(np.unique(y)) == 2
    return {
        "threshold": float(threshold),
        "n": int(len(y)),
        "n_positive": int(y.sum()),
        "n_negative": int(len(y) - y.sum()),
        "precision": _num(precision_score(y, pred, zero_division=np.nan)),
        "recall": _num(recall_score(y, pred, zero_division=np.nan)),
        "f1": _num(f1_score(y, pred, zero_division=np.nan)),
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        # rows = truth (0, 1), columns = prediction (0, 1)
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def threshold_sweep(
    labels: Sequence[int] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    thresholds: Sequence[float] = DEFAULT_SWEEP,
) -> list[dict[str, Any]]:
    """Precision/recall/F1 and counts at each threshold.

    Args:
        labels: the true labels (0 or 1).
        probs: the predicted probabilities of PV, 0-1.
        thresholds: the thresholds to evaluate, probabilities 0-1.

    Returns:
        One row per threshold: ``threshold``, ``precision``, ``recall``, ``f1``, ``tp``, ``fp``,
        ``fn``.
    """
    rows = []
    for t in thresholds:
        m = classification_metrics(labels, probs, t)
        rows.append({k: m[k] for k in ("threshold", "precision", "recall", "f1", "tp", "fp", "fn")})
    return rows


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically.

    Args:
        path: the destination file; its folder is created.
        data: anything ``json.dumps`` takes.

    Returns:
        The path written.
    """
    p = Path(path)
    atomic_write_text(p, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return p


def plot_curves(
    labels: Sequence[int] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    out_dir: str | Path,
    title: str = "",
) -> list[Path]:
    """roc.png and pr.png (only when both classes are present).

    Args:
        labels: the true labels (0 or 1).
        probs: the predicted probabilities of PV, 0-1.
        out_dir: the output folder; created if missing.
        title: prefix of the plot titles.

    Returns:
        The files written (empty with a single class).
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers/CI
    import matplotlib.pyplot as plt

    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(np.unique(y)) < 2:
        return []
    written = []
    fpr, tpr, _ = roc_curve(y, p)
    prec, rec, _ = precision_recall_curve(y, p)
    for name, xs, ys, xl, yl, score in (
        (
            "roc",
            fpr,
            tpr,
            "false positive rate",
            "true positive rate (recall)",
            roc_auc_score(y, p),
        ),
        ("pr", rec, prec, "recall", "precision", average_precision_score(y, p)),
    ):
        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
        ax.plot(xs, ys, lw=2, label=f"{'AUC' if name == 'roc' else 'AP'} = {score:.3f}")
        if name == "roc":
            ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
        else:
            ax.axhline(y.mean(), ls="--", c="grey", lw=1, label=f"base rate {y.mean():.3f}")
        ax.set(xlabel=xl, ylabel=yl, xlim=(0, 1), ylim=(0, 1.02), title=f"{title} {name.upper()}")
        ax.legend(loc="lower right" if name == "roc" else "lower left")
        fig.tight_layout()
        target = out / f"{name}.png"
        try:
            with atomic_output(target, suffix=".tmp.png") as tmp:
                fig.savefig(tmp)
        finally:
            plt.close(fig)
        written.append(target)
    return written


def write_metrics(
    labels: Sequence[int] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    out_dir: str | Path,
    *,
    threshold: float = 0.5,
    name: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute everything, write ``metrics.json`` (+ ``roc.png``/``pr.png``) to ``out_dir``.

    Args:
        labels: the true labels (0 or 1).
        probs: the predicted probabilities of PV, 0-1.
        out_dir: the output folder; created if missing.
        threshold: the decision threshold, probability 0-1.
        name: the evaluation's name (in the JSON and plot titles).
        extra: more entries for the JSON.

    Returns:
        The metrics written, with the threshold sweep and the plot file names.
    """
    out = Path(out_dir)
    metrics = {"name": name, **classification_metrics(labels, probs, threshold)}
    metrics["threshold_sweep"] = threshold_sweep(labels, probs)
    if extra:
        metrics.update(extra)
    metrics["plots"] = [p.name for p in plot_curves(labels, probs, out, title=name)]
    write_json(out / "metrics.json", metrics)
    return metrics


# ---------------------------------------------------------------- report rows with baselines

# Below this many chips of either class, ROC-AUC is too noisy to print (shown as n/a).
MIN_CLASS_FOR_AUC = 5
MODEL, ALL_POSITIVE = "model", "all-positive"


def report_rows(
    source: str,
    labels: Sequence[int] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    threshold: float,
    *,
    reps: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    min_class_for_auc: int = MIN_CLASS_FOR_AUC,
) -> list[dict[str, Any]]:
    """Two rows for one set of chips: the model at ``threshold`` and the all-positive baseline.

    Precision, recall and F1 carry percentile bootstrap intervals (chips resampled with
    replacement; the same resamples for both rows, so the comparison is paired). ROC-AUC is
    ``None`` when either class has fewer than ``min_class_for_auc`` chips; the all-positive
    classifier scores every chip alike, so its ROC-AUC is 0.5.

    Args:
        source: the chip set's name.
        labels: the true labels (0 or 1).
        probs: the predicted probabilities of PV, 0-1.
        threshold: the decision threshold, probability 0-1.
        reps: number of bootstrap resamples.
        seed: seed of the resampling.
        level: confidence level of the intervals, fraction 0-1.
        min_class_for_auc: fewest chips of each class for a ROC-AUC.

    Returns:
        The model's row and the baseline's row (columns of :data:`REPORT_COLUMNS`, plus counts).
    """
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    n_pos = int(y.sum())
    n_neg = int(len(y) - n_pos)
    auc_ok = min(n_pos, n_neg) >= min_class_for_auc
    rows = []
    for predictor, pred, score in (
        (MODEL, p >= threshold, p),
        (ALL_POSITIVE, np.ones(len(y), bool), np.ones(len(y))),
    ):
        cols = confusion_columns(y, pred)
        row: dict[str, Any] = {
            "source": source,
            "predictor": predictor,
            "n": int(len(y)),
            "n_positive": n_pos,
            "n_negative": n_neg,
            "called_positive": int(pred.sum()),
        }
        for key, stat in (("precision", precision_stat), ("recall", recall_stat),
                          ("f1", f1_stat)):  # fmt: skip
            row.update(ci_cells(key, bootstrap_ci(cols, stat, reps=reps, seed=seed, level=level)))
        row["roc_auc"] = float(roc_auc_score(y, score)) if auc_ok else None
        row["tp"], row["fp"], row["fn"] = (int(c) for c in cols.sum(axis=0))
        rows.append(row)
    return rows


REPORT_COLUMNS = (
    Column("source", "source", "text"),
    Column("predictor", "predictor", "text"),
    Column("n", "n", "int"),
    Column("pos", "n_positive", "int"),
    Column("called pos", "called_positive", "int"),
    Column("precision [95% CI]", "precision", "ci"),
    Column("recall [95% CI]", "recall", "ci"),
    Column("F1 [95% CI]", "f1", "ci"),
    Column("ROC-AUC", "roc_auc", "num"),
)


def report_notes(reps: int, level: float, min_class_for_auc: int = MIN_CLASS_FOR_AUC) -> list[str]:
    """Footnotes explaining the report table's intervals, baseline and ROC-AUC.

    Args:
        reps: number of bootstrap resamples.
        level: confidence level of the intervals, fraction 0-1.
        min_class_for_auc: fewest chips of each class for a ROC-AUC.

    Returns:
        The notes, one sentence or two each.
    """
    return [
        f"[lo, hi]: {level:.0%} percentile bootstrap interval, chips resampled with replacement "
        f"({reps} replicates, the same resamples for model and baseline).",
        "all-positive: the trivial classifier that calls every chip solar (precision = share of "
        "positives, recall 1); a model that does not beat it has learnt nothing useful.",
        f"ROC-AUC is n/a when either class has fewer than {min_class_for_auc} chips.",
    ]
