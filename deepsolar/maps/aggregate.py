"""Aggregate solar systems to census tracts, counties and states (the DeepSolar database tables).

**Assignment rule.** Each system is counted once per level, with its whole area, in the unit that
contains its *representative point* (``shapely.point_on_surface``: always inside the system's
outline, unlike the centroid of an L-shaped or multi-part array). Point systems are used as they
are. A point on the shared edge of two units goes to the unit that comes first in the units
frame, so nothing is counted twice; systems outside every unit are left out and counted in
``result.attrs["unassigned_systems"]``. Levels are assigned independently, so counts add up
across levels whenever the layers nest.

**Columns** follow the DeepSolar tract database (verified on the real Virginia extract in
``../shared/data/tables/deepsolar_tract_va``: every row satisfies these definitions):

- ``solar_system_count`` (+ ``_residential`` / ``_nonresidential``)
- ``total_panel_area`` (+ ``_residential`` / ``_nonresidential``), m²
- ``tile_count`` (+ ``_residential`` / ``_nonresidential``): the number of distinct tiles holding
  (part of) a system counted in the unit (a tile with two systems counts once); written when the
  panel pieces (``system_id``, ``tile_id``) are passed as ``panels=``
- ``total_area``: unit area in square miles (equal-area, water included, like TIGER tracts)
- ``solar_panel_area_divided_by_area``: **residential** panel area (m²) per square mile of
  ``total_area``: DeepSolar's density (its published maps use it)
- ``solar_panel_area_per_capita``: residential m² / population
- ``number_of_solar_system_per_household``: residential systems / households

and, with units in their names, for all systems: ``area_km2``, ``panel_area_m2_per_mi2``,
``panel_area_m2_per_km2``, ``panel_area_m2_per_capita``, ``solar_system_count_per_household``,
``total_capacity_kw``.

**Partial scans.** ``scanned_area_km2`` is the part of the unit covered by the union of scanned
tile footprints; ``scanned_fraction`` = that / unit area. Densities over the scanned area
(``solar_panel_area_divided_by_scanned_area``, ``panel_area_m2_per_mi2_scanned``,
``panel_area_m2_per_km2_scanned``) are what to map: a unit scanned at 10 % with 10 m² is as
dense as a fully scanned one with 100 m². ``scanned_area_m2`` gives the same area in m².

**Densities only where we looked.** Every density column (``DENSITY_COLUMNS``: over the unit
area, over the scanned area, per capita, per household) is NaN (NULL in the GeoPackage) unless
the unit's scanned fraction reaches ``AggregateConfig.min_scanned_fraction`` (default 0.9, see
docs/maps.md); ``scan_status`` says ``scanned`` / ``partial`` / ``not scanned`` and
``scan_note`` why a density is missing ("48% scanned (< 90%): no density"). Counts and areas are
kept: they are what was found in the scanned part. ``scanned=None`` means the systems are a
complete inventory (fraction 1 everywhere).

Ratios with a zero denominator (no population, no households) are NaN, where DeepSolar's file
has ``inf``.

**Totals with error bars.** Given the classifier's validation counts (``detector=``), units whose
densities are reported also get 95% intervals of their true whole-unit totals,
``panel_area_m2_lo95`` / ``_hi95`` and ``solar_system_count_lo95`` / ``_hi95``, and with
``AggregateConfig.uncertainty.bias_correction`` the ``_corrected`` totals (see
:mod:`deepsolar.maps.uncertainty` and docs/maps.md).

**Scale.** Points are assigned with a ``shapely.STRtree`` built over a chunk of points and
queried with all units at once (``predicate="intersects"``, each unit prepared once), so the
point-in-polygon tests run in GEOS on prepared polygons; memory is bounded by the chunk size.
Scanned coverage is kept as merged runs of tile columns per row (:class:`ScanCoverage`): it grows
with the outline of the scanned area, not with the number of tiles.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pydantic import Field
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from deepsolar.core.config import StrictModel, validate_config
from deepsolar.core.errors import InputDataError
from deepsolar.geo.tiling import EARTH_RADIUS_M, LONLAT, ORIGIN_SHIFT_M, Tile, mercator_m_per_px
from deepsolar.maps.merge import DEFAULT_RESIDENTIAL_MAX_AREA_M2
from deepsolar.maps.polygons import equal_area_m2_array, reproject
from deepsolar.maps.uncertainty import (
    CORRECTED_COLUMNS,
    INTERVAL_COLUMNS,
    DetectorCounts,
    ScannedTotals,
    UncertaintyConfig,
    unit_intervals,
)

log = logging.getLogger(__name__)

M2_PER_MI2 = 2_589_988.110336  # international square mile
M2_PER_KM2 = 1_000_000.0

# Output columns in order (per-capita / per-household / tile columns only when their inputs exist).
COUNT_COLUMNS: tuple[str, ...] = (
    "solar_system_count",
    "solar_system_count_residential",
    "solar_system_count_nonresidential",
    "total_panel_area",
    "total_panel_area_residential",
    "total_panel_area_nonresidential",
)
TILE_COLUMNS: tuple[str, ...] = (
    "tile_count",
    "tile_count_residential",
    "tile_count_nonresidential",
)
AREA_COLUMNS: tuple[str, ...] = (
    "total_area",
    "area_km2",
    "solar_panel_area_divided_by_area",
    "panel_area_m2_per_mi2",
    "panel_area_m2_per_km2",
    "scanned_area_km2",
    "scanned_fraction",
    "solar_panel_area_divided_by_scanned_area",
    "panel_area_m2_per_mi2_scanned",
    "panel_area_m2_per_km2_scanned",
)
# Beside every density: how much of the unit was scanned and whether its densities are reported.
SCAN_COLUMNS: tuple[str, ...] = ("scanned_area_m2", "scan_status", "scan_note")
POPULATION_COLUMNS: tuple[str, ...] = ("solar_panel_area_per_capita", "panel_area_m2_per_capita")
HOUSEHOLD_COLUMNS: tuple[str, ...] = (
    "number_of_solar_system_per_household",
    "solar_system_count_per_household",
)
# The density a map should show by default: all systems, over the scanned area.
DEFAULT_DENSITY_FIELD = "panel_area_m2_per_mi2_scanned"
# Densities are reported only for units scanned at least this much (see docs/maps.md).
DEFAULT_MIN_SCANNED_FRACTION = 0.9
SCAN_STATUS_SCANNED = "scanned"
SCAN_STATUS_PARTIAL = "partial"
SCAN_STATUS_NONE = "not scanned"
# Columns set to NULL where a unit is not scanned enough (per capita / per household too: their
# numerators count only the scanned part).
DENSITY_COLUMNS: tuple[str, ...] = (
    "solar_panel_area_divided_by_area",
    "panel_area_m2_per_mi2",
    "panel_area_m2_per_km2",
    "solar_panel_area_divided_by_scanned_area",
    "panel_area_m2_per_mi2_scanned",
    "panel_area_m2_per_km2_scanned",
    "solar_panel_area_per_capita",
    "panel_area_m2_per_capita",
    "number_of_solar_system_per_household",
    "solar_system_count_per_household",
)


class AggregateConfig(StrictModel):
    """Which system columns to read and how to place systems in units."""

    assign_by: Literal["representative_point", "centroid"] = Field(
        "representative_point",
        description="point that decides a system's unit (representative point is always inside it)",
    )
    area_column: str = Field("area_m2", description="system panel area in m²")
    residential_column: str = Field(
        "is_residential", description="boolean column; if absent, the area threshold decides"
    )
    residential_max_area_m2: float = Field(
        DEFAULT_RESIDENTIAL_MAX_AREA_M2,
        gt=0,
        description="used only when the residential column is absent (see deepsolar.maps.merge)",
    )
    chunk_size: int = Field(
        250_000, ge=1_000, description="points per STRtree chunk (bounds peak memory)"
    )
    min_scanned_fraction: float = Field(
        DEFAULT_MIN_SCANNED_FRACTION,
        ge=0.0,
        le=1.0,
        description="densities are NULL for units whose scanned fraction is below this "
        "(0 reports every unit with any scan; see docs/maps.md for the default)",
    )
    uncertainty: UncertaintyConfig = Field(
        default_factory=UncertaintyConfig,
        description="95% intervals of each unit's panel area and system count (and bias-"
        "corrected totals); written where densities are, when detector counts are given",
    )


# --------------------------------------------------------------------------- scanned coverage


def _merge_intervals(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Union of half-open integer intervals [start, end) as an (k, 2) array, sorted."""
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    run_end = np.maximum.accumulate(e)
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > run_end[:-1]  # touching intervals ([0,2) and [2,3)) merge
    idx = np.flatnonzero(new)
    out_e = np.maximum.reduceat(e, idx)
    return np.column_stack([s[idx], out_e])


