"""Buildings of a SYNTHETIC scene: houses on their lots, commercial buildings and solar fields.

Each builder draws its random parameters from the scene's generator in a fixed order (the order
of the steps below is part of the scene: changing it changes every later object), records the
drawing commands by stage and adds PV arrays and look-alikes to the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from deepsolar.synthetic.canvas import (
    SHADOW,
    Label,
    _Canvas,
    _draw_surface,
    _Frame,
    _hull,
    _rect_uv,
    _rounded_rect,
    _translate,
)
from deepsolar.synthetic.objects import (
    COMMERCIAL_ROOF,
    FLAT_ROOF,
    PITCHED_ROOF,
    SKYLIGHT_GLASS,
    _add_car,
    _add_flat_roof,
    _add_occluding_tree,
    _add_tree,
    _building_shadow,
    _dark_colour,
    _draw_plane,
    _draw_pool,
    _draw_skylight,
    _fit_plane_array,
    _make_pv_style,
    _pick,
    _register_array,
    _segments,
    _trim_blocks,
)
from deepsolar.synthetic.scene import (
    ST_DRIVE,
    ST_LOT,
    ST_MARK,
    ST_POOL,
    ST_ROOF,
    ST_ROOF_DETAIL,
    ST_WALL,
    ST_WALL_SHADOW,
    ST_YARD,
    _Lookalike,
    _PVArray,
    _PVBlock,
    _Scene,
    _sub_seed,
)

# A roof plane PV may go on: (frame, length along u (m), depth (m), hip, pitch (deg), downslope
# direction in pixel space, wing index).
_Plane = tuple[_Frame, float, float, bool, float, np.ndarray, int]


# ----------------------------------------------------------------------------------------------
# Houses


@dataclass
class _Lot:
    """A house lot: its frame (u along the street, v away from it), size (m) and clip.

    ``clip``: the super-block interior when the lot is cut by it; everything is kept inside it.

    Two values are read by drawing commands at paint time, not when they are recorded (generator
    1.0 behaviour, kept so that scenes stay bit-identical): the wall shadows are cast with
    ``shadow_sv``, the offset of the lot's *last* shadow-casting detail (the roof box when there
    is one), and the patio is textured with ``paving_key``, the key of the last paving drawn (the
    pool's when there is one).
    """

    frame: _Frame
    w: float
    d: float
    clip: Polygon | None
    shadow_sv: np.ndarray | None = None
    paving_key: int = 0

    def fits(self, pts: np.ndarray) -> bool:
        return self.clip is None or self.clip.contains(Polygon(pts))

    def clipped(self, pts: np.ndarray) -> Any:
        return pts if self.clip is None else Polygon(pts).intersection(self.clip)

    def contains(self, u: float, v: float) -> bool:
        return self.clip is None or self.clip.contains(shapely.Point(self.frame.px([u, v])))


@dataclass
class _House:
    """The main block of a house (frame, offsets and size in m), its roof style and wings."""

    frame: _Frame
    hu: float
    setback: float
    hw: float
    hd: float
    eave_h: float
    roof_kind: str
    dark: bool
    colour: np.ndarray
    texture: str
    label: int
    wings: list[tuple[_Frame, float, float]] = field(default_factory=list)
    planes_for_pv: list[_Plane] = field(default_factory=list)
    roof_polys: list[Polygon] = field(default_factory=list)

    def under_other_wing(self, geom: BaseGeometry, wing: int, s: float) -> bool:
        """Where wings overlap, the other wing's roof is on top: keep panels/skylights off it."""
        return any(
            geom.intersects(p.buffer(0.2 * s)) for j, p in enumerate(self.roof_polys) if j != wing
        )


def _add_house(
    sc: _Scene, lot: _Frame, lot_w: float, lot_d: float, clip: Polygon | None = None
) -> None:
    """A single-family house with yard, driveway, maybe pool, trees, PV, skylights.

    ``clip``: the super-block interior when the lot is cut by it (lots of rotated street grids);
    everything is kept inside it.
    """
    lt = _Lot(lot, lot_w, lot_d, clip)
    if not sc.visible(lot.rect(0, 0, lot_w, lot_d), 40 * sc.s):
        return
    _add_yard(sc, lt)
    _add_walls(sc, lt)
    house = _plan_house(sc, lt)
    if house is None:
        return
    _add_garage_and_drive(sc, lt, house)
    _add_roofs(sc, house)
    _add_roof_clutter(sc, lt, house)
    pv_poly = _add_house_pv(sc, house)
    _add_house_skylights(sc, house, pv_poly)
    _add_back_yard(sc, lt, house)
    _add_lot_trees(sc, lt, house)


def _add_yard(sc: _Scene, lt: _Lot) -> None:
    """Yard surface: xeriscape gravel or lawn."""
    rng, lot = sc.rng, lt.frame
    yard_key = sc.key()
    if rng.random() < 0.35:
        lawn = lt.clipped(lot.rect(0.3, rng.uniform(0.5, 2), lt.w - 0.3, lt.d - 0.3))
        g = np.array([104, 116, 70], np.float32) * rng.uniform(0.85, 1.08)
        sc.draw(
            ST_YARD,
            lambda cv: cv.fill(lawn, g, int(Label.GROUND), coarse=0.16, fine=0.06, key=yard_key),
        )
    else:
        gravel = lt.clipped(lot.rect(0.3, 0.3, lt.w - 0.3, lt.d - 0.3))
        g = np.array(rng.choice([(168, 160, 146), (150, 132, 112), (186, 170, 150)]), np.float32)
        g = g * rng.uniform(0.95, 1.05)
        gs = _sub_seed(sc)
        sc.draw(
            ST_YARD,
            lambda cv: _draw_surface(
                cv, gravel, g, int(Label.GROUND), yard_key, 0.07, 0.07, 3.5, gs
            ),
        )


def _add_walls(sc: _Scene, lt: _Lot) -> None:
    """Block walls on the sides and back of 70% of the lots, with shadows (see :class:`_Lot`)."""
    rng, lot = sc.rng, lt.frame
    if not rng.random() < 0.7:
        return
    wall_col = np.array([196, 180, 154], np.float32) * rng.uniform(0.9, 1.05)
    lt.shadow_sv = sc.sun.shadow_px(sc.s) * 1.5
    for a, b in (
        ((0, 0), (0, lt.d)),
        ((0, lt.d), (lt.w, lt.d)),
        ((lt.w, lt.d), (lt.w, 0)),
    ):
        p = lot.px([a, b])
        d = np.array(b, float) - np.array(a, float)
        n = lot.vec(d[1] / np.linalg.norm(d), -d[0] / np.linalg.norm(d)) * 0.1
        quad = np.array([p[0] - n, p[1] - n, p[1] + n, p[0] + n])
        if not lt.fits(quad):
            continue
        sc.draw(
            ST_WALL_SHADOW,
            lambda cv, q=quad: cv.shade(_hull(q, _translate(q, lt.shadow_sv)), SHADOW),
        )
        sc.draw(ST_WALL, lambda cv, q=quad: cv.fill(q, wall_col, int(Label.GROUND)))


def _plan_house(sc: _Scene, lt: _Lot) -> _House | None:
    """The main block's place and size on the lot and its roof style, or None if none fits."""
    rng = sc.rng
    setback = rng.uniform(4.0, 6.5)
    max_d = min(lt.d - setback - 4.0, 15.0)
    max_w = min(lt.w - 2.6, 18.0)
    if max_d < 8.0 or max_w < 8.5:
        return None
    hw, hd = rng.uniform(8.5, max_w), rng.uniform(8.0, max_d)
    hu = rng.uniform(1.3, lt.w - 1.3 - hw)
    jitter = math.radians(rng.uniform(-2.5, 2.5))
    house = lt.frame.sub(hu, setback, jitter)
    if not lt.fits(house.rect(-1, -1, hw + 1, hd + 1)):
        return None
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
    return _House(
        frame=house,
        hu=hu,
        setback=setback,
        hw=hw,
        hd=hd,
        eave_h=eave_h,
        roof_kind=str(roof_kind),
        dark=dark,
        colour=colour,
        texture=texture,
        label=label,
        wings=[(house, hw, hd)],
    )


def _add_garage_and_drive(sc: _Scene, lt: _Lot, h: _House) -> None:
    """Maybe a garage wing (L-shaped plan, its own roof section); the driveway, maybe a car."""
    rng, lot = sc.rng, lt.frame
    drive_u = h.hu + rng.uniform(0, max(h.hw - 6, 0))
    front_v = h.setback
    if rng.random() < 0.45 and h.hw > 11:
        gw, gd = rng.uniform(5.5, 7.0), rng.uniform(6.0, 7.5)
        left = rng.random() < 0.5
        gu = 0.0 if left else h.hw - gw
        gv = -rng.uniform(1.0, 3.0)
        if h.setback + gv > 2.5 and lt.fits(h.frame.rect(gu - 1, gv - 1, gu + gw + 1, gv + gd)):
            h.wings.append((h.frame.sub(gu, gv), gw, gd))
            drive_u = h.hu + gu + 0.2
            front_v = min(h.setback, h.setback + gv)
    drive_w = 5.6
    drive = lot.rect(drive_u, -1.8, min(drive_u + drive_w, lt.w - 0.2), front_v + 0.3)
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


def _add_roofs(sc: _Scene, h: _House) -> None:
    """Each wing's roof (flat, or gable / hip planes), building shadows; the dark-roof truth."""
    pitch = sc.rng.uniform(18, 34)
    for wi, (wf, ww, wd) in enumerate(h.wings):
        fp = wf.rect(0, 0, ww, wd)
        h.roof_polys.append(Polygon(fp))
        kind = h.roof_kind if wi == 0 else ("flat" if h.roof_kind == "flat" else "gable")
        if kind == "flat":
            _building_shadow(sc, fp, h.eave_h + 0.5, None, 0)
            _add_flat_roof(sc, wf, ww, wd, h.colour, h.label, parapet=0.3)
            h.planes_for_pv.append(
                (wf.sub(0.6, 0.6), ww - 1.2, wd - 1.2, False, 0.0, np.array([0.0, 1.0]), wi)
            )
            continue
        _add_pitched_roof(sc, h, wi, kind, pitch)
    roof_union = shapely.union_all(h.roof_polys)
    if h.dark:
        sc.lookalikes.append(_Lookalike("dark_roof", roof_union))
    sc.count(
        "houses",
        np.asarray(roof_union.exterior.coords) if roof_union.geom_type == "Polygon" else None,
    )


def _add_pitched_roof(sc: _Scene, h: _House, wi: int, kind: str, pitch: float) -> None:
    """A gable or hip roof over wing ``wi``: its planes, ridge, hips and eaves, and its shadow."""
    rng = sc.rng
    wf, ww, wd = h.wings[wi]
    fp = wf.rect(0, 0, ww, wd)
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
    _building_shadow(sc, fp, h.eave_h, ridge, h.eave_h + rise)
    planes: list[tuple[_Frame, float, float, bool]] = [
        (rf, L, D / 2, kind == "hip"),
        (rf.sub(L, D, math.pi), L, D / 2, kind == "hip"),
    ]
    if kind == "hip":
        planes += [
            (rf.sub(0, D, -math.pi / 2), D, D / 2, True),
            (rf.sub(L, 0, math.pi / 2), D, D / 2, True),
        ]
    colour, texture, label = h.colour, h.texture, h.label
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
        h.planes_for_pv.append((pf, pl, depth, hip, pitch, down, wi))
    _add_roof_lines(sc, h.colour, rf, L, D, kind == "hip", ridge, fp)


def _add_roof_lines(
    sc: _Scene,
    colour: np.ndarray,
    rf: _Frame,
    L: float,
    D: float,
    hip: bool,
    ridge: np.ndarray,
    fp: np.ndarray,
) -> None:
    """Ridge, hips and eaves right after a wing's planes, so a later wing covers them."""
    s = sc.s
    edge_col = colour * 0.78
    sc.draw(ST_ROOF, lambda cv, rg=ridge, c=colour * 1.12: cv.line(rg[0], rg[1], c, 0.12 * s))
    if hip:
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


def _add_roof_clutter(sc: _Scene, lt: _Lot, h: _House) -> None:
    """Small roof clutter: vents, chimneys; an evaporative cooler box on 30% of the roofs."""
    rng, s = sc.rng, sc.s
    for _ in range(int(rng.integers(0, 4))):
        p = h.frame.px([rng.uniform(1, h.hw - 1), rng.uniform(1, h.hd - 1)])
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
        cu, cvv = rng.uniform(1.5, h.hw - 2.5), rng.uniform(1.5, h.hd - 2.5)
        box_pts = h.frame.rect(cu, cvv, cu + 1.0, cvv + 1.1)
        sv = sc.sun.shadow_px(s) * 0.9
        lt.shadow_sv = sv  # the lot's walls cast their shadows with it too (see _Lot)
        sc.draw(
            ST_ROOF_DETAIL,
            lambda cv, b=box_pts: (
                cv.shade(_hull(b, _translate(b, sv)), SHADOW),
                cv.fill(b, (196, 198, 196), int(Label.ROOF_EQUIPMENT), fine=0.04),
            ),
        )


def _add_house_pv(sc: _Scene, h: _House) -> BaseGeometry | None:
    """PV on the most sun-facing plane where an array fits; returns its polygon (px) or None."""
    rng = sc.rng
    if not (rng.random() < sc.cfg.residential_pv_share and h.planes_for_pv):
        return None
    planes = h.planes_for_pv
    order = sorted(range(len(planes)), key=lambda i: -planes[i][5][1] - 0.3 * rng.random())
    for i in order:
        pf, pl, pd, hip, pch, down, wi = planes[i]
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
        if h.under_other_wing(arr.polygon(), wi, sc.s):
            continue
        if not _register_array(sc, arr):
            return None
        if rng.random() < sc.cfg.occluding_tree_share:
            _add_occluding_tree(sc, arr)
        return arr.polygon()
    return None


def _add_house_skylights(sc: _Scene, h: _House, pv_poly: BaseGeometry | None) -> None:
    """Skylights on a roof part without PV (dark glass: look-alikes)."""
    rng, s = sc.rng, sc.s
    if not (rng.random() < sc.cfg.skylight_share and h.planes_for_pv):
        return
    pf, pl, pd, hip, _, _, wi = h.planes_for_pv[int(rng.integers(len(h.planes_for_pv)))]
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
        if (pv_poly is not None and skp.buffer(0.3 * s).intersects(pv_poly)) or h.under_other_wing(
            skp, wi, s
        ):
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


def _add_back_yard(sc: _Scene, lt: _Lot, h: _House) -> None:
    """Back yard: maybe a patio (textured as :class:`_Lot` says), maybe a pool."""
    rng = sc.rng
    back_v = h.setback + h.hd
    if lt.d - back_v > 3.5 and rng.random() < 0.5:
        pt = lt.frame.rect(
            h.hu + 1, back_v, h.hu + min(h.hw - 1, 7), back_v + rng.uniform(2.5, 3.5)
        )
        lt.paving_key = sc.key()
        sc.draw(
            ST_POOL,
            lambda cv: cv.fill(pt, (196, 190, 180), int(Label.PAVED), fine=0.05, key=lt.paving_key),
        )
    if rng.random() < sc.cfg.pool_share:
        _add_pool(sc, lt, back_v)


def _add_pool(sc: _Scene, lt: _Lot, back_v: float) -> None:
    """A pool behind the house (``back_v``: the house's back wall, m) if there is room."""
    rng, lot = sc.rng, lt.frame
    pl_, pw_ = rng.uniform(6.5, 10.0), rng.uniform(3.5, 5.0)
    space = lt.d - back_v
    pu = rng.uniform(1.5 + pl_ / 2, max(lt.w - 1.5 - pl_ / 2, 1.5 + pl_ / 2))
    pv = back_v + rng.uniform(1.8 + pw_ / 2, max(space - 1.2 - pw_ / 2, 1.8 + pw_ / 2))
    pfr = lot.sub(pu, pv)
    if not (
        space >= pw_ + 3.0
        and lt.w >= pl_ + 3.5
        and lt.fits(_rounded_rect(pfr, pl_ + 1, pw_ + 1, 0.6))
    ):
        return
    covered = rng.random() < 0.25
    water = np.array(
        (24, 44, 86) if covered else rng.choice([(64, 160, 196), (48, 132, 178), (70, 170, 190)]),
        np.float32,
    )
    outer = _rounded_rect(pfr, pl_ + 0.7, pw_ + 0.7, 0.6)
    inner = _rounded_rect(pfr, pl_, pw_, 0.5)
    pk = sc.key()
    lt.paving_key = pk
    sc.draw(ST_POOL, lambda cv: _draw_pool(cv, outer, inner, pfr, water, covered, pk))
    sc.lookalikes.append(_Lookalike("pool", Polygon(inner)))
    sc.count("pools", inner)


def _add_lot_trees(sc: _Scene, lt: _Lot, h: _House) -> None:
    """Trees front and back (Poisson, ``trees_per_lot`` on average) and shrubs in front."""
    rng = sc.rng
    back_v = h.setback + h.hd
    for _ in range(int(rng.poisson(sc.cfg.trees_per_lot))):
        tu = rng.uniform(0.5, lt.w - 0.5)
        tv = rng.choice([rng.uniform(0.5, h.setback), rng.uniform(back_v + 0.5, lt.d - 0.5)])
        r_m = rng.uniform(1.2, 4.0)
        if lt.contains(tu, tv):
            _add_tree(sc, *lt.frame.px([tu, tv]), r_m)
    for _ in range(int(rng.integers(0, 4))):  # shrubs
        tu, tv = rng.uniform(0.5, lt.w - 0.5), rng.uniform(0.3, h.setback - 0.3)
        r_m, h_m = rng.uniform(0.4, 0.9), rng.uniform(0.5, 1.2)
        if lt.contains(tu, tv):
            _add_tree(sc, *lt.frame.px([tu, tv]), r_m, height_m=h_m)


# ----------------------------------------------------------------------------------------------
# Commercial parcels


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
    """A flat-roofed building at the back of a parcel (``pf``, ``pw`` x ``pd`` m), parking in front.

    On the roof: PV rows (``pv_share`` of the buildings), maybe a skylight grid, HVAC units.
    """
    rng = sc.rng
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
        _add_rooftop_pv(sc, bf, bw, bd, m, busy)
    if rng.random() < sc.cfg.skylight_share * 1.6:
        _add_skylight_grid(sc, bf, bw, bd, m, busy)
    _add_hvac_units(sc, bf, bw, bd, m, busy)


def _add_rooftop_pv(
    sc: _Scene,
    bf: _Frame,
    bw: float,
    bd: float,
    m: float,
    busy: list[tuple[float, float, float, float]],
) -> None:
    """Rows of low-tilt PV on a flat roof (``bw`` x ``bd`` m, margin ``m``); marks them busy."""
    rng = sc.rng
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


def _add_skylight_grid(
    sc: _Scene,
    bf: _Frame,
    bw: float,
    bd: float,
    m: float,
    busy: list[tuple[float, float, float, float]],
) -> None:
    """A skylight grid (smoked dark glass or white domes) off the busy parts of the roof."""
    rng = sc.rng
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


def _add_hvac_units(
    sc: _Scene,
    bf: _Frame,
    bw: float,
    bd: float,
    m: float,
    busy: list[tuple[float, float, float, float]],
) -> None:
    """HVAC units with shadows, about one per 220 m2 of roof, each where it fits (8 tries)."""
    rng, s = sc.rng, sc.s
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
            sc.draw(
                ST_ROOF_DETAIL,
                lambda cv, p=pts, h=h, col=col, fan=fan, fr_=fr_: _draw_hvac(
                    cv, p, sv * h, col, fan, fr_
                ),
            )
            busy.append((u - 0.3, v - 0.3, u + w_ + 0.3, v + d_ + 0.3))
            break


def _draw_hvac(
    cv: _Canvas,
    pts: np.ndarray,
    shadow_px: np.ndarray,
    colour: np.ndarray,
    fan: np.ndarray,
    fan_r_px: float,
) -> None:
    """An HVAC box (``pts``) with its shadow (offset ``shadow_px``) and a dark fan disc."""
    cv.shade(_hull(pts, _translate(pts, shadow_px)), SHADOW)
    cv.fill(pts, colour, int(Label.ROOF_EQUIPMENT), fine=0.04)
    cv2.circle(
        cv.img,
        tuple(int(t) for t in np.round((fan - 0.5) * 16)),
        int(fan_r_px * 16),
        (70, 72, 74),
        -1,
        cv2.LINE_AA,
        4,
    )


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
