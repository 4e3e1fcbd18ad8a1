r"""Calibrated mask rules from labelled training data: an activation floor or a CAM threshold.

An activation floor for ``CamConfig.floor`` is a quantile of the CAM maxima of truly positive
training tiles; a CAM threshold for ``CamConfig.threshold`` is the one whose pipeline masks best
match the training masks' area.

DeepSolar's per-tile min-max marks part of every tile called positive, however weak its CAM. A
floor on the raw CAM lets a tile mark nothing, but raw CAM values have model-specific units, so
the floor is learned from labelled data the model was trained on: with ``quantile`` q, about a
fraction q of the truly positive training tiles would have their strongest pixel under the floor
(and mark nothing), while false positives whose CAM is weaker than that are emptied.

    deepsolar calibrate-cam --classifier builtin --segmenter builtin \
        --source ../shared/data/pv_chips/solar_pv_gray/manifest.csv --split train \
        --ground-m-per-px 0.2 --quantile 0.1

prints the floor and the ``cam:`` lines to put in a segment-tiles / map-region config
(:mod:`deepsolar.jobs.calibrate_cam` is that command).

DeepSolar's 0.37 threshold on the min-max normalised CAM was tuned on its own data; a classifier
fine-tuned elsewhere draws CAMs of another shape, so ``calibrate-cam --fit threshold`` picks it
again on training chips with masks (:func:`fit_cam_threshold`): the pipeline's masks (only tiles called
positive, as ``segment-tiles`` keeps them) are summed over every training sample for each
candidate threshold, and the threshold whose total panel area is nearest the truth's (objective
``area``, ties to the higher IoU) or whose pixel IoU is highest (``iou``) is chosen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from deepsolar.classifier.config import ChipSource
from deepsolar.classifier.data import load_sources, read_chip
from deepsolar.classifier.subtiles import expand_chips
from deepsolar.core.errors import InputDataError
from deepsolar.segmentation.evaluate import (
    AnySet,
    CellMaps,
    batched_items,
    items_cell_maps,
    iter_set,
    mask_counts,
    masked_area,
    stitch_masks,
)
from deepsolar.segmentation.pipeline import Segmenter

THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(2, 20))  # 0.10 .. 0.95


def cam_kind(segmenter: Segmenter) -> str:
    """The key of :meth:`Segmenter.native_cam_maps` that its CamConfig reads.

    Args:
        segmenter: classifier + CAM rule.

    Returns:
        ``plain``, or ``stage<k>`` for the greedy stage used (default: the last trained).
    """
    if segmenter.cam.method == "plain":
        return "plain"
    return f"stage{segmenter.cam.stage or segmenter.seg.stages_trained}"


def cam_maxima(
    segmenter: Segmenter, sources: Sequence[ChipSource], *, batch_size: int = 16, seed: int = 0
) -> pd.DataFrame:
    """Raw CAM maxima of every tile-sized sample (chips cut into cells as in training).

    Args:
        segmenter: classifier + CAM rule.
        sources: labelled chip sources (the training ones).
        batch_size: images per forward pass.
        seed: seed of the per-class caps and the cell sampling.

    Returns:
        One row per sample: ``path``, ``window``, ``label``, ``prob`` (0-1), ``called``
        (prob >= threshold), ``max_positive`` (raw positive-class CAM) and ``max_margin`` (raw
        logit-margin map), both at native resolution.

    Raises:
        InputDataError: a source or chip cannot be read.
    """
    chips = expand_chips(
        load_sources(sources, seed=seed), segmenter.clf.config.data.subtiles, training=True,
        seed=seed,
    )  # fmt: skip
    kind = cam_kind(segmenter)
    rows = []
    for i in range(0, len(chips), batch_size):
        part = chips[i : i + batch_size]
        images = []
        for c in part:
            im = read_chip(c.path)
            images.append(im.crop(c.window) if c.window is not None else im)
        probs, maps = segmenter.native_cam_maps(segmenter.preprocess(images))
        m = maps[kind]
        pos_max = m.positive.flatten(1).max(dim=1).values.cpu().numpy()
        mar_max = m.margin.flatten(1).max(dim=1).values.cpu().numpy()
        for j, c in enumerate(part):
            p = float(probs[j])
            rows.append({
                "path": str(c.path), "window": c.window, "label": int(c.label), "prob": p,
                "called": p >= segmenter.threshold, "max_positive": float(pos_max[j]),
                "max_margin": float(mar_max[j]),
            })  # fmt: skip
    return pd.DataFrame(rows)


def floor_from_maxima(maxima: pd.DataFrame, quantile: float, on: str = "positive") -> float:
    """The ``quantile`` of the truly positive samples' maxima of map ``on`` (positive/margin).

    Args:
        maxima: the table of :func:`cam_maxima`.
        quantile: share of the positives whose maximum may fall under the floor, fraction in
            [0, 1).
        on: ``positive`` (positive-class CAM) or ``margin`` (logit-margin map).

    Returns:
        The floor, in the raw map's (model-specific) units.

    Raises:
        ValueError: ``quantile`` is outside [0, 1).
        InputDataError: no sample is positive.
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    pos = maxima.loc[maxima["label"] == 1, f"max_{on}"].to_numpy(dtype=float)
    if len(pos) == 0:
        raise InputDataError(
            "no positive sample to calibrate the floor on",
            where="calibrate",
            fix="pass sources with positive (solar) chips",
        )
    return float(np.quantile(pos, quantile))


