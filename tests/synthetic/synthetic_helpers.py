"""Helpers for the SYNTHETIC scene tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from deepsolar.synthetic import SceneResult

# A small scene (125 m a side) with raised shares so that every kind of object shows up.
SMALL = dict(
    seed=3,
    width_px=2048,
    height_px=2048,
    superblock_m=100,
    commercial_share=0.5,
    residential_pv_share=0.7,
    dark_roof_share=0.35,
    skylight_share=0.5,
    occluding_tree_share=0.6,
    pool_share=0.4,
)


def footprint_lonlat(res: SceneResult) -> shapely.Polygon:
    t = Transformer.from_crs(res.crs, "EPSG:4326", always_xy=True)
    left, bottom, right, top = res.bounds
    xs = np.linspace(left, right, 9)
    ys = np.linspace(bottom, top, 9)
    ring = [(x, bottom) for x in xs] + [(right, y) for y in ys] + [(x, top) for x in xs[::-1]]
    ring += [(left, y) for y in ys[::-1]]
    lon, lat = t.transform(*zip(*ring, strict=True))
    return shapely.Polygon(zip(lon, lat, strict=True))


def albuquerque_tracts() -> gpd.GeoDataFrame:
    libpysal = pytest.importorskip("libpysal")
    gdf = gpd.read_file(libpysal.examples.get_path("10740.shp"))
    if gdf.crs is None:  # the Census 2000 shapefile ships without .prj: NAD83 lon/lat
        gdf = gdf.set_crs("EPSG:4269")
    return gdf.to_crs("EPSG:4326")
