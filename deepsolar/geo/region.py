"""Resolve a region (state, county, tract, boundary file or bbox) into one lon/lat geometry."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from pydantic import Field, model_validator
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from deepsolar.core.config import StrictModel, short_repr
from deepsolar.core.errors import RegionError
from deepsolar.geo.boundaries import BoundarySourcesConfig, Level, load_units, read_boundary_file
from deepsolar.geo.tiling import MAX_LAT_DEG


class RegionConfig(StrictModel):
    """Exactly one of ``state``, ``county``, ``tract``, ``boundary_path`` or ``bbox``.

    ``state``: postal code ("MA"), FIPS ("25") or name ("Massachusetts").
    ``county``: 5-digit FIPS ("25017") or "Name, ST" ("Middlesex County, Massachusetts" also works).
    ``tract``: 11-digit GEOID; several may be given as a list.
    ``boundary_path``: any polygon file; ``boundary_where`` optionally keeps rows where
    ``column == value`` (e.g. ``{"GEOID10": "25017353101"}``).
    ``bbox``: [west, south, east, north] in degrees.
    """

    state: str | None = None
    county: str | None = None
    tract: str | list[str] | None = None
    boundary_path: Path | None = None
    boundary_layer: str | None = None
    boundary_where: dict[str, str] | None = None
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="west, south, east, north"
    )
    boundaries: BoundarySourcesConfig = Field(default_factory=BoundarySourcesConfig)

    @model_validator(mode="after")
    def _exactly_one(self) -> RegionConfig:
        given = [
            k
            for k in ("state", "county", "tract", "boundary_path", "bbox")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of state, county, tract, boundary_path or bbox"
                + (f" (got {', '.join(given)})" if given else " (got none)")
            )
        if self.bbox is not None:
            w, s, e, n = self.bbox
            if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
                raise ValueError(
                    f"bbox must be west < east, south < north in degrees, got {self.bbox}"
                )
            if s >= MAX_LAT_DEG or n <= -MAX_LAT_DEG:
                raise ValueError(
                    f"bbox lies beyond latitude +/-{MAX_LAT_DEG:.4f}, where the Web-Mercator tile "
                    f"grid ends (got south {s}, north {n}); choose latitudes between -85.05 and 85.05"
                )
        return self


@dataclass
class Region:
    """A resolved region: a label, its polygon in EPSG:4326, and the units it was built from."""

    name: str
    geometry: BaseGeometry
    units: gpd.GeoDataFrame | None = None


def resolve_region(cfg: RegionConfig) -> Region:
    """Turn a RegionConfig into a Region, with a clear error for unknown or empty regions.

    Args:
        cfg: Which region: a state, county, tract(s), boundary file or bbox in degrees.

    Returns:
        The region's name and its (unioned, valid) geometry in EPSG:4326, with the units it
        was built from (``None`` for a bbox).

    Raises:
        RegionError: If the region is unknown, a filter column is missing or matches nothing,
            or the geometry is empty.
        InputDataError: If a boundary file cannot be read.
    """
    if cfg.bbox is not None:
        return Region(f"bbox {tuple(cfg.bbox)}", box(*cfg.bbox))
    if cfg.boundary_path is not None:
        gdf = read_boundary_file(cfg.boundary_path, layer=cfg.boundary_layer)
        where = str(cfg.boundary_path)
        if cfg.boundary_where:
            for col, val in cfg.boundary_where.items():
                if col not in gdf.columns:
                    raise RegionError(
                        f"column {col!r} not in boundary file (columns: {', '.join(map(str, gdf.columns))})",
                        where=where,
                        fix="use one of the listed columns in boundary_where",
                    )
                gdf = gdf[gdf[col].astype(str) == str(val)]
            if gdf.empty:
                raise RegionError(
                    f"no feature matches {cfg.boundary_where}",
                    where=where,
                    fix="check the filter values",
                )
        return _region(f"boundary {Path(where).name}", gdf, where)
    if cfg.state is not None:
        return _lookup("state", cfg.state, cfg.boundaries)
    if cfg.county is not None:
        return _lookup("county", cfg.county, cfg.boundaries)
    tracts = [cfg.tract] if isinstance(cfg.tract, str) else list(cfg.tract or [])
    return _lookup("tract", tracts, cfg.boundaries)


def _region(name: str, gdf: gpd.GeoDataFrame, where: str) -> Region:
    geom = shapely.union_all(gdf.geometry.values)
    if geom.is_empty:
        raise RegionError(
            "the region geometry is empty", where=where, fix="choose a region with area"
        )
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return Region(name, geom, gdf)


def _lookup(level: Level, key: str | list[str], sources: BoundarySourcesConfig) -> Region:
    units = load_units(level, sources)
    where = units.attrs.get("source", f"{level} layer")
    keys = [key] if isinstance(key, str) else key
    picked = []
    for k in keys:
        k_norm = k.strip().lower()
        m = units["GEOID"].str.lower() == k_norm
        m |= units["NAME"].str.lower() == k_norm
        if "STUSPS" in units.columns:
            m |= units["STUSPS"].str.lower() == k_norm
        if level == "county" and "," in k_norm and "STUSPS" in units.columns:
            # "Middlesex, MA" / "Middlesex County, MA"
            name, st = (p.strip() for p in k_norm.rsplit(",", 1))
            base = (
                units["NAME"]
                .str.lower()
                .str.split(",")
                .str[0]
                .str.replace(" county", "", regex=False)
            )
            m |= (base == name.replace(" county", "")) & (units["STUSPS"].str.lower() == st)
        hit = units[m]
        if hit.empty:
            raise RegionError(
                f"unknown {level} {short_repr(k)}{_suggest(k, units)}",
                where=where,
                fix=f"give a {level} GEOID ({_geoid_hint(level)}) or name from that layer, "
                f"or point boundaries.{_PATH_FIELD[level]} at a file that has it",
            )
        picked.append(hit)
    gdf = gpd.GeoDataFrame(pd.concat(picked), crs=units.crs)
    label = f"{level} {', '.join(keys)}"
    return _region(label, gdf, where)


_PATH_FIELD = {"state": "states_path", "county": "counties_path", "tract": "tracts_path"}


def _geoid_hint(level: Level) -> str:
    return {"state": "2 digits or postal code", "county": "5 digits", "tract": "11 digits"}[level]


def _suggest(key: str, units: gpd.GeoDataFrame) -> str:
    if len(key) > 100:  # no name is that long; difflib on megabytes would take minutes
        return ""
    choices = list(units["NAME"].astype(str)) + list(units["GEOID"].astype(str))
    close = difflib.get_close_matches(key, choices, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
