"""Segmentation masks -> georeferenced panel polygons with true ground area.

A mask (a tile's thresholded CAM, or any boolean raster) is vectorised with
``rasterio.features.shapes`` through the tile's pixel -> EPSG:3857 transform, so pieces of one
array cut by a tile border share their border coordinates exactly. Each piece gets:

- ``area_m2``: the ground area of its mask pixels (the DeepSolar definition: pixels x pixel
  area), computed on the *unsimplified* pixel outline in an equal-area CRS: CONUS Albers
  (EPSG:5070) for pieces inside the contiguous US, the geodesic area on the WGS84 ellipsoid
  (``pyproj.Geod``) anywhere else. Web-Mercator areas are never used: they are inflated by
  1/cos²(lat) (about 1.8x in Massachusetts).
- ``geometry``: the outline, lightly simplified (Douglas-Peucker, default one mask pixel, topology
  preserved) so the staircase of pixel edges does not bloat the GeoPackage, in EPSG:4326.
- ``tile_id`` and ``confidence`` (the tile classifier's probability) for traceability.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
from affine import Affine
from pydantic import Field
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import shape

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import InputDataError
from deepsolar.geo.tiling import LONLAT, WEB_MERCATOR, Tile

EQUAL_AREA_CONUS = "EPSG:5070"  # NAD83 / Conus Albers (equal-area)
# EPSG:5070's area of use (west, south, east, north); outside it areas are geodesic.
CONUS_BOUNDS = (-124.79, 24.41, -66.91, 49.38)
_GEOD = Geod(ellps="WGS84")


@lru_cache(maxsize=32)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def reproject(geoms: np.ndarray, src: Any, dst: Any) -> np.ndarray:
    """Reproject an array of shapely geometries (cached transformer: cheap for one tile's pieces).

    Args:
        geoms: Shapely geometries (object array) in ``src``.
        src: Source CRS (EPSG code, string or pyproj CRS).
        dst: Target CRS (EPSG code, string or pyproj CRS).

    Returns:
        The geometries in ``dst``, same shape.
    """
    src_s, dst_s = CRS.from_user_input(src).to_string(), CRS.from_user_input(dst).to_string()
    if src_s == dst_s:
        return geoms
    tr = _transformer(src_s, dst_s)
    return shapely.transform(
        geoms, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])) if len(c) else c
    )


PANEL_COLUMNS: tuple[str, ...] = ("tile_id", "confidence", "area_px", "area_m2")


class PolygonConfig(StrictModel):
    """How masks become polygons."""

    simplify_tolerance_px: float = Field(
        1.0,
        ge=0,
        le=10,
        description="Douglas-Peucker tolerance in mask pixels (0 = keep the pixel staircase)",
    )
    connectivity: Literal[4, 8] = Field(
        4,
        description="4: pixels touching only at a corner are separate pieces (valid polygons); 8: one piece",
    )
    min_area_m2: float = Field(
        0.0, ge=0, description="drop pieces smaller than this (0 keeps every positive pixel)"
    )


def equal_area_m2(geoms: gpd.GeoSeries | gpd.GeoDataFrame) -> np.ndarray:
    """Ground area of each geometry in m²: EPSG:5070 inside CONUS, geodesic (WGS84) elsewhere.

    Args:
        geoms: Geometries with a CRS.

    Returns:
        One ground area per geometry, in m².

    Raises:
        InputDataError: If the geometries have no CRS.
    """
    gs = geoms.geometry if isinstance(geoms, gpd.GeoDataFrame) else geoms
    if gs.crs is None:
        raise InputDataError(
            "geometries have no CRS, so their ground area cannot be computed",
            where="equal_area_m2",
            fix="set the CRS (e.g. gdf.set_crs('EPSG:4326')) before computing areas",
        )
    return equal_area_m2_array(np.asarray(gs.values, dtype=object), gs.crs)


def equal_area_m2_array(arr: np.ndarray, crs: Any) -> np.ndarray:
    """:func:`equal_area_m2` for a numpy array of shapely geometries in ``crs``.

    Args:
        arr: Shapely geometries (object array).
        crs: Their CRS (EPSG code, string or pyproj CRS).

    Returns:
        One ground area per geometry, in m².
    """
    if len(arr) == 0:
        return np.zeros(0)
    arr = reproject(arr, crs, LONLAT)
    bounds = shapely.bounds(arr)
    w, s, e, n = CONUS_BOUNDS
    inside = (bounds[:, 0] >= w) & (bounds[:, 2] <= e) & (bounds[:, 1] >= s) & (bounds[:, 3] <= n)
    out = np.zeros(len(arr))
    if inside.any():
        out[inside] = shapely.area(reproject(arr[inside], LONLAT, EQUAL_AREA_CONUS))
    for i in np.flatnonzero(~inside & ~shapely.is_missing(arr)):
        g = arr[i]
        if g.is_empty or g.area == 0:
            continue
        out[i] = abs(_GEOD.geometry_area_perimeter(shapely.make_valid(g))[0])
    return np.nan_to_num(out, nan=0.0)


def _empty_panels() -> gpd.GeoDataFrame:
    df = pd.DataFrame(
        {
            "tile_id": pd.Series(dtype=object),
            "confidence": pd.Series(dtype="float64"),
            "area_px": pd.Series(dtype="float64"),
            "area_m2": pd.Series(dtype="float64"),
        }
    )
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries([], crs=LONLAT), crs=LONLAT)


def _as_mask(mask: Any, where: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.size == 0:
        raise InputDataError(
            f"a mask must be a non-empty 2-D array, got shape {arr.shape}",
            where=where,
            fix="pass one tile's boolean mask (height x width)",
        )
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.number):
        finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
        if np.isin(finite, (0, 1)).all() or np.isin(finite, (0, 255)).all():
            return np.nan_to_num(arr, nan=0) > 0
        raise InputDataError(
            f"mask holds values other than 0/1 (or 0/255), e.g. {float(finite.max()):g}: "
            "it looks like a heat map, not a mask",
            where=where,
            fix="threshold the CAM first (DeepSolar: normalised CAM >= 0.37)",
        )
    raise InputDataError(
        f"unsupported mask dtype {arr.dtype}", where=where, fix="pass a boolean or 0/1 array"
    )


def _georef(
    tile: Tile | Affine | tuple[Affine, Any], crs: Any, shape_hw: tuple[int, int], where: str
) -> tuple[Affine, CRS, str | None]:
    """(pixel -> CRS transform scaled to the mask's shape, CRS, tile id) for a tile or transform."""
    if isinstance(tile, Tile):
        h, w = shape_hw
        # A CAM mask may be coarser than the tile (the original: 100x100 for a 320 px tile).
        scale = Affine.scale(tile.size_px / w, tile.size_px / h)
        return tile.transform_3857 * scale, CRS(WEB_MERCATOR), tile.id
    if isinstance(tile, tuple) and len(tile) == 2:
        tile, crs = tile
    if not isinstance(tile, Affine):
        raise InputDataError(
            f"cannot georeference a mask from a {type(tile).__name__}",
            where=where,
            fix="pass a deepsolar.geo.tiling.Tile, or an affine.Affine transform with crs=...",
        )
    if crs is None:
        raise InputDataError(
            "a transform was given without a CRS",
            where=where,
            fix="pass crs= (e.g. 'EPSG:3857') or a (transform, crs) tuple",
        )
    try:
        crs_obj = CRS.from_user_input(crs)
    except CRSError as err:
        raise InputDataError(
            f"unknown CRS {crs!r} ({err})", where=where, fix="pass an EPSG code or WKT"
        ) from None
    if tile.determinant == 0:
        raise InputDataError(
            "the transform is degenerate", where=where, fix="pass the raster's real transform"
        )
    return tile, crs_obj, None


def _pieces(
    mask: np.ndarray,
    tile: Tile | Affine | tuple[Affine, Any],
    confidence: float | None,
    crs: Any,
    tile_id: str | None,
    cfg: PolygonConfig,
) -> dict[str, Any] | None:
    """One mask's pieces as column arrays (geometry in EPSG:4326); None when nothing is kept."""
    where = f"mask of tile {tile.id}" if isinstance(tile, Tile) else "mask_to_polygons"
    m = _as_mask(mask, where)
    transform, src_crs, tid = _georef(tile, crs, m.shape, where)
    tid = tile_id if tile_id is not None else tid
    if not m.any():
        return None
    exact = np.asarray(
        [
            shape(geom)
            for geom, _ in rasterio.features.shapes(
                m.astype(np.uint8), mask=m, transform=transform, connectivity=cfg.connectivity
            )
        ],
        dtype=object,
    )
    px_area = abs(transform.determinant)
    area_px = np.rint(shapely.area(exact) / px_area)
    if cfg.simplify_tolerance_px > 0:
        tol = cfg.simplify_tolerance_px * np.sqrt(px_area)
        shown = shapely.simplify(exact, tol, preserve_topology=True)
    else:
        shown = exact
    # Area from the exact pixel outline: DeepSolar's "pixels x pixel area", on the ground.
    area_m2 = equal_area_m2_array(exact, src_crs)
    keep = area_m2 >= cfg.min_area_m2
    if not keep.any():
        return None
    n = int(keep.sum())
    return {
        "tile_id": [tid] * n,
        "confidence": np.full(n, np.nan if confidence is None else float(confidence)),
        "area_px": area_px[keep],
        "area_m2": area_m2[keep],
        "geometry": reproject(shown[keep], src_crs, LONLAT),
    }


def _frame(parts: list[dict[str, Any]]) -> gpd.GeoDataFrame:
    if not parts:
        return _empty_panels()
    cols = {
        "tile_id": [t for p in parts for t in p["tile_id"]],
        **{k: np.concatenate([p[k] for p in parts]) for k in ("confidence", "area_px", "area_m2")},
    }
    geoms = np.concatenate([p["geometry"] for p in parts])
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries(geoms, crs=LONLAT), crs=LONLAT)


def mask_to_polygons(
    mask: np.ndarray,
    tile: Tile | Affine | tuple[Affine, Any],
    confidence: float | None = None,
    *,
    crs: Any = None,
    tile_id: str | None = None,
    config: PolygonConfig | None = None,
) -> gpd.GeoDataFrame:
    """Vectorise one tile's mask into panel polygons (EPSG:4326) with ground area.

    ``tile`` is a :class:`~deepsolar.geo.tiling.Tile` (the mask may be coarser than the tile; it is
    stretched over the tile's footprint), an ``Affine`` pixel -> ``crs`` transform, or a
    ``(transform, crs)`` tuple. Returns one row per connected piece with columns ``tile_id``,
    ``confidence``, ``area_px`` (mask pixels), ``area_m2`` (their exact ground area) and the
    lightly simplified outline as geometry. An all-false mask gives an empty frame with the
    same columns.

    Args:
        mask: Boolean (or 0/1) panel mask of the tile, (H, W) px.
        tile: The tile, a pixel -> ``crs`` transform, or a ``(transform, crs)`` tuple.
        confidence: The tile's classifier confidence (fraction 0-1) copied to each piece.
        crs: CRS of a bare ``Affine`` ``tile`` (EPSG code or string).
        tile_id: Tile id for the ``tile_id`` column (taken from a :class:`Tile` otherwise).
        config: Simplification and minimum piece size; None: defaults.

    Returns:
        One row per connected piece, in EPSG:4326.
    """
    part = _pieces(mask, tile, confidence, crs, tile_id, config or PolygonConfig())
    return _frame([part] if part else [])


def masks_to_polygons(
    items: Iterable[tuple[np.ndarray, Tile, float | None]],
    *,
    config: PolygonConfig | None = None,
) -> gpd.GeoDataFrame:
    """Vectorise many ``(mask, tile, confidence)`` triples into one panels frame.

    Adds ``panel_id`` (1..n in input order) so that every piece can be referred to.

    Args:
        items: ``(mask, tile, confidence)`` per tile: an (H, W) px mask, its grid tile and the
            classifier confidence (fraction 0-1, or None).
        config: Simplification and minimum piece size; None: defaults.

    Returns:
        All pieces in EPSG:4326 with ``panel_id`` and the :func:`mask_to_polygons` columns.
    """
    cfg = config or PolygonConfig()
    parts = [p for m, t, c in items if (p := _pieces(m, t, c, None, None, cfg)) is not None]
    out = _frame(parts)
    out.insert(0, "panel_id", np.arange(1, len(out) + 1, dtype=np.int64))
    return out
