"""Seeded SYNTHETIC aerial scene with exact PV ground truth (the embedded offline default).

``generate_scene(config, out_dir)`` renders a georeferenced RGB orthophoto (Cloud-Optimised
GeoTIFF) at DeepSolar's ground resolution (Web-Mercator zoom 21, about 0.06 m/px at 35 deg N) over
a real place inside the built-in Albuquerque census tracts, plus the truth GeoPackage, the
visible-PV mask, a per-pixel label map and ``scene.json`` (see :mod:`deepsolar.synthetic.writer`).

Everything is labelled SYNTHETIC (file names, GeoTIFF tags, GeoPackage column, metadata). The
scene is fully determined by the config (seed included): same config, same bytes.

Modules: ``config`` (what to generate), ``canvas`` (the raster, the sun, drawing primitives),
``scene`` (painter's stages, drawing commands, truth records), ``objects`` (PV arrays, roofs,
trees, cars, roads), ``buildings`` (houses, commercial buildings, solar fields), ``layout`` (where
everything goes), ``writer`` (georeference and files, ``read_truth``) and ``generate``
(``generate_scene``; the ``deepsolar synthetic-scene`` command runs it).
"""

from deepsolar.synthetic.canvas import Label
from deepsolar.synthetic.config import (
    COMMERCIAL_AREA_RANGE_M2,
    DEFAULT_CENTER_LAT,
    DEFAULT_CENTER_LON,
    EQUAL_AREA_CRS,
    GENERATOR_NAME,
    GENERATOR_VERSION,
    LONLAT,
    RESIDENTIAL_AREA_RANGE_M2,
    SYNTHETIC_LABEL,
    SyntheticSceneConfig,
)
from deepsolar.synthetic.generate import generate_scene
from deepsolar.synthetic.writer import (
    IMAGE_NAME,
    LABELS_NAME,
    MASK_NAME,
    METADATA_NAME,
    PANEL_COLUMNS,
    TRUTH_NAME,
    SceneResult,
    read_truth,
    scene_georeference,
)

__all__ = [
    "COMMERCIAL_AREA_RANGE_M2",
    "DEFAULT_CENTER_LAT",
    "DEFAULT_CENTER_LON",
    "EQUAL_AREA_CRS",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "IMAGE_NAME",
    "LABELS_NAME",
    "LONLAT",
    "MASK_NAME",
    "METADATA_NAME",
    "PANEL_COLUMNS",
    "RESIDENTIAL_AREA_RANGE_M2",
    "SYNTHETIC_LABEL",
    "TRUTH_NAME",
    "Label",
    "SceneResult",
    "SyntheticSceneConfig",
    "generate_scene",
    "read_truth",
    "scene_georeference",
]
