"""Fixtures for the maps tests: a small but complete run (SYNTHETIC systems on real boundaries,
see maps_helpers.synthetic_run), written once per session."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest

from tests.maps.maps_helpers import synthetic_run


@pytest.fixture(scope="session")
def run_layers() -> dict[str, gpd.GeoDataFrame]:
    return synthetic_run()  # the committed Suffolk tracts: no shared data needed


@pytest.fixture(scope="session")
def run_outputs(run_layers, tmp_path_factory) -> dict:
    from deepsolar.maps.gpkg import write_run_outputs

    out = tmp_path_factory.mktemp("run")
    return write_run_outputs(
        out,
        run_layers,
        name="synthetic_run",
        note="SYNTHETIC systems on real boundaries",
        data_label="SYNTHETIC",
        provenance={"systems": "tests/maps/maps_helpers.py synthetic_run"},
    )


@pytest.fixture(scope="session")
def run_gpkg(run_outputs) -> Path:
    return run_outputs["geopackage"]
