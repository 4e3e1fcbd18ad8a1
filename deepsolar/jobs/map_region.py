"""The ``map-region`` job: tiles -> classify -> segment -> polygons -> systems -> maps.

:class:`MapRegionJob` is the flow's parameter model; :func:`run` does the whole job in this
process (no Prefect): download (if asked), segment the store, write the maps. ``flows.map_region``
composes the download-tiles and segment-tiles flows and a ``write-region-maps`` task instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from deepsolar.core.config import StrictModel, validate_config
from deepsolar.jobs.download_tiles import DownloadTilesJob
from deepsolar.maps.mapping import MapOutputsConfig
from deepsolar.segmentation.config import (
    CamConfig,
    ScaleOutConfig,
    SegmentTilesJob,
    default_segmenter,
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
        """The tile store's folder: ``tiles.out_dir`` when downloading, else ``store_dir``."""
        return self.tiles.out_dir if self.tiles is not None else self.store_dir  # type: ignore[return-value]


def segment_job(job: MapRegionJob) -> SegmentTilesJob:
    """The segment-tiles part of a map-region job.

    Args:
        job: the validated job.

    Returns:
        The job segmenting the store's tiles with the job's checkpoints and CAM settings.
    """
    return SegmentTilesJob(
        manifest=job.store / "manifest.gpkg",
        classifier_checkpoint=job.classifier_checkpoint,
        segmenter_checkpoint=job.segmenter_checkpoint,
        cam=job.cam,
        batch_size=job.batch_size,
        device=job.device,
        overlays=job.overlays,
    )


def write_maps(job: MapRegionJob) -> dict[str, Any]:
    """Write the GeoPackage, PNG maps and tables of a segmented store (the last step).

    Args:
        job: the validated job.

    Returns:
        What ``write_region_maps`` returns (``counts``, ``total_panel_area_m2``, ``paths``, ...).
    """
    from deepsolar.maps.mapping import write_region_maps

    return write_region_maps(
        job.store,
        job.out_dir,
        job.outputs,
        {
            "classifier": str(job.classifier_checkpoint),
            "segmenter": str(job.segmenter_checkpoint),
        },
        job.classifier_checkpoint,  # its validation counts: the 95% intervals' detector part
    )


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"job": MapRegionJob, "scale": ScaleOutConfig}
#: Inputs that must exist before the flow starts.
INPUT_PATHS = ("job.store_dir", "job.classifier_checkpoint", "job.segmenter_checkpoint")


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters from ``map-region --config FILE [--set k=v] [runner options]``.

    Args:
        args: the parsed command line.

    Returns:
        ``{"job": mapping, "scale": mapping}`` (the file: a job, or ``{job, scale}``).
    """
    from deepsolar.jobs.segment_tiles import parameters_from_args as segment_parameters

    return segment_parameters(args, "map-region")


def check(params: dict[str, Any], where: str) -> None:
    """A download part passes download-tiles' preflight (region, source, tile count).

    Args:
        params: the validated parameters.
        where: where they came from (the config file), for error messages.
    """
    from deepsolar.jobs.download_tiles import preflight

    if params["job"].tiles is not None:
        preflight(params["job"].tiles)


def format_result(res: dict[str, Any], params: dict[str, Any]) -> str:
    """What ``map-region`` prints: systems, panel area and every file written.

    Args:
        res: the flow's result.
        params: the parameters it ran with.

    Returns:
        The lines to print.
    """
    from deepsolar.maps.gpkg import outputs_summary

    maps = res["maps"]
    head = (
        f"map-region: {maps['counts']['systems']} systems, "
        f"{maps['total_panel_area_m2']:.0f} m² of panels"
    )
    return "\n".join([head, *outputs_summary(maps["paths"], indent="  ")])


def run(
    job: MapRegionJob | dict[str, Any], scale: ScaleOutConfig | dict[str, Any] | None = None
) -> dict[str, Any]:
    """Map the solar panels of a region in this process, without Prefect (resumable).

    Args:
        job: the job (or its parameters as a mapping).
        scale: the segment shard size (shards run one after another here).

    Returns:
        ``{"download": ..., "segmentation": ..., "maps": ...}`` as the flow returns.
    """
    from deepsolar.jobs import download_tiles, segment_tiles

    job = validate_config(MapRegionJob, job)
    downloaded = download_tiles.run(job.tiles) if job.tiles is not None else None
    seg = segment_tiles.run(segment_job(job), scale)
    return {"download": downloaded, "segmentation": seg, "maps": write_maps(job)}
