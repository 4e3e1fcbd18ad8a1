"""Web-Mercator tile grid at any zoom and tile size (DeepSolar: zoom 21, 320 px tiles).

A grid tile ``(x, y)`` covers Web-Mercator pixels ``[x*s, (x+1)*s) x [y*s, (y+1)*s)`` of the
zoom-``z`` world image (``256 * 2**z`` pixels wide), with ``s`` the tile size in pixels. With
``s = 256`` this is exactly the standard XYZ ("slippy map") scheme; with DeepSolar's ``s = 320``
each tile is what Google Static Maps returns for ``size=320x320`` centred on the tile centre.

Tile ids are stable strings ``"{zoom}-{size}-{x}-{y}"`` (safe as file names).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import shapely
from affine import Affine
from pydantic import Field
from pyproj import Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import RegionError

EARTH_RADIUS_M = 6378137.0
ORIGIN_SHIFT_M = math.pi * EARTH_RADIUS_M  # half the Web-Mercator world width, 20037508.34 m
MAX_LAT_DEG = 85.0511287798066
WEB_MERCATOR = "EPSG:3857"
LONLAT = "EPSG:4326"

_TO_3857 = Transformer.from_crs(LONLAT, WEB_MERCATOR, always_xy=True)


def world_size_px(zoom: int) -> int:
    """Width of the whole Web-Mercator world image at ``zoom`` in pixels.

    Args:
        zoom: Web-Mercator zoom level.

    Returns:
        The world image width (= height) in px: ``256 * 2**zoom``.
    """
    return 256 * 2**zoom


def mercator_m_per_px(zoom: int) -> float:
    """Projected (EPSG:3857) metres per pixel at ``zoom``; equals ground resolution at the equator.

    Args:
        zoom: Web-Mercator zoom level.

    Returns:
        The projected resolution in EPSG:3857 m/px.
    """
    return 2.0 * ORIGIN_SHIFT_M / world_size_px(zoom)


def ground_resolution_m_per_px(lat_deg: float | np.ndarray, zoom: int) -> float | np.ndarray:
    """True ground size of one pixel at latitude ``lat_deg``: 156543.03392 * cos(lat) / 2**zoom.

    Args:
        lat_deg: Latitude in degrees (a scalar or an array).
        zoom: Web-Mercator zoom level.

    Returns:
        The ground resolution in m/px, a scalar or an array shaped like ``lat_deg``.
    """
    return mercator_m_per_px(zoom) * np.cos(np.radians(lat_deg))


def lonlat_to_mercator(lon: float, lat: float) -> tuple[float, float]:
    """Project a lon/lat point (EPSG:4326) to Web Mercator (EPSG:3857).

    Latitudes beyond ``MAX_LAT_DEG`` are clamped to the edge of the Web-Mercator square.

    Args:
        lon: Longitude in degrees.
        lat: Latitude in degrees.

    Returns:
        ``(x, y)`` in EPSG:3857 metres.
    """
    x = EARTH_RADIUS_M * math.radians(lon)
    lat = max(min(lat, MAX_LAT_DEG), -MAX_LAT_DEG)
    y = EARTH_RADIUS_M * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    return x, y


def mercator_to_lonlat(x: float, y: float) -> tuple[float, float]:
    """Unproject a Web-Mercator point (EPSG:3857) to lon/lat (EPSG:4326).

    Args:
        x: Easting in EPSG:3857 metres.
        y: Northing in EPSG:3857 metres.

    Returns:
        ``(lon, lat)`` in degrees.
    """
    lon = math.degrees(x / EARTH_RADIUS_M)
    lat = math.degrees(2 * math.atan(math.exp(y / EARTH_RADIUS_M)) - math.pi / 2)
    return lon, lat


class TileGridConfig(StrictModel):
    """Which tile grid to use. DeepSolar: zoom 21 (about 0.05-0.07 m/px in the US), 320 px."""

    zoom: int = Field(21, ge=1, le=23, description="Web-Mercator zoom level")
    tile_size_px: int = Field(320, ge=32, le=4096, description="tile width = height in pixels")

    def build(self) -> TileGrid:
        """Make the configured grid.

        Returns:
            A :class:`TileGrid` of this zoom and tile size.
        """
        return TileGrid(self.zoom, self.tile_size_px)


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`."""

    zoom: int
    size_px: int
    x: int
    y: int

    @property
    def id(self) -> str:
        """Stable tile id ``"{zoom}-{size_px}-{x}-{y}"``, safe as a file name."""
        return f"{self.zoom}-{self.size_px}-{self.x}-{self.y}"

    @property
    def mercator_m_per_px(self) -> float:
        """Projected resolution of the tile image in EPSG:3857 m/px (not ground m/px)."""
        return mercator_m_per_px(self.zoom)

    @cached_property
    def bounds_3857(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in EPSG:3857 metres."""
        res = self.mercator_m_per_px
        left = -ORIGIN_SHIFT_M + self.x * self.size_px * res
        top = ORIGIN_SHIFT_M - self.y * self.size_px * res
        return left, top - self.size_px * res, left + self.size_px * res, top

    @cached_property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees (meridians and parallels in Web Mercator)."""
        left, bottom, right, top = self.bounds_3857
        w, s = mercator_to_lonlat(left, bottom)
        e, n = mercator_to_lonlat(right, top)
        return w, s, e, n

    @property
    def center_lonlat(self) -> tuple[float, float]:
        """Tile centre as ``(lon, lat)`` in degrees."""
        left, bottom, right, top = self.bounds_3857
        return mercator_to_lonlat((left + right) / 2, (bottom + top) / 2)

    @property
    def m_per_px(self) -> float:
        """Ground resolution at the tile centre (metres per pixel on the ground)."""
        return float(ground_resolution_m_per_px(self.center_lonlat[1], self.zoom))

    @property
    def pixel_area_m2(self) -> float:
        """Ground area of one pixel at the tile centre in m²."""
        return self.m_per_px**2

    @property
    def width_m(self) -> float:
        """Ground width of the tile at its centre latitude in metres."""
        return self.m_per_px * self.size_px

    @property
    def transform_3857(self) -> Affine:
        """Affine pixel -> EPSG:3857 transform of the tile image."""
        left, _, _, top = self.bounds_3857
        res = self.mercator_m_per_px
        return Affine(res, 0.0, left, 0.0, -res, top)

    def footprint(self) -> BaseGeometry:
        """Tile outline as a lon/lat polygon.

        Returns:
            The tile's bounding box polygon in EPSG:4326 degrees.
        """
        return box(*self.bounds_lonlat)

    def footprint_3857(self) -> BaseGeometry:
        """Tile outline as a Web-Mercator polygon.

        Returns:
            The tile's bounding box polygon in EPSG:3857 metres.
        """
        return box(*self.bounds_3857)

    def pixel_origin(self) -> tuple[int, int]:
        """Global Web-Mercator pixel coordinate of the tile's top-left corner at its zoom.

        Returns:
            ``(column, row)`` in px of the zoom-level world image.
        """
        return self.x * self.size_px, self.y * self.size_px


@dataclass(frozen=True)
class TileGrid:
    """A Web-Mercator tile grid: ``zoom`` and square tiles of ``tile_size_px`` pixels."""

    zoom: int = 21
    tile_size_px: int = 320

    def __post_init__(self) -> None:
        TileGridConfig(zoom=self.zoom, tile_size_px=self.tile_size_px)  # validates ranges

    @property
    def tile_span_m(self) -> float:
        """Width of one tile in EPSG:3857 metres."""
        return self.tile_size_px * mercator_m_per_px(self.zoom)

    @property
    def n_tiles(self) -> int:
        """Tiles per row (and per column) covering the world."""
        return math.ceil(world_size_px(self.zoom) / self.tile_size_px)

    def tile(self, x: int, y: int) -> Tile:
        """The tile at grid index ``(x, y)``.

        Args:
            x: Tile column, 0 at the antimeridian (west edge), counted eastwards.
            y: Tile row, 0 at the north edge (latitude ``MAX_LAT_DEG``), counted southwards.

        Returns:
            The :class:`Tile` of this grid.

        Raises:
            RegionError: If ``(x, y)`` lies outside the grid.
        """
        if not (0 <= x < self.n_tiles and 0 <= y < self.n_tiles):
            raise RegionError(
                f"tile ({x}, {y}) is outside the zoom-{self.zoom} grid of {self.n_tiles} tiles a side",
                fix="use tile numbers from this grid's zoom and tile size",
            )
        return Tile(self.zoom, self.tile_size_px, x, y)

    def tile_from_id(self, tile_id: str) -> Tile:
        """Parse a tile id of this grid back into its :class:`Tile`.

        Args:
            tile_id: Id of the form ``"{zoom}-{size_px}-{x}-{y}"`` (see :attr:`Tile.id`).

        Returns:
            The tile the id names.

        Raises:
            RegionError: If the id is malformed, belongs to another zoom or tile size, or lies
                outside the grid.
        """
        try:
            z, s, x, y = (int(p) for p in tile_id.split("-"))
        except ValueError:
            raise RegionError(
                f"malformed tile id {tile_id!r}", fix="tile ids look like '21-320-x-y'"
            ) from None
        if (z, s) != (self.zoom, self.tile_size_px):
            raise RegionError(
                f"tile {tile_id} belongs to grid z{z}/{s}px, not z{self.zoom}/{self.tile_size_px}px",
                fix="use the grid the tiles were made with",
            )
        return self.tile(x, y)

    def _xy_index(self, mx: float, my: float) -> tuple[float, float]:
        """Fractional tile index of an EPSG:3857 point."""
        span = self.tile_span_m
        return (mx + ORIGIN_SHIFT_M) / span, (ORIGIN_SHIFT_M - my) / span

    def tile_at(self, lon: float, lat: float) -> Tile:
        """The tile containing a lon/lat point.

        Args:
            lon: Longitude in degrees.
            lat: Latitude in degrees (clamped to +/-``MAX_LAT_DEG``).

        Returns:
            The tile whose area contains the point.
        """
        fx, fy = self._xy_index(*lonlat_to_mercator(lon, lat))
        return self.tile(
            min(int(math.floor(fx)), self.n_tiles - 1), min(int(math.floor(fy)), self.n_tiles - 1)
        )

    def tiles_for_bbox(
        self, west: float, south: float, east: float, north: float
    ) -> Iterator[Tile]:
        """All tiles intersecting a lon/lat bounding box (row by row, west to east).

        Args:
            west: West edge in degrees longitude.
            south: South edge in degrees latitude.
            east: East edge in degrees longitude.
            north: North edge in degrees latitude.

        Yields:
            Each intersecting tile once.

        Raises:
            RegionError: If the box is empty or inverted, or lies outside the tile grid.
        """
        if not (west < east and south < north):
            raise RegionError(
                f"empty or inverted bbox ({west}, {south}, {east}, {north})",
                fix="give the bbox as west, south, east, north in degrees with west < east, south < north",
            )
        yield from self.tiles_for_geometry(box(west, south, east, north))

    def tiles_for_geometry(self, geom: BaseGeometry) -> Iterator[Tile]:
        """Tiles whose interior intersects ``geom`` (lon/lat, EPSG:4326), row by row.

        Works a row at a time: the geometry is clipped to each row's strip, and every tile column
        inside the x-extent of each connected piece of the clip intersects that piece (a connected
        set inside one row covers every column of its x-projection), so no per-tile test is needed
        and memory does not grow with the area.

        Args:
            geom: A (multi)polygon in EPSG:4326 degrees.

        Yields:
            Each tile whose interior intersects ``geom``, once.

        Raises:
            RegionError: If ``geom`` is empty, not a polygon, invalid, not in degrees, or
                lies beyond the latitudes the grid covers.
        """
        g = _to_mercator_checked(geom)
        yield from self._tiles_for_mercator(g)

    def count_tiles(self, geom: BaseGeometry, limit: int | None = None) -> int:
        """Number of tiles covering ``geom``, counted a row at a time (never enumerated).

        With ``limit``, stop as soon as the answer is known to exceed it and return a number
        above ``limit`` (a lower bound of the true count): first from the area alone (the tiles
        covering a region cover at least its area), then while counting rows. So a job of the
        whole world at zoom 23 is refused in microseconds instead of minutes.

        Args:
            geom: A (multi)polygon in EPSG:4326 degrees.
            limit: Stop counting once the count exceeds this many tiles; ``None`` counts all.

        Returns:
            The number of tiles, or with ``limit`` possibly a lower bound above ``limit``.

        Raises:
            RegionError: If ``geom`` is empty, not a polygon, invalid, not in degrees, or
                lies beyond the latitudes the grid covers.
        """
        g = _to_mercator_checked(geom)
        if limit is not None:
            at_least = math.floor(g.area / self.tile_span_m**2)
            if at_least > limit:
                return at_least
        n = 0
        for _, spans in self._row_spans(g):
            n += sum(x1 - x0 for x0, x1 in spans)
            if limit is not None and n > limit:
                return n
        return n

    def _row_spans(self, g: BaseGeometry) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        span = self.tile_span_m
        minx, miny, maxx, maxy = g.bounds
        _, fy0 = self._xy_index(minx, maxy)
        _, fy1 = self._xy_index(maxx, miny)
        y0 = max(int(math.floor(fy0)), 0)
        y1 = min(int(math.ceil(fy1)), self.n_tiles)
        shapely.prepare(g)
        for y in range(y0, y1):
            top = ORIGIN_SHIFT_M - y * span
            strip = box(minx - span, top - span, maxx + span, top)
            piece = g.intersection(strip)
            if piece.is_empty:
                continue
            parts = getattr(piece, "geoms", [piece])
            spans: list[tuple[int, int]] = []
            for part in parts:
                if part.is_empty or part.area == 0:  # edge-only contact is not coverage
                    continue
                pminx, _, pmaxx, _ = part.bounds
                x0 = max(int(math.floor((pminx + ORIGIN_SHIFT_M) / span)), 0)
                x1 = min(int(math.ceil((pmaxx + ORIGIN_SHIFT_M) / span)), self.n_tiles)
                spans.append((x0, x1))
            yield y, _merge_spans(spans)

    def _tiles_for_mercator(self, g: BaseGeometry) -> Iterator[Tile]:
        for y, spans in self._row_spans(g):
            for x0, x1 in spans:
                for x in range(x0, x1):
                    yield Tile(self.zoom, self.tile_size_px, x, y)


def _merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge overlapping half-open [x0, x1) spans so no tile is listed twice."""
    merged: list[tuple[int, int]] = []
    for x0, x1 in sorted(spans):
        if merged and x0 <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], x1))
        else:
            merged.append((x0, x1))
    return merged


def _to_mercator_checked(geom: BaseGeometry) -> BaseGeometry:
    if geom is None or geom.is_empty:
        raise RegionError("the region geometry is empty", fix="pass a non-empty polygon or bbox")
    if geom.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection"):
        raise RegionError(
            f"a region must be a polygon, got {geom.geom_type}",
            fix="buffer points or lines into polygons, or pass a bbox",
        )
    if not geom.is_valid:
        raise RegionError(
            f"the region geometry is invalid ({shapely.is_valid_reason(geom)})",
            fix="repair it (e.g. shapely.make_valid or QGIS 'Fix geometries') and try again",
        )
    w, s, e, n = geom.bounds
    if w < -180 or e > 180 or s < -90 or n > 90:
        raise RegionError(
            f"region bounds {geom.bounds} are not longitude/latitude degrees",
            fix="reproject the boundary to EPSG:4326 (boundaries loaded by deepsolar are reprojected for you)",
        )
    clipped = geom.intersection(box(-180, -MAX_LAT_DEG, 180, MAX_LAT_DEG))
    if clipped.is_empty or clipped.area == 0:
        raise RegionError(
            f"the region (lat {s:.4f}..{n:.4f}) lies beyond latitude +/-{MAX_LAT_DEG:.4f}, "
            "where the Web-Mercator tile grid ends",
            fix="choose a region between latitudes -85.05 and 85.05 (no imagery source on this "
            "grid has tiles nearer the poles)",
        )
    return _project(clipped)


def _project(clipped: BaseGeometry) -> BaseGeometry:
    return shapely.transform(
        clipped, lambda c: np.column_stack(_TO_3857.transform(c[:, 0], c[:, 1]))
    )
