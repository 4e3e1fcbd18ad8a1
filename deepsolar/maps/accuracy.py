"""Accuracy of a mapped region against ground-truth panel polygons (the synthetic scene's truth).

Three views, as DeepSolar and SolarMapper report them:
- tiles: precision / recall of the positive call (a tile is truly positive when it holds at least
  ``min_pv_area_m2`` of PV);
- systems: detected vs true system count (truth arrays are merged by the same rule as detections,
  since touching arrays cannot be told apart from above);
- area: panel area per census tract and in total, detected vs true, as relative errors.
Truth areas are visible areas (what the imagery shows) where the truth provides them.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from deepsolar.classifier.data import labels_from_truth
from deepsolar.core.bootstrap import (
    bootstrap_ci,
    confusion_columns,
    f1_stat,
    precision_stat,
    recall_stat,
)
from deepsolar.maps.aggregate import aggregate_systems
from deepsolar.maps.merge import MergeConfig, merge_panels


def tile_scores(
    tiles: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, min_pv_area_m2: float = 1.0
) -> dict[str, Any]:
    """Precision, recall and F1 of ``tiles['is_positive']`` against the truth polygons.

    With 95% bootstrap intervals (``precision_lo`` / ``precision_hi`` ...; None where undefined).

    Args:
        tiles: Scanned tiles with footprints and a boolean ``is_positive`` column.
        truth: Ground-truth panel polygons.
        min_pv_area_m2: A tile is truly positive when it holds at least this much truth panel
            area, in m².

    Returns:
        The scores (fractions 0-1), their intervals and the confusion counts.
    """
    y_true = labels_from_truth(tiles, truth, min_pv_area_m2).reindex(tiles["tile_id"]).to_numpy()
    y_pred = tiles["is_positive"].fillna(False).astype(bool).to_numpy()
    cols = confusion_columns(y_true == 1, y_pred)  # per tile (tp, fp, fn) indicators
    tp, fp, fn = (int(v) for v in cols.sum(axis=0))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    scores = {
        "n_tiles": int(len(tiles)),
        "n_true_positive_tiles": int(np.sum(y_true == 1)),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
    # 95% percentile bootstrap over tiles (seeded; tiles resampled independently, so spatial
    # correlation between neighbouring tiles makes these intervals somewhat too narrow)
    for name, stat in (("precision", precision_stat), ("recall", recall_stat), ("f1", f1_stat)):
        iv = bootstrap_ci(cols, stat)
        scores[f"{name}_lo"], scores[f"{name}_hi"] = iv.lo, iv.hi
    return scores


def truth_systems(
    truth: gpd.GeoDataFrame, scanned: Any, merge: MergeConfig | None = None
) -> gpd.GeoDataFrame:
    """Truth arrays clipped to the scanned area and merged like detections.

    Args:
        truth: Ground-truth panel polygons.
        scanned: The scanned area (a shapely geometry in EPSG:4326).
        merge: Merge settings; None: defaults.

    Returns:
        The truth systems, as :func:`~deepsolar.maps.merge.merge_panels` gives them.
    """
    t = truth.copy()
    if "visible_area_m2" in t.columns and "area_m2" in t.columns:
        # scale each clipped piece by its visible share so occluded panels are not "missed area"
        share = (t["visible_area_m2"] / t["area_m2"]).clip(0, 1).fillna(1.0)
    else:
        share = pd.Series(1.0, index=t.index)
    if scanned is not None:
        t = t.assign(geometry=t.geometry.intersection(scanned))
        t = t[~t.geometry.is_empty]
        share = share.loc[t.index]
    from deepsolar.maps.polygons import equal_area_m2

    t = t.assign(area_m2=equal_area_m2(t) * share.to_numpy())
    t = t[["area_m2", "geometry"]]
    return merge_panels(t, merge or MergeConfig())


def region_scores(
    systems: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    tracts: gpd.GeoDataFrame,
    scanned: Any,
    merge: MergeConfig | None = None,
) -> dict[str, Any]:
    """System count error and per-tract / total area errors.

    Args:
        systems: Detected systems.
        truth: Ground-truth panel polygons.
        tracts: Census tracts to compare areas in (``GEOID`` column).
        scanned: The scanned area (a shapely geometry in EPSG:4326).
        merge: Merge settings for the truth systems; None: defaults.

    Returns:
        System counts and their relative error, total detected / true areas in m² and their
        relative error, and ``per_tract`` rows (areas in m², relative error).
    """
    true_sys = truth_systems(truth, scanned, merge)
    pred = aggregate_systems(systems, tracts, scanned=scanned)
    true = aggregate_systems(true_sys, tracts, scanned=scanned)
    per = pd.DataFrame(
        {
            "GEOID": tracts["GEOID"].to_numpy(),
            "detected_area_m2": pred["total_panel_area"].to_numpy(),
            "true_area_m2": true["total_panel_area"].to_numpy(),
            "detected_systems": pred["solar_system_count"].to_numpy(),
            "true_systems": true["solar_system_count"].to_numpy(),
        }
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        per["area_rel_error"] = (per["detected_area_m2"] - per["true_area_m2"]) / per[
            "true_area_m2"
        ]
    det_total, true_total = float(per["detected_area_m2"].sum()), float(per["true_area_m2"].sum())
    n_det, n_true = int(len(systems)), int(len(true_sys))
    return {
        "systems_detected": n_det,
        "systems_true": n_true,
        "system_count_rel_error": (n_det - n_true) / n_true if n_true else float("nan"),
        "area_detected_m2": det_total,
        "area_true_m2": true_total,
        "area_total_rel_error": (det_total - true_total) / true_total
        if true_total
        else float("nan"),
        "per_tract": per.to_dict(orient="records"),
    }
