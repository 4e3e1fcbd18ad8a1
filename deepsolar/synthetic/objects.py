"""The things a SYNTHETIC scene is drawn with: palettes, PV arrays, roofs, trees, cars, roads.

Each ``_draw_*`` paints one object on the canvas at render time (with its own seeded generator);
each ``_add_*`` draws its random parameters from the scene's generator at layout time and records
the drawing commands, and the truth records (PV arrays, look-alikes) where there are any.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import Polygon

from deepsolar.synthetic.canvas import (
    SHADOW,
    TREE_SHADOW,
    Label,
    _Canvas,
    _Frame,
    _hull,
    _Roi,
    _rounded_rect,
    _translate,
)
from deepsolar.synthetic.config import COMMERCIAL_AREA_RANGE_M2, RESIDENTIAL_AREA_RANGE_M2
from deepsolar.synthetic.scene import (
    ST_ART_ROAD,
    ST_ART_WALK,
    ST_BLD_SHADOW,
    ST_CAR,
    ST_CAR_SHADOW,
    ST_MARK,
    ST_PV,
    ST_ROOF,
    ST_TREE,
    ST_TREE_SHADOW,
    _Lookalike,
    _PVArray,
    _PVBlock,
    _Scene,
    _sub_seed,
)

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
# Drawers (closures run at render time with their own seeded generator)


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
# Objects laid out in the scene


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


# ----------------------------------------------------------------------------------------------
# Roads


def _add_arterial_strip(
    sc: _Scene, walk: Polygon, road: Polygon, walk_col: np.ndarray, asphalt: np.ndarray
) -> None:
    """One arterial: its asphalt over a wider sidewalk strip (one texture key for the pair)."""
    k = sc.key()
    sc.draw(
        ST_ART_WALK,
        lambda cv: cv.fill(walk, walk_col, int(Label.PAVED), fine=0.04, key=k),
    )
    sc.draw(
        ST_ART_ROAD,
        lambda cv: cv.fill(road, asphalt, int(Label.PAVED), coarse=0.07, fine=0.07, key=k + 1),
    )


def _add_lane_marks(
    sc: _Scene,
    along: list[float],
    across: float,
    vertical: bool,
    road_w: float,
    walk_w: float,
) -> None:
    """Marks of one arterial between intersections.

    Double yellow centre, dashed white lanes, edge lines and zebra crossings at 70% of the
    approaches.

    ``along``: pixel positions of the crossing arterials; ``across``: this arterial's centre line
    (px); ``vertical``: it runs north-south; ``road_w``, ``walk_w``: road and sidewalk widths (m).
    """
    rng, s = sc.rng, sc.s
    pad = 50 * s
    half = road_w * s / 2
    lane = road_w / 4
    yellow, white = (214, 178, 72), (224, 224, 218)
    stops = sorted(along)
    lo_lim, hi_lim = -pad, (sc.canvas.h if vertical else sc.canvas.w) + pad
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
