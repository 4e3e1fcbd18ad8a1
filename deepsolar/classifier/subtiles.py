"""Respect ground resolution: cut chips much larger than a tile into tile-sized sub-tiles.

A network trained on DeepSolar's ~20 m tiles sees a 96 m chip squashed 5x if the chip is simply
resized. Instead a chip whose ground width exceeds ``footprint_m x max_ratio`` is cut into an
n x n grid (n = round(ground width / footprint_m)) of cells; each cell is labelled from the chip's
mask (positive with at least ``min_positive_px`` PV pixels, negative with none, ambiguous between:
left out of training). A chip's prediction is the highest of its cells' (it holds PV if any cell
does), so chip-level reports compare like with like.

A chip's ground resolution (metres per pixel) comes from its own metadata (``Chip.ground_m_per_px``,
set from a manifest column or the source's ``ground_m_per_px``; a GeoTIFF's projected transform) or
stays unknown, in which case the chip is not cut.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from deepsolar.classifier.config import SubtileConfig
from deepsolar.classifier.data import Chip, read_mask
from deepsolar.core.errors import InputDataError

Window = tuple[int, int, int, int]  # left, top, right, bottom (pixels)
AMBIGUOUS = -1


def geotiff_ground_m_per_px(path: Path) -> float | None:
    """Pixel width in metres of a GeoTIFF in a projected CRS with metre units, else None.

    Args:
        path: the image file (only ``.tif``/``.tiff`` are opened).

    Returns:
        The pixel width, m/px, or None (not a GeoTIFF, unreadable, no CRS, geographic or non-metre
        units).
    """
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import rasterio

    try:
        with rasterio.open(path) as ds:
            crs = ds.crs
            if (
                crs is None
                or not crs.is_projected
                or (crs.linear_units or "").lower()
                not in (
                    "metre",
                    "meter",
                    "m",
                )
            ):
                return None
            return float(abs(ds.transform.a))
    except rasterio.errors.RasterioError:
        return None


def chip_ground_m_per_px(chip: Chip) -> float | None:
    """The chip's metres per pixel: its own metadata, else a GeoTIFF transform, else None.

    Args:
        chip: the chip.

    Returns:
        The ground resolution, m/px, or None when unknown.
    """
    return chip.ground_m_per_px or geotiff_ground_m_per_px(chip.path)


def cells_per_side(width_px: int, ground_m_per_px: float | None, cfg: SubtileConfig) -> int:
    """How many cells across: 1 (not cut) unless the chip is > footprint x max_ratio wide.

    Args:
        width_px: the chip's width, px.
        ground_m_per_px: its ground resolution, m/px (None: unknown, not cut).
        cfg: sub-tiling settings (``footprint_m`` in m, ``max_ratio``).

    Returns:
        ``n``, for an n x n grid (round(ground width / footprint), at least 1).
    """
    if not ground_m_per_px:
        return 1
    ground_m = width_px * ground_m_per_px
    if ground_m <= cfg.footprint_m * cfg.max_ratio:
        return 1
    return max(1, round(ground_m / cfg.footprint_m))


def grid_windows(width_px: int, height_px: int, n: int) -> list[Window]:
    """An n x n grid of windows covering the image exactly (row-major, integer edges).

    Args:
        width_px: the image's width, px.
        height_px: the image's height, px.
        n: cells per side.

    Returns:
        The windows (left, top, right, bottom), px.
    """
    xs = [round(i * width_px / n) for i in range(n + 1)]
    ys = [round(i * height_px / n) for i in range(n + 1)]
    return [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(n) for i in range(n)]


def cell_labels(mask: np.ndarray, windows: Sequence[Window], min_positive_px: int) -> list[int]:
    """1 (>= min_positive_px PV pixels), 0 (none) or AMBIGUOUS (-1) for each window.

    Args:
        mask: the chip's PV mask, H x W bool.
        windows: the cells (left, top, right, bottom), px.
        min_positive_px: fewest PV pixels of a positive cell, px.

    Returns:
        The label of each window.
    """
    labels = []
    for left, top, right, bottom in windows:
        n_pv = int(mask[top:bottom, left:right].sum())
        labels.append(1 if n_pv >= min_positive_px else (0 if n_pv == 0 else AMBIGUOUS))
    return labels


def split_chip(chip: Chip, cfg: SubtileConfig) -> list[Chip]:
    """The chip's cells (label per cell, AMBIGUOUS possible), or ``[chip]`` when it is not cut.

    Cells of a chip without a mask inherit the chip's label (negatives are right; a positive's
    cells are labelled for chip-level reports only: :func:`expand_chips` keeps such a chip whole
    for training).

    Args:
        chip: a whole chip (a chip that is already a cell is returned as is).
        cfg: sub-tiling settings.

    Returns:
        The cells, row-major, each with its window and the chip's ground resolution.

    Raises:
        InputDataError: the image header or mask cannot be read, or the mask's size differs from
            the image's.
    """
    if chip.window is not None:
        return [chip]
    try:
        with Image.open(chip.path) as im:
            width, height = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputDataError(
            f"cannot read the image header ({err})", where=str(chip.path), fix="re-export it"
        ) from None
    gsd = chip_ground_m_per_px(chip)
    n = cells_per_side(width, gsd, cfg)
    if n == 1:
        return [chip]
    windows = grid_windows(width, height, n)
    if chip.mask is not None:
        mask = read_mask(chip.mask)
        if mask.shape != (height, width):
            raise InputDataError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} px, image {width}x{height}",
                where=str(chip.mask),
                fix="masks must have the size of their image",
            )
        labels = cell_labels(mask, windows, cfg.min_positive_px)
    else:
        labels = [chip.label] * len(windows)
    return [
        replace(chip, label=y, window=w, ground_m_per_px=gsd)
        for w, y in zip(windows, labels, strict=True)
    ]


def _sample(cells: list[Chip], cap: int | None, rng: random.Random) -> list[Chip]:
    if cap is None or len(cells) <= cap:
        return cells
    return sorted(rng.sample(cells, cap), key=cells.index)


def expand_chips(
    chips: Sequence[Chip], cfg: SubtileConfig | None, *, training: bool, seed: int = 0
) -> list[Chip]:
    """Chips -> sub-tiles (chips that are not cut pass through unchanged).

    Args:
        chips: whole chips.
        cfg: sub-tiling settings; None returns ``chips`` as they are.
        training: drop ambiguous cells, keep whole any positive chip without a mask, and cap
            cells per chip (``negatives_per_chip`` / ``positives_per_chip``, seeded per chip);
            otherwise every cell, ambiguous ones labelled positive (they hold PV pixels).
        seed: seed of the per-chip sampling.

    Returns:
        The cells and uncut chips, in chip order.

    Raises:
        InputDataError: a chip's image header or mask cannot be read.
    """
    if cfg is None:
        return list(chips)
    out: list[Chip] = []
    for chip in chips:
        cells = split_chip(chip, cfg)
        if len(cells) == 1:
            out += cells
            continue
        if not training:
            out += [c if c.label != AMBIGUOUS else replace(c, label=1) for c in cells]
            continue
        if chip.mask is None and chip.label == 1:
            out.append(chip)  # which cell holds the panel is unknown: keep it whole
            continue
        rng = random.Random(f"{seed}:{chip.path}")
        pos = _sample([c for c in cells if c.label == 1], cfg.positives_per_chip, rng)
        neg = _sample([c for c in cells if c.label == 0], cfg.negatives_per_chip, rng)
        out += sorted(pos + neg, key=cells.index)
    return out


def chip_level(
    chips: Sequence[Chip], probs: np.ndarray
) -> tuple[list[Chip], np.ndarray, np.ndarray]:
    """Sub-tile predictions -> one per chip: (chips, labels, probabilities).

    A chip's probability is the highest of its cells' and its label the highest cell label, in
    the order chips first appear. Whole chips pass through.

    Args:
        chips: the cells (and whole chips), in the order of ``probs``.
        probs: the probability of PV of each, 0-1.

    Returns:
        The whole chips, their labels and their probabilities of PV (0-1).
    """
    order: dict[Path, int] = {}
    firsts: list[Chip] = []
    labels: list[int] = []
    best: list[float] = []
    for chip, p in zip(chips, np.asarray(probs, dtype=float), strict=True):
        i = order.get(chip.path)
        if i is None:
            order[chip.path] = len(firsts)
            firsts.append(replace(chip, window=None))
            labels.append(int(chip.label))
            best.append(float(p))
        else:
            labels[i] = max(labels[i], int(chip.label))
            best[i] = max(best[i], float(p))
    return firsts, np.asarray(labels, dtype=int), np.asarray(best, dtype=float)