class ScanCoverage:
    """The union of scanned grid tiles, as merged runs of tile columns per tile row.

    Feed tiles in any order and any number of times (``add_tiles`` / ``add_xy``); memory grows
    with the number of runs (about the scan outline's height in tiles), not with the number of
    tiles: a whole state at zoom 21 (tens of millions of tiles) is a few thousand rows of runs.
    """

    def __init__(self) -> None:
        self.zoom: int | None = None
        self.tile_size_px: int | None = None
        self._rows: dict[int, np.ndarray] = {}

    def _check_grid(self, zoom: int, size: int) -> None:
        if self.zoom is None:
            self.zoom, self.tile_size_px = int(zoom), int(size)
        elif (zoom, size) != (self.zoom, self.tile_size_px):
            raise InputDataError(
                f"scanned tiles mix grids z{self.zoom}/{self.tile_size_px}px and z{zoom}/{size}px",
                where="ScanCoverage",
                fix="build one coverage per tile grid",
            )

    def add_xy(self, zoom: int, tile_size_px: int, x: np.ndarray, y: np.ndarray) -> None:
        """Add tiles given as arrays of grid columns ``x`` and rows ``y``.

        Args:
            zoom: The grid's Web-Mercator zoom level.
            tile_size_px: The grid's tile size in px.
            x: Tile columns.
            y: Tile rows (same length as ``x``).

        Raises:
            InputDataError: If ``x`` and ``y`` differ in length, or the grid differs from the
                tiles added before.
        """
        self._check_grid(zoom, tile_size_px)
        x = np.asarray(x, dtype=np.int64).ravel()
        y = np.asarray(y, dtype=np.int64).ravel()
        if len(x) != len(y):
            raise InputDataError(
                "x and y differ in length", where="ScanCoverage.add_xy", fix="pass equal arrays"
            )
        if len(x) == 0:
            return
        order = np.lexsort((x, y))
        x, y = x[order], y[order]
        # a new run starts where the row changes or the column is not the previous one + 1
        brk = np.ones(len(x), dtype=bool)
        brk[1:] = (y[1:] != y[:-1]) | (x[1:] > x[:-1] + 1)
        idx = np.flatnonzero(brk)
        run_y, run_x0 = y[idx], x[idx]
        run_x1 = np.maximum.reduceat(x, idx) + 1
        row_start = np.flatnonzero(np.r_[True, run_y[1:] != run_y[:-1]])
        row_end = np.r_[row_start[1:], len(run_y)]
        for a, b in zip(row_start, row_end, strict=True):
            row = int(run_y[a])
            runs = np.column_stack([run_x0[a:b], run_x1[a:b]])
            old = self._rows.get(row)
            if old is not None:
                runs = np.vstack([old, runs])
            self._rows[row] = _merge_intervals(runs[:, 0], runs[:, 1])

    def add_tiles(self, tiles: Iterable[Tile | str], chunk: int = 1_000_000) -> None:
        """Add :class:`Tile` objects or tile ids (``"z-size-x-y"``), streamed in chunks.

        Args:
            tiles: Tiles or tile ids.
            chunk: Tiles converted per batch (bounds memory for huge scans).

        Raises:
            InputDataError: If a tile id is malformed, or the grid differs from the tiles added
                before.
        """
        xs: list[int] = []
        ys: list[int] = []
        grid: tuple[int, int] | None = None
        for t in tiles:
            if isinstance(t, Tile):
                z, s, x, y = t.zoom, t.size_px, t.x, t.y
            else:
                try:
                    z, s, x, y = (int(p) for p in str(t).split("-"))
                except ValueError:
                    raise InputDataError(
                        f"malformed tile id {t!r}",
                        where="ScanCoverage.add_tiles",
                        fix="tile ids look like '21-320-x-y'",
                    ) from None
            if grid is None:
                grid = (z, s)
            if (z, s) != grid or len(xs) >= chunk:
                self.add_xy(*grid, np.array(xs), np.array(ys))
                xs, ys, grid = [], [], (z, s)
            xs.append(x)
            ys.append(y)
        if grid is not None and xs:
            self.add_xy(*grid, np.array(xs), np.array(ys))

    @property
    def n_tiles(self) -> int:
        """Number of distinct scanned tiles."""
        return int(sum((r[:, 1] - r[:, 0]).sum() for r in self._rows.values()))

    @property
    def n_runs(self) -> int:
        """Number of merged runs of tile columns (the size of the coverage's representation)."""
        return int(sum(len(r) for r in self._rows.values()))

    def geometry(self) -> BaseGeometry:
        """The scanned area as one (multi)polygon in EPSG:4326 (empty if nothing was added).

        Returns:
            The union of the scanned tiles' footprints, in degrees.
        """
        if not self._rows:
            return shapely.Polygon()
        assert self.zoom is not None and self.tile_size_px is not None
        span = self.tile_size_px * mercator_m_per_px(self.zoom)
        # Stack identical runs of consecutive rows into one rectangle: few boxes to union.
        rects: list[tuple[int, int, int, int]] = []  # x0, x1, y_first, y_last
        open_: dict[tuple[int, int], tuple[int, int]] = {}
        for row in sorted(self._rows):
            runs = {(int(a), int(b)) for a, b in self._rows[row]}
            for key in list(open_):
                first, last = open_[key]
                if key not in runs or last != row - 1:
                    rects.append((*key, first, last))
                    del open_[key]
            for key in runs:
                first, _ = open_.get(key, (row, row))
                open_[key] = (first, row)
        rects.extend((*k, f, la) for k, (f, la) in open_.items())
        r = np.array(rects, dtype=np.float64)
        west = (r[:, 0] * span - ORIGIN_SHIFT_M) / ORIGIN_SHIFT_M * 180.0
        east = (r[:, 1] * span - ORIGIN_SHIFT_M) / ORIGIN_SHIFT_M * 180.0
        north = _merc_y_to_lat(ORIGIN_SHIFT_M - r[:, 2] * span)
        south = _merc_y_to_lat(ORIGIN_SHIFT_M - (r[:, 3] + 1) * span)
        return shapely.union_all(shapely.box(west, south, east, north))