def threshold_sweep(
    segmenter: Segmenter,
    sets: Sequence[AnySet],
    thresholds: Sequence[float] = THRESHOLD_GRID,
    *,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Pipeline masks of every sample of ``sets`` under each CAM threshold, summed.

    Args:
        segmenter: classifier + CAM rule (its ``cam`` gives method, stage, floor and clean-up).
        sets: labelled samples with masks (scene tile stores with truth, chip folders, manifests).
        thresholds: candidate values of ``CamConfig.threshold`` (min-max normalised CAM, 0-1).
        batch_size: images per forward pass.

    Returns:
        one row per threshold: ``pred_area`` / ``true_area`` (m² where the samples are
        georeferenced, else pixels), ``area_ratio`` (pred / true), ``iou`` (pixel IoU).
    """
    kind = cam_kind(segmenter)
    subtiles = segmenter.clf.config.data.subtiles
    acc = {t: np.zeros(4) for t in thresholds}  # pred area, tp, fp, fn
    true_area = 0.0
    for s in sets:
        for batch in batched_items(iter_set(s), batch_size):
            cells = items_cell_maps(segmenter, batch, subtiles, batch_size)
            for item, cm in zip(batch, cells, strict=True):
                cm.maps = {kind: cm.maps[kind]}
                true_area += masked_area(item.truth, item.pixel_area)
                for t, pipe in _pipe_masks(cm, kind, thresholds, segmenter):
                    acc[t] += (masked_area(pipe, item.pixel_area), *mask_counts(pipe, item.truth))
    rows = []
    for t, (pred, tp, fp, fn) in acc.items():
        rows.append({
            "threshold": t, "pred_area": pred, "true_area": true_area,
            "area_ratio": pred / true_area if true_area else np.nan,
            "iou": tp / (tp + fp + fn) if tp + fp + fn else np.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def _pipe_masks(
    cm: CellMaps, kind: str, thresholds: Sequence[float], segmenter: Segmenter
) -> Iterator[tuple[float, np.ndarray]]:
    """(threshold, pipeline mask) for each threshold.

    Without clean-up one stitch at the lowest threshold suffices: a higher threshold only removes
    pixels whose normalised CAM is <= it.
    """
    if segmenter.cam.clean.active:  # opening/closing do not commute with thresholding
        for t in thresholds:
            yield t, stitch_masks(cm, t, segmenter.cam, segmenter.threshold).pipe[kind]
        return
    lowest = stitch_masks(cm, min(thresholds), segmenter.cam, segmenter.threshold)
    norm, pipe = lowest.norm[kind], lowest.pipe[kind]
    for t in thresholds:
        yield t, pipe & (norm > t)


def pick_threshold(sweep: pd.DataFrame, objective: str = "area") -> float:
    """The sweep's best threshold.

    ``area``: total area nearest the truth's (ties: higher IoU); ``iou``: highest pixel IoU.

    Args:
        sweep: the table of :func:`threshold_sweep`.
        objective: ``area`` or ``iou``.

    Returns:
        The threshold on the min-max normalised CAM, 0-1.

    Raises:
        ValueError: ``objective`` is neither ``area`` nor ``iou``.
        InputDataError: the samples hold no PV pixel.
    """
    if objective not in ("area", "iou"):
        raise ValueError(f"objective must be 'area' or 'iou', got {objective!r}")
    ok = sweep.dropna(subset=["area_ratio", "iou"])
    if ok.empty or not (ok["true_area"] > 0).any():
        raise InputDataError(
            "no PV pixel in the calibration samples",
            where="calibrate",
            fix="pass training samples with panels and their masks",
        )
    if objective == "iou":
        return float(ok.loc[ok["iou"].idxmax(), "threshold"])
    err = (ok["area_ratio"] - 1.0).abs().round(6)
    best = ok[err == err.min()]
    return float(best.loc[best["iou"].idxmax(), "threshold"])


def fit_cam_threshold(
    segmenter: Segmenter, sets: Sequence[AnySet], objective: str = "area"
) -> tuple[float, pd.DataFrame]:
    """(chosen ``CamConfig.threshold``, the sweep) on training samples with masks.

    Args:
        segmenter: classifier + CAM rule.
        sets: labelled samples with masks.
        objective: ``area`` or ``iou`` (see :func:`pick_threshold`).

    Returns:
        The threshold (normalised CAM, 0-1) and the sweep of :func:`threshold_sweep`.

    Raises:
        InputDataError: a sample cannot be read, or the samples hold no PV pixel.
    """
    sweep = threshold_sweep(segmenter, sets)
    return pick_threshold(sweep, objective), sweep
