"""Validated job specifications: one pydantic model per flow, plus the library call it runs.

Flows in ``flows/`` validate their parameters into these models before any work starts, then
call the functions here (or the stage modules directly); nothing here needs a Prefect server.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from deepsolar.core.config import StrictModel
from deepsolar.maps.mapping import MapOutputsConfig
from deepsolar.segmentation.config import CamConfig, default_segmenter

# The download-tiles job lives in deepsolar.tilejobs (no torch import); re-exported here.
from deepsolar.tilejobs import (  # noqa: F401
    DownloadTilesJob,
    SizedIterable,
    check_coverage,
    plan_tiles,
    run_download_tiles,
    summary_dict,
)


class MapRegionJob(StrictModel):
    """Parameters of the ``map-region`` flow: tiles -> classify -> segment -> maps.

    Either ``tiles`` (download first; the store is ``tiles.out_dir``) or ``store_dir`` (an existing
    tile store with ``manifest.gpkg``).
    """

    tiles: DownloadTilesJob | None = None
    store_dir: Path | None = None
    classifier_checkpoint: Path = Field(
        Path("builtin"), description="a train-classifier best.pt; 'builtin': the shipped model"
    )
    segmenter_checkpoint: Path | None = Field(
        None, description="needed for cam.method greedy; with the builtin classifier: builtin"
    )
    cam: CamConfig = Field(default_factory=CamConfig)
    batch_size: int = Field(16, ge=1)
    device: str = "auto"
    overlays: int = Field(0, ge=0, description="PNG overlays of CAM + mask for this many tiles")
    outputs: MapOutputsConfig = Field(default_factory=MapOutputsConfig)
    out_dir: Path = Path("out/map")

    @model_validator(mode="after")
    def _builtin_pair(self) -> MapRegionJob:
        seg = default_segmenter(
            self.classifier_checkpoint, self.segmenter_checkpoint, self.cam.method
        )
        if seg != self.segmenter_checkpoint:  # assignment re-validates: only once
            self.segmenter_checkpoint = seg
        return self

    @model_validator(mode="after")
    def _one_store(self) -> MapRegionJob:
        if (self.tiles is None) == (self.store_dir is None):
            raise ValueError(
                "give exactly one of tiles (download first) or store_dir (existing store)"
            )
        return self

    @property
    def store(self) -> Path:
        return self.tiles.out_dir if self.tiles is not None else self.store_dir  # type: ignore[return-value]
