"""Seeded SYNTHETIC aerial scene with exact PV ground truth (the embedded offline default).

``generate_scene(config, out_dir)`` renders a georeferenced RGB orthophoto (Cloud-Optimised
GeoTIFF) at DeepSolar's ground resolution (Web-Mercator zoom 21, about 0.06 m/px at 35 deg N) over
a real place inside the built-in Albuquerque census tracts, plus:

* ``synthetic_truth.gpkg``: layer ``panels`` (one (multi)polygon per PV array, EPSG:4326) and
  layer ``lookalikes`` (dark non-PV objects that look like panels: dark roofs, skylights, dark
  cars, pools);
* ``synthetic_pv_mask.tif``: 1 where a PV pixel is visible (panels minus tree canopies);
* ``synthetic_labels.tif``: a class per pixel (:class:`Label`);
* ``scene.json``: what was generated, with which parameters, and checksums.

Everything is labelled SYNTHETIC (file names, GeoTIFF tags, GeoPackage column, metadata). The
scene is fully determined by the config (seed included): same config, same bytes.

Rendering is plain numpy + OpenCV in pixel space. Layout happens first (consuming the seeded
random generator in a fixed order) and records drawing commands by stage; the stages then paint
in painter's order (ground, paving, cars, building shadows, roofs, PV, tree shadows, trees), so
trees hide parts of some arrays exactly as the truth mask says.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

import cv2
import geopandas as gpd
import numpy as np
import pandas
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from pydantic import Field, field_validator
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from rasterio.enums import ColorInterp
from rasterio.features import rasterize
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from deepsolar.core.config import StrictModel, validate_config
from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.geo.tiling import (
    ORIGIN_SHIFT_M,
    WEB_MERCATOR,
    ground_resolution_m_per_px,
    lonlat_to_mercator,
    mercator_m_per_px,
)

GENERATOR_NAME = "deepsolar.synthetic"
GENERATOR_VERSION = "1.0"
SYNTHETIC_LABEL = "SYNTHETIC"
LONLAT = "EPSG:4326"
EQUAL_AREA_CRS = "EPSG:5070"  # CONUS Albers: areas of the truth polygons

# A point in Albuquerque's NE Heights where four tracts of libpysal's built-in "10740" tracts
# (35001000113-116) meet within ~40 m, so even a small scene spans several tracts.
DEFAULT_CENTER_LON = -106.5155
DEFAULT_CENTER_LAT = 35.1089

# Map (horizontal) area of one array, as the orthophoto shows it.
RESIDENTIAL_AREA_RANGE_M2 = (10.0, 60.0)
COMMERCIAL_AREA_RANGE_M2 = (100.0, 10000.0)

IMAGE_NAME = "synthetic_scene.tif"
TRUTH_NAME = "synthetic_truth.gpkg"
MASK_NAME = "synthetic_pv_mask.tif"
LABELS_NAME = "synthetic_labels.tif"
METADATA_NAME = "scene.json"


class Label(IntEnum):
    """Class of each pixel in ``synthetic_labels.tif`` (after occlusion: what is visible)."""

    GROUND = 0
    PAVED = 1
    ROOF = 2
    PV = 3
    TREE = 4
    SKYLIGHT = 5
    CAR = 6
    POOL = 7
    DARK_ROOF = 8
    ROOF_EQUIPMENT = 9


class SyntheticSceneConfig(StrictModel):
    """What to generate. Defaults: a 6400 x 6400 px (about 390 m) scene in Albuquerque, NM."""

    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="random seed: the scene is a function of it"
    )
    center_lon: float = Field(DEFAULT_CENTER_LON, ge=-180, le=180)
    center_lat: float = Field(DEFAULT_CENTER_LAT, ge=-80, le=80)
    width_px: int = Field(6400, ge=256, le=16384)
    height_px: int = Field(6400, ge=256, le=16384)
    zoom: int = Field(
        21, ge=18, le=23, description="ground resolution = zoom-z Web-Mercator pixels"
    )
    crs: str = Field(
        WEB_MERCATOR,
        description="EPSG:3857 (pixel grid = the zoom's Web-Mercator grid) or any projected metric CRS",
    )
    superblock_m: float = Field(
        150.0, ge=80, le=500, description="spacing of the arterial road grid"
    )
    commercial_share: float = Field(
        0.35, ge=0, le=1, description="share of super-blocks that are commercial"
    )
    residential_pv_share: float = Field(
        0.3, ge=0, le=1, description="share of houses with a PV array"
    )
    dark_roof_share: float = Field(
        0.2, ge=0, le=1, description="share of roofs with a dark (PV-coloured) cover"
    )
    pool_share: float = Field(0.2, ge=0, le=1, description="share of houses with a pool")
    skylight_share: float = Field(0.25, ge=0, le=1, description="share of roofs with skylights")
    trees_per_lot: float = Field(1.6, ge=0, le=10, description="mean number of trees per house lot")
    occluding_tree_share: float = Field(
        0.3, ge=0, le=1, description="share of residential arrays with a tree overhanging them"
    )
    sun_azimuth_deg: float | None = Field(
        None, ge=0, lt=360, description="None: drawn from the seed"
    )
    sun_elevation_deg: float | None = Field(
        None, ge=15, le=85, description="None: drawn from the seed"
    )
    compress: Literal["deflate", "zstd", "jpeg"] = Field(
        "deflate", description="GeoTIFF compression of the image (deflate and zstd are lossless)"
    )

    @field_validator("crs")
    @classmethod
    def _projected_metric_crs(cls, value: str) -> str:
        try:
            crs = CRS.from_user_input(value)
        except CRSError as err:
            raise ValueError(f"not a CRS pyproj understands ({err})") from None
        if not crs.is_projected:
            raise ValueError("must be a projected CRS in metres (e.g. EPSG:3857 or a UTM zone)")
        units = {ax.unit_name for ax in crs.axis_info}
        if units - {"metre", "meter"}:
            raise ValueError(f"must have metre axes, has {sorted(units)}")
        return value


@dataclass(frozen=True)
class SceneResult:
    """Paths and georeference of a generated scene (all files SYNTHETIC)."""

    image_path: Path
    truth_path: Path
    truth_mask_path: Path
    labels_path: Path
    metadata_path: Path
    crs: str
    bounds: tuple[float, float, float, float]  # (left, bottom, right, top) in ``crs``
    bounds_lonlat: tuple[float, float, float, float]  # (west, south, east, north)
    transform: Affine
    width_px: int
    height_px: int
    m_per_px: float  # ground metres per pixel at the scene centre
    n_arrays: int
    n_lookalikes: int


# ----------------------------------------------------------------------------------------------
# Small geometry helpers (pixel space: pixel (col, row) covers [col, col+1) x [row, row+1))


def _rect_uv(u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], dtype=float)


class _Frame:
    """Local metric frame: ``u`` along ``angle`` in pixel space, ``v`` 90 deg clockwise of it."""

    __slots__ = ("ox", "oy", "a", "s", "ca", "sa")

    def __init__(self, ox: float, oy: float, angle: float, s: float) -> None:
        self.ox, self.oy, self.a, self.s = float(ox), float(oy), float(angle), float(s)
        self.ca, self.sa = math.cos(angle), math.sin(angle)

    def px(self, uv: Any) -> np.ndarray:
        uv = np.asarray(uv, dtype=float)
        u, v = uv[..., 0], uv[..., 1]
        return np.stack(
            [
                self.ox + self.s * (u * self.ca - v * self.sa),
                self.oy + self.s * (u * self.sa + v * self.ca),
            ],
            axis=-1,
        )

    def sub(self, u: float, v: float, dangle: float = 0.0) -> _Frame:
        x, y = self.px([u, v])
        return _Frame(x, y, self.a + dangle, self.s)

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
        return self.px(_rect_uv(u0, v0, u1, v1))

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = (x - self.ox) / self.s, (y - self.oy) / self.s
        return dx * self.ca + dy * self.sa, -dx * self.sa + dy * self.ca

    def vec(self, du: float, dv: float) -> np.ndarray:
        """Pixel-space direction (unit per metre) of a local displacement."""
        return np.array([du * self.ca - dv * self.sa, du * self.sa + dv * self.ca]) * self.s


def _rings(geom: BaseGeometry | np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(geom, np.ndarray):
        return [geom]
    if isinstance(geom, BaseGeometry):
        out: list[np.ndarray] = []
        for poly in getattr(geom, "geoms", [geom]):
            if poly.is_empty or poly.geom_type != "Polygon":
                continue
            out.append(np.asarray(poly.exterior.coords)[:-1, :2])
            out.extend(np.asarray(r.coords)[:-1, :2] for r in poly.interiors)
        return out
    return [np.asarray(g, dtype=float) for g in geom]


def _rounded_rect(frame: _Frame, length: float, width: float, r: float) -> np.ndarray:
    """Rect centred on the frame origin with chamfered corners (cars, pools)."""
    a, b = length / 2, width / 2
    c = min(r, a, b) * 0.9
    pts = [
        (-a + c, -b),
        (a - c, -b),
        (a, -b + c),
        (a, b - c),
        (a - c, b),
        (-a + c, b),
        (-a, b - c),
        (-a, -b + c),
    ]
    return frame.px(pts)


def _translate(pts: np.ndarray, vec: np.ndarray) -> np.ndarray:
    return pts + vec[None, :]


def _hull(*point_sets: np.ndarray) -> np.ndarray:
    pts = np.concatenate(point_sets).astype(np.float32)
    return cv2.convexHull(pts).reshape(-1, 2).astype(float)


# ----------------------------------------------------------------------------------------------
# Canvas: the image, the label map, textures and painting primitives


@dataclass
class _Roi:
    y0: int
    y1: int
    x0: int
    x1: int
    m: np.ndarray  # bool mask of the ROI

    @property
    def sl(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def _periodic_noise(
    rng: np.random.Generator, n: int, cells: Sequence[int], weights: Sequence[float]
) -> np.ndarray:
    """Seamlessly tileable fractal noise (n x n, zero mean, unit std)."""
    acc = np.zeros((n, n), np.float32)
    for cell, w in zip(cells, weights, strict=True):
        k = max(n // cell, 2)
        low = rng.standard_normal((k, k)).astype(np.float32)
        big = cv2.resize(np.tile(low, (3, 3)), (3 * n, 3 * n), interpolation=cv2.INTER_CUBIC)
        acc += w * big[n : 2 * n, n : 2 * n]
    acc -= acc.mean()
    return acc / (acc.std() + 1e-6)


class _Canvas:
    def __init__(self, h: int, w: int, s: float, sun: _Sun, seed: int) -> None:
        self.h, self.w, self.s, self.sun = h, w, s, sun
        self.img = np.zeros((h, w, 3), np.uint8)
        self.label = np.zeros((h, w), np.uint8)
        rng = np.random.default_rng([seed, 7])
        self.fine = _periodic_noise(rng, 512, (2, 4, 8), (0.5, 0.35, 0.25))
        self.coarse = _periodic_noise(rng, 1024, (24, 64, 160), (0.35, 0.4, 0.5))
        self.leaf = _periodic_noise(rng, 512, (4, 8, 16), (0.45, 0.45, 0.3))

    # -- regions
    def roi(self, geom: Any, *, exact: bool = False) -> _Roi | None:
        """Rasterise polygon rings into a ROI mask (``exact``: GDAL's unbiased centre rule)."""
        rings = [r for r in _rings(geom) if len(r) >= 3]
        if not rings:
            return None
        pts = np.concatenate(rings)
        x0 = max(int(math.floor(pts[:, 0].min())) - 1, 0)
        x1 = min(int(math.ceil(pts[:, 0].max())) + 1, self.w)
        y0 = max(int(math.floor(pts[:, 1].min())) - 1, 0)
        y1 = min(int(math.ceil(pts[:, 1].max())) + 1, self.h)
        if x1 - x0 < 1 or y1 - y0 < 1:
            return None
        if exact:
            geom_px = geom if isinstance(geom, BaseGeometry) else Polygon(rings[0])
            m = rasterize(
                [geom_px],
                out_shape=(y1 - y0, x1 - x0),
                transform=Affine.translation(x0, y0),
                dtype=np.uint8,
            )
        else:
            m = np.zeros((y1 - y0, x1 - x0), np.uint8)
            pts_i = [np.round((r - (x0 + 0.5, y0 + 0.5)) * 16).astype(np.int32) for r in rings]
            cv2.fillPoly(m, pts_i, 1, cv2.LINE_8, 4)
        mb = m.astype(bool)
        if not mb.any():
            return None
        return _Roi(y0, y1, x0, x1, mb)

    def centres(self, r: _Roi) -> tuple[np.ndarray, np.ndarray]:
        xs = np.arange(r.x0, r.x1, dtype=np.float32) + 0.5
        ys = np.arange(r.y0, r.y1, dtype=np.float32) + 0.5
        return np.meshgrid(xs, ys)

    def tex(self, bank: np.ndarray, r: _Roi, key: int) -> np.ndarray:
        n = bank.shape[0]
        oy, ox = (key * 7919) % n, (key * 104729) % n
        rows = (np.arange(r.y0, r.y1) + oy) % n
        cols = (np.arange(r.x0, r.x1) + ox) % n
        return bank[np.ix_(rows, cols)]

    # -- painting
    def put(
        self, r: _Roi, colour: np.ndarray, label: int | None, alpha: float | np.ndarray = 1.0
    ) -> None:
        """Write a (h, w, 3) or (3,) colour into the ROI's mask."""
        sub = self.img[r.sl]
        col = np.asarray(colour, np.float32)
        if np.ndim(alpha) == 0 and alpha >= 1.0:
            src = np.clip(col, 0, 255).astype(np.uint8)
            np.copyto(sub, np.broadcast_to(src, sub.shape), where=r.m[..., None])
        else:
            col = np.broadcast_to(col, sub.shape)
            a = np.broadcast_to(np.asarray(alpha, np.float32), sub.shape[:2])[r.m][:, None]
            sub[r.m] = np.clip(sub[r.m] * (1 - a) + col[r.m] * a, 0, 255).astype(np.uint8)
        if label is not None:
            np.copyto(self.label[r.sl], np.uint8(label), where=r.m)

    def fill(
        self,
        geom: Any,
        colour: Sequence[float],
        label: int | None = None,
        *,
        coarse: float = 0.0,
        fine: float = 0.0,
        key: int = 0,
        alpha: float = 1.0,
        exact: bool = False,
    ) -> _Roi | None:
        r = self.roi(geom, exact=exact)
        if r is None:
            return None
        col = np.asarray(colour, np.float32)
        if coarse or fine:
            mod = (
                1.0
                + coarse * self.tex(self.coarse, r, key)
                + fine * self.tex(self.fine, r, key + 1)
            )
            col = col[None, None, :] * mod[..., None]
        self.put(r, col, label, alpha)
        return r

    def shade(self, geom: Any, factor: Sequence[float] | float) -> None:
        r = self.roi(geom)
        if r is None:
            return
        sub = self.img[r.sl]
        f = np.broadcast_to(np.asarray(factor, np.float32), (3,))
        sub[r.m] = np.clip(sub[r.m] * f, 0, 255).astype(np.uint8)

    def line(
        self, p0: Sequence[float], p1: Sequence[float], colour: Sequence[float], width_px: float
    ) -> None:
        a = np.round((np.asarray(p0) - 0.5) * 16).astype(int)
        b = np.round((np.asarray(p1) - 0.5) * 16).astype(int)
        cv2.line(
            self.img,
            tuple(int(t) for t in a),
            tuple(int(t) for t in b),
            tuple(float(c) for c in colour),
            max(1, round(width_px)),
            cv2.LINE_AA,
            4,
        )


@dataclass(frozen=True)
class _Sun:
    azimuth_deg: float  # clockwise from north, where the sun is
    elevation_deg: float

    @property
    def vec3(self) -> np.ndarray:
        """Unit vector towards the sun in (east, north, up)."""
        a, e = math.radians(self.azimuth_deg), math.radians(self.elevation_deg)
        return np.array([math.cos(e) * math.sin(a), math.cos(e) * math.cos(a), math.sin(e)])

    def shadow_px(self, s: float) -> np.ndarray:
        """Pixel offset of the shadow of a point 1 m above the ground."""
        a, e = math.radians(self.azimuth_deg), math.radians(self.elevation_deg)
        return np.array([-math.sin(a), math.cos(a)]) * s / math.tan(e)

    def plane_factor(self, down_px: np.ndarray, pitch_deg: float) -> float:
        """Brightness of a plane (downslope direction in pixel space) relative to flat ground."""
        d = down_px / (np.linalg.norm(down_px) + 1e-9)
        p = math.radians(pitch_deg)
        normal = np.array(
            [math.sin(p) * d[0], -math.sin(p) * d[1], math.cos(p)]
        )  # pixel y is south
        amb = 0.38
        lit = amb + (1 - amb) * max(float(normal @ self.vec3), 0.0)
        flat = amb + (1 - amb) * self.vec3[2]
        return float(np.clip(lit / flat, 0.55, 1.3))


SHADOW = (0.42, 0.44, 0.50)  # shadows are lit by the blue sky only
TREE_SHADOW = (0.50, 0.52, 0.57)

# ----------------------------------------------------------------------------------------------
# Palettes (RGB). Dark entries deliberately overlap the PV palette.

PITCHED_ROOF = [
    ((150, 148, 143), 3),
    ((122, 104, 86), 2),
    ((172, 152, 124), 3),
    ((168, 98, 68), 2),
    ((138, 84, 64), 1),
    ((110, 112, 114), 2),
    ((92, 98, 108), 1),
    ((182, 178, 168), 1),
]
FLAT_ROOF = [((196, 176, 146), 4), ((214, 212, 204), 3), ((172, 170, 164), 2), ((160, 146, 126), 2)]
COMMERCIAL_ROOF = [
    ((222, 224, 221), 3),
    ((186, 186, 182), 3),
    ((150, 147, 140), 2),
    ((200, 190, 170), 1),
]
DARK_ROOF = [  # neutral dark covers: asphalt shingle, tar, EPDM, dark slate
    ((36, 37, 40), 3),
    ((52, 53, 57), 3),
    ((44, 49, 62), 2),
    ((60, 50, 44), 1),
    ((70, 72, 76), 1),
    ((24, 30, 48), 2),
    ((32, 44, 76), 1),
]
PV_STYLES = [  # base colour, frame colour, cell grid (across, along), cell line contrast
    ((21, 24, 33), (28, 30, 34), (6, 10), 0.05),  # all-black mono
    ((24, 31, 52), (150, 154, 160), (6, 10), 0.10),  # mono, silver frame
    ((36, 54, 96), (160, 164, 170), (6, 10), 0.22),  # polycrystalline blue
    ((30, 42, 74), (140, 144, 150), (6, 10), 0.16),  # dark poly
    ((38, 40, 48), (60, 62, 66), (1, 1), 0.0),  # thin film
]
SKYLIGHT_GLASS = [
    (30, 36, 50),
    (42, 50, 66),
    (26, 30, 38),
    (28, 40, 72),
    (36, 52, 92),
    (24, 32, 56),
]
CAR_COLOURS = [
    ((226, 226, 224), 4),
    ((178, 180, 183), 4),
    ((112, 114, 118), 3),
    ((24, 25, 28), 4),
    ((30, 38, 70), 2),
    ((150, 28, 30), 2),
    ((42, 72, 140), 1),
    ((190, 176, 150), 1),
    ((34, 54, 44), 1),
]
TREE_GREENS = [(72, 88, 50), (58, 76, 46), (88, 98, 62), (62, 72, 42), (44, 58, 42), (80, 92, 70)]


def _pick(rng: np.random.Generator, palette: list[tuple[tuple[int, int, int], int]]) -> np.ndarray:
    w = np.array([p[1] for p in palette], float)
    i = int(rng.choice(len(palette), p=w / w.sum()))
    return np.array(palette[i][0], np.float32) * rng.uniform(0.94, 1.06)


def _dark_colour(rng: np.random.Generator, pv_like_p: float = 0.55) -> tuple[np.ndarray, bool]:
    """A dark roof colour: neutral, or drawn from the PV module colours (blue-black metal, slate).

    Returns (colour, pv_like).
    """
    if rng.random() < pv_like_p:
        base = np.array(PV_STYLES[int(rng.integers(len(PV_STYLES)))][0], np.float32)
        return base * rng.uniform(0.95, 1.35), True
    return _pick(rng, DARK_ROOF), False


def _luma(c: Sequence[float]) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


# ----------------------------------------------------------------------------------------------
# Scene objects that become truth


@dataclass
class _PVBlock:
    frame: _Frame  # origin at a block corner, u along module columns
    nc: int
    nr: int
    mu: float  # module footprint along u (m)
    mv: float  # module footprint along v (m, projected)

    def corners(self) -> np.ndarray:
        return self.frame.rect(0, 0, self.nc * self.mu, self.nr * self.mv)

    def polygon(self) -> Polygon:
        return Polygon(self.corners())

    @property
    def area_m2(self) -> float:
        return self.nc * self.nr * self.mu * self.mv


@dataclass
class _PVArray:
    kind: Literal["residential", "commercial"]
    mount: Literal["pitched_roof", "flat_roof", "ground", "carport"]
    blocks: list[_PVBlock]
    style: int
    light: float  # brightness factor from the tilt towards the sun
    rack_height_m: float  # for the shadow under/behind the modules
    seed: int
    array_id: int = -1
    footprint_px: int = 0
    visible_px: int = 0
    roi: _Roi | None = None

    def polygon(self) -> BaseGeometry:
        # snap to 1e-4 px so blocks that share an edge merge exactly (no slivers, valid output)
        return shapely.union_all([b.polygon() for b in self.blocks], grid_size=1e-4)

    @property
    def n_modules(self) -> int:
        return sum(b.nc * b.nr for b in self.blocks)


@dataclass
class _Lookalike:
    kind: Literal["dark_roof", "skylight", "car", "pool"]
    polygon: Polygon


@dataclass
class _Scene:
    canvas: _Canvas
    rng: np.random.Generator
    cfg: SyntheticSceneConfig
    s: float  # pixels per metre
    sun: _Sun
    commands: list[tuple[float, int, Callable[[_Canvas], None]]] = field(default_factory=list)
    arrays: list[_PVArray] = field(default_factory=list)
    lookalikes: list[_Lookalike] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    no_scrub: list[Polygon] = field(default_factory=list)  # maintained ground: fields, parcels

    def draw(self, stage: float, fn: Callable[[_Canvas], None]) -> None:
        self.commands.append((stage, len(self.commands), fn))

    def key(self) -> int:
        return int(self.rng.integers(0, 2**31 - 1))

    def count(self, what: str, pts: np.ndarray | None = None) -> None:
        """Count an object for the metadata if it shows in the scene (``pts``: its outline)."""
        if pts is None or self.visible(pts):
            self.counts[what] = self.counts.get(what, 0) + 1

    def inside(self, pts: np.ndarray, margin_px: float = 2.0) -> bool:
        return bool(
            (pts[:, 0] >= margin_px).all()
            and (pts[:, 0] <= self.canvas.w - margin_px).all()
            and (pts[:, 1] >= margin_px).all()
            and (pts[:, 1] <= self.canvas.h - margin_px).all()
        )

    def visible(self, pts: np.ndarray, pad_px: float = 0.0) -> bool:
        return bool(
            pts[:, 0].max() >= -pad_px
            and pts[:, 0].min() <= self.canvas.w + pad_px
            and pts[:, 1].max() >= -pad_px
            and pts[:, 1].min() <= self.canvas.h + pad_px
        )


# Stages (painter's order)
ST_YARD, ST_POOL = 0.0, 0.5
ST_LOCAL_WALK, ST_LOCAL_ROAD, ST_ART_WALK, ST_ART_ROAD, ST_LOT, ST_LANDSCAPE, ST_DRIVE = (
    1.0,
    1.1,
    1.2,
    1.3,
    1.4,
    1.45,
    1.5,
)
ST_MARK, ST_WALL_SHADOW, ST_WALL = 2.0, 2.4, 2.5
ST_CAR_SHADOW, ST_CAR = 3.0, 3.1
ST_BLD_SHADOW, ST_ROOF, ST_ROOF_DETAIL, ST_PV = 4.0, 5.0, 5.5, 6.0
ST_TREE_SHADOW, ST_TREE = 7.0, 8.0


# ----------------------------------------------------------------------------------------------
# Primitive drawers (closures run at render time with their own seeded generator)


def _draw_ground(cv: _Canvas, rng: np.random.Generator) -> None:
    """Arid ground: sandy soil with greyer patches, fine mottling and per-pixel grain.

    The smooth colour field is computed at 1/4 resolution and upsampled; only the mottling and
    grain are per pixel (strip by strip, to keep memory low).
    """
    h, w, s = cv.h, cv.w, cv.s
    hs, ws = max(h // 4, 2), max(w // 4, 2)

    def field(cell_m: float, out_hw: tuple[int, int]) -> np.ndarray:
        cell = max(cell_m * s * out_hw[1] / w, 2.0)
        k = (max(int(out_hw[0] / cell) + 2, 2), max(int(out_hw[1] / cell) + 2, 2))
        low = rng.standard_normal(size=k).astype(np.float32)
        return cv2.resize(low, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_CUBIC)

    lo, mi = field(30.0, (hs, ws)), field(4.0, (hs, ws))
    soil = np.array([182, 162, 134], np.float32) * rng.uniform(0.95, 1.04, 3).astype(np.float32)
    dry = np.array([166, 160, 132], np.float32)  # greyer, sparsely vegetated patches
    mix = np.clip(mi * 0.6 + lo * 0.4, 0, 1)[..., None]
    lum = (1 + 0.06 * lo + 0.035 * mi)[..., None]
    small = np.clip((soil * (1 - mix) + dry * mix) * lum, 0, 255).astype(np.uint8)
    base = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    k = (max(int(h / (0.35 * s)) + 2, 2), max(int(w / (0.35 * s)) + 2, 2))
    spot = cv2.resize(
        rng.integers(0, 256, size=k, dtype=np.uint8), (w, h), interpolation=cv2.INTER_LINEAR
    )
    strip = 1024
    for y0 in range(0, h, strip):
        y1 = min(y0 + strip, h)
        noise = (spot[y0:y1].astype(np.int16) - 128) // 24  # +-5 levels of mottling
        noise += rng.integers(-4, 5, size=(y1 - y0, w), dtype=np.int16)
        cv.img[y0:y1] = np.clip(base[y0:y1].astype(np.int16) + noise[..., None], 0, 255).astype(
            np.uint8
        )


def _draw_surface(
    cv: _Canvas,
    geom: Any,
    colour: np.ndarray,
    label: int | None,
    key: int,
    coarse: float = 0.05,
    fine: float = 0.06,
    grain: float = 0.0,
    seed: int = 0,
) -> None:
    r = cv.fill(geom, colour, label, coarse=coarse, fine=fine, key=key)
    if r is not None and grain:
        sub = cv.img[r.sl]
        g = np.random.default_rng(seed).standard_normal(r.m.shape, dtype=np.float32) * grain
        sub[r.m] = np.clip(sub[r.m] + g[r.m][:, None], 0, 255).astype(np.uint8)


def _draw_plane(
    cv: _Canvas,
    pts: np.ndarray,
    frame: _Frame,
    colour: np.ndarray,
    factor: float,
    texture: str,
    label: int,
    key: int,
) -> None:
    """A roof plane: shading from its orientation, shingle/tile/membrane texture."""
    r = cv.roi(pts)
    if r is None:
        return
    xx, yy = cv.centres(r)
    u, v = frame.local(xx, yy)
    mod = factor * (1 + 0.06 * cv.tex(cv.coarse, r, key) + 0.045 * cv.tex(cv.fine, r, key + 3))
    if texture == "shingle":
        mod = mod * (1 + 0.035 * np.sin(2 * np.pi * v / 0.27))
    elif texture == "tile":
        mod = mod * (1 + 0.14 * np.sin(2 * np.pi * u / 0.30)) * (1 - 0.08 * ((v / 0.36) % 1.0))
    elif texture == "membrane":
        mod = mod * (1 - 0.05 * (np.abs(((v / 3.0) % 1.0) - 0.5) > 0.485))
    elif texture == "seam":  # standing-seam metal: bright seams every 0.5 m, a PV-like line grid
        mod = mod * (1 + 0.35 * (np.abs(((u / 0.5) % 1.0) - 0.5) > 0.43))
    cv.put(r, colour[None, None, :] * mod[..., None], label)


def _draw_pv_block(
    cv: _Canvas, arr: _PVArray, blk: _PVBlock, rng: np.random.Generator, foot: _Roi
) -> None:
    """Modules with frames, cell grid, per-module and specular variation.

    Paints the pixels of the array footprint ``foot`` (rasterised from the truth polygon) that lie
    within a pixel of this block, so the painted PV pixels are exactly the truth footprint.
    """
    base, frame_col, (ncu, ncv), cell_amp = PV_STYLES[arr.style]
    near = cv.roi(blk.polygon().buffer(1.0, join_style="mitre"))
    if near is None:
        return
    y0, y1 = max(near.y0, foot.y0), min(near.y1, foot.y1)
    x0, x1 = max(near.x0, foot.x0), min(near.x1, foot.x1)
    if y1 <= y0 or x1 <= x0:
        return
    m = (
        near.m[y0 - near.y0 : y1 - near.y0, x0 - near.x0 : x1 - near.x0]
        & foot.m[y0 - foot.y0 : y1 - foot.y0, x0 - foot.x0 : x1 - foot.x0]
    )
    if not m.any():
        return
    r = _Roi(y0, y1, x0, x1, m)
    xx, yy = cv.centres(r)
    u, v = blk.frame.local(xx, yy)
    fu, fv = u / blk.mu, v / blk.mv
    iu = np.clip(np.floor(fu).astype(int), 0, blk.nc - 1)
    iv = np.clip(np.floor(fv).astype(int), 0, blk.nr - 1)
    gain = 1 + 0.045 * rng.standard_normal((blk.nr, blk.nc)).astype(np.float32)
    # specular sheen: a broad ramp across the array towards the sun-facing side
    ang = rng.uniform(0, 2 * np.pi)
    span = max(blk.nc * blk.mu, blk.nr * blk.mv)
    ramp = (u * math.cos(ang) + v * math.sin(ang)) / span
    lum = arr.light * gain[iv, iu] * (1 + 0.16 * ramp + 0.025 * cv.tex(cv.fine, r, arr.seed))
    col = np.asarray(base, np.float32)[None, None, :] * lum[..., None]
    # cell grid (weak) and module frames (anti-aliased thin lines)
    px_m = 1.0 / cv.s
    if cell_amp > 0:
        cu = (fu - np.floor(fu)) * ncu
        cvv = (fv - np.floor(fv)) * ncv
        d = np.minimum(
            np.minimum(cu % 1, 1 - cu % 1) * blk.mu / ncu,
            np.minimum(cvv % 1, 1 - cvv % 1) * blk.mv / ncv,
        )
        cell = np.clip(1 - d / (0.6 * px_m), 0, 1) * cell_amp
        col = col * (1 + cell[..., None])
    du = np.minimum(fu - np.floor(fu), np.ceil(fu) - fu) * blk.mu
    dv = np.minimum(fv - np.floor(fv), np.ceil(fv) - fv) * blk.mv
    edge = np.clip((0.035 - np.minimum(du, dv)) / px_m + 0.5, 0, 1) * 0.6
    col = (
        col * (1 - edge[..., None])
        + np.asarray(frame_col, np.float32) * arr.light * edge[..., None]
    )
    cv.put(r, col, int(Label.PV))


def _draw_pv_array(cv: _Canvas, arr: _PVArray) -> None:
    rng = np.random.default_rng(arr.seed)
    sv = cv.sun.shadow_px(cv.s) * arr.rack_height_m
    for blk in arr.blocks:  # shadows of racks / stand-offs first
        c = blk.corners()
        cv.shade(_hull(c, _translate(c, sv)), SHADOW)
    r = cv.roi(arr.polygon(), exact=True)  # the truth footprint
    if r is None:
        return
    for blk in arr.blocks:
        _draw_pv_block(cv, arr, blk, rng, r)
    arr.roi = r
    arr.footprint_px = int(r.m.sum())


def _draw_tree(
    cv: _Canvas,
    cx: float,
    cy: float,
    r_px: float,
    colour: np.ndarray,
    seed: int,
    shadow_only: bool,
    height_m: float,
    ground_only: bool = False,
) -> None:
    if ground_only:  # scrub grows on open ground only
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < cv.w and 0 <= iy < cv.h) or cv.label[iy, ix] != Label.GROUND:
            return
    rng = np.random.default_rng(seed)
    n_blobs = 1 if r_px < 2.5 * cv.s else int(rng.integers(2, 5))
    blobs = [(cx, cy, r_px)]
    for _ in range(n_blobs - 1):
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.25, 0.5) * r_px
        blobs.append((cx + d * math.cos(a), cy + d * math.sin(a), r_px * rng.uniform(0.55, 0.8)))
    sun = cv.sun
    outlines = []
    for bx, by, br in blobs:
        th = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        rad = br * (
            1
            + sum(rng.uniform(0.02, 0.07) * np.sin(k * th + rng.uniform(0, 6.3)) for k in (3, 5, 7))
        )
        outlines.append((bx, by, br, np.stack([bx + rad * np.cos(th), by + rad * np.sin(th)], 1)))
    if shadow_only:  # one shadow for the whole crown (overlapping blobs must not darken twice)
        sv = sun.shadow_px(cv.s) * height_m
        d = sv / (np.linalg.norm(sv) + 1e-9)
        stretch = 1 / math.sin(math.radians(sun.elevation_deg)) - 1
        polys = []
        for bx, by, _, pts in outlines:
            rel = pts - (bx, by)
            polys.append(Polygon(rel + np.outer(rel @ d, d) * stretch + (bx, by) + sv))
        cv.shade(shapely.union_all(polys), TREE_SHADOW)
        return
    for bx, by, br, pts in outlines:
        r = cv.roi(pts)
        if r is None:
            continue
        xx, yy = cv.centres(r)
        dx, dy = (xx - bx) / br, (yy - by) / br
        nz = np.sqrt(np.clip(1 - dx * dx - dy * dy, 0.0, 1.0))
        light = np.clip(0.55 * dx * sun.vec3[0] - 0.55 * dy * sun.vec3[1] + nz * sun.vec3[2], 0, 1)
        clump = cv.tex(cv.leaf, r, seed % 100003)
        shade = (0.5 + 0.7 * light) * (1 + 0.2 * clump) * np.where(clump < -1.0, 0.72, 1.0)
        cv.put(r, colour[None, None, :] * shade[..., None], int(Label.TREE))


