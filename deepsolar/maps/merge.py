"""Adjacent-panel merging: pieces cut by tile borders (or a few metres apart) become one system.

A large array spans many tiles, and each tile's mask gives its own piece. Two pieces belong to
the same solar system when they are within ``gap_m`` metres of each other on the ground
(touching pieces on either side of a tile border are at distance 0); systems are the connected
components of that "within gap" relation, so an array spanning any number of tiles, in any shape,
becomes one system (DeepSolar merged adjacent positive pieces recursively; this is the same
closure without recursion).

Cost: one ``shapely.STRtree`` over the pieces (in EPSG:3857, where tile borders are exact) and
one bulk ``dwithin`` query give the candidate pairs; ``scipy.sparse.csgraph.connected_components``
is the union-find. Both are O(n log n + pairs): no quadratic all-pairs test. Web-Mercator
distances are stretched by 1/cos(lat), so each piece's search distance is ``gap_m / cos(lat)``:
the gap is in ground metres everywhere.

Options beside that rule (both off by default): ``tile_edge_gap_m`` also joins pieces of
edge-adjacent tiles that both come within that distance of their shared edge with overlapping
spans (per-tile CAM masks often stop short of the tile edge, cutting one array into tile-shaped
pieces), and ``min_system_area_m2`` drops systems smaller than that after merging (CAM specks).

Each system: ``system_id``, outline (union of its pieces), ``area_m2`` (sum of the pieces' ground
areas: pieces come from non-overlapping grid tiles, so nothing is counted twice), ``n_panels``,
``tile_count``, ``is_residential`` / ``system_class`` (area threshold) and ``capacity_kw``
(``area_m2 / m2_per_kw``).
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pydantic import Field
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from deepsolar.core.config import StrictModel, validate_config
from deepsolar.core.errors import InputDataError
from deepsolar.geo.tiling import LONLAT, WEB_MERCATOR, Tile
from deepsolar.maps.polygons import equal_area_m2, reproject

# Residential / non-residential split by system area (m²). The DeepSolar tract database does not
# state its rule, but its numbers pin it down: in the real Virginia tracts
# (../shared/data/tables/deepsolar_tract_va), tracts holding exactly one residential system have
# system areas up to 57.7 m² (99th percentile; max 75 m², one outlier) and tracts holding exactly
# one non-residential system start at 58.6 m² (minimum). A cut at 60 m² reproduces that split
# (a zoom-21 pixel-count threshold seen through cos²(lat) smears it over ~58-64 m²). 60 m² is
# also about a 9-10 kW rooftop system at 6.5 m²/kW, the usual ceiling of US residential systems.
DEFAULT_RESIDENTIAL_MAX_AREA_M2 = 60.0
# Installed capacity per panel area: 6.5 m² per kWp, as in 3D-PV-Locator (Mayer et al. 2022),
# i.e. ~154 W/m² of module-covered roof; DeepSolar reported area only.
DEFAULT_M2_PER_KW = 6.5
# Floating-point slack so that pieces sharing a tile border always count as touching.
_TOUCH_TOLERANCE_M = 1e-3
_UNION_GRID_DEG = 1e-9  # ~0.1 mm: snaps the two copies of a shared tile border together

SYSTEM_COLUMNS: tuple[str, ...] = (
    "system_id",
    "area_m2",
    "capacity_kw",
    "is_residential",
    "system_class",
    "n_panels",
    "tile_count",
    "confidence",
    "confidence_max",
    "lon",
    "lat",
)


class MergeConfig(StrictModel):
    """How pieces become systems and how systems are classed and sized."""

    gap_m: float = Field(
        1.0,
        ge=0,
        le=100,
        description=(
            "pieces within this ground distance (m) are one system; 0 merges only touching pieces. "
            "1 m bridges CAM masks that stop short of a tile border without joining neighbouring "
            "houses (typically several metres apart)"
        ),
    )
    residential_max_area_m2: float = Field(
        DEFAULT_RESIDENTIAL_MAX_AREA_M2,
        gt=0,
        description="systems up to this panel area (m²) are residential, larger ones non-residential",
    )
    m2_per_kw: float = Field(
        DEFAULT_M2_PER_KW, gt=0, description="panel area per kW of capacity (3D-PV-Locator: 6.5)"
    )
    tile_edge_gap_m: float = Field(
        0.0,
        ge=0,
        le=100,
        description=(
            "rejoin arrays cut by a tile edge: two pieces in edge-adjacent tiles are one system "
            "when both come within this ground distance (m) of their shared edge and their "
            "spans along it overlap (within the same distance). Only across tile edges, so "
            "houses inside one tile are not joined. 0: off (gap_m alone)"
        ),
    )
    min_system_area_m2: float = Field(
        0.0,
        ge=0,
        description=(
            "drop systems smaller than this (m²) after merging, e.g. CAM specks; their pieces "
            "get system_id 0. 0 keeps every system (DeepSolar)"
        ),
    )


def _check_panels(panels: gpd.GeoDataFrame, where: str) -> None:
    if not isinstance(panels, gpd.GeoDataFrame):
        raise InputDataError(
            f"expected a GeoDataFrame of panel polygons, got {type(panels).__name__}",
            where=where,
            fix="pass the output of deepsolar.maps.polygons.mask_to_polygons / masks_to_polygons",
        )
    if panels.crs is None:
        raise InputDataError(
            "panel polygons have no CRS",
            where=where,
            fix="set the CRS (mask_to_polygons returns EPSG:4326)",
        )
    geom = panels.geometry
    if geom.isna().any() or geom.is_empty.any():
        raise InputDataError(
            f"{int((geom.isna() | geom.is_empty).sum())} panel rows have no geometry",
            where=where,
            fix="drop rows with missing or empty geometry before merging",
        )
    bad = ~geom.geom_type.isin(["Polygon", "MultiPolygon"])
    if bad.any():
        raise InputDataError(
            f"panels must be polygons; found {sorted(set(geom.geom_type[bad]))}",
            where=where,
            fix="merge panel outlines, not points or lines (points can be aggregated directly)",
        )


def _tile_keys(tile_ids: pd.Series | np.ndarray) -> np.ndarray:
    """N x 4 int array (zoom, size, x, y) from ``z-size-x-y`` ids; -1 rows where unparsable."""
    out = np.full((len(tile_ids), 4), -1, dtype=np.int64)
    for i, t in enumerate(tile_ids):
        try:
            parts = [int(p) for p in str(t).split("-")]
        except ValueError:
            continue
        if len(parts) == 4:
            out[i] = parts
    return out


def tile_edge_pairs(
    merc: np.ndarray, tile_ids: pd.Series | np.ndarray, lat: np.ndarray, edge_gap_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of pieces (EPSG:3857) that continue each other across a shared tile edge.

    Pieces i, j in edge-adjacent tiles of one grid qualify when each reaches within
    ``edge_gap_m`` ground metres of the shared edge and their extents along the edge, measured
    on the parts inside that band, overlap or are within ``edge_gap_m`` of each other.

    Args:
        merc: The pieces' geometries in EPSG:3857 (object array).
        tile_ids: Each piece's tile id (``"{zoom}-{size}-{x}-{y}"``).
        lat: Each piece's latitude in degrees (converts ground metres to EPSG:3857 metres).
        edge_gap_m: Largest gap in ground metres still counted as continuing.

    Returns:
        Index arrays ``(i, j)`` of the qualifying pairs.
    """
    n = len(merc)
    empty = np.zeros(0, dtype=np.int64)
    if n < 2 or edge_gap_m <= 0:
        return empty, empty
    keys = _tile_keys(tile_ids)
    band = edge_gap_m / np.cos(np.radians(lat))  # ground metres -> Mercator metres, per piece
    tree = shapely.STRtree(merc)
    i, j = tree.query(merc, predicate="dwithin", distance=2 * band + _TOUCH_TOLERANCE_M)
    dx, dy = keys[j, 2] - keys[i, 2], keys[j, 3] - keys[i, 3]
    ok = (
        (i < j) & (keys[i, 0] >= 0) & (keys[j, 0] >= 0)
        & (keys[i, 0] == keys[j, 0]) & (keys[i, 1] == keys[j, 1])
        & (np.abs(dx) + np.abs(dy) == 1)
    )  # fmt: skip
    i, j, dx = i[ok], j[ok], dx[ok]
    if not len(i):
        return empty, empty
    keep = np.zeros(len(i), dtype=bool)
    inf = 1e12
    for n_, (a, b) in enumerate(zip(i, j, strict=True)):
        left, bottom, right, top = Tile(*(int(v) for v in keys[a])).bounds_3857
        g = max(band[a], band[b])
        if dx[n_] != 0:  # east-west neighbours: a vertical shared edge
            edge = right if dx[n_] == 1 else left
            side = -1 if dx[n_] == 1 else 1  # where piece a lies from the edge
            ca = shapely.clip_by_rect(merc[a], *_band_rect(edge, side, g, vertical=True, inf=inf))
            cb = shapely.clip_by_rect(merc[b], *_band_rect(edge, -side, g, vertical=True, inf=inf))
            axis = (1, 3)  # extents along y
        else:  # north-south neighbours (tile y grows southwards): a horizontal shared edge
            edge = bottom if keys[b, 3] > keys[a, 3] else top
            side = 1 if keys[b, 3] > keys[a, 3] else -1
            ca = shapely.clip_by_rect(merc[a], *_band_rect(edge, side, g, vertical=False, inf=inf))
            cb = shapely.clip_by_rect(merc[b], *_band_rect(edge, -side, g, vertical=False, inf=inf))
            axis = (0, 2)
        if ca.is_empty or cb.is_empty:
            continue
        ba, bb = ca.bounds, cb.bounds
        lo, hi = max(ba[axis[0]], bb[axis[0]]), min(ba[axis[1]], bb[axis[1]])
        keep[n_] = lo <= hi + g
    return i[keep], j[keep]


