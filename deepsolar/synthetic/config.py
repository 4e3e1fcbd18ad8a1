"""What a SYNTHETIC scene is made of: the config model, the generator's names and ranges.

The config fully determines the scene (seed included): same config, same bytes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pyproj import CRS
from pyproj.exceptions import CRSError

from deepsolar.core.config import StrictModel
from deepsolar.geo.tiling import WEB_MERCATOR

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