def _draw_car(
    cv: _Canvas, frame: _Frame, length: float, width: float, colour: np.ndarray, seed: int
) -> np.ndarray:
    body = _rounded_rect(frame, length, width, 0.45)
    rng = np.random.default_rng(seed)
    r = cv.roi(body)
    if r is None:
        return body
    xx, yy = cv.centres(r)
    u, v = frame.local(xx, yy)
    a, b = length / 2, width / 2
    col = np.broadcast_to(colour, r.m.shape + (3,)).astype(np.float32).copy()
    # bodywork shading towards the sides, windows dark, roof panel slightly brighter
    col *= (1 - 0.18 * (np.abs(v) / b) ** 4)[..., None]
    glass = np.asarray((34, 38, 44), np.float32) * rng.uniform(0.8, 1.2)
    wind = (u > a * 0.05) & (u < a * 0.42) & (np.abs(v) < b * (0.86 - 0.25 * (u - a * 0.05) / a))
    rear = (u < -a * 0.52) & (u > -a * 0.78) & (np.abs(v) < b * 0.72)
    side = (u > -a * 0.52) & (u < a * 0.05) & (np.abs(v) > b * 0.72) & (np.abs(v) < b * 0.88)
    for m in (wind, rear, side):
        col[m] = glass
    cv.put(r, col, int(Label.CAR))
    return body


