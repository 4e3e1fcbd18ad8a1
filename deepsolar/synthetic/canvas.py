"""The raster canvas of a SYNTHETIC scene and its drawing primitives.

Pixel space throughout: pixel (col, row) covers [col, col+1) x [row, row+1). A :class:`_Canvas`
holds the RGB image, the per-pixel :class:`Label` map and seeded texture banks; drawers fill
polygons (numpy arrays of pixel coordinates or shapely geometries) into both. The sun, the local
metric frames objects are laid out in, the arid ground and the final camera look live here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import cv2
import numpy as np
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry


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
