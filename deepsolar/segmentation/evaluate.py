"""Evaluate masks against ground-truth masks: plain CAM vs greedy stage 1 vs stage 2.

The supervised mask head is evaluated too, when one is given.

Metrics, per method (``plain`` = classifier's Mixed_7c x fc; ``stageK`` = greedy branch;
``mask_head`` = the decoder of :mod:`.maskhead`, sigmoid > ``mask_threshold``):

- **pipeline** (what ``segment-tiles`` produces): masks only where the classifier says positive,
  empty elsewhere. Micro IoU / Dice over every pixel of every tile; mean absolute per-tile
  relative area error over tiles with truth (|pred - true| / true; DeepSolar: 27.3% / 18.8%);
  relative error of the total area of the set (|sum pred - sum true| / sum true; DeepSolar:
  3.0% / 2.1%).
- **oracle** (segmentation alone): masks for every tile that truly holds PV, whatever the
  classifier says; same metrics restricted to those tiles, plus the mean per-tile IoU.

Chips without georeferencing (the shared ``pv_chips``) measure area in pixels (``m_per_px``
unset) or with one nominal ``m_per_px``: relative errors do not depend on it. Scene tiles use each
tile's latitude-dependent pixel area.

Beside the methods, :func:`baseline_table` puts trivial baselines on the same chips, per set and
overall (``table.{json,csv,md}``): the **whole-tile** mask (every pixel is panel) and, for area,
the **mean panel fraction** (every chip gets the set's mean truth fraction of its area; in-sample,
so its regional error on equal-sized chips is ~0 by construction). Mean per-chip IoU on the truly
positive chips carries a 95% bootstrap interval.

Any labelled chip folder works as a set (``images/`` + ``masks/``, see
:class:`deepsolar.classifier.config.ImagesSource`), as does a manifest with a ``mask`` column.

Run::

    deepsolar evaluate-segmenter --config configs/segmenter-eval-real-chips.yaml --out out/seg-eval
    deepsolar evaluate-segmenter --classifier best.pt --segmenter segmenter.pt --source my-chips/
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from deepsolar.classifier.config import ImagesSource, ManifestSource, SubtileConfig
from deepsolar.classifier.data import load_source, read_chip, read_mask, truth_tile_mask
from deepsolar.classifier.subtiles import Window, cells_per_side, grid_windows
from deepsolar.core.bootstrap import mean_ci
from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.core.io import reading_input
from deepsolar.core.report_table import Column, ci_cells, format_text, write_report
from deepsolar.geo.tiling import Tile
from deepsolar.segmentation.area import tile_row_pixel_area_m2
from deepsolar.segmentation.cam import CamMaps, clean_mask, mask_from_cam
from deepsolar.segmentation.config import (  # noqa: F401 - evaluation configs re-exported
    AnySet,
    CamConfig,
    ChipMaskSet,
    EvalSet,
    EvaluateSegmentationConfig,
    MaskCleanConfig,
    SceneMaskSet,
)
from deepsolar.segmentation.maskhead import MASK_HEAD, mask_head_mask
from deepsolar.segmentation.pipeline import Segmenter

log = logging.getLogger("deepsolar.segmentation")

# DeepSolar's published area figures (residential / non-residential).
DEEPSOLAR_PER_IMAGE_ERROR = (0.273, 0.188)
DEEPSOLAR_REGIONAL_ERROR = (0.030, 0.021)


# ---------------------------------------------------------------- metrics


def mask_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(true positive, false positive, false negative) pixel counts.

    Args:
        pred: the predicted mask (nonzero = panel).
        truth: the true mask, same shape.

    Returns:
        The three counts, px.

    Raises:
        InputDataError: the masks differ in shape.
    """
    p, t = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise InputDataError(
            f"prediction {p.shape} and truth {t.shape} differ in shape",
            where="mask_counts",
            fix="compare masks of the same image",
        )
    return int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())


def iou(tp: float, fp: float, fn: float) -> float:
    """Intersection over union; NaN when both masks are empty.

    Args:
        tp: true positive pixels (or area).
        fp: false positive pixels.
        fn: false negative pixels.

    Returns:
        tp / (tp + fp + fn), 0-1.
    """
    d = tp + fp + fn
    return float(tp / d) if d else float("nan")


def dice(tp: float, fp: float, fn: float) -> float:
    """Dice coefficient; NaN when both masks are empty.

    Args:
        tp: true positive pixels (or area).
        fp: false positive pixels.
        fn: false negative pixels.

    Returns:
        2 tp / (2 tp + fp + fn), 0-1.
    """
    d = 2 * tp + fp + fn
    return float(2 * tp / d) if d else float("nan")