def _draw_skylight(
    cv: _Canvas, pts: np.ndarray, frame: _Frame, colour: np.ndarray, dark: bool, key: int
) -> None:
    r = cv.roi(pts)
    if r is None:
        return
    xx, yy = cv.centres(r)
    u, v = frame.local(xx, yy)
    uu = u / max(u.max(), 1e-6)
    col = colour[None, None, :] * (
        1 + (0.35 if dark else 0.08) * uu[..., None] * (1 if dark else -1)
    )
    cv.put(r, col, int(Label.SKYLIGHT) if dark else int(Label.ROOF_EQUIPMENT))


def _draw_pool(
    cv: _Canvas,
    outer: np.ndarray,
    inner: np.ndarray,
    frame: _Frame,
    water: np.ndarray,
    covered: bool,
    key: int,
) -> None:
    cv.fill(outer, (214, 206, 188), int(Label.POOL), fine=0.05, key=key)
    r = cv.roi(inner)
    if r is None:
        return
    xx, yy = cv.centres(r)
    u, _ = frame.local(xx, yy)
    depth = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    mod = (1 - 0.25 * depth) * (1 + (0.05 if covered else 0.09) * cv.tex(cv.fine, r, key))
    cv.put(r, water[None, None, :] * mod[..., None], int(Label.POOL))


# ----------------------------------------------------------------------------------------------
# Layout


def _sub_seed(sc: _Scene) -> int:
    return int(sc.rng.integers(0, 2**63 - 1))


def _add_tree(
    sc: _Scene,
    x: float,
    y: float,
    radius_m: float,
    *,
    height_m: float | None = None,
    ground_only: bool = False,
) -> None:
    rng = sc.rng
    r_px = radius_m * sc.s
    if not sc.visible(np.array([[x, y]]), pad_px=r_px + 20 * sc.s):
        return
    colour = np.asarray(TREE_GREENS[int(rng.integers(len(TREE_GREENS)))], np.float32) * rng.uniform(
        0.85, 1.1
    )
    h = height_m if height_m is not None else max(radius_m * rng.uniform(1.4, 2.4), 1.0)
    seed = _sub_seed(sc)
    sc.draw(
        ST_TREE_SHADOW, lambda cv: _draw_tree(cv, x, y, r_px, colour, seed, True, h, ground_only)
    )
    sc.draw(ST_TREE, lambda cv: _draw_tree(cv, x, y, r_px, colour, seed, False, h, ground_only))
    sc.count("trees", np.array([[x - r_px, y - r_px], [x + r_px, y + r_px]]))