def _merc_y_to_lat(my: np.ndarray) -> np.ndarray:
    return np.degrees(2 * np.arctan(np.exp(my / EARTH_RADIUS_M)) - math.pi / 2)


ScannedInput = ScanCoverage | BaseGeometry | gpd.GeoSeries | gpd.GeoDataFrame | Iterable[Any] | None


def scanned_geometry(scanned: ScannedInput) -> BaseGeometry | None:
    """Turn any accepted ``scanned`` argument into one lon/lat geometry (None: complete inventory).

    Accepts a :class:`ScanCoverage`, a shapely geometry (EPSG:4326), a tiles GeoDataFrame (the
    ``tiles`` layer or a download manifest: rows with ``status`` other than ``"ok"`` are not
    scanned; grid columns ``zoom``/``tile_size_px``/``x``/``y`` or ``tile_id`` are used when
    present, else the footprints), a GeoSeries of footprints, or an iterable of tiles / tile ids.

    Args:
        scanned: What was scanned, in any of the forms above, or None.

    Returns:
        The scanned area in EPSG:4326, or None for a complete inventory.

    Raises:
        InputDataError: If footprints have no CRS, or tiles are malformed or mix grids.
    """
    if scanned is None:
        return None
    if isinstance(scanned, ScanCoverage):
        return scanned.geometry()
    if isinstance(scanned, BaseGeometry):
        return scanned
    if isinstance(scanned, gpd.GeoDataFrame):
        df = scanned
        if "status" in df.columns:
            df = df[df["status"].astype(str) == "ok"]
        if {"zoom", "tile_size_px", "x", "y"} <= set(df.columns):
            cov = ScanCoverage()
            for (z, s), grp in df.groupby(["zoom", "tile_size_px"]):
                cov.add_xy(int(z), int(s), grp["x"].to_numpy(), grp["y"].to_numpy())
            return cov.geometry()
        if "tile_id" in df.columns:
            cov = ScanCoverage()
            cov.add_tiles(df["tile_id"].astype(str))
            return cov.geometry()
        scanned = df.geometry
    if isinstance(scanned, gpd.GeoSeries):
        if scanned.crs is None:
            raise InputDataError(
                "scanned footprints have no CRS",
                where="aggregate_systems(scanned=...)",
                fix="set the CRS of the tile footprints",
            )
        arr = reproject(np.asarray(scanned.values, dtype=object), scanned.crs, LONLAT)
        return shapely.union_all(arr)
    cov = ScanCoverage()
    cov.add_tiles(scanned)
    return cov.geometry()


# --------------------------------------------------------------------------- assignment