def per_tile_relative_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean |pred - true| / true over tiles with true > 0 (DeepSolar's per-image area error).

    Args:
        pred: predicted panel area per tile (m² or px).
        true: true panel area per tile, same unit.

    Returns:
        The mean relative error, a fraction (NaN when no tile has panels).
    """
    p, t = np.asarray(pred, float), np.asarray(true, float)
    keep = t > 0
    return float(np.mean(np.abs(p[keep] - t[keep]) / t[keep])) if keep.any() else float("nan")


def regional_relative_error(pred: np.ndarray, true: np.ndarray) -> float:
    """|sum pred - sum true| / sum true (DeepSolar's regional total error).

    Args:
        pred: predicted panel area per tile (m² or px).
        true: true panel area per tile, same unit.

    Returns:
        The relative error of the total, a fraction (NaN when the true total is 0).
    """
    tot = float(np.sum(true))
    return abs(float(np.sum(pred)) - tot) / tot if tot > 0 else float("nan")


def summarise(df: pd.DataFrame) -> dict[str, Any]:
    """Scores of one method from its per-tile rows (columns made by :func:`evaluate_set`).

    Args:
        df: the method's rows of :func:`evaluate_set`.

    Returns:
        Tile counts, pipeline and oracle IoU / Dice and area errors (fractions), and the true and
        predicted total areas (m² or px).
    """
    truth_pos = df["true_area"] > 0
    o = df[truth_pos]
    return {
        "n_tiles": int(len(df)),
        "n_truth_positive": int(truth_pos.sum()),
        "n_called_positive": int(df["is_positive"].sum()),
        "pipeline_iou": iou(df["tp"].sum(), df["fp"].sum(), df["fn"].sum()),
        "pipeline_dice": dice(df["tp"].sum(), df["fp"].sum(), df["fn"].sum()),
        "pipeline_per_tile_area_error": per_tile_relative_error(df["pred_area"], df["true_area"]),
        "pipeline_mean_abs_area_error": float(np.mean(np.abs(o["pred_area"] - o["true_area"])))
        if len(o)
        else float("nan"),
        "pipeline_regional_area_error": regional_relative_error(df["pred_area"], df["true_area"]),
        "oracle_iou": iou(o["o_tp"].sum(), o["o_fp"].sum(), o["o_fn"].sum()),
        "oracle_dice": dice(o["o_tp"].sum(), o["o_fp"].sum(), o["o_fn"].sum()),
        "oracle_mean_tile_iou": float(
            np.nanmean(
                [iou(a, b, c) for a, b, c in zip(o["o_tp"], o["o_fp"], o["o_fn"], strict=True)]
            )
        )
        if len(o)
        else float("nan"),
        "oracle_per_tile_area_error": per_tile_relative_error(o["o_pred_area"], o["true_area"]),
        "oracle_regional_area_error": regional_relative_error(o["o_pred_area"], o["true_area"]),
        "true_area_total": float(df["true_area"].sum()),
        "pred_area_total": float(df["pred_area"].sum()),
    }


# ---------------------------------------------------------------- table with baselines

WHOLE_TILE, MEAN_FRACTION = "whole-tile", "mean-fraction"
OVERALL = "overall"

TABLE_COLUMNS = (
    Column("source", "source", "text"),
    Column("predictor", "predictor", "text"),
    Column("chips", "n", "int"),
    Column("pos", "n_positive", "int"),
    Column("IoU/pos chip [95% CI]", "mean_iou", "ci"),
    Column("median area err", "median_area_error", "pct"),
    Column("mean area err", "mean_area_error", "pct"),
    Column("regional err (pos)", "regional_area_error_pos", "pct"),
    Column("regional err (all, pipeline)", "regional_area_error_all", "pct"),
)

TABLE_NOTES = (
    "IoU/pos chip: mean per-chip IoU over the chips whose truth mask has panel pixels, with the "
    "CAM mask computed whatever the classifier says (segmentation alone); [lo, hi] is a 95% "
    "percentile bootstrap interval over those chips (the same resamples for every predictor).",
    "area err: |predicted - true| / true panel area per positive chip (DeepSolar: 27.3% / 18.8% "
    "mean); regional err (pos): |sum predicted - sum true| / sum true over the positive chips "
    "(DeepSolar: 3.0% / 2.1%).",
    "regional err (all, pipeline): over every chip, masks only where the classifier says "
    "positive (what segment-tiles reports); for whole-tile, every chip is called positive.",
    "plain / stageK: CAM (min-max per tile, threshold); mask_head: the supervised decoder "
    "trained on masks (sigmoid > mask_threshold), an option beside DeepSolar's CAM.",
    "whole-tile: the trivial mask 'every pixel is panel'. mean-fraction: every chip gets the "
    "mean truth panel fraction of the same chips (positives for the per-chip columns, all chips "
    "for the last): in-sample, so its regional error is ~0 by construction on equal-sized chips.",
)


def _table_rows(
    name: str, df: pd.DataFrame, *, reps: int, seed: int, level: float
) -> list[dict[str, Any]]:
    methods = list(dict.fromkeys(df["method"]))
    first = df[df["method"] == methods[0]]
    pos = first[first["true_area"] > 0]
    true_pos = pos["true_area"].to_numpy(float)

    def row(predictor: str, ious: np.ndarray | None, pred_pos: np.ndarray, pred_all: np.ndarray):
        r: dict[str, Any] = {
            "source": name, "predictor": predictor, "n": len(first), "n_positive": len(pos),
        }  # fmt: skip
        if ious is None:
            r.update({"mean_iou": None, "mean_iou_lo": None, "mean_iou_hi": None})
        else:
            r.update(ci_cells("mean_iou", mean_ci(ious, reps=reps, seed=seed, level=level)))
        err = np.abs(np.asarray(pred_pos, float) - true_pos) / true_pos
        r["median_area_error"] = float(np.median(err)) if len(err) else None
        r["mean_area_error"] = float(np.mean(err)) if len(err) else None
        r["regional_area_error_pos"] = regional_relative_error(pred_pos, true_pos)
        r["regional_area_error_all"] = regional_relative_error(pred_all, first["true_area"])
        return r

    rows = []
    for m in methods:
        g = df[df["method"] == m]
        gp = g[g["true_area"] > 0]
        ious = (gp["o_tp"] / (gp["o_tp"] + gp["o_fp"] + gp["o_fn"])).to_numpy(float)
        rows.append(row(m, ious, gp["o_pred_area"].to_numpy(), g["pred_area"].to_numpy()))
    truth_px = (pos["o_tp"] + pos["o_fn"]).to_numpy(float)
    rows.append(
        row(WHOLE_TILE, truth_px / pos["n_px"].to_numpy(float), pos["chip_area"].to_numpy(),
            first["chip_area"].to_numpy())
    )  # fmt: skip
    chip_pos = pos["chip_area"].to_numpy(float)
    frac_pos = float(np.mean(true_pos / chip_pos)) if len(pos) else float("nan")
    frac_all = float(np.mean(first["true_area"] / first["chip_area"])) if len(first) else 0.0
    rows.append(
        row(MEAN_FRACTION, None, frac_pos * chip_pos, frac_all * first["chip_area"].to_numpy())
    )
    return rows


def baseline_table(
    per_tile: pd.DataFrame, *, reps: int = 1000, seed: int = 0, level: float = 0.95
) -> list[dict[str, Any]]:
    """Rows per set and overall: each CAM method, then the whole-tile and mean-fraction baselines.

    Args:
        per_tile: :func:`evaluate_set` rows (columns ``set``, ``method``, ``o_tp`` ... ``n_px``,
            ``chip_area``), one set or several concatenated.
        reps: number of bootstrap resamples of the mean IoU interval.
        seed: seed of the resampling.
        level: confidence level of the interval, fraction 0-1.

    Returns:
        The rows (columns of :data:`TABLE_COLUMNS`).
    """
    rows: list[dict[str, Any]] = []
    for name, g in per_tile.groupby("set", sort=False):
        rows += _table_rows(str(name), g, reps=reps, seed=seed, level=level)
    rows += _table_rows(OVERALL, per_tile, reps=reps, seed=seed, level=level)
    return rows


# ---------------------------------------------------------------- evaluation sets


@dataclass
class EvalItem:
    """One labelled sample: its key, image and truth mask, and the ground area of its pixels.

    Attributes:
        key: the sample's name (file name or tile id).
        image: the RGB image.
        truth: the true panel mask, bool, image size.
        pixel_area: the area of one pixel, m² (or 1 for pixel units): a scalar, or one per row
            (H,) for Web-Mercator tiles.
        ground_m_per_px: the ground resolution, m/px (None: unknown), for sub-tiling chips wider
            than a tile.
    """

    key: str
    image: Image.Image
    truth: np.ndarray  # bool, image size
    pixel_area: np.ndarray | float  # per-row (H,) or scalar
    ground_m_per_px: float | None = None  # for sub-tiling chips wider than a tile


def iter_chip_set(s: ChipMaskSet) -> Iterator[EvalItem]:
    """Samples of a shared chip set's manifest (``{split}/images``, ``{split}/masks``).

    Args:
        s: the chip set (``m_per_px`` in m/px; None: areas in pixels).

    Yields:
        One sample per manifest row of the split (the first ``max_chips``).

    Raises:
        InputDataError: the manifest is missing or lacks columns, or an image or mask cannot be
            read or differs in size.
    """
    if not s.manifest.is_file():
        raise InputDataError("manifest not found", where=str(s.manifest), fix="check the path")
    df = pd.read_csv(s.manifest)
    if not {"split", "image", "mask"} <= set(df.columns):
        raise InputDataError(
            "manifest lacks split/image/mask columns", where=str(s.manifest),
            fix="use a shared pv_chips manifest.csv",
        )  # fmt: skip
    df = df[df["split"].astype(str) == s.split]
    if s.max_chips:
        df = df.head(s.max_chips)
    root = s.manifest.parent / s.split
    for img, msk in zip(df["image"], df["mask"], strict=True):
        image = read_chip(root / "images" / str(img))
        mp = root / "masks" / str(msk)
        with Image.open(mp) as m:
            truth = np.asarray(m.convert("L")) > 0
        if truth.shape != (image.size[1], image.size[0]):
            raise InputDataError(
                f"mask {truth.shape} and image {image.size} differ", where=str(mp),
                fix="regenerate the mask",
            )  # fmt: skip
        yield EvalItem(str(img), image, truth, (s.m_per_px or 1.0) ** 2, s.m_per_px)


def iter_scene_set(s: SceneMaskSet) -> Iterator[EvalItem]:
    """Samples of a tile store over a scene with PV truth polygons (masks rasterised per tile).

    Args:
        s: the scene set.

    Yields:
        One sample per tile with status ``ok`` (the first ``max_chips``), pixel areas in m² per
        row.

    Raises:
        InputDataError: the manifest, truth or a tile cannot be read.
    """
    import geopandas as gpd

    from deepsolar.imagery.manifest import read_manifest

    tiles = read_manifest(s.manifest)
    tiles = tiles[tiles["status"] == "ok"]
    if s.max_chips:
        tiles = tiles.head(s.max_chips)
    with reading_input(
        "cannot read truth polygons", where=s.truth_path, fix="check truth_path / truth_layer"
    ):
        truth = gpd.read_file(s.truth_path, layer=s.truth_layer)
    if s.truth_visible_column:
        truth = truth[truth[s.truth_visible_column].astype(bool)]
    truth = truth.to_crs("EPSG:3857")
    geoms = [g for g in truth.geometry if g is not None and not g.is_empty]
    root = s.manifest.parent
    for r in tiles.itertuples(index=False):
        tile = Tile(int(r.zoom), int(r.tile_size_px), int(r.x), int(r.y))
        image = read_chip(root / str(r.path))
        w, h = image.size
        mask = truth_tile_mask(tile, geoms, (h, w))
        yield EvalItem(str(r.tile_id), image, mask, _tile_row_areas(tile, h))


def _tile_row_areas(tile: Tile, h: int) -> np.ndarray:
    return tile_row_pixel_area_m2(tile, h)


def iter_source(s: ImagesSource | ManifestSource) -> Iterator[EvalItem]:
    """Chips of a classifier chip source with masks (a chip without a mask must be negative).

    Args:
        s: the chip source.

    Yields:
        One sample per chip, areas in pixels.

    Raises:
        InputDataError: the source or a chip cannot be read, a positive chip has no mask, or a
            mask differs from its image in size.
    """
    for chip in load_source(s):
        image = read_chip(chip.path)
        w, h = image.size
        if chip.mask is None:
            if chip.label:
                raise InputDataError(
                    "a positive chip has no mask", where=str(chip.path),
                    fix="add its mask (segmentation needs one for every positive chip)",
                )  # fmt: skip
            truth = np.zeros((h, w), bool)
        else:
            truth = read_mask(chip.mask)
            if truth.shape != (h, w):
                raise InputDataError(
                    f"mask {truth.shape[1]}x{truth.shape[0]} and image {w}x{h} differ",
                    where=str(chip.mask), fix="give the mask the image's size",
                )  # fmt: skip
        yield EvalItem(chip.path.name, image, truth, 1.0, chip.ground_m_per_px)


def iter_set(s: AnySet) -> Iterator[EvalItem]:
    """Samples of any evaluation set.

    Args:
        s: a chip set, a scene set or a classifier chip source.

    Returns:
        An iterator over the samples (see :func:`iter_chip_set`, :func:`iter_scene_set`,
        :func:`iter_source`).
    """
    if isinstance(s, ChipMaskSet):
        return iter_chip_set(s)
    if isinstance(s, SceneMaskSet):
        return iter_scene_set(s)
    return iter_source(s)


# ---------------------------------------------------------------- the run


def masked_area(mask: np.ndarray, pixel_area: np.ndarray | float) -> float:
    """Ground area of a boolean mask: pixel_area is m² per pixel (scalar) or per row (H,).

    Args:
        mask: the H x W boolean mask.
        pixel_area: the area of one pixel (m², or 1 for pixel units), scalar or per row.

    Returns:
        The masked area, in ``pixel_area``'s unit.
    """
    if np.ndim(pixel_area) == 0:
        return float(mask.sum()) * float(pixel_area)
    return float((mask.sum(axis=1) * np.asarray(pixel_area)).sum())


def batched_items(it: Iterator[EvalItem], n: int) -> Iterator[list[EvalItem]]:
    """Group samples into lists of ``n`` (the last may be shorter).

    Args:
        it: the samples.
        n: samples per batch.

    Yields:
        The batches.
    """
    batch: list[EvalItem] = []
    for item in it:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class ItemMasks:
    """One chip's CAM masks per method.

    ``oracle`` ignores the classifier, ``pipe`` keeps only what the pipeline keeps (tiles - or
    sub-tiles - called positive).
    """

    prob: float
    is_positive: bool
    norm: dict[str, np.ndarray]
    oracle: dict[str, np.ndarray]
    pipe: dict[str, np.ndarray]


@dataclass
class CellMaps:
    """One chip's forward pass: per-cell probabilities and native CAM maps of every kind."""

    probs: np.ndarray
    maps: dict[str, CamMaps]
    windows: list[Window]
    shape: tuple[int, int]
    m_per_px: float | None


def stitch_masks(
    cm: CellMaps, threshold: float, rule: CamConfig, classifier_threshold: float
) -> ItemMasks:
    """CAMs of each cell (tile-sized crop, min-max per cell as per tile), stitched into the chip.

    ``rule.floor`` applies per cell; ``rule.clean`` to the stitched chip mask (as the map's
    pieces are rejoined across tile edges), with the chip's pixel size.

    Args:
        cm: the chip's forward pass.
        threshold: the threshold on the normalised CAM, 0-1.
        rule: the CamConfig (floor, clean-up, mask-head threshold).
        classifier_threshold: a cell is called positive at ``prob >= this``, probability 0-1.

    Returns:
        The chip's highest probability, whether any cell is called positive, and per method the
        normalised CAM, the oracle mask and the pipeline mask.

    Raises:
        ConfigError: clean-up is on and the chip's ground pixel size is unknown.
    """
    pos = cm.probs >= classifier_threshold
    norm, oracle, pipe = {}, {}, {}
    for method, maps in cm.maps.items():
        n_full, o_full = np.zeros(cm.shape, np.float32), np.zeros(cm.shape, bool)
        p_full = np.zeros(cm.shape, bool)
        for j, (left, top, right, bottom) in enumerate(cm.windows):
            if method == MASK_HEAD:  # logits, not a CAM: no min-max, no floor
                nm, mk = mask_head_mask(
                    maps.positive[j : j + 1], (bottom - top, right - left), rule.mask_threshold
                )
            else:
                nm, mk = mask_from_cam(
                    maps[j : j + 1], (bottom - top, right - left), threshold=threshold,
                    floor=rule.floor, floor_on=rule.floor_on, floor_scope=rule.floor_scope,
                )  # fmt: skip
            m = mk[0].cpu().numpy()
            n_full[top:bottom, left:right] = nm[0].cpu().numpy()
            o_full[top:bottom, left:right] = m
            p_full[top:bottom, left:right] = m & bool(pos[j])
        if rule.clean.active:
            if cm.m_per_px is None:
                raise ConfigError(
                    "mask cleaning needs the chips' ground pixel size",
                    where="evaluate-segmenter",
                    fix="pass --ground-m-per-px (or the set's ground_m_per_px / m_per_px)",
                )
            o_full = clean_mask(o_full, cm.m_per_px, rule.clean)
            p_full = clean_mask(p_full, cm.m_per_px, rule.clean)
        norm[method], oracle[method], pipe[method] = n_full, o_full, p_full
    return ItemMasks(float(cm.probs.max()), bool(pos.any()), norm, oracle, pipe)


def _cells_of(
    item: EvalItem, subtiles: SubtileConfig | None
) -> tuple[list[Window], list[Image.Image]]:
    """The chip whole (resized into the network) or its tile-sized cells: (windows, images).

    Cells are used when the chip is wider on the ground than a tile and ``subtiles`` is set.
    """
    h, w = item.truth.shape
    n = cells_per_side(w, item.ground_m_per_px, subtiles) if subtiles is not None else 1
    windows = grid_windows(w, h, n)
    return windows, [item.image.crop(win) if n > 1 else item.image for win in windows]


def _item_gsd(item: EvalItem) -> float | None:
    if item.ground_m_per_px is None and np.ndim(item.pixel_area) == 1:  # scene tiles: per row
        return float(np.sqrt(np.mean(item.pixel_area)))
    return item.ground_m_per_px


def items_cell_maps(
    segmenter: Segmenter, items: list[EvalItem], subtiles: SubtileConfig | None,
    batch_size: int | None = None,
) -> list[CellMaps]:  # fmt: skip
    """The forward passes of several chips, split back into one :class:`CellMaps` per chip.

    All their cells are run, ``batch_size`` images at a time (None: all at once).

    Args:
        segmenter: classifier + CAM rule.
        items: the chips.
        subtiles: how to cut chips wider than a tile (None: whole chips).
        batch_size: images per forward pass (None: all at once).

    Returns:
        One :class:`CellMaps` per chip, in order.
    """
    cells = [_cells_of(item, subtiles) for item in items]
    images = [im for _, ims in cells for im in ims]
    step = batch_size or len(images)
    probs, parts = [], []
    for i in range(0, len(images), step):
        p, maps = segmenter.native_cam_maps(segmenter.preprocess(images[i : i + step]))
        probs.append(p.float().cpu().numpy())
        parts.append(maps)
    all_probs = np.concatenate(probs)
    all_maps = {
        k: CamMaps(
            torch.cat([m[k].positive for m in parts]), torch.cat([m[k].margin for m in parts])
        )
        for k in parts[0]
    }
    out, start = [], 0
    for item, (windows, _) in zip(items, cells, strict=True):
        end = start + len(windows)
        maps = {k: v[start:end] for k, v in all_maps.items()}
        out.append(CellMaps(all_probs[start:end], maps, windows, item.truth.shape, _item_gsd(item)))
        start = end
    return out


def item_cell_maps(
    segmenter: Segmenter, item: EvalItem, subtiles: SubtileConfig | None
) -> CellMaps:
    """One forward pass over the chip, whole or cell by cell.

    Whole means resized into the network; cell by cell when it is wider on the ground than a tile
    and ``subtiles`` is set.

    Args:
        segmenter: classifier + CAM rule.
        item: the chip.
        subtiles: how to cut chips wider than a tile (None: whole chips).

    Returns:
        The chip's per-cell probabilities and native maps.
    """
    return items_cell_maps(segmenter, [item], subtiles)[0]


def item_masks(
    segmenter: Segmenter, item: EvalItem, cam_threshold: float, subtiles: SubtileConfig | None
) -> ItemMasks:
    """The chip's masks under the segmenter's CamConfig (see :func:`item_cell_maps`).

    Args:
        segmenter: classifier + CAM rule.
        item: the chip.
        cam_threshold: the threshold on the normalised CAM, 0-1.
        subtiles: how to cut chips wider than a tile (None: whole chips).

    Returns:
        The chip's masks per method.

    Raises:
        ConfigError: clean-up is on and the chip's ground pixel size is unknown.
    """
    cm = item_cell_maps(segmenter, item, subtiles)
    return stitch_masks(cm, cam_threshold, segmenter.cam, segmenter.threshold)


def evaluate_set(
    segmenter: Segmenter,
    s: AnySet,
    *,
    cam_threshold: float = 0.37,
    batch_size: int = 16,
    overlay_dir: Path | None = None,
    overlays: int = 0,
    subtiles: SubtileConfig | None = None,
) -> pd.DataFrame:
    """One row per (tile, method) with pixel counts and areas for pipeline and oracle masks.

    Args:
        segmenter: classifier + CAM rule.
        s: the evaluation set.
        cam_threshold: the threshold on the normalised CAM, 0-1.
        batch_size: samples per forward pass.
        overlay_dir: folder of the comparison PNGs (None: none).
        overlays: how many truth-positive samples get a comparison PNG.
        subtiles: cut chips wider than a tile into tile-sized cells (the classifier
            checkpoint's ``data.subtiles``); None resizes whole chips (DeepSolar's way).

    Returns:
        The rows: ``set``, ``tile``, ``method``, ``prob``, ``is_positive``, pixel counts
        (``tp``/``fp``/``fn``, oracle ``o_*``), areas (m² or px) and ``n_px``.

    Raises:
        InputDataError: a sample cannot be read.
        ConfigError: clean-up is on and a chip's ground pixel size is unknown.
    """
    rows: list[dict[str, Any]] = []
    n_overlays = 0
    for batch in batched_items(iter_set(s), batch_size):
        for item, cm in zip(batch, items_cell_maps(segmenter, batch, subtiles, batch_size),
                            strict=True):  # fmt: skip
            h, w = item.truth.shape
            res = stitch_masks(cm, cam_threshold, segmenter.cam, segmenter.threshold)
            prob, is_pos = res.prob, res.is_positive
            true_area = masked_area(item.truth, item.pixel_area)
            chip_area = masked_area(np.ones((h, w), bool), item.pixel_area)
            shown: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for method in res.norm:
                mask, pipe = res.oracle[method], res.pipe[method]
                o_tp, o_fp, o_fn = mask_counts(mask, item.truth)
                tp, fp, fn = mask_counts(pipe, item.truth)
                rows.append({
                    "set": s.display_name, "tile": item.key, "method": method, "prob": prob,
                    "is_positive": is_pos, "tp": tp, "fp": fp, "fn": fn,
                    "o_tp": o_tp, "o_fp": o_fp, "o_fn": o_fn,
                    "pred_area": masked_area(pipe, item.pixel_area),
                    "o_pred_area": masked_area(mask, item.pixel_area), "true_area": true_area,
                    "n_px": h * w, "chip_area": chip_area,
                })  # fmt: skip
                shown[method] = (res.norm[method], mask)
            if overlay_dir is not None and n_overlays < overlays and item.truth.any():
                n_overlays += 1
                save_comparison_overlay(
                    item.image, item.truth, shown,
                    overlay_dir / f"{n_overlays:02d}_{Path(item.key).stem[:40]}.png",
                    title=f"{s.display_name} {item.key[:40]} p={prob:.2f}",
                )  # fmt: skip
    return pd.DataFrame(rows)


def save_comparison_overlay(
    image: Image.Image,
    truth: np.ndarray,
    maps: dict[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """Image + truth, then per method the CAM over the image and its mask (truth in cyan).

    Args:
        image: the RGB image.
        truth: the true mask.
        maps: per method, (normalised CAM 0-1, mask).
        path: the PNG to write; its folder is created.
        title: the figure's title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 1 + len(maps)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4), squeeze=False)
    arr = np.asarray(image)
    axes[0, 0].imshow(arr)
    axes[0, 0].set_title("image", fontsize=8)
    axes[1, 0].imshow(truth, cmap="gray", vmin=0, vmax=1)
    axes[1, 0].set_title("truth", fontsize=8)
    for i, (name, (cam, mask)) in enumerate(maps.items(), start=1):
        axes[0, i].imshow(arr)
        axes[0, i].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[0, i].set_title(f"{name} CAM", fontsize=8)
        axes[1, i].imshow(mask, cmap="gray", vmin=0, vmax=1)
        if truth.any():
            axes[1, i].contour(truth.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        tp, fp, fn = mask_counts(mask, truth)
        axes[1, i].set_title(f"{name} mask IoU {iou(tp, fp, fn):.2f}", fontsize=8)
    for a in axes.ravel():
        a.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path


def format_report(report: dict[str, Any]) -> str:
    """Markdown: one table per set, methods side by side.

    Args:
        report: the report of :func:`evaluate_segmentation`.

    Returns:
        The Markdown text.
    """
    pct = "{:.1%}".format

    def f(v: float, p: bool = True) -> str:
        return "n/a" if v is None or v != v else (pct(v) if p else f"{v:.3f}")

    lines = [
        "# Segmentation evaluation", "",
        f"classifier: `{report['classifier_checkpoint']}`  ",
        f"segmenter: `{report['segmenter_checkpoint']}`  ",
        f"mask head: `{report['mask_head_checkpoint']}` (threshold {report['mask_threshold']})  ",
        f"CAM threshold {report['cam_threshold']}, classifier threshold {report['classifier_threshold']}",
        "",
        "DeepSolar (Yu et al. 2018): per-image area error 27.3% (residential) / 18.8% "
        "(non-residential); regional total error 3.0% / 2.1%.", "",
    ]  # fmt: skip
    rows = [
        ("tiles / truth-positive / called positive", None),
        ("pipeline IoU", "pipeline_iou"), ("pipeline Dice", "pipeline_dice"),
        ("pipeline per-tile area error", "pipeline_per_tile_area_error"),
        ("pipeline regional area error", "pipeline_regional_area_error"),
        ("oracle IoU (truth-positive tiles)", "oracle_iou"), ("oracle Dice", "oracle_dice"),
        ("oracle mean per-tile IoU", "oracle_mean_tile_iou"),
        ("oracle per-tile area error", "oracle_per_tile_area_error"),
        ("oracle regional area error", "oracle_regional_area_error"),
    ]  # fmt: skip
    for set_name, methods in report["sets"].items():
        names = list(methods)
        lines += [f"## {set_name}", "", "| metric | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]  # fmt: skip
        for label, key in rows:
            if key is None:
                m = methods[names[0]]
                cells = [
                    f"{m['n_tiles']} / {m['n_truth_positive']} / {m['n_called_positive']}"
                ] * len(names)
            else:
                cells = [f(methods[n][key], p="error" in key) for n in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def evaluate_segmentation(cfg: EvaluateSegmentationConfig, out_dir: str | Path) -> dict[str, Any]:
    """Evaluate every set; write the per-tile rows, the report, overlays and the baseline table.

    Files: ``per_tile.csv``, ``report.json``, ``report.md``, overlays, and the table with baselines
    and intervals (``table.json``, ``table.csv``, ``table.md``).

    Args:
        cfg: the evaluation config.
        out_dir: the output folder; created if missing.

    Returns:
        The report: checkpoints, thresholds, per-set scores per method and the table's rows.

    Raises:
        ConfigError: the config is invalid or mask clean-up lacks a pixel size.
        InputDataError: a checkpoint or a sample cannot be read.
    """
    cfg = validate_config(EvaluateSegmentationConfig, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    cam = CamConfig(
        method="greedy" if cfg.segmenter_checkpoint else "plain",
        threshold=cfg.cam_threshold,
        classifier_threshold=cfg.classifier_threshold,
        floor=cfg.cam_floor,
        floor_on=cfg.cam_floor_on,
        floor_scope=cfg.cam_floor_scope,
        clean=cfg.clean,
        mask_threshold=cfg.mask_threshold,
    )
    seg = Segmenter.from_checkpoints(
        cfg.classifier_checkpoint, cfg.segmenter_checkpoint, cam, cfg.device,
        mask_head_checkpoint=cfg.mask_head_checkpoint,
    )  # fmt: skip
    frames = []
    report: dict[str, Any] = {
        "classifier_checkpoint": str(cfg.classifier_checkpoint),
        "segmenter_checkpoint": str(cfg.segmenter_checkpoint),
        "mask_head_checkpoint": str(cfg.mask_head_checkpoint),
        "mask_threshold": cfg.mask_threshold,
        "cam_threshold": cfg.cam_threshold,
        "cam_floor": cfg.cam_floor,
        "cam_floor_on": cfg.cam_floor_on,
        "cam_floor_scope": cfg.cam_floor_scope,
        "clean": cfg.clean.model_dump(),
        "classifier_threshold": seg.threshold,
        "input_size_px": seg.clf.input_size_px,
        "subtiles": cfg.subtiles and seg.clf.config.data.subtiles is not None,
        "sets": {},
    }
    for s in cfg.sets:
        log.info("evaluating %s", s.display_name)
        df = evaluate_set(
            seg, s, cam_threshold=cfg.cam_threshold, batch_size=cfg.batch_size,
            overlay_dir=out / "overlays" / _safe(s.display_name), overlays=cfg.overlays,
            subtiles=seg.clf.config.data.subtiles if cfg.subtiles else None,
        )  # fmt: skip
        frames.append(df)
        report["sets"][s.display_name] = {
            m: summarise(g) for m, g in df.groupby("method", sort=False)
        }
    per_tile = pd.concat(frames)
    per_tile.to_csv(out / "per_tile.csv", index=False)
    report["table"] = baseline_table(per_tile, reps=cfg.bootstrap_reps, seed=cfg.seed)
    write_report(
        report["table"], TABLE_COLUMNS, out, stem="table",
        title="Segmentation evaluation: CAM methods (and mask head) beside trivial baselines",
        meta={k: report[k] for k in ("classifier_checkpoint", "segmenter_checkpoint",
                                     "mask_head_checkpoint", "cam_threshold", "mask_threshold",
                                     "classifier_threshold")},
        notes=TABLE_NOTES,
    )  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(format_report(report))
    return report


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def format_table(report: dict[str, Any]) -> str:
    """The compact per-set + overall table (methods and baselines) for a terminal.

    Args:
        report: the report of :func:`evaluate_segmentation`.

    Returns:
        The table as plain text.
    """
    return format_text(report["table"], TABLE_COLUMNS)