def _add_car(sc: _Scene, frame: _Frame, *, on_ground: bool = True) -> np.ndarray:
    rng = sc.rng
    length, width = rng.uniform(4.2, 5.2), rng.uniform(1.75, 1.95)
    colour = _pick(rng, CAR_COLOURS)
    seed = _sub_seed(sc)
    body = _rounded_rect(frame, length, width, 0.45)
    if not sc.visible(body, 10):
        return body
    sv = sc.sun.shadow_px(sc.s) * 1.3
    sc.draw(ST_CAR_SHADOW, lambda cv: cv.shade(_hull(body, _translate(body, sv)), SHADOW))
    sc.draw(ST_CAR, lambda cv: _draw_car(cv, frame, length, width, colour, seed))
    sc.count("cars", body)
    if _luma(colour) < 70:
        sc.lookalikes.append(_Lookalike("car", Polygon(body)))
    return body


def _building_shadow(
    sc: _Scene, footprint: np.ndarray, eave_m: float, ridge: np.ndarray | None, ridge_m: float
) -> None:
    sv = sc.sun.shadow_px(sc.s)
    parts = [footprint, _translate(footprint, sv * eave_m)]
    if ridge is not None:
        parts.append(_translate(ridge, sv * ridge_m))
    hull = _hull(*parts)
    sc.draw(ST_BLD_SHADOW, lambda cv: cv.shade(hull, SHADOW))


def _make_pv_style(sc: _Scene) -> int:
    return int(sc.rng.choice(len(PV_STYLES), p=[0.3, 0.25, 0.2, 0.17, 0.08]))


def _register_array(sc: _Scene, arr: _PVArray) -> bool:
    lo, hi = RESIDENTIAL_AREA_RANGE_M2 if arr.kind == "residential" else COMMERCIAL_AREA_RANGE_M2
    area = sum(b.area_m2 for b in arr.blocks)
    if not arr.blocks or not (lo <= area <= hi):
        return False
    if not all(sc.inside(b.corners()) for b in arr.blocks):
        return False
    sc.arrays.append(arr)
    sc.draw(ST_PV, lambda cv: _draw_pv_array(cv, arr))
    return True


def _fit_plane_array(
    rng: np.random.Generator, length: float, depth: float, hip: bool, pitch_deg: float
) -> tuple[list[tuple[float, float, int, int]], float, float] | None:
    """Module blocks (u0, v0, nc, nr) for a residential array on one roof plane, or None."""
    cp = math.cos(math.radians(pitch_deg))
    portrait = rng.random() < 0.7
    mu, mv = (1.0, 1.7 * cp) if portrait else (1.7, 1.0 * cp)
    m_eave, m_ridge, m_side = rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6)
    lo, hi = RESIDENTIAL_AREA_RANGE_M2
    target = rng.triangular(lo, 28.0, hi)
    best = None
    for nr in range(1, int((depth - m_eave - m_ridge) / mv) + 1):
        top = m_eave + nr * mv
        avail = length - 2 * m_side - (2 * top if hip else 0)
        for nc in range(1, int(avail / mu) + 1):
            area = nr * nc * mu * mv
            if lo + 0.5 <= area <= hi - 0.5:
                score = abs(area - target) + (3.0 if nc < nr else 0.0)
                if best is None or score < best[0]:
                    best = (score, nr, nc, avail)
    if best is None:
        return None
    _, nr, nc, avail = best
    slack = avail - nc * mu
    top = m_eave + nr * mv
    u0 = m_side + (top if hip else 0) + rng.uniform(0.2, 0.8) * slack
    blocks = [(u0, m_eave, nc, nr)]
    # staggered extra row (irregular outline) if it still fits in size and on the plane
    if nc >= 3 and rng.random() < 0.3:
        nc2 = int(rng.integers(1, nc))
        top2 = top + mv
        if top2 <= depth - m_ridge and (nr + 0) * nc * mu * mv + nc2 * mu * mv <= hi - 0.5:
            u2 = u0 + rng.uniform(0, (nc - nc2)) * mu
            if not hip or (u2 >= m_side + top2 and u2 + nc2 * mu <= length - m_side - top2):
                blocks.append((u2, top, nc2, 1))
    return blocks, mu, mv


def _add_house(
    sc: _Scene, lot: _Frame, lot_w: float, lot_d: float, clip: Polygon | None = None
) -> None:
    """A single-family house with yard, driveway, maybe pool, trees, PV, skylights.

    ``clip``: the super-block interior when the lot is cut by it (lots of rotated street grids);
    everything is kept inside it.
    """
    rng, s = sc.rng, sc.s

    def fits(pts: np.ndarray) -> bool:
        return clip is None or clip.contains(Polygon(pts))

    def clipped(pts: np.ndarray) -> Any:
        return pts if clip is None else Polygon(pts).intersection(clip)

    # yard surface: xeriscape gravel or lawn; walls
    lot_pts = lot.rect(0, 0, lot_w, lot_d)
    if not sc.visible(lot_pts, 40 * s):
        return
    yard_key = sc.key()
    if rng.random() < 0.35:
        lawn = clipped(lot.rect(0.3, rng.uniform(0.5, 2), lot_w - 0.3, lot_d - 0.3))
        g = np.array([104, 116, 70], np.float32) * rng.uniform(0.85, 1.08)
        sc.draw(
            ST_YARD,
            lambda cv: cv.fill(lawn, g, int(Label.GROUND), coarse=0.16, fine=0.06, key=yard_key),
        )
    else:
        gravel = clipped(lot.rect(0.3, 0.3, lot_w - 0.3, lot_d - 0.3))
        g = np.array(rng.choice([(168, 160, 146), (150, 132, 112), (186, 170, 150)]), np.float32)
        g = g * rng.uniform(0.95, 1.05)
        gs = _sub_seed(sc)
        sc.draw(
            ST_YARD,
            lambda cv: _draw_surface(
                cv, gravel, g, int(Label.GROUND), yard_key, 0.07, 0.07, 3.5, gs
            ),
        )
    if rng.random() < 0.7:  # block walls on the sides and back
        wall_col = np.array([196, 180, 154], np.float32) * rng.uniform(0.9, 1.05)
        sv = sc.sun.shadow_px(s) * 1.5
        for a, b in (
            ((0, 0), (0, lot_d)),
            ((0, lot_d), (lot_w, lot_d)),
            ((lot_w, lot_d), (lot_w, 0)),
        ):
            p = lot.px([a, b])
            d = np.array(b, float) - np.array(a, float)
            n = lot.vec(d[1] / np.linalg.norm(d), -d[0] / np.linalg.norm(d)) * 0.1
            quad = np.array([p[0] - n, p[1] - n, p[1] + n, p[0] + n])
            if not fits(quad):
                continue
            sc.draw(
                ST_WALL_SHADOW, lambda cv, q=quad: cv.shade(_hull(q, _translate(q, sv)), SHADOW)
            )
            sc.draw(ST_WALL, lambda cv, q=quad: cv.fill(q, wall_col, int(Label.GROUND)))

    setback = rng.uniform(4.0, 6.5)
    max_d = min(lot_d - setback - 4.0, 15.0)
    max_w = min(lot_w - 2.6, 18.0)
    if max_d < 8.0 or max_w < 8.5:
        return
    hw, hd = rng.uniform(8.5, max_w), rng.uniform(8.0, max_d)
    hu = rng.uniform(1.3, lot_w - 1.3 - hw)
    jitter = math.radians(rng.uniform(-2.5, 2.5))
    house = lot.sub(hu, setback, jitter)
    if not fits(house.rect(-1, -1, hw + 1, hd + 1)):
        return
    two_storey = rng.random() < 0.25
    eave_h = rng.uniform(5.4, 6.2) if two_storey else rng.uniform(2.6, 3.3)

    roof_kind = rng.choice(["gable", "hip", "flat"], p=[0.42, 0.3, 0.28])
    dark = rng.random() < sc.cfg.dark_roof_share
    metal = False
    if dark:
        colour, pv_like = _dark_colour(rng)
        metal = pv_like and rng.random() < 0.4
    else:
        colour = _pick(rng, FLAT_ROOF if roof_kind == "flat" else PITCHED_ROOF)
    if roof_kind == "flat":
        texture = "membrane"
    elif metal:
        texture = "seam"
    else:
        texture = "tile" if colour[0] > colour[2] * 1.45 and not dark else "shingle"
    label = int(Label.DARK_ROOF if dark else Label.ROOF)

    # garage wing (L-shaped plan); a separate roof section
    wings: list[tuple[_Frame, float, float]] = [(house, hw, hd)]
    drive_u = hu + rng.uniform(0, max(hw - 6, 0))
    if rng.random() < 0.45 and hw > 11:
        gw, gd = rng.uniform(5.5, 7.0), rng.uniform(6.0, 7.5)
        left = rng.random() < 0.5
        gu = 0.0 if left else hw - gw
        gv = -rng.uniform(1.0, 3.0)
        if setback + gv > 2.5 and fits(house.rect(gu - 1, gv - 1, gu + gw + 1, gv + gd)):
            wings.append((house.sub(gu, gv), gw, gd))
            drive_u = hu + gu + 0.2
    drive_w = 5.6
    front_v = min(setback, setback + (gv if len(wings) > 1 else 0.0))
    drive = lot.rect(drive_u, -1.8, min(drive_u + drive_w, lot_w - 0.2), front_v + 0.3)
    dk = sc.key()
    dcol = np.array([188, 184, 176], np.float32) * rng.uniform(0.92, 1.04)
    sc.draw(
        ST_DRIVE, lambda cv: cv.fill(drive, dcol, int(Label.PAVED), coarse=0.05, fine=0.04, key=dk)
    )
    if rng.random() < 0.55:
        car_u = drive_u + drive_w / 2
        car_v = max(front_v - 3.0, 2.2)
        _add_car(
            sc,
            lot.sub(
                car_u + rng.uniform(-0.3, 0.3),
                car_v,
                math.pi / 2 + rng.choice([0, math.pi]) + math.radians(rng.uniform(-4, 4)),
            ),
        )

    planes_for_pv: list[tuple[_Frame, float, float, bool, float, np.ndarray, int]] = []
    roof_polys: list[Polygon] = []
    pitch = rng.uniform(18, 34)
    for wi, (wf, ww, wd) in enumerate(wings):
        fp = wf.rect(0, 0, ww, wd)
        roof_polys.append(Polygon(fp))
        kind = roof_kind if wi == 0 else ("flat" if roof_kind == "flat" else "gable")
        if kind == "flat":
            _building_shadow(sc, fp, eave_h + 0.5, None, 0)
            _add_flat_roof(sc, wf, ww, wd, colour, label, parapet=0.3)
            planes_for_pv.append(
                (wf.sub(0.6, 0.6), ww - 1.2, wd - 1.2, False, 0.0, np.array([0.0, 1.0]), wi)
            )
            continue
        # roof frame: u along the ridge
        along_long = (ww >= wd) if (kind == "hip" or rng.random() < 0.75) else (ww < wd)
        if wi > 0:
            along_long = ww < wd  # garage ridge perpendicular to the main one
        if along_long:
            rf, L, D = wf, ww, wd
        else:
            rf, L, D = wf.sub(0, wd, -math.pi / 2), wd, ww
        if kind == "hip" and L < D:
            kind = "gable"
        rise = (D / 2) * math.tan(math.radians(pitch))
        ridge = rf.px(
            [[D / 2 if kind == "hip" else 0, D / 2], [L - D / 2 if kind == "hip" else L, D / 2]]
        )
        _building_shadow(sc, fp, eave_h, ridge, eave_h + rise)
        planes: list[tuple[_Frame, float, float, bool]] = [
            (rf, L, D / 2, kind == "hip"),
            (rf.sub(L, D, math.pi), L, D / 2, kind == "hip"),
        ]
        if kind == "hip":
            planes += [
                (rf.sub(0, D, -math.pi / 2), D, D / 2, True),
                (rf.sub(L, 0, math.pi / 2), D, D / 2, True),
            ]
        for pf, pl, depth, hip in planes:
            poly = pf.px(
                [[0, 0], [pl, 0], [pl - depth, depth], [depth, depth]]
                if hip
                else _rect_uv(0, 0, pl, depth)
            )
            down = -pf.vec(0, 1)
            factor = sc.sun.plane_factor(down, pitch)
            k = sc.key()
            sc.draw(
                ST_ROOF,
                lambda cv, p=poly, f=pf, fa=factor, k=k: _draw_plane(
                    cv, p, f, colour, fa, texture, label, k
                ),
            )
            planes_for_pv.append((pf, pl, depth, hip, pitch, down, wi))
        # ridge, hips and eaves right after this wing's planes, so a later wing covers them
        edge_col = colour * 0.78
        sc.draw(ST_ROOF, lambda cv, rg=ridge, c=colour * 1.12: cv.line(rg[0], rg[1], c, 0.12 * s))
        if kind == "hip":
            for c0, c1 in (
                (rf.px([0, 0]), ridge[0]),
                (rf.px([0, D]), ridge[0]),
                (rf.px([L, 0]), ridge[1]),
                (rf.px([L, D]), ridge[1]),
            ):
                sc.draw(ST_ROOF, lambda cv, a=c0, b=c1: cv.line(a, b, colour * 1.08, 0.1 * s))
        sc.draw(
            ST_ROOF,
            lambda cv, p=fp, ec=edge_col: cv2.polylines(
                cv.img,
                [np.round((p - 0.5) * 16).astype(np.int32)],
                True,
                tuple(float(c) for c in ec),
                1,
                cv2.LINE_AA,
                4,
            ),
        )
    roof_union = shapely.union_all(roof_polys)
    if dark:
        sc.lookalikes.append(_Lookalike("dark_roof", roof_union))
    sc.count(
        "houses",
        np.asarray(roof_union.exterior.coords) if roof_union.geom_type == "Polygon" else None,
    )

    # small roof clutter: vents, evaporative coolers, chimneys
    for _ in range(int(rng.integers(0, 4))):
        p = house.px([rng.uniform(1, hw - 1), rng.uniform(1, hd - 1)])
        rr = rng.uniform(0.06, 0.14) * s
        sc.draw(
            ST_ROOF_DETAIL,
            lambda cv, p=p, rr=rr: cv2.circle(
                cv.img,
                tuple(int(t) for t in np.round((p - 0.5) * 16)),
                int(rr * 16),
                (40, 40, 42),
                -1,
                cv2.LINE_AA,
                4,
            ),
        )
    if rng.random() < 0.3:
        cu, cvv = rng.uniform(1.5, hw - 2.5), rng.uniform(1.5, hd - 2.5)
        box_pts = house.rect(cu, cvv, cu + 1.0, cvv + 1.1)
        sv = sc.sun.shadow_px(s) * 0.9
        sc.draw(
            ST_ROOF_DETAIL,
            lambda cv, b=box_pts: (
                cv.shade(_hull(b, _translate(b, sv)), SHADOW),
                cv.fill(b, (196, 198, 196), int(Label.ROOF_EQUIPMENT), fine=0.04),
            ),
        )

    def under_other_wing(geom: BaseGeometry, wing: int) -> bool:
        """Where wings overlap, the other wing's roof is on top: keep panels/skylights off it."""
        return any(
            geom.intersects(p.buffer(0.2 * s)) for j, p in enumerate(roof_polys) if j != wing
        )

    # PV on the most sun-facing plane where an array fits
    pv_poly: BaseGeometry | None = None
    if rng.random() < sc.cfg.residential_pv_share and planes_for_pv:
        order = sorted(
            range(len(planes_for_pv)), key=lambda i: -planes_for_pv[i][5][1] - 0.3 * rng.random()
        )
        for i in order:
            pf, pl, pd, hip, pch, down, wi = planes_for_pv[i]
            if down[1] < -0.35 * np.linalg.norm(down):  # installers avoid north-facing planes
                continue
            fit = _fit_plane_array(rng, pl, pd, hip, pch)
            if fit is None:
                continue
            blocks_spec, mu, mv = fit
            blocks = [_PVBlock(pf.sub(u0, v0), nc, nr, mu, mv) for u0, v0, nc, nr in blocks_spec]
            if pch == 0.0:  # flat roof: low-tilt racks, a bit brighter
                light = rng.uniform(0.95, 1.15)
            else:
                light = 0.9 + 0.35 * (sc.sun.plane_factor(down, pch) - 1)
            arr = _PVArray(
                "residential",
                "flat_roof" if pch == 0.0 else "pitched_roof",
                blocks,
                _make_pv_style(sc),
                light,
                0.12 if pch else 0.35,
                _sub_seed(sc),
            )
            if under_other_wing(arr.polygon(), wi):
                continue
            if _register_array(sc, arr):
                pv_poly = arr.polygon()
                if rng.random() < sc.cfg.occluding_tree_share:
                    _add_occluding_tree(sc, arr)
            break

    # skylights on a roof part without PV (dark glass: look-alikes)
    if rng.random() < sc.cfg.skylight_share and planes_for_pv:
        pf, pl, pd, hip, _, _, wi = planes_for_pv[int(rng.integers(len(planes_for_pv)))]
        for _ in range(int(rng.integers(1, 4))):
            su, sw, sdp = (
                rng.uniform(0.8, max(pl - 2.2, 0.9)),
                rng.choice([0.6, 0.8, 1.2]),
                rng.choice([0.8, 1.2]),
            )
            sv0 = rng.uniform(0.5, max(pd - sdp - 0.4, 0.6))
            if (
                sv0 + sdp > pd - 0.2
                or su + sw > pl - (sv0 + sdp if hip else 0.2)
                or (hip and su < sv0 + sdp)
            ):
                continue
            sk = pf.rect(su, sv0, su + sw, sv0 + sdp)
            skp = Polygon(sk)
            if (
                pv_poly is not None and skp.buffer(0.3 * s).intersects(pv_poly)
            ) or under_other_wing(skp, wi):
                continue
            glass = np.array(rng.choice(SKYLIGHT_GLASS), np.float32) * rng.uniform(0.9, 1.15)
            frame_pts = pf.rect(su - 0.07, sv0 - 0.07, su + sw + 0.07, sv0 + sdp + 0.07)
            sf = pf.sub(su, sv0)
            sc.draw(
                ST_ROOF_DETAIL,
                lambda cv, fp_=frame_pts: cv.fill(fp_, (205, 205, 200), int(Label.ROOF_EQUIPMENT)),
            )
            sc.draw(
                ST_ROOF_DETAIL + 0.01,
                lambda cv, k=sk, f=sf, g=glass: _draw_skylight(cv, k, f, g, True, 0),
            )
            sc.lookalikes.append(_Lookalike("skylight", skp))
            sc.count("skylights", sk)

    # back yard: patio, pool; trees front and back
    back_v = setback + hd
    if lot_d - back_v > 3.5 and rng.random() < 0.5:
        pt = lot.rect(hu + 1, back_v, hu + min(hw - 1, 7), back_v + rng.uniform(2.5, 3.5))
        pk = sc.key()
        sc.draw(
            ST_POOL, lambda cv: cv.fill(pt, (196, 190, 180), int(Label.PAVED), fine=0.05, key=pk)
        )
    if rng.random() < sc.cfg.pool_share:
        pl_, pw_ = rng.uniform(6.5, 10.0), rng.uniform(3.5, 5.0)
        space = lot_d - back_v
        pu = rng.uniform(1.5 + pl_ / 2, max(lot_w - 1.5 - pl_ / 2, 1.5 + pl_ / 2))
        pv = back_v + rng.uniform(1.8 + pw_ / 2, max(space - 1.2 - pw_ / 2, 1.8 + pw_ / 2))
        pfr = lot.sub(pu, pv)
        if (
            space >= pw_ + 3.0
            and lot_w >= pl_ + 3.5
            and fits(_rounded_rect(pfr, pl_ + 1, pw_ + 1, 0.6))
        ):
            covered = rng.random() < 0.25
            water = np.array(
                (24, 44, 86)
                if covered
                else rng.choice([(64, 160, 196), (48, 132, 178), (70, 170, 190)]),
                np.float32,
            )
            outer = _rounded_rect(pfr, pl_ + 0.7, pw_ + 0.7, 0.6)
            inner = _rounded_rect(pfr, pl_, pw_, 0.5)
            pk = sc.key()
            sc.draw(ST_POOL, lambda cv: _draw_pool(cv, outer, inner, pfr, water, covered, pk))
            sc.lookalikes.append(_Lookalike("pool", Polygon(inner)))
            sc.count("pools", inner)
    for _ in range(int(rng.poisson(sc.cfg.trees_per_lot))):
        tu = rng.uniform(0.5, lot_w - 0.5)
        tv = rng.choice([rng.uniform(0.5, setback), rng.uniform(back_v + 0.5, lot_d - 0.5)])
        r_m = rng.uniform(1.2, 4.0)
        if clip is None or clip.contains(shapely.Point(lot.px([tu, tv]))):
            _add_tree(sc, *lot.px([tu, tv]), r_m)
    for _ in range(int(rng.integers(0, 4))):  # shrubs
        tu, tv = rng.uniform(0.5, lot_w - 0.5), rng.uniform(0.3, setback - 0.3)
        r_m, h_m = rng.uniform(0.4, 0.9), rng.uniform(0.5, 1.2)
        if clip is None or clip.contains(shapely.Point(lot.px([tu, tv]))):
            _add_tree(sc, *lot.px([tu, tv]), r_m, height_m=h_m)