def _to_lonlat_array(gs: gpd.GeoSeries, where: str) -> np.ndarray:
    if gs.crs is None:
        raise InputDataError(
            "geometries have no CRS", where=where, fix="set the CRS (e.g. EPSG:4326)"
        )
    return reproject(np.asarray(gs.values, dtype=object), gs.crs, LONLAT)


def system_points(systems: gpd.GeoDataFrame, assign_by: str = "representative_point") -> np.ndarray:
    """The point that places each system (EPSG:4326): itself for points, else per ``assign_by``.

    Args:
        systems: Systems (polygons or points) with a CRS.
        assign_by: ``representative_point`` (always inside the polygon) or ``centroid``.

    Returns:
        One shapely point per system, in EPSG:4326.

    Raises:
        InputDataError: If some systems have no geometry or the systems have no CRS.
    """
    geoms = _to_lonlat_array(systems.geometry, "systems")
    if len(geoms) == 0:
        return geoms
    if shapely.is_missing(geoms).any() or shapely.is_empty(geoms).any():
        raise InputDataError(
            "some systems have no geometry",
            where="aggregate_systems",
            fix="drop systems with missing or empty geometry",
        )
    types = shapely.get_type_id(geoms)
    if (types == 0).all():  # all points: nothing to compute
        return geoms
    fn = shapely.point_on_surface if assign_by == "representative_point" else shapely.centroid
    out = geoms.copy()
    not_pt = types != 0
    out[not_pt] = fn(geoms[not_pt])
    return out


def assign_points(points: np.ndarray, units: np.ndarray, chunk_size: int = 250_000) -> np.ndarray:
    """Index of the unit containing each point (first unit on shared edges), -1 if none.

    Builds an STRtree over each chunk of points and queries it with every unit at once, so each
    unit is prepared once and tested only against the points in its bounding box.

    Args:
        points: Shapely points (object array), in the units' CRS.
        units: Unit polygons (object array).
        chunk_size: Points per STRtree (bounds memory).

    Returns:
        One unit index per point, -1 where no unit contains it.
    """
    n = len(points)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(units) == 0:
        return out
    shapely.prepare(units)
    big = np.iinfo(np.int64).max
    for start in range(0, n, chunk_size):
        pts = points[start : start + chunk_size]
        tree = shapely.STRtree(pts)
        u, p = tree.query(units, predicate="intersects")
        best = np.full(len(pts), big, dtype=np.int64)
        np.minimum.at(best, p, u)
        best[best == big] = -1
        out[start : start + len(pts)] = best
        del tree, u, p
    return out


# --------------------------------------------------------------------------- aggregation


def _unit_geoms(units: gpd.GeoDataFrame) -> np.ndarray:
    if not isinstance(units, gpd.GeoDataFrame) or units.crs is None:
        raise InputDataError(
            "units must be a GeoDataFrame with a CRS",
            where="aggregate_systems(units=...)",
            fix="load them with deepsolar.geo.boundaries.load_units / load_tiger_tracts",
        )
    geoms = _to_lonlat_array(units.geometry, "units")
    ok = shapely.get_type_id(geoms)
    if not np.isin(ok, (3, 6, 7)).all():  # Polygon, MultiPolygon, GeometryCollection
        raise InputDataError(
            "units must be polygons",
            where="aggregate_systems(units=...)",
            fix="pass tract / county / state polygons",
        )
    return geoms


def _residential(systems: gpd.GeoDataFrame, area: np.ndarray, cfg: AggregateConfig) -> np.ndarray:
    col = cfg.residential_column
    if col in systems.columns:
        vals = systems[col]
        if vals.isna().any():
            raise InputDataError(
                f"column {col!r} has missing values",
                where="aggregate_systems",
                fix="fill it, or drop it to classify by area",
            )
        return vals.astype(bool).to_numpy()
    return area <= cfg.residential_max_area_m2


def _system_area(systems: gpd.GeoDataFrame, cfg: AggregateConfig) -> np.ndarray:
    col = cfg.area_column
    if col not in systems.columns:
        raise InputDataError(
            f"systems have no {col!r} column",
            where="aggregate_systems",
            fix="merge panels with deepsolar.maps.merge.merge_panels, or set AggregateConfig.area_column",
        )
    area = pd.to_numeric(systems[col], errors="coerce").to_numpy(dtype=float)
    if np.isnan(area).any() or (area < 0).any():
        raise InputDataError(
            f"column {col!r} has {int(np.isnan(area).sum())} missing and "
            f"{int((area < 0).sum())} negative values",
            where="aggregate_systems",
            fix="clean the system areas (m², >= 0)",
        )
    return area


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _unit_column(units: gpd.GeoDataFrame, given: str | None, default: str) -> str | None:
    if given is None:
        return default if default in units.columns else None
    if given not in units.columns:
        raise InputDataError(
            f"units have no column {given!r}",
            where="aggregate_systems",
            fix=f"join it onto the units first (columns: {', '.join(map(str, units.columns[:12]))}...)",
        )
    return given


def _scanned_area_m2(
    geoms: np.ndarray, unit_area_m2: np.ndarray, coverage: BaseGeometry | None
) -> np.ndarray:
    if coverage is None:
        return unit_area_m2.copy()
    if coverage.is_empty:
        return np.zeros(len(geoms))
    shapely.prepare(coverage)
    full = shapely.covers(coverage, geoms)
    none = ~shapely.intersects(coverage, geoms)
    part = ~full & ~none
    out = np.where(full, unit_area_m2, 0.0)
    if part.any():
        inter = shapely.intersection(geoms[part], coverage)
        out[part] = equal_area_m2_array(inter, LONLAT)
    return np.minimum(out, unit_area_m2)


def pct_text(frac: float) -> str:
    """A fraction as a short percentage: 53%, 3.2%, 0.0051% (two significant digits under 10%).

    Args:
        frac: A fraction 0-1.

    Returns:
        The percentage text.
    """
    p = 100.0 * float(frac)
    if p >= 10 or p == 0:
        return f"{p:.0f}%"
    return (
        np.format_float_positional(p, precision=2, unique=False, fractional=False, trim="-") + "%"
    )


