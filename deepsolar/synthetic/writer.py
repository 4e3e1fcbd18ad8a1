"""Outputs of a SYNTHETIC scene: georeference, GeoTIFFs, truth GeoPackage, ``scene.json``.

* ``synthetic_scene.tif``: the RGB orthophoto, a Cloud-Optimised GeoTIFF;
* ``synthetic_truth.gpkg``: layer ``panels`` (one (multi)polygon per PV array, EPSG:4326) and
  layer ``lookalikes`` (dark non-PV objects that look like panels: dark roofs, skylights, dark
  cars, pools);
* ``synthetic_pv_mask.tif``: 1 where a PV pixel is visible (panels minus tree canopies);
* ``synthetic_labels.tif``: a class per pixel (:class:`~deepsolar.synthetic.canvas.Label`);
* ``scene.json``: what was generated, with which parameters, and checksums (written last).

Every file is written whole or not at all (:func:`deepsolar.core.io.atomic_output`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.enums import ColorInterp
from shapely.geometry import MultiPolygon, box
from shapely.geometry.base import BaseGeometry

from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.core.io import atomic_output, atomic_write_text
from deepsolar.geo.tiling import (
    ORIGIN_SHIFT_M,
    ground_resolution_m_per_px,
    lonlat_to_mercator,
    mercator_m_per_px,
)
from deepsolar.synthetic.canvas import Label
from deepsolar.synthetic.config import (
    EQUAL_AREA_CRS,
    GENERATOR_NAME,
    GENERATOR_VERSION,
    LONLAT,
    SYNTHETIC_LABEL,
    SyntheticSceneConfig,
)
from deepsolar.synthetic.scene import _Scene

IMAGE_NAME = "synthetic_scene.tif"
TRUTH_NAME = "synthetic_truth.gpkg"
MASK_NAME = "synthetic_pv_mask.tif"
LABELS_NAME = "synthetic_labels.tif"
METADATA_NAME = "scene.json"

PANEL_COLUMNS = ("array_id", "kind", "area_m2", "occluded_fraction", "synthetic")
_PANEL_TABLE_COLUMNS = [
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
_LOOKALIKE_TABLE_COLUMNS = ["lookalike_id", "kind", "area_m2", "synthetic", "geometry"]


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
# Georeference


def scene_georeference(cfg: SyntheticSceneConfig) -> tuple[Affine, float]:
    """(pixel -> ``cfg.crs`` transform, ground metres per pixel) for a config.

    EPSG:3857: the raster is a window of the zoom's Web-Mercator pixel grid (origin on a pixel
    boundary, pixel size ``mercator_m_per_px(zoom)``). Other CRSs: square pixels of the ground
    resolution at the centre latitude, origin snapped to a multiple of the pixel size.

    Args:
        cfg: the scene config (centre, size in pixels, zoom, CRS).

    Returns:
        The affine transform from pixel (col, row) to ``cfg.crs`` coordinates, and the ground
        resolution at the scene centre in metres per pixel.

    Raises:
        ConfigError: the centre lies outside the area where ``cfg.crs`` is defined.
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


class _TruthGeometry:
    """Pixel-space truth geometry -> lon/lat (via the raster's transform) and equal-area m2."""

    def __init__(self, crs: str, transform: Affine) -> None:
        self.transform = transform
        self.to_ll = Transformer.from_crs(crs, LONLAT, always_xy=True)
        self.to_ea = Transformer.from_crs(LONLAT, EQUAL_AREA_CRS, always_xy=True)

    def lonlat(self, g_px: BaseGeometry) -> BaseGeometry:
        t = self.transform
        g = shapely.transform(
            g_px, lambda c: np.column_stack([t.a * c[:, 0] + t.c, t.e * c[:, 1] + t.f])
        )
        return shapely.transform(
            g, lambda c: np.column_stack(self.to_ll.transform(c[:, 0], c[:, 1]))
        )

    def area_m2(self, g_ll: BaseGeometry) -> float:
        return float(
            shapely.transform(
                g_ll, lambda c: np.column_stack(self.to_ea.transform(c[:, 0], c[:, 1]))
            ).area
        )


def _multi(g: BaseGeometry) -> MultiPolygon:
    if g.geom_type == "Polygon":
        return MultiPolygon([g])
    if g.geom_type == "MultiPolygon":
        return g
    return MultiPolygon([p for p in getattr(g, "geoms", []) if p.geom_type == "Polygon"])


# ----------------------------------------------------------------------------------------------
# Truth tables


def _panel_table(sc: _Scene, geo: _TruthGeometry) -> gpd.GeoDataFrame:
    """One row per PV array: EPSG:4326 footprint, exact area and the visible (unoccluded) share."""
    rows = []
    for arr in sc.arrays:
        g = geo.lonlat(arr.polygon())
        a = geo.area_m2(g)
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
    return gpd.GeoDataFrame(
        pandas.DataFrame(rows, columns=_PANEL_TABLE_COLUMNS), geometry="geometry", crs=LONLAT
    )


def _lookalike_table(sc: _Scene, geo: _TruthGeometry) -> gpd.GeoDataFrame:
    """One row per look-alike, clipped to the scene (slivers under a pixel dropped), EPSG:4326."""
    scene_px = box(0, 0, sc.cfg.width_px, sc.cfg.height_px)
    rows = []
    for la in sc.lookalikes:
        g_px = la.polygon.intersection(scene_px)
        if g_px.is_empty or g_px.area < 1:
            continue
        g = geo.lonlat(g_px)
        rows.append(
            {
                "lookalike_id": len(rows) + 1,
                "kind": la.kind,
                "area_m2": geo.area_m2(g),
                "synthetic": True,
                "geometry": _multi(g),
            }
        )
    return gpd.GeoDataFrame(
        pandas.DataFrame(rows, columns=_LOOKALIKE_TABLE_COLUMNS), geometry="geometry", crs=LONLAT
    )


