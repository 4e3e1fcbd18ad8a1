"""Flow ``map-region``: tiles -> classify -> segment -> polygons -> systems -> aggregates -> GeoPackage.

    python -m flows.map_region --config configs/map-region.example.yaml

Each stage is resumable on its own (the tile store's journals, and the segment shards' cached
results), so a re-run after a crash redoes only what did not finish. ``scale`` shards the
classify/segment work and picks where the shards run (threads, processes, a Dask cluster); see
docs/orchestration.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.core.config import validate_config
from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.map_region import MapRegionJob, segment_job
from deepsolar.jobs.segment_tiles import ScaleOutConfig
from deepsolar.maps.mapping import MapOutputsConfig, write_region_maps
from flows.download_tiles import download_tiles_flow
from flows.segment_tiles import segment_tiles_flow


@task(name="write-region-maps", cache_policy=NO_CACHE)
def maps_task(
    store: Path,
    out_dir: Path,
    outputs: MapOutputsConfig,
    provenance: dict[str, str] | None = None,
    classifier_checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Task ``write-region-maps``: the last step of map-region (as ``map_region.write_maps``).

    Builds the panel polygons, systems and tract / county / state aggregates of a segmented
    store with :func:`deepsolar.maps.mapping.write_region_maps`.

    Args:
        store: the segmented tile store's folder.
        out_dir: the output folder.
        outputs: what to build and write.
        provenance: recorded with the outputs (e.g. the checkpoints used).
        classifier_checkpoint: its validation counts give the detector part of the 95%
            intervals.

    Returns:
        ``paths`` of the files written, ``counts`` of features per layer and
        ``total_panel_area_m2`` (m²).
    """
    return write_region_maps(store, out_dir, outputs, provenance, classifier_checkpoint)


@flow(name="map-region", validate_parameters=True)
def map_region_flow(job: MapRegionJob, scale: ScaleOutConfig | None = None) -> dict[str, Any]:
    """Map the solar panels of a region into a styled GeoPackage, PNG maps and tables.

    Runs the ``download-tiles`` flow first when ``job.tiles`` is set, then the ``segment-tiles``
    flow on the store (:func:`deepsolar.jobs.map_region.segment_job`), then the
    ``write-region-maps`` task.

    Args:
        job: the job (or its parameters as a mapping): tiles to download or an existing store,
            checkpoints, CAM settings, map outputs and the output folder.
        scale: how the segmentation is sharded (``shard_size_tiles``, tiles) and where the
            shards run; None: one thread, 1024 tiles per shard.

    Returns:
        ``{"download": ..., "segmentation": ..., "maps": ...}``: the download summary (None
        without ``job.tiles``), the segmentation summary and the maps' summary.

    Raises:
        ConfigError: a parameter is invalid (naming the field).
    """
    job = validate_config(MapRegionJob, job)
    scale = validate_config(ScaleOutConfig, scale if scale is not None else {}, where="scale")
    log = get_run_logger()
    downloaded = download_tiles_flow(job.tiles) if job.tiles is not None else None
    seg = segment_tiles_flow(segment_job(job), scale)
    maps = maps_task(
        job.store,
        job.out_dir,
        job.outputs,
        {
            "classifier": str(job.classifier_checkpoint),
            "segmenter": str(job.segmenter_checkpoint),
        },
        job.classifier_checkpoint,  # its validation counts: the 95% intervals' detector part
    )
    log.info(
        "%d systems, %.1f m² of panels; GeoPackage %s",
        maps["counts"]["systems"],
        maps["total_panel_area_m2"],
        maps["paths"].get("geopackage"),
    )
    return {"download": downloaded, "segmentation": seg, "maps": maps}


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.map_region``: the same command line as ``deepsolar map-region``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the job was refused or failed (one line on stderr).
    """
    return run_main("map-region", argv, description=__doc__)


if __name__ == "__main__":
    from deepsolar.core.runtime import run_entry

    sys.exit(run_entry(main, "map-region"))
