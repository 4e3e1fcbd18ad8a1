"""SolarForest's output files: JSON, CSV and GeoPackage tract layers.

Each is written whole or not at all (:mod:`deepsolar.core.io`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepsolar.core.io import atomic_output, atomic_write_text, write_table_atomic


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy scalars and paths allowed; NaN refused), atomically.

    Args:
        path: the destination file; its folder is created.
        obj: the JSON-ready object.

    Returns:
        ``path``.
    """
    text = json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n"
    return atomic_write_text(path, text)


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV without its index, atomically.

    A CSV-only alias of :func:`deepsolar.core.io.write_table_atomic`.

    Args:
        df: the table.
        path: the destination file; its folder is created.

    Returns:
        ``path``.
    """
    return write_table_atomic(df, path, fmt="csv")


def write_predictions_gpkg(
    predictions: pd.DataFrame, tracts: Any, path: str | Path, layer: str = "tracts"
) -> Path:
    """Write tract polygons with prediction columns into ``layer`` of the GeoPackage ``path``.

    An existing GeoPackage keeps its other layers (e.g. the mapping flow's panels and styles): it is
    copied, the layer replaced in the copy, and the copy moved over the original only when complete.
    Prediction columns already in the layer (an earlier run) are replaced.

    Args:
        predictions: per-tract predictions with ``fips``
            (:func:`deepsolar.solarforest.model.predict_tracts`).
        tracts: tract polygons with ``GEOID`` (a GeoDataFrame).
        path: the GeoPackage.
        layer: the layer to write.

    Returns:
        ``path``.
    """
    p = Path(path)
    pred = predictions.rename(columns={"fips": "GEOID"})
    new_cols = [c for c in pred.columns if c != "GEOID"]
    base = tracts.drop(columns=[c for c in new_cols if c in tracts.columns])
    merged = base.merge(pred, on="GEOID", how="left")
    with atomic_output(p, suffix=".gpkg") as tmp:
        if p.exists():
            shutil.copy2(p, tmp)
        else:
            tmp.unlink()  # let the driver create a fresh GeoPackage
        merged.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")
    return p
