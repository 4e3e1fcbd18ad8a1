"""From a segmented tile store to the run's maps: panels -> systems -> tract/county/state layers.

Input is what ``segment-tiles`` leaves in a tile store: ``manifest.gpkg`` (every scanned tile)
and ``segmentation.parquet`` (per tile: probability, positive or not, mask PNG, area). Output is
one GeoPackage with layers ``scan_footprint``, ``tiles``, ``panels``, ``systems``, ``tracts``,
``counties``, ``states`` (styled for QGIS), PNG choropleths and CSV/Parquet tables (see
:mod:`deepsolar.maps.gpkg`). A run marked SYNTHETIC (``MapOutputsConfig.data_label``, or a note /
title that says SYNTHETIC) is labelled so inside the GeoPackage itself.
Only units that meet the scanned area are written, so a county scan does not carry 3,000 empty
counties.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import geopandas as gpd
import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import InputDataError
from deepsolar.geo.boundaries import BoundarySourcesConfig, load_units
from deepsolar.geo.tiling import Tile
from deepsolar.imagery.manifest import read_manifest
from deepsolar.maps.aggregate import (
    AggregateConfig,
    aggregate_levels,
    scan_footprint_frame,
    scanned_geometry,
)
from deepsolar.maps.gpkg import write_run_outputs
from deepsolar.maps.merge import MergeConfig, merge_panels_labelled
from deepsolar.maps.polygons import PolygonConfig, masks_to_polygons
from deepsolar.maps.uncertainty import resolve_detector_counts

SEGMENTATION_TABLE = "segmentation.parquet"
LEVEL_LAYERS = {"tract": "tracts", "county": "counties", "state": "states"}
SYNTHETIC_LABEL = "SYNTHETIC"


class MapOutputsConfig(StrictModel):
    """How masks become the run's map layers."""

    polygons: PolygonConfig = Field(default_factory=PolygonConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    boundaries: BoundarySourcesConfig = Field(default_factory=BoundarySourcesConfig)
    name: str = Field("deepsolar", pattern=r"^[A-Za-z0-9_.-]+$", description="GeoPackage name")
    title: str | None = None
    note: str | None = Field(None, description="shown on the PNG maps (e.g. 'SYNTHETIC scene')")
    aggregate: AggregateConfig = Field(
        default_factory=AggregateConfig,
        description="aggregation options, e.g. min_scanned_fraction (densities only from it)",
    )
    data_label: str | None = Field(
        None,
        max_length=200,
        description="label written into every layer (column data_label), the GeoPackage's "
        "layer descriptions and a gpkg_metadata record, e.g. 'SYNTHETIC'. Default: 'SYNTHETIC' "
        "when the note or title says SYNTHETIC, else none",
    )

    @model_validator(mode="after")
    def _synthetic_label(self) -> MapOutputsConfig:
        if self.data_label is None and any(
            "SYNTHETIC" in (t or "") for t in (self.note, self.title)
        ):
            self.data_label = SYNTHETIC_LABEL
        return self


def read_segmentation(store_dir: Path) -> pd.DataFrame:
    """Read a tile store's segmentation table.

    Args:
        store_dir: The segmented tile store folder.

    Returns:
        The table, one row per segmented tile.

    Raises:
        InputDataError: If the store has no segmentation table.
    """
    path = Path(store_dir) / SEGMENTATION_TABLE
    if not path.is_file():
        raise InputDataError(
            "no segmentation table in the tile store",
            where=str(path),
            fix="run the segment-tiles flow on this store first",
        )
    return pd.read_parquet(path)


def _tile_from_id(tile_id: str) -> Tile:
    z, s, x, y = (int(p) for p in tile_id.split("-"))
    return Tile(z, s, x, y)


def panels_from_segmentation(
    store_dir: Path, table: pd.DataFrame, config: PolygonConfig | None = None
) -> gpd.GeoDataFrame:
    """Vectorise every positive tile's mask PNG into georeferenced panel pieces.

    Args:
        store_dir: The segmented tile store folder.
        table: Its segmentation table (:func:`read_segmentation`).
        config: Simplification and minimum piece size; None: defaults.

    Returns:
        The panel pieces in EPSG:4326 (see :func:`~deepsolar.maps.polygons.masks_to_polygons`).

    Raises:
        InputDataError: If a mask path leads outside the store or a mask cannot be read.
    """
    store_dir = Path(store_dir)
    pos = table[table["is_positive"].astype(bool) & table["mask_path"].notna()]

    def items():
        for row in pos.itertuples(index=False):
            path = store_dir / row.mask_path
            mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise InputDataError(
                    "mask PNG missing or unreadable",
                    where=str(path),
                    fix="re-run segment-tiles on this store (it redoes missing masks)",
                )
            yield mask > 127, _tile_from_id(row.tile_id), float(row.prob)

    return masks_to_polygons(items(), config=config)


def units_in_scan(level: str, scanned: Any, sources: BoundarySourcesConfig) -> gpd.GeoDataFrame:
    """The units of ``level`` that meet the scanned area (all columns kept).

    Args:
        level: ``"state"``, ``"county"`` or ``"tract"``.
        scanned: The scanned area (a shapely geometry in EPSG:4326), or None.
        sources: Where the boundary files are.

    Returns:
        The intersecting units in EPSG:4326 (empty when nothing was scanned).
    """
    units = load_units(level, sources)  # type: ignore[arg-type]
    if scanned is None or scanned.is_empty:
        return units.iloc[0:0]
    hits = units.sindex.query(scanned, predicate="intersects")
    return units.iloc[np.sort(hits)].reset_index(drop=True)


def build_map_layers(
    store_dir: Path,
    config: MapOutputsConfig | None = None,
    classifier_checkpoint: str | Path | None = None,
) -> dict[str, gpd.GeoDataFrame]:
    """All layers of a run from a segmented tile store (no files written).

    ``classifier_checkpoint`` (the one that classified the tiles; ``builtin`` for the shipped
    model) supplies the validation counts of the unit layers' 95% intervals unless
    ``config.aggregate.uncertainty`` gives them; without any, the interval columns are left out.

    Args:
        store_dir: The segmented tile store folder.
        config: What to build (polygons, merge, aggregation levels); None: defaults.
        classifier_checkpoint: The classifier checkpoint, or None.

    Returns:
        The layers by name (panels, systems, unit layers, tiles, scan footprint).
    """
    cfg = config or MapOutputsConfig()
    store_dir = Path(store_dir)
    detector = resolve_detector_counts(cfg.aggregate.uncertainty, classifier_checkpoint)
    manifest = read_manifest(store_dir)
    table = read_segmentation(store_dir)
    panels = panels_from_segmentation(store_dir, table, cfg.polygons)
    systems, labels = merge_panels_labelled(panels, cfg.merge)
    if len(panels):
        panels = panels.assign(system_id=labels)
    scanned_tiles = manifest[manifest["status"] == "ok"]
    coverage = scanned_geometry(scanned_tiles)
    units = {
        layer: units_in_scan(level, coverage, cfg.boundaries)
        for level, layer in LEVEL_LAYERS.items()
    }
    aggregates = aggregate_levels(
        systems,
        units,
        scanned=coverage,
        panels=panels if len(panels) else None,
        config=cfg.aggregate,
        detector=detector,
    )
    if not len(panels):  # no system anywhere: every tile count is 0
        for agg in aggregates.values():
            for col in ("tile_count", "tile_count_residential", "tile_count_nonresidential"):
                agg[col] = np.zeros(len(agg), dtype=np.int64)
    footprint = scan_footprint_frame(coverage, n_tiles=int(len(scanned_tiles)))
    seg_cols = table.set_index("tile_id")[["prob", "is_positive", "area_m2"]]
    tiles = scanned_tiles.join(seg_cols, on="tile_id")
    tiles = tiles.rename(columns={"area_m2": "panel_area_m2"})
    keep = [c for c in ("tile_id", "zoom", "tile_size_px", "x", "y", "m_per_px", "source",
                        "prob", "is_positive", "panel_area_m2") if c in tiles.columns]  # fmt: skip
    tiles = gpd.GeoDataFrame(tiles[keep], geometry=tiles.geometry, crs=manifest.crs)
    return {
        "scan_footprint": footprint,
        "tiles": tiles,
        "panels": panels,
        "systems": systems,
        **aggregates,
    }


def write_region_maps(
    store_dir: Path,
    out_dir: Path,
    config: MapOutputsConfig | None = None,
    provenance: dict[str, str] | None = None,
    classifier_checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Build the layers and write the GeoPackage, PNG maps and tables into ``out_dir``.

    Args:
        store_dir: The segmented tile store folder.
        out_dir: The output folder.
        config: What to build and write; None: defaults.
        provenance: Added to what the outputs record about where their figures came from (e.g.
            the checkpoints used).
        classifier_checkpoint: See :func:`build_map_layers`.

    Returns:
        ``paths`` of the files written, ``counts`` of features per layer and
        ``total_panel_area_m2`` (m²).
    """
    cfg = config or MapOutputsConfig()
    layers = build_map_layers(store_dir, cfg, classifier_checkpoint)
    unc = cfg.aggregate.uncertainty
    det = next(
        (g.attrs["detector_counts"] for g in layers.values() if "detector_counts" in g.attrs), None
    )
    if det:
        intervals = f"{unc.draws} Monte Carlo draws, seed {unc.seed}; detector {det}" + (
            "; bias-corrected totals written" if unc.bias_correction else ""
        )
    else:
        why = "disabled" if not unc.enabled else "no detector counts (uncertainty.detector)"
        intervals = f"not written: {why}"
    paths = write_run_outputs(
        out_dir,
        layers,
        name=cfg.name,
        title=cfg.title,
        note=cfg.note,
        data_label=cfg.data_label,
        provenance={
            "tile store": str(Path(store_dir).resolve()),
            "scanned tiles": f"{len(layers['tiles'])} ({Path(store_dir) / 'manifest.gpkg'})",
            "segmentation": str(Path(store_dir) / SEGMENTATION_TABLE),
            **(provenance or {}),
            "min_scanned_fraction": f"{cfg.aggregate.min_scanned_fraction:g}",
            "95% intervals": intervals,
        },
    )
    counts = {name: int(len(gdf)) for name, gdf in layers.items()}
    total = float(layers["systems"]["area_m2"].sum()) if len(layers["systems"]) else 0.0
    return {"paths": _jsonable(paths), "counts": counts, "total_panel_area_m2": total}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return str(x) if isinstance(x, Path) else x