def _band_rect(
    edge: float, side: int, width: float, *, vertical: bool, inf: float
) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of the band of ``width`` on ``side`` (-1 / +1) of an edge."""
    lo, hi = (edge - width, edge) if side < 0 else (edge, edge + width)
    return (lo, -inf, hi, inf) if vertical else (-inf, lo, inf, hi)


def label_systems(
    panels: gpd.GeoDataFrame, gap_m: float = 1.0, *, tile_edge_gap_m: float = 0.0
) -> np.ndarray:
    """System label (0..k-1) of each panel piece: connected components of "within ``gap_m``".

    With ``tile_edge_gap_m`` and a ``tile_id`` column, pieces that continue across a tile edge
    are connected too (see :func:`tile_edge_pairs`). Labels follow the input order (the first
    piece's system is 0), so equal inputs give equal labels.

    Args:
        panels: Panel pieces with polygon geometry and a CRS.
        gap_m: Largest ground distance in metres between pieces of one system.
        tile_edge_gap_m: Largest gap in ground metres across a tile edge; 0: no edge rule.

    Returns:
        One integer label per row of ``panels``.
    """
    _check_panels(panels, "label_systems")
    n = len(panels)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lonlat = reproject(np.asarray(panels.geometry.values, dtype=object), panels.crs, LONLAT)
    merc = reproject(lonlat, LONLAT, WEB_MERCATOR)
    b = shapely.bounds(lonlat)
    lat = np.clip((b[:, 1] + b[:, 3]) / 2, -85.0, 85.0)
    # Web-Mercator stretch 1/cos(lat): ground metres -> projected metres, per piece.
    dist = max(gap_m, _TOUCH_TOLERANCE_M) / np.cos(np.radians(lat))
    tree = shapely.STRtree(merc)
    i, j = tree.query(merc, predicate="dwithin", distance=dist)
    if tile_edge_gap_m > 0 and "tile_id" in panels.columns:
        ei, ej = tile_edge_pairs(merc, panels["tile_id"].to_numpy(), lat, tile_edge_gap_m)
        i, j = np.concatenate([i, ei]), np.concatenate([j, ej])
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def _union(geoms: np.ndarray) -> shapely.Geometry:
    try:
        return shapely.union_all(geoms, grid_size=_UNION_GRID_DEG)
    except shapely.errors.GEOSException:  # rare robustness failure: union without snapping
        return shapely.union_all(shapely.make_valid(geoms))


def merge_panels(
    panels: gpd.GeoDataFrame,
    config: MergeConfig | dict | None = None,
    *,
    gap_m: float | None = None,
    residential_max_area_m2: float | None = None,
    m2_per_kw: float | None = None,
    tile_edge_gap_m: float | None = None,
    min_system_area_m2: float | None = None,
) -> gpd.GeoDataFrame:
    """Merge panel pieces into solar systems (EPSG:4326), one row per system.

    ``panels`` needs polygon geometry with a CRS; ``area_m2`` (ground area, computed if absent),
    ``tile_id`` (for ``tile_count``) and ``confidence`` are used when present. Keyword arguments
    override the config's fields. Columns: see :data:`SYSTEM_COLUMNS`; ``system_id`` runs 1..n.

    Args:
        panels: Panel pieces (polygons with a CRS).
        config: Merge settings (a MergeConfig or a mapping); None: defaults.
        gap_m: Largest ground gap in metres between pieces of one system.
        residential_max_area_m2: Systems up to this area in m² count as residential.
        m2_per_kw: Panel area per kW of capacity, in m²/kW.
        tile_edge_gap_m: Largest gap in ground metres joining pieces across a tile edge.
        min_system_area_m2: Systems smaller than this area in m² are dropped.

    Returns:
        One row per system in EPSG:4326.

    Raises:
        ConfigError: If the config or an override is invalid.
        InputDataError: If the panels have no CRS.
    """
    cfg = validate_config(MergeConfig, config or {}, where="merge_panels config")
    overrides = {
        k: v
        for k, v in (
            ("gap_m", gap_m),
            ("residential_max_area_m2", residential_max_area_m2),
            ("m2_per_kw", m2_per_kw),
            ("tile_edge_gap_m", tile_edge_gap_m),
            ("min_system_area_m2", min_system_area_m2),
        )
        if v is not None
    }
    if overrides:
        cfg = validate_config(
            MergeConfig, {**cfg.model_dump(), **overrides}, where="merge_panels arguments"
        )
    systems, _ = merge_panels_labelled(panels, cfg)
    return systems


def merge_panels_labelled(
    panels: gpd.GeoDataFrame, config: MergeConfig | None = None
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Like :func:`merge_panels`, also returning each panel's ``system_id``.

    The ids are aligned with the rows of ``panels``; 0 for pieces of systems dropped by
    ``min_system_area_m2``.

    Args:
        panels: Panel pieces (polygons with a CRS).
        config: Merge settings; None: defaults.

    Returns:
        The systems frame (as :func:`merge_panels`) and the per-panel system ids.
    """
    cfg = config or MergeConfig()
    labels = label_systems(panels, cfg.gap_m, tile_edge_gap_m=cfg.tile_edge_gap_m)
    geoms = reproject(np.asarray(panels.geometry.values, dtype=object), panels.crs, LONLAT)
    area = _piece_areas(panels, geoms)
    conf = (
        pd.to_numeric(panels["confidence"], errors="coerce").to_numpy(dtype=float)
        if "confidence" in panels.columns
        else np.full(len(panels), np.nan)
    )
    tile_ids = panels["tile_id"].to_numpy() if "tile_id" in panels.columns else None
    # Systems below the minimum area are dropped; their pieces are labelled 0.
    out_labels = np.zeros(len(labels), dtype=np.int64)
    if len(labels):
        big = np.bincount(labels, weights=area) >= cfg.min_system_area_m2
        new_id = np.cumsum(big) - 1  # 0..k-1 over the kept systems, in first-piece order
        kept = big[labels]
        labels = new_id[labels[kept]]
        out_labels[kept] = labels + 1
        geoms, area, conf = geoms[kept], area[kept], conf[kept]
        tile_ids = tile_ids[kept] if tile_ids is not None else None
    n_sys = int(labels.max()) + 1 if len(labels) else 0
    area_sys = np.bincount(labels, weights=area, minlength=n_sys)
    n_panels = np.bincount(labels, minlength=n_sys)
    conf_mean, conf_max = _system_confidence(labels, area, conf, n_sys)
    outline = _system_outlines(labels, geoms, n_panels, n_sys)
    rep = shapely.point_on_surface(outline) if n_sys else np.zeros(0, dtype=object)
    residential = area_sys <= cfg.residential_max_area_m2
    systems = gpd.GeoDataFrame(
        {
            "system_id": np.arange(1, n_sys + 1, dtype=np.int64),
            "area_m2": area_sys,
            "capacity_kw": area_sys / cfg.m2_per_kw,
            "is_residential": residential,
            "system_class": np.where(residential, "residential", "nonresidential").astype(object),
            "n_panels": n_panels.astype(np.int64),
            "tile_count": _system_tile_counts(labels, tile_ids, n_sys).astype(np.int64),
            "confidence": conf_mean,
            "confidence_max": conf_max,
            "lon": shapely.get_x(rep) if n_sys else np.zeros(0),
            "lat": shapely.get_y(rep) if n_sys else np.zeros(0),
        },
        geometry=gpd.GeoSeries(outline, crs=LONLAT),
        crs=LONLAT,
    )
    systems.attrs["merge_config"] = cfg.model_dump()
    return systems, out_labels


def _piece_areas(panels: gpd.GeoDataFrame, geoms_lonlat: np.ndarray) -> np.ndarray:
    """Each piece's ``area_m2`` column, or its equal-area m² when the column is absent."""
    if "area_m2" not in panels.columns:
        return equal_area_m2(gpd.GeoSeries(geoms_lonlat, crs=LONLAT))
    area = pd.to_numeric(panels["area_m2"], errors="coerce").to_numpy(dtype=float)
    if np.isnan(area).any() or (area < 0).any():
        raise InputDataError(
            "panel area_m2 has missing or negative values",
            where="merge_panels",
            fix="drop the area_m2 column to have it recomputed from the geometry",
        )
    return area


def _system_confidence(
    labels: np.ndarray, area: np.ndarray, conf: np.ndarray, n_sys: int
) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted mean confidence over the pieces that have one; max for the strongest tile."""
    has_c = ~np.isnan(conf)
    w = np.where(has_c, np.maximum(area, 1e-12), 0.0)
    wsum = np.bincount(labels, weights=w, minlength=n_sys)
    csum = np.bincount(labels, weights=np.where(has_c, conf, 0.0) * w, minlength=n_sys)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf_mean = np.where(wsum > 0, csum / wsum, np.nan)
    conf_max = np.full(n_sys, -np.inf)
    np.maximum.at(conf_max, labels[has_c], conf[has_c])
    conf_max[np.isinf(conf_max)] = np.nan
    return conf_mean, conf_max


def _system_tile_counts(labels: np.ndarray, tile_ids: np.ndarray | None, n_sys: int) -> np.ndarray:
    """Distinct tiles holding a piece of each system (DeepSolar's tile count)."""
    if tile_ids is None:
        return np.zeros(n_sys, dtype=np.int64)
    tiles = pd.DataFrame({"s": labels, "t": tile_ids}).dropna()
    return (
        tiles.drop_duplicates().groupby("s").size().reindex(range(n_sys), fill_value=0)
    ).to_numpy()


def _system_outlines(
    labels: np.ndarray, geoms: np.ndarray, n_panels: np.ndarray, n_sys: int
) -> np.ndarray:
    """Outline per system: single pieces as they are, unions only for multi-piece systems."""
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(n_sys))
    outline = np.empty(n_sys, dtype=object)
    first = order[starts] if n_sys else np.zeros(0, dtype=np.int64)
    outline[:] = list(geoms[first]) if n_sys else []
    for s in np.flatnonzero(n_panels > 1):
        outline[s] = _union(geoms[order[starts[s] : starts[s] + n_panels[s]]])
    return outline