def scan_status(
    fraction: np.ndarray, min_scanned_fraction: float = DEFAULT_MIN_SCANNED_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """(``scan_status``, ``scan_note``) per unit from its scanned fraction.

    ``scanned`` (densities reported) from ``min_scanned_fraction`` on; ``partial`` below it;
    ``not scanned`` at 0. The note (None for a completely scanned unit) says why a density is
    missing, short enough to label the unit on a map.

    Args:
        fraction: Scanned fraction of each unit's area (0-1).
        min_scanned_fraction: Fraction 0-1 from which a unit counts as scanned.

    Returns:
        The status and the note per unit.
    """
    f = np.nan_to_num(np.asarray(fraction, dtype=float), nan=0.0)
    thr = float(min_scanned_fraction)
    status = np.where(
        f <= 0,
        SCAN_STATUS_NONE,
        np.where(f >= thr - 1e-9, SCAN_STATUS_SCANNED, SCAN_STATUS_PARTIAL),
    ).astype(object)
    need = pct_text(thr)
    notes: list[str | None] = []
    for fi, st in zip(f, status, strict=True):
        if st == SCAN_STATUS_NONE:
            notes.append("not scanned: no density")
        elif st == SCAN_STATUS_PARTIAL:
            notes.append(f"{pct_text(fi)} scanned (< {need}): no density")
        elif fi < 1 - 1e-6:
            notes.append(f"{pct_text(fi)} scanned: density over the scanned part")
        else:
            notes.append(None)
    return status, np.array(notes, dtype=object)


def _distinct_tile_counts(
    systems: gpd.GeoDataFrame,
    panels: gpd.GeoDataFrame,
    unit_of_system: np.ndarray,
    residential: np.ndarray,
    k: int,
) -> dict[str, np.ndarray]:
    """DeepSolar's ``tile_count``: distinct tiles holding (part of) a system counted in the unit.

    A tile holding two systems counts once; a system spanning three tiles adds three. The
    residential / non-residential columns count the distinct tiles holding a system of that class
    (a tile holding one of each counts in both, so they may add up to more than ``tile_count``).
    """
    need = {"system_id", "tile_id"}
    if "system_id" not in systems.columns or not need <= set(panels.columns):
        raise InputDataError(
            "tile counts need panels with system_id and tile_id, and systems with system_id",
            where="aggregate_systems(panels=...)",
            fix="pass the panels labelled by deepsolar.maps.merge.merge_panels_labelled",
        )
    sys_ids = systems["system_id"].to_numpy()
    unit = pd.Series(unit_of_system, index=sys_ids)
    res = pd.Series(residential, index=sys_ids)
    p = pd.DataFrame(
        {"s": panels["system_id"].to_numpy(), "t": panels["tile_id"].astype(str).to_numpy()}
    ).dropna()
    p["u"] = unit.reindex(p["s"]).to_numpy()
    p["r"] = res.reindex(p["s"]).to_numpy()
    p = p[p["u"].notna() & (p["u"] >= 0)]
    p["u"] = p["u"].astype(np.int64)

    def distinct(frame: pd.DataFrame) -> np.ndarray:
        pairs = frame[["u", "t"]].drop_duplicates()
        return np.bincount(pairs["u"].to_numpy(np.int64), minlength=k).astype(np.int64)

    is_res = p["r"].astype(bool)
    return {
        "tile_count": distinct(p),
        "tile_count_residential": distinct(p[is_res]),
        "tile_count_nonresidential": distinct(p[~is_res]),
    }


def tile_grid_of(panels: gpd.GeoDataFrame | None, scanned: ScannedInput) -> tuple[int, int] | None:
    """(zoom, tile size px) of the scan's tile grid.

    Taken from the panels' ``tile_id`` or the scanned tiles (a :class:`ScanCoverage` or a tiles
    frame).

    Args:
        panels: Panel pieces with a ``tile_id`` column, or None.
        scanned: What was scanned (see :func:`scanned_geometry`).

    Returns:
        ``(zoom, tile_size_px)``, or None when neither says.
    """
    if panels is not None and "tile_id" in panels.columns and len(panels):
        z, s, *_ = str(panels["tile_id"].iloc[0]).split("-")
        return int(z), int(s)
    if isinstance(scanned, ScanCoverage) and scanned.zoom is not None:
        return scanned.zoom, int(scanned.tile_size_px or 0)
    if isinstance(scanned, gpd.GeoDataFrame) and {"zoom", "tile_size_px"} <= set(scanned.columns):
        if len(scanned):
            return int(scanned["zoom"].iloc[0]), int(scanned["tile_size_px"].iloc[0])
    return None


def _uncertainty_columns(
    geoms: np.ndarray,
    pts: np.ndarray,
    ui: np.ndarray,
    area: np.ndarray,
    scanned_m2: np.ndarray,
    frac: np.ndarray,
    detected_tiles: np.ndarray | None,
    grid: tuple[int, int] | None,
    counts: DetectorCounts,
    cfg: UncertaintyConfig,
) -> dict[str, np.ndarray]:
    """Interval (and corrected) columns for the units in ``geoms`` (see deepsolar.maps.uncertainty).

    The sampling clusters are the scan's grid tiles: each system counts in the tile holding its
    point ``pts``; a unit's scanned tiles ``n`` = scanned area / one tile's ground area at the
    unit's latitude (so tiles cut by its edge count in part). Without a grid, only completely
    scanned units get an interval (they need no sampling term).
    """
    k = len(geoms)
    n_sys = np.bincount(ui, minlength=k).astype(float)
    if grid is not None and len(ui):
        zoom, size = grid
        span = size * mercator_m_per_px(zoom)
        lon, lat = shapely.get_x(pts), np.clip(shapely.get_y(pts), -85.05, 85.05)
        mx = EARTH_RADIUS_M * np.radians(lon)
        my = EARTH_RADIUS_M * np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))
        tx = np.floor((mx + ORIGIN_SHIFT_M) / span).astype(np.int64)
        ty = np.floor((ORIGIN_SHIFT_M - my) / span).astype(np.int64)
        per_tile = (
            pd.DataFrame({"u": ui, "t": tx * (1 << 31) + ty, "a": area, "c": 1.0})
            .groupby(["u", "t"])
            .sum()
        )
        u_of = per_tile.index.get_level_values(0).to_numpy()
        sq_a = np.bincount(u_of, weights=per_tile["a"].to_numpy() ** 2, minlength=k)
        sq_c = np.bincount(u_of, weights=per_tile["c"].to_numpy() ** 2, minlength=k)
        distinct = np.bincount(u_of, minlength=k).astype(float)
    else:
        sq_a = np.bincount(ui, weights=area**2, minlength=k)
        sq_c = n_sys.copy()
        distinct = n_sys.copy()
    if grid is not None:
        lat_u = shapely.get_y(shapely.point_on_surface(geoms))
        tile_m2 = (grid[1] * mercator_m_per_px(grid[0]) * np.cos(np.radians(lat_u))) ** 2
        n = np.maximum(scanned_m2 / tile_m2, distinct)
    else:
        n = np.full(k, np.nan)
    d = detected_tiles if detected_tiles is not None else distinct
    return unit_intervals(
        ScannedTotals(np.bincount(ui, weights=area, minlength=k), sq_a, n, frac),
        ScannedTotals(n_sys, sq_c, n, frac),
        np.asarray(d, dtype=np.int64),
        counts,
        draws=cfg.draws,
        seed=cfg.seed,
        bias_correction=cfg.bias_correction,
    )