# ----------------------------------------------------------------------------------------------
# Files


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
    with atomic_output(path, suffix=path.suffix) as tmp, rasterio.open(tmp, "w", **opts) as dst:
        if data.ndim == 3:
            dst.write(np.moveaxis(data, 2, 0))
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        else:
            dst.write(data, 1)
        dst.update_tags(**tags)


def _write_truth(path: Path, panels: gpd.GeoDataFrame, lookalikes: gpd.GeoDataFrame) -> None:
    with atomic_output(path, suffix=path.suffix) as tmp:
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


def _tags(cfg: SyntheticSceneConfig, m_per_px: float, digest: str) -> dict[str, str]:
    """GeoTIFF tags saying what the image is (SYNTHETIC), how it was made and its checksum."""
    return {
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


def _write_rasters(
    paths: dict[str, Path],
    sc: _Scene,
    transform: Affine,
    tags: dict[str, str],
) -> np.ndarray:
    """Write the image, the visible-PV mask and the label map; returns the mask."""
    cfg, canvas = sc.cfg, sc.canvas
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
    return mask


def _scene_bounds(
    cfg: SyntheticSceneConfig, transform: Affine, to_ll: Transformer
) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]]:
    """(bounds in ``cfg.crs``, lon/lat bounds of its corners)."""
    w_px, h_px = cfg.width_px, cfg.height_px
    left, top = transform.c, transform.f
    bounds = (left, top + transform.e * h_px, left + transform.a * w_px, top)
    xs_b = np.array([bounds[0], bounds[2], bounds[2], bounds[0]])
    ys_b = np.array([bounds[1], bounds[1], bounds[3], bounds[3]])
    lon_b, lat_b = to_ll.transform(xs_b, ys_b)
    bounds_ll = (float(min(lon_b)), float(min(lat_b)), float(max(lon_b)), float(max(lat_b)))
    return bounds, bounds_ll


def _metadata(
    sc: _Scene,
    res: SceneResult,
    paths: dict[str, Path],
    tables: tuple[gpd.GeoDataFrame, gpd.GeoDataFrame],
    mask: np.ndarray,
    digest: str,
) -> dict[str, Any]:
    """The content of ``scene.json``; ``tables``: (panels, lookalikes)."""
    cfg, sun = sc.cfg, sc.sun
    panels, lookalikes = tables
    return {
        "label": SYNTHETIC_LABEL,
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "config": cfg.model_dump(mode="json"),
        "crs": cfg.crs,
        "transform": list(res.transform)[:6],
        "bounds": list(res.bounds),
        "bounds_lonlat": list(res.bounds_lonlat),
        "width_px": res.width_px,
        "height_px": res.height_px,
        "m_per_px": res.m_per_px,
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


def write_scene(sc: _Scene, out: Path, transform: Affine, m_per_px: float) -> SceneResult:
    """Write a rendered scene's files into ``out`` (an existing folder), ``scene.json`` last.

    Args:
        sc: the laid-out and painted scene.
        out: the output folder.
        transform: pixel -> ``sc.cfg.crs`` transform (:func:`scene_georeference`).
        m_per_px: ground resolution at the scene centre, metres per pixel.

    Returns:
        The paths, georeference and truth counts of the written scene.
    """
    cfg = sc.cfg
    geo = _TruthGeometry(cfg.crs, transform)
    panels, lookalikes = _panel_table(sc, geo), _lookalike_table(sc, geo)
    digest = hashlib.sha256(sc.canvas.img.tobytes()).hexdigest()
    paths = {
        "image": out / IMAGE_NAME,
        "truth": out / TRUTH_NAME,
        "mask": out / MASK_NAME,
        "labels": out / LABELS_NAME,
        "metadata": out / METADATA_NAME,
    }
    mask = _write_rasters(paths, sc, transform, _tags(cfg, m_per_px, digest))
    _write_truth(paths["truth"], panels, lookalikes)
    bounds, bounds_ll = _scene_bounds(cfg, transform, geo.to_ll)
    res = SceneResult(
        image_path=paths["image"],
        truth_path=paths["truth"],
        truth_mask_path=paths["mask"],
        labels_path=paths["labels"],
        metadata_path=paths["metadata"],
        crs=cfg.crs,
        bounds=bounds,
        bounds_lonlat=bounds_ll,
        transform=transform,
        width_px=cfg.width_px,
        height_px=cfg.height_px,
        m_per_px=m_per_px,
        n_arrays=len(panels),
        n_lookalikes=len(lookalikes),
    )
    meta = _metadata(sc, res, paths, (panels, lookalikes), mask, digest)
    atomic_write_text(paths["metadata"], json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return res


# ----------------------------------------------------------------------------------------------
# Reading back


def read_truth(
    path: str | Path, layer: Literal["panels", "lookalikes"] = "panels"
) -> gpd.GeoDataFrame:
    """Read a layer of a synthetic truth GeoPackage (EPSG:4326), checking it is one.

    Args:
        path: a ``synthetic_truth.gpkg`` written by ``generate_scene``.
        layer: ``panels`` (one row per PV array) or ``lookalikes``.

    Returns:
        The layer, with its ``synthetic`` column as bool.

    Raises:
        InputDataError: the file is missing, unreadable, lacks the layer or its columns.
    """
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
