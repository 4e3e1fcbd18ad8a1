"""Administrative boundaries: states, counties and census tracts.

Every layer comes back as a GeoDataFrame in EPSG:4326 with a string ``GEOID`` column (state: 2
digits, county: 5, tract: 11), a ``NAME`` column and the source's other columns.

Sources: files the user points at (TIGER/Line zips, shapefiles, GeoPackages, GeoJSON), or the
built-in defaults that come with registry packages so nothing is downloaded: states and counties
from ``bokeh-sampledata`` (TIGER 2009, simplified) and real census tracts of Albuquerque, NM
(Census 2000) from ``libpysal``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import geopandas as gpd
import pandas as pd
import shapely

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import InputDataError
from deepsolar.core.io import reading_input

Level = Literal["state", "county", "tract"]
LONLAT = "EPSG:4326"

GEOID_LENGTH: dict[str, int] = {"state": 2, "county": 5, "tract": 11}
# Column names various Census products use for the unit identifier, by level, in order of preference.
_GEOID_CANDIDATES: dict[str, tuple[str, ...]] = {
    "state": (
        "GEOID",
        "GEOID20",
        "GEOID10",
        "STATEFP",
        "STATEFP20",
        "STATEFP10",
        "STATE_FIPS",
        "fips",
    ),
    "county": ("GEOID", "GEOID20", "GEOID10", "FIPS", "fips", "CNTYIDFP", "STCOFIPS"),
    "tract": ("GEOID", "GEOID20", "GEOID10", "STFID", "CTIDFP00", "fips", "FIPS"),
}
_NAME_CANDIDATES = ("NAME", "NAME20", "NAME10", "NAMELSAD", "NAMELSAD10", "name")


class BoundarySourcesConfig(StrictModel):
    """Where each level's polygons come from; ``None`` means the built-in default."""

    states_path: Path | None = None
    counties_path: Path | None = None
    tracts_path: Path | None = None
    layer: str | None = None

    def path_for(self, level: Level) -> Path | None:
        """The configured file for one level.

        Args:
            level: ``"state"``, ``"county"`` or ``"tract"``.

        Returns:
            The boundary file path, or ``None`` to use the built-in default.
        """
        return {"state": self.states_path, "county": self.counties_path, "tract": self.tracts_path}[
            level
        ]


def read_boundary_file(path: str | Path, *, layer: str | None = None) -> gpd.GeoDataFrame:
    """Read any vector file GDAL reads (TIGER zip, shapefile, GeoPackage, GeoJSON) into EPSG:4326.

    Zip archives are read through GDAL's ``/vsizip/``; a layer without a CRS is an error, since
    guessing one would silently misplace every tile.

    Args:
        path: The vector file or zip archive.
        layer: Layer name for multi-layer files; ``None`` reads the first layer.

    Returns:
        The features reprojected to EPSG:4326, invalid polygons repaired.

    Raises:
        InputDataError: If the file is missing, unreadable, empty, has no CRS, or holds no
            valid polygons.
    """
    p = Path(path)
    if not p.exists():
        raise InputDataError(
            "boundary file not found",
            where=str(p),
            fix="check the path (TIGER zips can be given as is)",
        )
    uri = f"zip://{p.resolve()}" if p.suffix.lower() == ".zip" else str(p)
    with reading_input(
        "cannot read boundary file",
        where=p,
        fix="pass a shapefile, GeoPackage, GeoJSON or a zip holding one; name the layer for multi-layer files",
    ):
        gdf = gpd.read_file(uri, layer=layer) if layer else gpd.read_file(uri)
    if gdf.empty:
        raise InputDataError(
            "boundary file has no features", where=str(p), fix="pass a non-empty layer"
        )
    if gdf.crs is None:
        raise InputDataError(
            "boundary file has no coordinate reference system",
            where=str(p),
            fix="add the .prj file (or set the CRS, e.g. ogr2ogr -a_srs EPSG:4269) and try again",
        )
    gdf = gdf.to_crs(LONLAT)
    return _repair(gdf, str(p))