def scan_footprint_frame(
    scanned: ScannedInput, *, n_tiles: int | None = None, **columns: Any
) -> gpd.GeoDataFrame:
    """The ``scan_footprint`` layer: the union of the scanned tiles as one (multi)polygon.

    In EPSG:4326, with ``area_m2``, ``area_km2`` and ``n_tiles`` (when known).

    Args:
        scanned: What was scanned (see :func:`scanned_geometry`).
        n_tiles: Number of scanned tiles; None: taken from a :class:`ScanCoverage`, else -1
            (unknown).
        **columns: Extra columns of the one row.

    Returns:
        A one-row frame in EPSG:4326 (an empty geometry with area 0 when no tile was scanned).

    Raises:
        InputDataError: If ``scanned`` is None (a complete inventory has no scan to draw).
    """
    if isinstance(scanned, ScanCoverage) and n_tiles is None:
        n_tiles = scanned.n_tiles
    geom = scanned_geometry(scanned)
    if geom is None:
        raise InputDataError(
            "no scan to draw (scanned=None means a complete inventory)",
            where="scan_footprint_frame",
            fix="pass the scanned tiles or coverage",
        )
    area = (
        float(equal_area_m2_array(np.array([geom], dtype=object), LONLAT)[0])
        if not geom.is_empty
        else 0.0
    )
    data = {
        "n_tiles": [n_tiles if n_tiles is not None else -1],
        "area_m2": [area],
        "area_km2": [area / M2_PER_KM2],
        **{k: [v] for k, v in columns.items()},
    }
    return gpd.GeoDataFrame(data, geometry=[geom], crs=LONLAT)


def aggregate_systems(
    systems: gpd.GeoDataFrame,
    units: gpd.GeoDataFrame,
    *,
    scanned: ScannedInput = None,
    panels: gpd.GeoDataFrame | None = None,
    population_column: str | None = None,
    household_column: str | None = None,
    config: AggregateConfig | Mapping[str, Any] | None = None,
    detector: DetectorCounts | None = None,
) -> gpd.GeoDataFrame:
    """Per-unit counts, areas and densities of ``systems`` over ``units`` (one level).

    ``systems``: polygons or points with a CRS and an ``area_m2`` column (``is_residential``
    optional, else classed by area). ``units``: polygons with a CRS (their columns are kept).
    ``scanned``: what was scanned (see :func:`scanned_geometry`); None = complete inventory.
    ``population_column`` / ``household_column`` default to DeepSolar's ``population`` /
    ``household_count`` when the units have them. ``panels``: the panel pieces with
    ``system_id`` and ``tile_id`` (from :func:`deepsolar.maps.merge.merge_panels_labelled`); with them
    the ``tile_count`` columns (distinct tiles holding a system) are written, without them they
    are left out. ``detector``: the classifier's validation counts; with them (and
    ``config.uncertainty.enabled``) the 95% interval columns are written (see
    :mod:`deepsolar.maps.uncertainty`). Returns ``units`` (EPSG:4326) with the columns described in
    the module docstring; ``attrs`` holds ``unassigned_systems`` and the scan counts.

    Args:
        systems: Solar systems (polygons or points) with ``area_m2`` (m²).
        units: The unit polygons of one level.
        scanned: What was scanned; None: complete inventory.
        panels: Panel pieces with ``system_id`` and ``tile_id``, or None.
        population_column: Units' population column, or None for the default.
        household_column: Units' household count column, or None for the default.
        config: Aggregation settings (a model or a mapping); None: defaults.
        detector: The classifier's validation tile counts, or None.

    Returns:
        The units in EPSG:4326 with counts, areas (m²) and densities.

    Raises:
        ConfigError: If the config is invalid.
        InputDataError: If systems or units lack a CRS, geometry or a needed column, or tile
            counts are asked for without ``system_id`` / ``tile_id``.
    """
    cfg = validate_config(AggregateConfig, config or {}, where="aggregate_systems config")
    return _aggregate(
        systems,
        units,
        cfg,
        system_points(systems, cfg.assign_by),
        scanned_geometry(scanned),
        population_column,
        household_column,
        panels,
        detector,
        tile_grid_of(panels, scanned),
    )