def _add_occluding_tree(sc: _Scene, arr: _PVArray) -> None:
    """A tree next to the array whose canopy hides part of it."""
    rng = sc.rng
    blk = arr.blocks[0]
    lu, lv = blk.nc * blk.mu, blk.nr * blk.mv
    r_m = rng.uniform(2.0, 4.0)
    side = int(rng.integers(4))
    t = rng.uniform(0.1, 0.9)
    over = rng.uniform(0.25, 0.75) * min(r_m, 0.6 * min(lu, lv) + 1.0)
    u, v = [
        (t * lu, -r_m + over),
        (t * lu, lv + r_m - over),
        (-r_m + over, t * lv),
        (lu + r_m - over, t * lv),
    ][side]
    _add_tree(sc, *blk.frame.px([u, v]), r_m, height_m=rng.uniform(6, 10))
    sc.count("occluding_trees", arr.blocks[0].corners())


def _add_flat_roof(
    sc: _Scene,
    frame: _Frame,
    w: float,
    d: float,
    colour: np.ndarray,
    label: int,
    parapet: float,
    texture: str = "membrane",
) -> None:
    outer = frame.rect(0, 0, w, d)
    inner = frame.rect(parapet, parapet, w - parapet, d - parapet)
    k = sc.key()
    sv = sc.sun.shadow_px(sc.s) * 0.5
    inner_poly = Polygon(inner)
    shadow = inner_poly.difference(shapely.affinity.translate(inner_poly, sv[0], sv[1]))
    sc.draw(ST_ROOF, lambda cv: cv.fill(outer, colour * 1.1, label, fine=0.05, key=k))
    sc.draw(
        ST_ROOF + 0.01,
        lambda cv: _draw_plane(cv, inner, frame, colour, 1.0, texture, label, k + 5),
    )
    if not shadow.is_empty:
        sc.draw(ST_ROOF + 0.02, lambda cv: cv.shade(shadow, (0.7, 0.72, 0.78)))


