"""The map-region flow on a tiny real store with a tiny real classifier + segmenter (SYNTHETIC pixels)."""

from __future__ import annotations

import geopandas as gpd
import pytest

from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError
from deepsolar.jobs.map_region import MapRegionJob
from flows.map_region import map_region_flow

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_map_region_flow_writes_every_layer(tiny_store, tiny_classifier, tiny_segmenter, tmp_path):
    job = MapRegionJob(
        store_dir=tiny_store,
        classifier_checkpoint=tiny_classifier,
        segmenter_checkpoint=tiny_segmenter,
        out_dir=tmp_path / "maps",
        overlays=1,
    )
    res = map_region_flow(job)
    seg = res["segmentation"]
    assert seg["n_errors"] == 1  # the unreadable tile is reported, not fatal
    gpkg = res["maps"]["paths"]["geopackage"]
    names = set(gpd.list_layers(gpkg)["name"])
    assert {"tiles", "panels", "systems", "tracts", "counties", "states"} <= names
    tiles = gpd.read_file(gpkg, layer="tiles")
    assert len(tiles) == 5  # every scanned tile, with its probability where it could be read
    assert tiles["prob"].notna().sum() == 4
    n_pos = int(tiles["is_positive"].fillna(False).astype(bool).sum())
    panels = gpd.read_file(gpkg, layer="panels")
    assert (len(panels) > 0) == (n_pos > 0)
    assert res["maps"]["counts"]["systems"] <= len(panels)


def test_map_region_needs_exactly_one_store(tiny_classifier, tmp_path):
    with pytest.raises(ConfigError, match="exactly one of tiles"):
        validate_config(MapRegionJob, {"classifier_checkpoint": str(tiny_classifier)})