@dataclass
class _Assigned:
    """Systems assigned to units: unit index, area (m²) and residential flag of each hit."""

    idx: np.ndarray  # unit of every system, -1 outside all units
    hit: np.ndarray
    units: np.ndarray
    area_m2: np.ndarray
    residential: np.ndarray
    k: int

    def count(self, mask: np.ndarray | None = None) -> np.ndarray:
        ui = self.units if mask is None else self.units[mask]
        return np.bincount(ui, minlength=self.k).astype(np.int64)

    def total(self, w: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        if mask is None:
            return np.bincount(self.units, weights=w, minlength=self.k)
        return np.bincount(self.units[mask], weights=w[mask], minlength=self.k)


def _count_columns(
    out: pd.DataFrame,
    a: _Assigned,
    systems: gpd.GeoDataFrame,
    panels: gpd.GeoDataFrame | None,
    res: np.ndarray,
) -> None:
    ar, rs = a.area_m2, a.residential
    out["solar_system_count"] = a.count()
    out["solar_system_count_residential"] = a.count(rs)
    out["solar_system_count_nonresidential"] = a.count(~rs)
    out["total_panel_area"] = a.total(ar)
    out["total_panel_area_residential"] = a.total(ar, rs)
    out["total_panel_area_nonresidential"] = a.total(ar, ~rs)
    if panels is not None:
        for col, vals in _distinct_tile_counts(systems, panels, a.idx, res, a.k).items():
            out[col] = vals
    if "capacity_kw" in systems.columns:
        cap = pd.to_numeric(systems["capacity_kw"], errors="coerce").fillna(0).to_numpy(float)
        out["total_capacity_kw"] = a.total(cap[a.hit])


def _density_columns(
    out: pd.DataFrame,
    unit_m2: np.ndarray,
    scanned_m2: np.ndarray,
    frac: np.ndarray,
    pop: np.ndarray | None,
    hh: np.ndarray | None,
) -> None:
    res_area = out["total_panel_area_residential"].to_numpy()
    all_area = out["total_panel_area"].to_numpy()
    out["total_area"] = unit_m2 / M2_PER_MI2
    out["area_km2"] = unit_m2 / M2_PER_KM2
    out["solar_panel_area_divided_by_area"] = _ratio(res_area, unit_m2 / M2_PER_MI2)
    out["panel_area_m2_per_mi2"] = _ratio(all_area, unit_m2 / M2_PER_MI2)
    out["panel_area_m2_per_km2"] = _ratio(all_area, unit_m2 / M2_PER_KM2)
    out["scanned_area_km2"] = scanned_m2 / M2_PER_KM2
    out["scanned_fraction"] = frac
    out["solar_panel_area_divided_by_scanned_area"] = _ratio(res_area, scanned_m2 / M2_PER_MI2)
    out["panel_area_m2_per_mi2_scanned"] = _ratio(all_area, scanned_m2 / M2_PER_MI2)
    out["panel_area_m2_per_km2_scanned"] = _ratio(all_area, scanned_m2 / M2_PER_KM2)
    if pop is not None:
        out["solar_panel_area_per_capita"] = _ratio(res_area, pop)
        out["panel_area_m2_per_capita"] = _ratio(all_area, pop)
    if hh is not None:
        out["number_of_solar_system_per_household"] = _ratio(
            out["solar_system_count_residential"].to_numpy(float), hh
        )
        out["solar_system_count_per_household"] = _ratio(
            out["solar_system_count"].to_numpy(float), hh
        )


def _numeric_column(units: gpd.GeoDataFrame, col: str | None) -> np.ndarray | None:
    return pd.to_numeric(units[col], errors="coerce").to_numpy(dtype=float) if col else None


def _scan_rule(
    out: pd.DataFrame, scanned_m2: np.ndarray, frac: np.ndarray, cfg: AggregateConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Scan status and note per unit; densities NULL where the unit was not scanned enough.

    Its counts and areas stay: they are what was found in the scanned part.
    """
    out["scanned_area_m2"] = scanned_m2
    status, note = scan_status(frac, cfg.min_scanned_fraction)
    out["scan_status"] = status
    out["scan_note"] = note
    reported = status == SCAN_STATUS_SCANNED
    for col in DENSITY_COLUMNS:
        if col in out.columns:
            out.loc[~reported, col] = np.nan
    return status, reported


def _interval_columns(
    out: pd.DataFrame,
    a: _Assigned,
    geoms: np.ndarray,
    pts: np.ndarray,
    scanned_m2: np.ndarray,
    frac: np.ndarray,
    reported: np.ndarray,
    grid: tuple[int, int] | None,
    detector: DetectorCounts,
    unc: UncertaintyConfig,
) -> None:
    """Totals with error bars where the densities are reported (deepsolar.maps.uncertainty)."""
    cols = INTERVAL_COLUMNS + (CORRECTED_COLUMNS if unc.bias_correction else ())
    for col in cols:
        out[col] = np.nan
    if not reported.any():
        return
    sel = np.flatnonzero(reported)
    inv = np.full(a.k, -1, dtype=np.int64)
    inv[sel] = np.arange(len(sel))
    keep_sys = inv[a.units] >= 0
    tc = out["tile_count"].to_numpy()[sel] if "tile_count" in out.columns else None
    vals = _uncertainty_columns(
        geoms[sel], pts[a.hit][keep_sys], inv[a.units][keep_sys], a.area_m2[keep_sys],
        scanned_m2[sel], frac[sel], tc, grid, detector, unc,
    )  # fmt: skip
    for col in cols:
        out.iloc[sel, out.columns.get_loc(col)] = vals[col]


def _aggregate(
    systems: gpd.GeoDataFrame,
    units: gpd.GeoDataFrame,
    cfg: AggregateConfig,
    pts: np.ndarray,
    coverage: BaseGeometry | None,
    population_column: str | None,
    household_column: str | None,
    panels: gpd.GeoDataFrame | None = None,
    detector: DetectorCounts | None = None,
    grid: tuple[int, int] | None = None,
) -> gpd.GeoDataFrame:
    geoms = _unit_geoms(units)
    area = _system_area(systems, cfg)
    res = _residential(systems, area, cfg)
    pop_col = _unit_column(units, population_column, "population")
    hh_col = _unit_column(units, household_column, "household_count")
    idx = assign_points(pts, geoms, cfg.chunk_size)
    hit = idx >= 0
    a = _Assigned(idx, hit, idx[hit], area[hit], res[hit], len(units))

    out = pd.DataFrame(index=units.index)
    _count_columns(out, a, systems, panels, res)
    unit_m2 = equal_area_m2_array(geoms, LONLAT)
    scanned_m2 = _scanned_area_m2(geoms, unit_m2, coverage)
    frac = np.clip(_ratio(scanned_m2, unit_m2), 0.0, 1.0)
    _density_columns(
        out, unit_m2, scanned_m2, frac,
        _numeric_column(units, pop_col), _numeric_column(units, hh_col),
    )  # fmt: skip
    status, reported = _scan_rule(out, scanned_m2, frac, cfg)
    with_intervals = detector is not None and cfg.uncertainty.enabled
    if with_intervals:
        _interval_columns(
            out, a, geoms, pts, scanned_m2, frac, reported, grid, detector, cfg.uncertainty
        )
    result = _with_units(units, out, geoms)
    _describe(result, a, coverage, cfg, status)
    if with_intervals:
        result.attrs["detector_counts"] = detector.describe()
    return result


def _with_units(units: gpd.GeoDataFrame, out: pd.DataFrame, geoms: np.ndarray) -> gpd.GeoDataFrame:
    keep = [c for c in units.columns if c not in out.columns and c != units.geometry.name]
    return gpd.GeoDataFrame(
        pd.concat([units[keep], out], axis=1),
        geometry=gpd.GeoSeries(geoms, index=units.index, crs=LONLAT),
        crs=LONLAT,
    )


def _describe(
    result: gpd.GeoDataFrame,
    a: _Assigned,
    coverage: BaseGeometry | None,
    cfg: AggregateConfig,
    status: np.ndarray,
) -> None:
    n_un = int((~a.hit).sum())
    result.attrs.update(
        {
            "unassigned_systems": n_un,
            "assigned_systems": int(a.hit.sum()),
            "scanned": "complete inventory assumed" if coverage is None else "tile coverage",
            "assign_by": cfg.assign_by,
            "min_scanned_fraction": cfg.min_scanned_fraction,
            "units_partially_scanned": int((status == SCAN_STATUS_PARTIAL).sum()),
            "units_not_scanned": int((status == SCAN_STATUS_NONE).sum()),
        }
    )
    if n_un:
        log.info("%d of %d systems lie outside every unit", n_un, len(a.idx))


def aggregate_levels(
    systems: gpd.GeoDataFrame,
    units_by_level: Mapping[str, gpd.GeoDataFrame],
    *,
    scanned: ScannedInput = None,
    panels: gpd.GeoDataFrame | None = None,
    population_column: str | None = None,
    household_column: str | None = None,
    config: AggregateConfig | Mapping[str, Any] | None = None,
    detector: DetectorCounts | None = None,
) -> dict[str, gpd.GeoDataFrame]:
    """:func:`aggregate_systems` for several levels, placing systems and coverage only once.

    E.g. ``{"tracts": ..., "counties": ..., "states": ...}``.

    Args:
        systems: Solar systems (polygons or points) with ``area_m2`` (m²).
        units_by_level: Level name -> unit polygons.
        scanned: What was scanned; None: complete inventory.
        panels: Panel pieces with ``system_id`` and ``tile_id``, or None.
        population_column: Units' population column, or None for the default.
        household_column: Units' household count column, or None for the default.
        config: Aggregation settings (a model or a mapping); None: defaults.
        detector: The classifier's validation tile counts, or None.

    Returns:
        Level name -> the aggregated units (see :func:`aggregate_systems`).
    """
    cfg = validate_config(AggregateConfig, config or {}, where="aggregate_levels config")
    pts = system_points(systems, cfg.assign_by)
    coverage = scanned_geometry(scanned)
    grid = tile_grid_of(panels, scanned)
    return {
        name: _aggregate(
            systems,
            units,
            cfg,
            pts,
            coverage,
            population_column if population_column in (None, *units.columns) else None,
            household_column if household_column in (None, *units.columns) else None,
            panels,
            detector,
            grid,
        )
        for name, units in units_by_level.items()
    }


def tiles_frame(tiles: Iterable[Tile], **columns: Any) -> gpd.GeoDataFrame:
    """A ``tiles`` layer: one footprint (EPSG:4326) per tile.

    With ``tile_id``, ``zoom``, ``tile_size_px``, ``x``, ``y``, ``m_per_px`` (ground m/px) and any
    extra per-tile ``columns``.

    Args:
        tiles: The grid tiles.
        **columns: Extra columns, one value per tile.

    Returns:
        The tiles frame in EPSG:4326.
    """
    ts = list(tiles)
    df = pd.DataFrame(
        {
            "tile_id": [t.id for t in ts],
            "zoom": np.array([t.zoom for t in ts], dtype=np.int32),
            "tile_size_px": np.array([t.size_px for t in ts], dtype=np.int32),
            "x": np.array([t.x for t in ts], dtype=np.int64),
            "y": np.array([t.y for t in ts], dtype=np.int64),
            "m_per_px": np.array([t.m_per_px for t in ts], dtype=float),
            **columns,
        }
    )
    return gpd.GeoDataFrame(df, geometry=[box(*t.bounds_lonlat) for t in ts], crs=LONLAT)