def _add_residential_cell(sc: _Scene, cell: Polygon) -> None:
    rng, s = sc.rng, sc.s
    cx, cy = cell.centroid.x, cell.centroid.y
    angle = 0.0 if rng.random() < 0.7 else math.radians(rng.choice([-1, 1]) * rng.uniform(8, 30))
    fr = _Frame(cx, cy, angle, s)
    corners = np.asarray(cell.exterior.coords)[:-1]
    uv = np.stack(fr.local(corners[:, 0], corners[:, 1]), 1)
    umin, vmin = uv.min(0)
    umax, vmax = uv.max(0)
    street_w, walk_w = rng.uniform(9.0, 11.0), 1.6
    st = street_w + 2 * walk_w
    # whole blocks (lot row, street, lot row) across the cell, lots backing onto the arterials
    span_v = vmax - vmin - 1.0
    n_blocks = max(1, int(span_v // (2 * 24.0 + st)))
    lot_d = float(np.clip((span_v / n_blocks - st) / 2, 22.0, 40.0))
    block_d = 2 * lot_d + st
    v_streets = [vmin + 0.5 + lot_d + st / 2 + k * block_d for k in range(n_blocks)]
    span_u = umax - umin
    n_cross = int(span_u // 150)
    u_cross = [
        umin + span_u * (k + 1) / (n_cross + 1) + rng.uniform(-15, 15) for k in range(n_cross)
    ]
    reach = cell.buffer(2.5 * s, join_style="mitre")  # local streets meet the arterial asphalt
    asphalt = np.array([104, 104, 106], np.float32) * rng.uniform(0.85, 1.12)
    walk_col = np.array([190, 186, 178], np.float32)
    streets: list[Polygon] = []
    for vs in v_streets:
        streets.append(Polygon(fr.rect(umin - 30, vs - street_w / 2, umax + 30, vs + street_w / 2)))
    for uc in u_cross:
        streets.append(Polygon(fr.rect(uc - street_w / 2, vmin - 30, uc + street_w / 2, vmax + 30)))
    for st in streets:
        walk = st.buffer(walk_w * s, join_style="mitre").intersection(cell)
        road = st.intersection(reach)
        k1, k2 = sc.key(), sc.key()
        if not walk.is_empty:
            sc.draw(
                ST_LOCAL_WALK,
                lambda cv, g=walk, k=k1: cv.fill(g, walk_col, int(Label.PAVED), fine=0.04, key=k),
            )
        if not road.is_empty:
            sc.draw(
                ST_LOCAL_ROAD,
                lambda cv, g=road, k=k2: cv.fill(
                    g, asphalt, int(Label.PAVED), coarse=0.06, fine=0.07, key=k
                ),
            )
    # lots along both sides of each street, between cross streets
    inner = cell.buffer(-0.3 * s)
    cuts = [umin + 0.5] + [
        u for uc in u_cross for u in (uc - street_w / 2 - walk_w, uc + street_w / 2 + walk_w)
    ]
    cuts += [umax - 0.5]
    for vs in v_streets:
        for side in (1, -1):
            front = vs + side * (street_w / 2 + walk_w)
            for a, b in zip(cuts[0::2], cuts[1::2], strict=True):
                u = a if angle == 0.0 else a + rng.uniform(-10, 0)
                while u < b:
                    lw = rng.uniform(16.0, 24.0)
                    if b - (u + lw) < 14.0:  # the last lot takes what is left
                        lw = b - u
                    if lw < 14.0:
                        break
                    if side == 1:
                        lot = fr.sub(u, front)
                    else:
                        lot = fr.sub(u + lw, front, math.pi)
                    whole = inner.contains(Polygon(lot.rect(0, 0, lw, lot_d)))
                    if whole or inner.contains(Polygon(lot.rect(0, 0, lw, min(lot_d, 20.0)))):
                        _add_house(sc, lot, lw, lot_d, None if whole else inner)
                        if rng.random() < 0.15:  # car parked at the kerb
                            _add_car(sc, lot.sub(lw / 2, -walk_w - 1.3, rng.choice([0, math.pi])))
                    elif sc.visible(lot.rect(0, 0, lw, lot_d)) and rng.random() < 0.5:
                        tp = lot.px([rng.uniform(2, lw - 2), rng.uniform(3, lot_d - 3)])
                        if cell.contains(shapely.Point(tp)):
                            _add_tree(sc, *tp, rng.uniform(1.5, 4.0))
                    u += lw


def _add_parking(
    sc: _Scene, pf: _Frame, u0: float, v0: float, u1: float, v1: float, carport_ok: bool
) -> list[_PVArray]:
    """Parking rows (stalls along u, cars nose-in) in [u0,u1] x [v0,v1]; maybe PV carports."""
    rng, s = sc.rng, sc.s
    arrays: list[_PVArray] = []
    stall_w, stall_d, aisle = 2.7, 5.5, 7.0
    v = v0 + aisle
    line_col = (222, 222, 214)
    while v + 2 * stall_d <= v1:
        n = int((u1 - u0 - 2) / stall_w)
        if n < 3:
            break
        ua = u0 + 1
        carport = carport_ok and rng.random() < 0.45 and n * stall_w >= 18
        for row, (va, vb) in enumerate(((v, v + stall_d), (v + stall_d, v + 2 * stall_d))):
            for i in range(n + 1):
                p0, p1 = pf.px(
                    [
                        [ua + i * stall_w, va + (0.3 if row == 0 else 0)],
                        [ua + i * stall_w, vb - (0.3 if row == 1 else 0)],
                    ]
                )
                sc.draw(ST_MARK, lambda cv, a=p0, b=p1: cv.line(a, b, line_col, 0.1 * s))
            if carport:
                continue
            for i in range(n):
                if rng.random() < 0.55:
                    cu = ua + (i + 0.5) * stall_w + rng.uniform(-0.2, 0.2)
                    cvv = (va + vb) / 2 + rng.uniform(-0.3, 0.3)
                    _add_car(
                        sc,
                        pf.sub(
                            cu,
                            cvv,
                            math.pi / 2
                            + (0 if row == 0 else math.pi)
                            + math.radians(rng.uniform(-3, 3)),
                        ),
                    )
        if carport:
            mu, mv = 2.0, 1.0 * math.cos(math.radians(7))
            nc = int((n * stall_w - 0.4) / mu)
            nr = int((2 * stall_d - 0.6) / mv)
            blk = _PVBlock(pf.sub(ua + 0.2, v + 0.3), nc, nr, mu, mv)
            arr = _PVArray(
                "commercial",
                "carport",
                [blk],
                _make_pv_style(sc),
                rng.uniform(0.95, 1.1),
                3.8,
                _sub_seed(sc),
            )
            if _register_array(sc, arr):
                arrays.append(arr)
        v += 2 * stall_d + aisle
    return arrays


def _add_commercial_building(sc: _Scene, pf: _Frame, pw: float, pd: float, pv_share: float) -> None:
    rng, s = sc.rng, sc.s
    bw = min(pw * rng.uniform(0.5, 0.85), pw - 10.0, 110.0)
    bd = min(pd * rng.uniform(0.38, 0.6), pd - 24.0, 75.0)
    if bw < 18 or bd < 14:
        return
    bu = rng.uniform(4, pw - 4 - bw)
    bv = pd - bd - rng.uniform(4, 9)
    bf = pf.sub(bu, bv)
    height = rng.uniform(5, 9)
    fp = bf.rect(0, 0, bw, bd)
    dark = rng.random() < max(sc.cfg.dark_roof_share, 0.0) * 1.2
    texture = "membrane"
    if dark:
        colour, pv_like = _dark_colour(rng, 0.7)
        texture = "seam" if pv_like and rng.random() < 0.6 else "membrane"
    else:
        colour = _pick(rng, COMMERCIAL_ROOF)
    label = int(Label.DARK_ROOF if dark else Label.ROOF)
    _building_shadow(sc, fp, height, None, 0)
    _add_flat_roof(sc, bf, bw, bd, colour, label, parapet=0.45, texture=texture)
    if dark:
        sc.lookalikes.append(_Lookalike("dark_roof", Polygon(fp)))
    sc.count("commercial_buildings", fp)
    # loading area + parking in front
    _add_parking(sc, pf, 3, 3, pw - 3, bv - 3, carport_ok=rng.random() < 0.5)

    busy: list[tuple[float, float, float, float]] = []  # roof rects taken (u0, v0, u1, v1)
    m = rng.uniform(1.5, 3.0)
    if rng.random() < pv_share:
        fu, fv = rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0)
        ru = (bw - 2 * m) * fu
        rv = (bd - 2 * m) * fv
        r0u = m + rng.uniform(0, bw - 2 * m - ru)
        r0v = m + rng.uniform(0, bd - 2 * m - rv)
        tilt = rng.uniform(5, 15)
        n_high = int(rng.choice([1, 2]))
        mu, mv = 2.0, 1.0 * math.cos(math.radians(tilt))
        gap = rng.uniform(0.5, 1.3)
        seg = rng.uniform(24, 45)
        blocks: list[_PVBlock] = []
        v = r0v
        while v + n_high * mv <= r0v + rv:
            for u, nc in _segments(r0u, r0u + ru, seg, 1.2, mu):
                blocks.append(_PVBlock(bf.sub(u, v), nc, n_high, mu, mv))
            v += n_high * mv + gap
        blocks = _trim_blocks(sc, blocks)
        arr = _PVArray(
            "commercial",
            "flat_roof",
            blocks,
            _make_pv_style(sc),
            rng.uniform(0.95, 1.12),
            0.4,
            _sub_seed(sc),
        )
        if _register_array(sc, arr):
            busy.append((r0u - 0.5, r0v - 0.5, r0u + ru + 0.5, r0v + rv + 0.5))
    # skylight grid (smoked dark glass or white domes)
    if rng.random() < sc.cfg.skylight_share * 1.6:
        dark_sky = rng.random() < 0.7
        sw, sd, pu, pv_ = 1.2, 2.4, rng.uniform(4, 8), rng.uniform(5, 9)
        gu0, gv0 = rng.uniform(m, bw * 0.4), rng.uniform(m, bd * 0.4)
        gu1, gv1 = rng.uniform(bw * 0.6, bw - m), rng.uniform(bd * 0.6, bd - m)
        glass = np.array(
            rng.choice(SKYLIGHT_GLASS) if dark_sky else (214, 218, 222), np.float32
        ) * rng.uniform(0.9, 1.1)
        for u in np.arange(gu0, gu1 - sw, pu):
            for v in np.arange(gv0, gv1 - sd, pv_):
                if any(u + sw > a and u < c and v + sd > b and v < d for a, b, c, d in busy):
                    continue
                pts, sf = bf.rect(u, v, u + sw, v + sd), bf.sub(u, v)
                sc.draw(
                    ST_ROOF_DETAIL,
                    lambda cv, p=pts, f=sf: _draw_skylight(cv, p, f, glass, dark_sky, 0),
                )
                if dark_sky:
                    sc.lookalikes.append(_Lookalike("skylight", Polygon(pts)))
                    sc.count("skylights", pts)
        busy.append((gu0, gv0, gu1, gv1))
    # HVAC units with shadows
    sv = sc.sun.shadow_px(s)
    for _ in range(int(bw * bd / 220) + 1):
        for _try in range(8):
            w_, d_ = rng.uniform(1.2, 4.0), rng.uniform(1.2, 3.0)
            u, v = rng.uniform(m, bw - m - w_), rng.uniform(m, bd - m - d_)
            if any(u + w_ > a and u < c and v + d_ > b and v < d for a, b, c, d in busy):
                continue
            pts = bf.rect(u, v, u + w_, v + d_)
            h = rng.uniform(0.8, 1.6)
            col = np.array([200, 202, 204], np.float32) * rng.uniform(0.85, 1.05)
            fan = bf.px([u + w_ / 2, v + d_ / 2])
            fr_ = min(w_, d_) * 0.3 * s

            def hvac(cv: _Canvas, p=pts, h=h, col=col, fan=fan, fr_=fr_) -> None:
                cv.shade(_hull(p, _translate(p, sv * h)), SHADOW)
                cv.fill(p, col, int(Label.ROOF_EQUIPMENT), fine=0.04)
                cv2.circle(
                    cv.img,
                    tuple(int(t) for t in np.round((fan - 0.5) * 16)),
                    int(fr_ * 16),
                    (70, 72, 74),
                    -1,
                    cv2.LINE_AA,
                    4,
                )

            sc.draw(ST_ROOF_DETAIL, hvac)
            busy.append((u - 0.3, v - 0.3, u + w_ + 0.3, v + d_ + 0.3))
            break


def _segments(
    start: float, stop: float, seg_m: float, gap_m: float, mu: float
) -> list[tuple[float, int]]:
    """Split [start, stop] into equal runs of whole modules separated by walkways: (u0, n_modules)."""
    width = stop - start
    n_seg = max(1, math.ceil((width + gap_m) / (seg_m + gap_m)))
    nc = int(((width - (n_seg - 1) * gap_m) / n_seg) / mu)
    if nc < 2:
        return []
    used = n_seg * nc * mu + (n_seg - 1) * gap_m
    u0 = start + (width - used) / 2
    return [(u0 + i * (nc * mu + gap_m), nc) for i in range(n_seg)]


def _trim_blocks(sc: _Scene, blocks: list[_PVBlock]) -> list[_PVBlock]:
    """Keep, per block, the longest run of modules that lies fully inside the scene."""
    out = []
    for b in blocks:
        ok = [
            sc.inside(b.frame.rect(i * b.mu, 0, (i + 1) * b.mu, b.nr * b.mv)) for i in range(b.nc)
        ]
        best, start, run_start = (0, 0), None, 0
        for i, flag in enumerate([*ok, False]):
            if flag and start is None:
                start = i
            elif not flag and start is not None:
                if i - start > best[0]:
                    best, run_start = (i - start, start), start
                start = None
        n, i0 = best
        del run_start
        if n >= 2:
            out.append(_PVBlock(b.frame.sub(i0 * b.mu, 0), n, b.nr, b.mu, b.mv))
    return out


def _add_solar_field(sc: _Scene, pf: _Frame, pw: float, pd: float) -> None:
    """Ground-mounted rows of tables on gravel inside a fence: one or two large arrays."""
    rng, s = sc.rng, sc.s
    m = rng.uniform(3, 6)
    gravel = pf.rect(m - 1, m - 1, pw - m + 1, pd - m + 1)
    gk, gs = sc.key(), _sub_seed(sc)
    sc.draw(
        ST_LOT,
        lambda cv: _draw_surface(
            cv,
            gravel,
            np.array([176, 170, 160], np.float32),
            int(Label.GROUND),
            gk,
            0.05,
            0.06,
            3.5,
            gs,
        ),
    )
    corners = pf.rect(m - 1, m - 1, pw - m + 1, pd - m + 1)
    for i in range(4):
        a, b = corners[i], corners[(i + 1) % 4]
        sc.draw(ST_MARK, lambda cv, a=a, b=b: cv.line(a, b, (120, 120, 118), 0.08 * s))
    tilt = rng.uniform(20, 30)
    n_high = int(rng.choice([2, 3]))
    mu, mv = 1.0, 2.0 * math.cos(math.radians(tilt))
    gap = rng.uniform(2.5, 4.5)
    split = pw > 70 and rng.random() < 0.6
    ranges = [(m, pw - m)] if not split else [(m, pw / 2 - 2.5), (pw / 2 + 2.5, pw - m)]
    for ua, ub in ranges:
        blocks = []
        v = m
        seg = rng.uniform(18, 40)
        while v + n_high * mv <= pd - m:
            for u, nc in _segments(ua, ub, seg, 2.5, mu):
                blocks.append(_PVBlock(pf.sub(u, v), nc, n_high, mu, mv))
            v += n_high * mv + gap
        blocks = _trim_blocks(sc, blocks)
        arr = _PVArray(
            "commercial",
            "ground",
            blocks,
            _make_pv_style(sc),
            rng.uniform(0.95, 1.15),
            1.6,
            _sub_seed(sc),
        )
        _register_array(sc, arr)
    sc.count("solar_fields")


def _add_commercial_cell(sc: _Scene, cell: Polygon, field_parcel: bool) -> None:
    rng, s = sc.rng, sc.s
    x0, y0, x1, y1 = cell.bounds
    A, B = (x1 - x0) / s, (y1 - y0) / s
    theta = 0.0 if rng.random() < 0.6 else math.radians(rng.uniform(-20, 20))
    c, si = abs(math.cos(theta)), abs(math.sin(theta))
    if si > 1e-6:  # the largest rotated rectangle that fits the cell
        a = (A * c - B * si) / (c * c - si * si)
        b = (B * c - A * si) / (c * c - si * si)
    else:
        a, b = A, B
    if a < 30 or b < 30:
        theta, a, b = 0.0, A, B
    cx, cy = cell.centroid.x, cell.centroid.y
    fr = _Frame(cx, cy, theta, s).sub(-a / 2, -b / 2)
    # parcels split along the longer side; the front faces v = 0
    n_parcels = 1 if max(a, b) < 95 else int(rng.integers(1, 3))
    horizontal = a >= b
    size = (a if horizontal else b) / n_parcels
    for i in range(n_parcels):
        if horizontal:
            pf, pw, pd = fr.sub(i * size, 0), size, b
        else:
            pf, pw, pd = fr.sub(0, i * size), a, size
        if rng.random() < 0.5:  # face the other way: front at the far side
            pf, pw, pd = pf.sub(pw, pd, math.pi), pw, pd
        asphalt = np.array([88, 88, 92], np.float32) * rng.uniform(0.85, 1.15)
        lot = pf.rect(0, 0, pw, pd)
        sc.no_scrub.append(Polygon(lot))
        k = sc.key()
        is_field = field_parcel and i == 0 and pw >= 40 and pd >= 40
        if not is_field:
            sc.draw(
                ST_LOT,
                lambda cv, g=lot, k=k, c_=asphalt: cv.fill(
                    g, c_, int(Label.PAVED), coarse=0.06, fine=0.07, key=k
                ),
            )
            # landscaping strip with trees along the edges
            for e0, e1 in (((0, 0), (pw, 0)), ((0, 0), (0, pd)), ((pw, 0), (pw, pd))):
                length = math.dist(e0, e1)
                for t in np.arange(rng.uniform(3, 8), length - 2, rng.uniform(8, 14)):
                    pu = (
                        e0[0]
                        + (e1[0] - e0[0]) * t / length
                        + (1.2 if e0[0] == 0 and e1[0] == 0 else 0)
                    )
                    pv = (
                        e0[1]
                        + (e1[1] - e0[1]) * t / length
                        + (1.2 if e0[1] == 0 and e1[1] == 0 else 0)
                    )
                    if e0[0] == pw:
                        pu -= 1.2
                    _add_tree(sc, *pf.px([pu, pv]), rng.uniform(1.5, 3.2))
            strips = [pf.rect(0, 0, pw, 2.4), pf.rect(0, 0, 2.4, pd), pf.rect(pw - 2.4, 0, pw, pd)]
            for st in strips:
                kk, gs = sc.key(), _sub_seed(sc)
                sc.draw(
                    ST_LANDSCAPE,
                    lambda cv, g=st, kk=kk, gs=gs: _draw_surface(
                        cv,
                        g,
                        np.array([160, 150, 132], np.float32),
                        int(Label.GROUND),
                        kk,
                        0.06,
                        0.07,
                        4.0,
                        gs,
                    ),
                )
            _add_commercial_building(sc, pf, pw, pd, pv_share=0.8 if i == 0 else 0.55)
        else:
            _add_solar_field(sc, pf, pw, pd)
    sc.count("commercial_blocks")


def _add_arterials(
    sc: _Scene, xs: list[float], ys: list[float], road_w: float, walk_w: float
) -> None:
    rng, s = sc.rng, sc.s
    h, w = sc.canvas.h, sc.canvas.w
    pad = 50 * s
    asphalt = np.array([92, 92, 96], np.float32) * rng.uniform(0.9, 1.1)
    walk_col = np.array([194, 190, 182], np.float32)
    half = road_w * s / 2
    for x in xs:
        k = sc.key()
        walk = box(x - half - walk_w * s, -pad, x + half + walk_w * s, h + pad)
        road = box(x - half, -pad, x + half, h + pad)
        sc.draw(
            ST_ART_WALK,
            lambda cv, g=walk, k=k: cv.fill(g, walk_col, int(Label.PAVED), fine=0.04, key=k),
        )
        sc.draw(
            ST_ART_ROAD,
            lambda cv, g=road, k=k: cv.fill(
                g, asphalt, int(Label.PAVED), coarse=0.07, fine=0.07, key=k + 1
            ),
        )
    for y in ys:
        k = sc.key()
        walk = box(-pad, y - half - walk_w * s, w + pad, y + half + walk_w * s)
        road = box(-pad, y - half, w + pad, y + half)
        sc.draw(
            ST_ART_WALK,
            lambda cv, g=walk, k=k: cv.fill(g, walk_col, int(Label.PAVED), fine=0.04, key=k),
        )
        sc.draw(
            ST_ART_ROAD,
            lambda cv, g=road, k=k: cv.fill(
                g, asphalt, int(Label.PAVED), coarse=0.07, fine=0.07, key=k + 1
            ),
        )
    # lane marks between intersections: double yellow centre, dashed white lanes, crosswalks
    yellow, white = (214, 178, 72), (224, 224, 218)
    lane = road_w / 4

    def marks(along: list[float], across: float, vertical: bool) -> None:
        stops = sorted(along)
        lo_lim, hi_lim = -pad, (h if vertical else w) + pad
        edges = (
            [lo_lim]
            + [p for a in stops for p in (a - half - walk_w * s, a + half + walk_w * s)]
            + [hi_lim]
        )
        for a, b in zip(edges[0::2], edges[1::2], strict=True):
            if b - a < 5 * s:
                continue
            segs: list[tuple[float, float, float, tuple[int, int, int], float]] = []
            for off in (-0.12, 0.12):
                segs.append((across + off * s, a + 1 * s, b - 1 * s, yellow, 0.1))
            for off in (-lane, lane):
                for t in np.arange(a + 3 * s, b - 3 * s, 12 * s):
                    segs.append((across + off * s, t, min(t + 3 * s, b - 3 * s), white, 0.1))
            for off in (-(road_w / 2 - 0.4), road_w / 2 - 0.4):
                segs.append((across + off * s, a + 1 * s, b - 1 * s, white, 0.12))
            for end, sign in ((a, 1), (b, -1)):  # zebra crossing at each approach
                if lo_lim < end < hi_lim and rng.random() < 0.7:
                    for t in np.arange(-road_w / 2 + 0.4, road_w / 2 - 0.4, 1.1):
                        segs.append(
                            (
                                across + (t + 0.25) * s,
                                end + sign * 1.0 * s,
                                end + sign * 3.5 * s,
                                white,
                                0.5,
                            )
                        )
            for c, t0, t1, col, wid in segs:
                p0, p1 = ((c, t0), (c, t1)) if vertical else ((t0, c), (t1, c))
                sc.draw(
                    ST_MARK,
                    lambda cv, p0=p0, p1=p1, col=col, wid=wid: cv.line(p0, p1, col, wid * s),
                )

    for x in xs:
        marks(ys, x, True)
        for t in np.arange(rng.uniform(0, 40), h / s, rng.uniform(25, 60)):  # traffic
            off = rng.choice([-1.5, -0.5, 0.5, 1.5]) * lane
            _add_car(sc, _Frame(x + off * s, t * s, math.pi / 2 * (1 if off > 0 else -1), s))
    for y in ys:
        marks(xs, y, False)
        for t in np.arange(rng.uniform(0, 40), w / s, rng.uniform(25, 60)):
            off = rng.choice([-1.5, -0.5, 0.5, 1.5]) * lane
            _add_car(sc, _Frame(t * s, y + off * s, 0.0 if off > 0 else math.pi, s))


def _layout(sc: _Scene) -> None:
    rng, s, cfg = sc.rng, sc.s, sc.cfg
    h, w = sc.canvas.h, sc.canvas.w
    spacing = cfg.superblock_m * s
    road_w, walk_w = 15.0, 2.0
    xs = list(np.arange(rng.uniform(0.15, 0.85) * spacing - spacing, w + spacing, spacing))
    ys = list(np.arange(rng.uniform(0.15, 0.85) * spacing - spacing, h + spacing, spacing))
    half = (road_w / 2 + walk_w) * s
    scene_box = box(0, 0, w, h)
    cells: list[tuple[Polygon, float]] = []
    for xa, xb in zip(xs[:-1], xs[1:], strict=True):
        for ya, yb in zip(ys[:-1], ys[1:], strict=True):
            cell = box(xa + half, ya + half, xb - half, yb - half)
            inside = cell.intersection(scene_box).area / cell.area
            if inside > 0:
                cells.append((cell, inside))
    _add_arterials(
        sc,
        [x for x in xs if -half < x < w + half],
        [y for y in ys if -half < y < h + half],
        road_w,
        walk_w,
    )
    # commercial blocks: preferably cells mostly inside the scene
    n_com = round(cfg.commercial_share * sum(1 for _, f in cells if f >= 0.25))
    if cfg.commercial_share > 0 and n_com == 0 and cells:
        n_com = 1
    order = sorted(range(len(cells)), key=lambda i: -(cells[i][1] + 0.35 * rng.random()))
    commercial = set(order[:n_com])
    field_done = False
    for i, (cell, _) in enumerate(cells):
        if i in commercial:
            _add_commercial_cell(sc, cell, field_parcel=not field_done)
            field_done = field_done or sc.counts.get("solar_fields", 0) > 0
        else:
            _add_residential_cell(sc, cell)
    # street trees and scrub in open ground everywhere
    kept_clear = shapely.union_all(sc.no_scrub) if sc.no_scrub else Polygon()
    shapely.prepare(kept_clear)
    for _ in range(int(w * h / (s * s) / 150)):
        x, y, r_m, h_m = (
            rng.uniform(0, w),
            rng.uniform(0, h),
            rng.uniform(0.3, 0.9),
            rng.uniform(0.4, 1.2),
        )
        if not kept_clear.intersects(shapely.Point(x, y)):
            _add_tree(sc, x, y, r_m, height_m=h_m, ground_only=True)


def _post(cv: _Canvas, seed: int) -> None:
    """Camera look: slight optical blur and sensor noise, strip by strip."""
    rng = np.random.default_rng([seed, 99])
    strip, halo = 512, 4
    h = cv.h
    prev_tail: np.ndarray | None = None
    for y0 in range(0, h, strip):
        y1 = min(y0 + strip, h)
        a, b = max(y0 - halo, 0), min(y1 + halo, h)
        src = cv.img[a:b].copy()
        if prev_tail is not None:  # rows above were already replaced: use the originals
            src[: y0 - a] = prev_tail
        prev_tail = cv.img[y1 - halo : y1].copy() if y1 - halo >= y0 else None
        blurred = cv2.GaussianBlur(src, (0, 0), 0.6)[y0 - a : y0 - a + (y1 - y0)]
        noise = rng.standard_normal((y1 - y0, cv.w, 1), dtype=np.float32) * 1.8
        cv.img[y0:y1] = np.clip(blurred.astype(np.float32) + noise, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Georeference and writers


def scene_georeference(cfg: SyntheticSceneConfig) -> tuple[Affine, float]:
    """(pixel -> ``cfg.crs`` transform, ground metres per pixel) for a config.

    EPSG:3857: the raster is a window of the zoom's Web-Mercator pixel grid (origin on a pixel
    boundary, pixel size ``mercator_m_per_px(zoom)``). Other CRSs: square pixels of the ground
    resolution at the centre latitude, origin snapped to a multiple of the pixel size.
    """
    crs = CRS.from_user_input(cfg.crs)
    if crs == CRS.from_epsg(3857):
        res = mercator_m_per_px(cfg.zoom)
        mx, my = lonlat_to_mercator(cfg.center_lon, cfg.center_lat)
        col0 = round((mx + ORIGIN_SHIFT_M) / res - cfg.width_px / 2)
        row0 = round((ORIGIN_SHIFT_M - my) / res - cfg.height_px / 2)
        transform = Affine(
            res, 0.0, -ORIGIN_SHIFT_M + col0 * res, 0.0, -res, ORIGIN_SHIFT_M - row0 * res
        )
        return transform, float(res * math.cos(math.radians(cfg.center_lat)))
    res = float(ground_resolution_m_per_px(cfg.center_lat, cfg.zoom))
    x, y = Transformer.from_crs(LONLAT, crs, always_xy=True).transform(
        cfg.center_lon, cfg.center_lat
    )
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ConfigError(
            f"the scene centre ({cfg.center_lon}, {cfg.center_lat}) is outside the area of {cfg.crs}",
            where="SyntheticSceneConfig.crs",
            fix="pick a CRS valid at the centre (e.g. its UTM zone) or EPSG:3857",
        )
    left = math.floor((x - cfg.width_px * res / 2) / res) * res
    top = math.floor((y + cfg.height_px * res / 2) / res) * res
    return Affine(res, 0.0, left, 0.0, -res, top), res


def _px_to_crs(geom: BaseGeometry, t: Affine) -> BaseGeometry:
    return shapely.transform(
        geom, lambda c: np.column_stack([t.a * c[:, 0] + t.c, t.e * c[:, 1] + t.f])
    )


def _atomic_path(final: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{final.stem}.tmp-", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    os.unlink(name)
    return Path(name)


def _write_cog(
    path: Path,
    data: np.ndarray,
    crs: str,
    transform: Affine,
    compress: str,
    tags: dict[str, str],
    *,
    rgb: bool,
) -> None:
    tmp = _atomic_path(path)
    count = data.shape[2] if data.ndim == 3 else 1
    opts: dict[str, Any] = dict(
        driver="COG",
        width=data.shape[1],
        height=data.shape[0],
        count=count,
        dtype="uint8",
        crs=crs,
        transform=transform,
        blocksize=512,
        compress=compress.upper(),
        bigtiff="IF_SAFER",
        overview_resampling="average" if rgb else "nearest",
    )
    if compress == "jpeg":
        opts["quality"] = 92
    else:  # a moderate level: level 6+ doubles the write time for ~3% smaller files
        opts.update(predictor=2, level=4 if compress == "deflate" else 3)
    try:
        with rasterio.open(tmp, "w", **opts) as dst:
            if data.ndim == 3:
                dst.write(np.moveaxis(data, 2, 0))
                dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            else:
                dst.write(data, 1)
            dst.update_tags(**tags)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_truth(path: Path, panels: gpd.GeoDataFrame, lookalikes: gpd.GeoDataFrame) -> None:
    tmp = _atomic_path(path)
    try:
        for layer, gdf in (("panels", panels), ("lookalikes", lookalikes)):
            gdf.to_file(
                tmp,
                layer=layer,
                driver="GPKG",
                engine="pyogrio",
                geometry_type="MultiPolygon",
                promote_to_multi=True,
                dataset_options={"VERSION": "1.2"} if layer == "panels" else None,
            )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = _atomic_path(path)
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _multi(g: BaseGeometry) -> MultiPolygon:
    if g.geom_type == "Polygon":
        return MultiPolygon([g])
    if g.geom_type == "MultiPolygon":
        return g
    return MultiPolygon([p for p in getattr(g, "geoms", []) if p.geom_type == "Polygon"])


# ----------------------------------------------------------------------------------------------
# Public API


def generate_scene(
    config: SyntheticSceneConfig | dict[str, Any] | None, out_dir: str | Path
) -> SceneResult:
    """Render the SYNTHETIC scene of ``config`` into ``out_dir`` (created; files replaced atomically)."""
    cfg = validate_config(
        SyntheticSceneConfig, config if config is not None else {}, where="synthetic scene config"
    )
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create the output folder ({err.strerror})",
            where=str(out),
            fix="pass a writable folder path as out_dir",
        ) from None
    transform, m_per_px = scene_georeference(cfg)
    s = 1.0 / m_per_px
    rng = np.random.default_rng(cfg.seed)
    sun = _Sun(
        cfg.sun_azimuth_deg if cfg.sun_azimuth_deg is not None else float(rng.uniform(120, 240)),
        cfg.sun_elevation_deg if cfg.sun_elevation_deg is not None else float(rng.uniform(38, 65)),
    )
    canvas = _Canvas(cfg.height_px, cfg.width_px, s, sun, cfg.seed)
    sc = _Scene(canvas, rng, cfg, s, sun)
    _layout(sc)
    _draw_ground(canvas, np.random.default_rng([cfg.seed, 1]))
    for _, _, fn in sorted(sc.commands, key=lambda c: (c[0], c[1])):
        fn(canvas)
    # visible PV per array (trees were painted after the panels)
    for i, arr in enumerate(sc.arrays):
        arr.array_id = i + 1
        if arr.roi is not None:
            arr.visible_px = int((canvas.label[arr.roi.sl][arr.roi.m] == Label.PV).sum())
    _post(canvas, cfg.seed)

    to_ll = Transformer.from_crs(cfg.crs, LONLAT, always_xy=True)
    to_ea = Transformer.from_crs(LONLAT, EQUAL_AREA_CRS, always_xy=True)

    def lonlat(g_px: BaseGeometry) -> BaseGeometry:
        g = _px_to_crs(g_px, transform)
        return shapely.transform(g, lambda c: np.column_stack(to_ll.transform(c[:, 0], c[:, 1])))

    def area_m2(g_ll: BaseGeometry) -> float:
        return float(
            shapely.transform(
                g_ll, lambda c: np.column_stack(to_ea.transform(c[:, 0], c[:, 1]))
            ).area
        )

    rows = []
    for arr in sc.arrays:
        g = lonlat(arr.polygon())
        a = area_m2(g)
        occl = (
            float(np.clip(1.0 - arr.visible_px / arr.footprint_px, 0, 1))
            if arr.footprint_px
            else 0.0
        )
        rows.append(
            {
                "array_id": arr.array_id,
                "kind": arr.kind,
                "mount": arr.mount,
                "area_m2": a,
                # the visible share of the exact area (pixel counts x m_per_px**2 would carry
                # the ~0.2 % bias of the spherical ground-resolution formula)
                "visible_area_m2": a * (1.0 - occl),
                "n_modules": arr.n_modules,
                "occluded_fraction": occl,
                "synthetic": True,
                "geometry": _multi(g),
            }
        )
    panel_cols = [
        "array_id",
        "kind",
        "mount",
        "area_m2",
        "visible_area_m2",
        "n_modules",
        "occluded_fraction",
        "synthetic",
        "geometry",
    ]
    panels = gpd.GeoDataFrame(
        pandas.DataFrame(rows, columns=panel_cols), geometry="geometry", crs=LONLAT
    )
    scene_px = box(0, 0, cfg.width_px, cfg.height_px)
    look_rows = []
    for la in sc.lookalikes:
        g_px = la.polygon.intersection(scene_px)
        if g_px.is_empty or g_px.area < 1:
            continue
        g = lonlat(g_px)
        look_rows.append(
            {
                "lookalike_id": len(look_rows) + 1,
                "kind": la.kind,
                "area_m2": area_m2(g),
                "synthetic": True,
                "geometry": _multi(g),
            }
        )
    lookalikes = gpd.GeoDataFrame(
        pandas.DataFrame(
            look_rows, columns=["lookalike_id", "kind", "area_m2", "synthetic", "geometry"]
        ),
        geometry="geometry",
        crs=LONLAT,
    )

    digest = hashlib.sha256(canvas.img.tobytes()).hexdigest()
    tags = {
        "SYNTHETIC": "true",
        "SYNTHETIC_NOTE": "SYNTHETIC imagery generated by deepsolar.synthetic - not a real photograph",
        "SYNTHETIC_SEED": str(cfg.seed),
        "GENERATOR": GENERATOR_NAME,
        "GENERATOR_VERSION": GENERATOR_VERSION,
        "ZOOM": str(cfg.zoom),
        "GROUND_M_PER_PX": f"{m_per_px:.6f}",
        "PIXELS_SHA256": digest,
        "TIFFTAG_IMAGEDESCRIPTION": f"SYNTHETIC aerial scene (deepsolar.synthetic {GENERATOR_VERSION}, seed {cfg.seed})",
    }
    paths = {
        "image": out / IMAGE_NAME,
        "truth": out / TRUTH_NAME,
        "mask": out / MASK_NAME,
        "labels": out / LABELS_NAME,
        "metadata": out / METADATA_NAME,
    }
    _write_cog(paths["image"], canvas.img, cfg.crs, transform, cfg.compress, tags, rgb=True)
    mask = (canvas.label == Label.PV).astype(np.uint8)
    _write_cog(
        paths["mask"],
        mask,
        cfg.crs,
        transform,
        "deflate",
        {**tags, "CONTENT": "1 = visible PV panel pixel (SYNTHETIC truth)"},
        rgb=False,
    )
    _write_cog(
        paths["labels"],
        canvas.label,
        cfg.crs,
        transform,
        "deflate",
        {
            **tags,
            "CONTENT": "pixel class: "
            + ", ".join(f"{lab.value}={lab.name.lower()}" for lab in Label),
        },
        rgb=False,
    )
    _write_truth(paths["truth"], panels, lookalikes)

    w_px, h_px = cfg.width_px, cfg.height_px
    left, top = transform.c, transform.f
    bounds = (left, top + transform.e * h_px, left + transform.a * w_px, top)
    xs_b = np.array([bounds[0], bounds[2], bounds[2], bounds[0]])
    ys_b = np.array([bounds[1], bounds[1], bounds[3], bounds[3]])
    lon_b, lat_b = to_ll.transform(xs_b, ys_b)
    bounds_ll = (float(min(lon_b)), float(min(lat_b)), float(max(lon_b)), float(max(lat_b)))
    meta = {
        "label": SYNTHETIC_LABEL,
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "config": cfg.model_dump(mode="json"),
        "crs": cfg.crs,
        "transform": list(transform)[:6],
        "bounds": list(bounds),
        "bounds_lonlat": list(bounds_ll),
        "width_px": w_px,
        "height_px": h_px,
        "m_per_px": m_per_px,
        "sun": {"azimuth_deg": sun.azimuth_deg, "elevation_deg": sun.elevation_deg},
        "counts": dict(sorted(sc.counts.items())),
        "arrays": {
            "residential": int((panels["kind"] == "residential").sum()),
            "commercial": int((panels["kind"] == "commercial").sum()),
            "total_area_m2": float(panels["area_m2"].sum()),
            "visible_pv_px": int(mask.sum()),
        },
        "lookalikes": {
            k: int(v) for k, v in lookalikes["kind"].value_counts().sort_index().items()
        },
        "label_classes": {lab.name.lower(): lab.value for lab in Label},
        "files": {k: p.name for k, p in paths.items() if k != "metadata"},
        "pixels_sha256": digest,
    }
    _write_json(paths["metadata"], meta)
    return SceneResult(
        image_path=paths["image"],
        truth_path=paths["truth"],
        truth_mask_path=paths["mask"],
        labels_path=paths["labels"],
        metadata_path=paths["metadata"],
        crs=cfg.crs,
        bounds=bounds,
        bounds_lonlat=bounds_ll,
        transform=transform,
        width_px=w_px,
        height_px=h_px,
        m_per_px=m_per_px,
        n_arrays=len(panels),
        n_lookalikes=len(lookalikes),
    )


PANEL_COLUMNS = ("array_id", "kind", "area_m2", "occluded_fraction", "synthetic")


def read_truth(
    path: str | Path, layer: Literal["panels", "lookalikes"] = "panels"
) -> gpd.GeoDataFrame:
    """Read a layer of a synthetic truth GeoPackage (EPSG:4326), checking it is one."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(
            "truth GeoPackage not found",
            where=str(p),
            fix="generate the scene first (deepsolar.synthetic.generate_scene)",
        )
    try:
        import pyogrio

        layers = {name for name, _ in pyogrio.list_layers(p)}
    except Exception as err:  # noqa: BLE001 - any read failure means the same to the user
        raise InputDataError(
            f"not a readable GeoPackage ({err})",
            where=str(p),
            fix="regenerate the scene; the file may be truncated",
        ) from None
    if layer not in layers:
        raise InputDataError(
            f"layer {layer!r} is missing (has {sorted(layers)})",
            where=str(p),
            fix="pass a truth file written by deepsolar.synthetic.generate_scene",
        )
    gdf = gpd.read_file(p, layer=layer, engine="pyogrio")
    need = PANEL_COLUMNS if layer == "panels" else ("lookalike_id", "kind", "area_m2", "synthetic")
    missing = [c for c in need if c not in gdf.columns]
    if missing:
        raise InputDataError(
            f"layer {layer!r} lacks columns {missing}",
            where=str(p),
            fix="pass a truth file written by deepsolar.synthetic.generate_scene",
        )
    gdf["synthetic"] = gdf["synthetic"].astype(bool)
    return gdf


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepsolar.synthetic OUT_DIR [--seed N] [--config scene.yaml]``."""
    from deepsolar.core.config import load_yaml

    ap = argparse.ArgumentParser(
        prog="python -m deepsolar.synthetic", description="Generate the SYNTHETIC demo scene."
    )
    ap.add_argument("out_dir")
    ap.add_argument("--config", help="YAML file with SyntheticSceneConfig fields")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    data = load_yaml(args.config) if args.config else {}
    if args.seed is not None:
        data["seed"] = args.seed
    res = generate_scene(data, args.out_dir)
    print(
        f"SYNTHETIC scene: {res.image_path} ({res.width_px}x{res.height_px} px, {res.m_per_px:.4f} m/px), "
        f"{res.n_arrays} PV arrays, {res.n_lookalikes} look-alikes; truth {res.truth_path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
