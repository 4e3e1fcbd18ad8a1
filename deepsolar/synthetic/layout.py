"""Where things go in a SYNTHETIC scene: arterial grid, super-blocks, streets, lots and parcels.

:func:`_layout` is the whole layout of a scene. It consumes the scene's seeded generator in a
fixed order (the order of the calls below is part of the scene) and only records drawing commands;
painting happens afterwards, stage by stage.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely.geometry import Polygon, box

from deepsolar.synthetic.buildings import _add_commercial_building, _add_house, _add_solar_field
from deepsolar.synthetic.canvas import Label, _draw_surface, _Frame
from deepsolar.synthetic.objects import (
    _add_arterial_strip,
    _add_car,
    _add_lane_marks,
    _add_tree,
)
from deepsolar.synthetic.scene import (
    ST_LANDSCAPE,
    ST_LOCAL_ROAD,
    ST_LOCAL_WALK,
    ST_LOT,
    _Scene,
    _sub_seed,
)


def _layout(sc: _Scene) -> None:
    """Lay the whole scene out: arterials, then each super-block, then scrub on open ground."""
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
    _add_scrub(sc)


def _add_scrub(sc: _Scene) -> None:
    """Street trees and scrub in open ground everywhere (not on fields and parcels)."""
    rng, s = sc.rng, sc.s
    h, w = sc.canvas.h, sc.canvas.w
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


# ----------------------------------------------------------------------------------------------
# Arterials


def _add_arterials(
    sc: _Scene, xs: list[float], ys: list[float], road_w: float, walk_w: float
) -> None:
    """The arterial grid at ``xs`` (north-south) and ``ys`` (east-west, px): roads, marks, traffic.

    ``road_w``, ``walk_w``: road and sidewalk widths (m).
    """
    rng, s = sc.rng, sc.s
    h, w = sc.canvas.h, sc.canvas.w
    pad = 50 * s
    asphalt = np.array([92, 92, 96], np.float32) * rng.uniform(0.9, 1.1)
    walk_col = np.array([194, 190, 182], np.float32)
    half = road_w * s / 2
    for x in xs:
        walk = box(x - half - walk_w * s, -pad, x + half + walk_w * s, h + pad)
        road = box(x - half, -pad, x + half, h + pad)
        _add_arterial_strip(sc, walk, road, walk_col, asphalt)
    for y in ys:
        walk = box(-pad, y - half - walk_w * s, w + pad, y + half + walk_w * s)
        road = box(-pad, y - half, w + pad, y + half)
        _add_arterial_strip(sc, walk, road, walk_col, asphalt)
    # lane marks between intersections, and traffic
    lane = road_w / 4
    for x in xs:
        _add_lane_marks(sc, ys, x, True, road_w, walk_w)
        for t in np.arange(rng.uniform(0, 40), h / s, rng.uniform(25, 60)):
            off = rng.choice([-1.5, -0.5, 0.5, 1.5]) * lane
            _add_car(sc, _Frame(x + off * s, t * s, math.pi / 2 * (1 if off > 0 else -1), s))
    for y in ys:
        _add_lane_marks(sc, xs, y, False, road_w, walk_w)
        for t in np.arange(rng.uniform(0, 40), w / s, rng.uniform(25, 60)):
            off = rng.choice([-1.5, -0.5, 0.5, 1.5]) * lane
            _add_car(sc, _Frame(t * s, y + off * s, 0.0 if off > 0 else math.pi, s))


# ----------------------------------------------------------------------------------------------
# Residential super-blocks


def _add_residential_cell(sc: _Scene, cell: Polygon) -> None:
    """A residential super-block: a street grid (aligned or rotated) and house lots along it."""
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
    streets: list[Polygon] = []
    for vs in v_streets:
        streets.append(Polygon(fr.rect(umin - 30, vs - street_w / 2, umax + 30, vs + street_w / 2)))
    for uc in u_cross:
        streets.append(Polygon(fr.rect(uc - street_w / 2, vmin - 30, uc + street_w / 2, vmax + 30)))
    _add_local_streets(sc, cell, streets, walk_w)
    # lots along both sides of each street, between cross streets
    cuts = [umin + 0.5] + [
        u for uc in u_cross for u in (uc - street_w / 2 - walk_w, uc + street_w / 2 + walk_w)
    ]
    cuts += [umax - 0.5]
    for vs in v_streets:
        for side in (1, -1):
            front = vs + side * (street_w / 2 + walk_w)
            for a, b in zip(cuts[0::2], cuts[1::2], strict=True):
                _add_lot_row(sc, cell, fr, side, front, a, b, lot_d, walk_w)


def _add_local_streets(sc: _Scene, cell: Polygon, streets: list[Polygon], walk_w: float) -> None:
    """Asphalt and sidewalks (``walk_w`` m) of a super-block's local ``streets`` (px)."""
    rng, s = sc.rng, sc.s
    reach = cell.buffer(2.5 * s, join_style="mitre")  # local streets meet the arterial asphalt
    asphalt = np.array([104, 104, 106], np.float32) * rng.uniform(0.85, 1.12)
    walk_col = np.array([190, 186, 178], np.float32)
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


def _add_lot_row(
    sc: _Scene,
    cell: Polygon,
    fr: _Frame,
    side: int,
    front: float,
    a: float,
    b: float,
    lot_d: float,
    walk_w: float,
) -> None:
    """House lots (16-24 m frontage, ``lot_d`` deep) on one side of a street from u=a to u=b.

    ``fr``: the street grid's frame; ``side``: 1 below the street, -1 above; ``front``: the
    lots' front line (v, m). Lots cut by the super-block edge get a house only where a 20 m deep
    lot fits, otherwise maybe a tree.
    """
    rng = sc.rng
    inner = cell.buffer(-0.3 * sc.s)
    u = a if fr.a == 0.0 else a + rng.uniform(-10, 0)
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


# ----------------------------------------------------------------------------------------------
# Commercial super-blocks


def _add_commercial_cell(sc: _Scene, cell: Polygon, field_parcel: bool) -> None:
    """A commercial super-block: one or two parcels.

    Each parcel is a building with parking or, for the first parcel when ``field_parcel``, a
    ground-mounted solar field.
    """
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
            _add_landscaping(sc, pf, pw, pd)
            _add_commercial_building(sc, pf, pw, pd, pv_share=0.8 if i == 0 else 0.55)
        else:
            _add_solar_field(sc, pf, pw, pd)
    sc.count("commercial_blocks")


def _add_landscaping(sc: _Scene, pf: _Frame, pw: float, pd: float) -> None:
    """Landscaping strips with trees along the front and sides of a ``pw`` x ``pd`` m parcel."""
    rng = sc.rng
    for e0, e1 in (((0, 0), (pw, 0)), ((0, 0), (0, pd)), ((pw, 0), (pw, pd))):
        length = math.dist(e0, e1)
        for t in np.arange(rng.uniform(3, 8), length - 2, rng.uniform(8, 14)):
            pu = e0[0] + (e1[0] - e0[0]) * t / length + (1.2 if e0[0] == 0 and e1[0] == 0 else 0)
            pv = e0[1] + (e1[1] - e0[1]) * t / length + (1.2 if e0[1] == 0 and e1[1] == 0 else 0)
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
