"""The scene being laid out: painter's stages, drawing commands and the records that become truth.

Layout consumes the scene's seeded generator in a fixed order and records drawing commands by
stage; :func:`deepsolar.synthetic.generate.generate_scene` then paints them in painter's order
(ground, paving, cars, building shadows, roofs, PV, tree shadows, trees), so trees hide parts of
some arrays exactly as the truth mask says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from deepsolar.synthetic.canvas import _Canvas, _Frame, _Roi, _Sun
from deepsolar.synthetic.config import SyntheticSceneConfig

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


def _sub_seed(sc: _Scene) -> int:
    return int(sc.rng.integers(0, 2**63 - 1))