def _repair(gdf: gpd.GeoDataFrame, where: str) -> gpd.GeoDataFrame:
    """Make invalid polygons valid (TIGER and simplified layers have a few self-intersections)."""
    invalid = ~gdf.geometry.is_valid
    if invalid.any():
        gdf = gdf.copy()
        gdf.loc[invalid, "geometry"] = shapely.make_valid(gdf.geometry[invalid].values)
        gdf = gdf[gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon", "GeometryCollection"])]
    if gdf.empty:
        raise InputDataError(
            "no valid polygons in boundary layer", where=where, fix="repair the layer"
        )
    return gdf


def normalise_units(gdf: gpd.GeoDataFrame, level: Level, *, where: str) -> gpd.GeoDataFrame:
    """Add string ``GEOID`` (zero-padded to the level's length) and ``NAME`` columns.

    Units split over several rows are dissolved into one row per GEOID.

    Args:
        gdf: Boundary features in EPSG:4326 with a Census identifier column (``GEOID``,
            ``GEOID10``, ``STFID``, ``fips`` ...).
        level: ``"state"``, ``"county"`` or ``"tract"`` (sets the GEOID length: 2, 5 or 11).
        where: Where the features came from, for error messages.

    Returns:
        A copy with ``GEOID`` and ``NAME`` first, then the other columns, in EPSG:4326.

    Raises:
        InputDataError: If no identifier column is found.
    """
    gdf = gdf.copy()
    col = next((c for c in _GEOID_CANDIDATES[level] if c in gdf.columns), None)
    if col is None:
        raise InputDataError(
            f"no {level} identifier column found (looked for {', '.join(_GEOID_CANDIDATES[level])})",
            where=where,
            fix=f"rename the {level} FIPS column to GEOID",
        )
    geoid = gdf[col].astype(str).str.strip()
    geoid = geoid.str.replace(r"\.0$", "", regex=True).str.zfill(GEOID_LENGTH[level])
    gdf["GEOID"] = geoid
    name_col = next((c for c in _NAME_CANDIDATES if c in gdf.columns), None)
    gdf["NAME"] = gdf[name_col].astype(str) if name_col else gdf["GEOID"]
    if gdf["GEOID"].duplicated().any():
        # multipart units split over rows (some shapefiles do this): dissolve back to one row each
        gdf = gdf.dissolve(by="GEOID", as_index=False, aggfunc="first")
    cols = ["GEOID", "NAME"] + [c for c in gdf.columns if c not in ("GEOID", "NAME", "geometry")]
    return gpd.GeoDataFrame(gdf[cols + ["geometry"]], geometry="geometry", crs=LONLAT)


@lru_cache(maxsize=4)
def _builtin(level: Level) -> gpd.GeoDataFrame:
    if level == "state":
        from bokeh_sampledata.us_counties import records as county_records
        from bokeh_sampledata.us_states import records

        fips = {c["state"]: c["state_fips"] for c in county_records()}
        rows = records()
        gdf = gpd.GeoDataFrame(
            {
                "GEOID": [fips[r["code"]] for r in rows],
                "NAME": [r["name"] for r in rows],
                "STUSPS": [r["code"] for r in rows],
            },
            geometry=[r["geometry"] for r in rows],
            crs="EPSG:4269",
        )
    elif level == "county":
        from bokeh_sampledata.us_counties import records

        rows = records()
        gdf = gpd.GeoDataFrame(
            {
                "GEOID": [r["fips"] for r in rows],
                "NAME": [r["detailed_name"] for r in rows],
                "STATEFP": [r["state_fips"] for r in rows],
                "STUSPS": [r["state"] for r in rows],
            },
            geometry=[r["geometry"] for r in rows],
            crs="EPSG:4269",
        )
    else:
        import libpysal

        path = libpysal.examples.get_path("10740.shp")
        raw = gpd.read_file(path)
        # the packaged shapefile has no .prj; its coordinates are NAD83 degrees (Census 2000)
        raw = raw.set_crs("EPSG:4269", allow_override=True)
        gdf = gpd.GeoDataFrame(
            {
                "GEOID": raw["STFID"].astype(str).str.zfill(11),
                "NAME": "Census Tract " + raw["TRACTID"].astype(str),
                "STATEFP": raw["STFID"].astype(str).str[:2],
                "COUNTYFP": raw["STFID"].astype(str).str[2:5],
            },
            geometry=raw.geometry,
            crs="EPSG:4269",
        )
    gdf = _repair(gdf.to_crs(LONLAT), f"built-in {level} layer")
    gdf.attrs["source"] = BUILTIN_SOURCES[level]
    return gdf


BUILTIN_SOURCES: dict[str, str] = {
    "state": "bokeh-sampledata us_states (US Census TIGER/Line 2009, simplified)",
    "county": "bokeh-sampledata us_counties (US Census TIGER/Line 2009, simplified)",
    "tract": "libpysal example 10740 (Albuquerque NM census tracts, Census 2000)",
}


def load_units(level: Level, sources: BoundarySourcesConfig | None = None) -> gpd.GeoDataFrame:
    """States, counties or tracts, from the configured file or the built-in default.

    Args:
        level: ``"state"``, ``"county"`` or ``"tract"``.
        sources: Where each level's file is; ``None`` uses the built-in defaults.

    Returns:
        The units in EPSG:4326 with ``GEOID`` and ``NAME`` columns; ``attrs["source"]`` names
        where they came from.

    Raises:
        InputDataError: If a configured file cannot be read or has no identifier column.
    """
    sources = sources or BoundarySourcesConfig()
    path = sources.path_for(level)
    if path is None:
        return _builtin(level).copy()
    gdf = read_boundary_file(path, layer=sources.layer)
    out = normalise_units(gdf, level, where=str(path))
    out.attrs["source"] = str(path)
    return out


def load_tiger_tracts(paths: list[Path] | Path) -> gpd.GeoDataFrame:
    """Census tracts from one or more TIGER/Line tract zips (e.g. ``tl_2010_25_tract10.zip``).

    Args:
        paths: One tract file or a list of them (zips, shapefiles or any GDAL vector file).

    Returns:
        All tracts in one frame in EPSG:4326, with 11-digit ``GEOID`` and ``NAME`` columns.

    Raises:
        InputDataError: If a file cannot be read or has no tract identifier column.
    """
    paths = [paths] if isinstance(paths, Path | str) else list(paths)
    frames = [normalise_units(read_boundary_file(p), "tract", where=str(p)) for p in paths]
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=LONLAT)
