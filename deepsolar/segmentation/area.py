"""Panel area from a mask: mask pixels x each pixel's ground area, in m².

- Grid tiles (Web Mercator, any zoom): a pixel row at latitude phi covers
  ``(156543.03392 * cos(phi) / 2**zoom)**2`` m² per pixel (Mercator is conformal, so the scale is
  the same along x and y); the latitude is taken at each row's centre, so a tall tile is exact to
  the row, not only at its centre.
- Local rasters: ``|det(transform)|`` m² per pixel in a projected CRS with metre units; rows are
  cos(lat)-corrected for EPSG:3857 and geodesic per-row areas are used in a geographic CRS.
"""

from __future__ import annotations

import math

import numpy as np
from affine import Affine
from pyproj import CRS, Geod

from deepsolar.core.errors import InputDataError
from deepsolar.geo.tiling import (
    EARTH_RADIUS_M,
    WEB_MERCATOR,
    Tile,
    ground_resolution_m_per_px,
)

_GEOD = Geod(ellps="WGS84")


def _mask_rows(mask: np.ndarray, where: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputDataError(
            f"a mask must be 2-D (H x W), got shape {m.shape}", where=where, fix="pass one mask"
        )
    return (m > 0).sum(axis=1).astype(np.float64)


def tile_row_pixel_area_m2(tile: Tile, height_px: int) -> np.ndarray:
    """Ground area (m²) of one pixel in each of ``height_px`` rows spanning ``tile``.

    Args:
        tile: the Web-Mercator tile.
        height_px: rows of the mask covering the tile, px (may be coarser than the tile).

    Returns:
        The ground area of one mask pixel per row, m², top row first (latitude at each row's
        centre).
    """
    left, bottom, right, top = tile.bounds_3857
    # Row centres in EPSG:3857 y, then latitude; pixels may be coarser than the tile's own.
    ys = top - (np.arange(height_px) + 0.5) * (top - bottom) / height_px
    lat = np.degrees(2 * np.arctan(np.exp(ys / EARTH_RADIUS_M)) - math.pi / 2)
    scale = tile.size_px / height_px  # mask pixels per tile pixel along y (and x: square tiles)
    return (ground_resolution_m_per_px(lat, tile.zoom) * scale) ** 2


def mask_area_m2_tile(mask: np.ndarray, tile: Tile) -> float:
    """Area (m²) of the nonzero pixels of a mask covering the whole of ``tile``.

    Args:
        mask: the square H x W mask of the tile (nonzero = panel), at any resolution.
        tile: the Web-Mercator tile.

    Returns:
        The panel area, m².

    Raises:
        InputDataError: the mask is not 2-D or not square.
    """
    rows = _mask_rows(mask, f"tile {tile.id}")
    if mask.shape[0] != mask.shape[1]:
        raise InputDataError(
            f"tile masks are square, got {mask.shape}",
            where=f"tile {tile.id}",
            fix="pass the tile's mask",
        )
    return float((rows * tile_row_pixel_area_m2(tile, mask.shape[0])).sum())


def mask_area_m2_transform(mask: np.ndarray, transform: Affine, crs: str | CRS) -> float:
    """Area (m²) of the nonzero pixels of a mask georeferenced by ``transform`` in ``crs``.

    Args:
        mask: the H x W mask (nonzero = panel).
        transform: pixel (col, row) -> ``crs`` coordinates; north-up (no rotation or shear).
        crs: the raster's CRS (EPSG code, WKT or a pyproj CRS): geographic (geodesic area per
            row), EPSG:3857 (cos² latitude per row) or projected in metres.

    Returns:
        The panel area, m².

    Raises:
        InputDataError: the mask is not 2-D, the transform is rotated or sheared, or a projected
            CRS's unit is not the metre.
    """
    rows = _mask_rows(mask, "raster mask")
    c = CRS.from_user_input(crs)
    if not transform.is_rectilinear:
        raise InputDataError(
            "rotated or sheared raster transforms are not supported",
            where=str(transform),
            fix="warp the raster to a north-up grid (gdalwarp) first",
        )
    h, w = np.asarray(mask).shape
    if c.is_geographic:
        # Geodesic area of one pixel per row (longitudes and latitudes from the transform).
        col0, row_idx = 0, np.arange(h)
        x0, y0 = transform * (col0, row_idx)
        x1, y1 = transform * (col0 + 1, row_idx + 1)
        per_px = np.array(
            [abs(_GEOD.polygon_area_perimeter([a, b, b, a], [c0, c0, d, d])[0])
             for a, b, c0, d in zip(x0, x1, y0, y1, strict=True)]
        )  # fmt: skip
        return float((rows * per_px).sum())
    unit = c.axis_info[0].unit_name if c.axis_info else ""
    if unit not in ("metre", "meter", "m"):
        raise InputDataError(
            f"the raster CRS's unit is '{unit}', not metres",
            where=c.to_string(),
            fix="reproject the raster to a metric projected CRS (e.g. UTM) first",
        )
    px = abs(transform.a * transform.e - transform.b * transform.d)
    if c == CRS.from_user_input(WEB_MERCATOR):
        ys = (transform * (0, np.arange(h) + 0.5))[1]
        lat = np.degrees(2 * np.arctan(np.exp(np.asarray(ys) / EARTH_RADIUS_M)) - math.pi / 2)
        return float((rows * px * np.cos(np.radians(lat)) ** 2).sum())
    return float(rows.sum() * px)
