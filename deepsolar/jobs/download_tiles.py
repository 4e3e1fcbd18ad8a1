"""The ``download-tiles`` job: its validated parameters and the library calls it runs.

Imports no torch and no Prefect: ``deepsolar download-tiles`` answers a bad input fast, and
:func:`run` downloads a region without a Prefect server (``flows.download_tiles`` wraps the same
steps, :func:`plan` and :func:`fetch`, as tasks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from deepsolar.core.config import StrictModel, config_with_sets, validate_config
from deepsolar.core.errors import RegionError
from deepsolar.core.http import DownloadConfig
from deepsolar.geo.region import Region, RegionConfig, resolve_region
from deepsolar.geo.tiling import TileGrid, TileGridConfig
from deepsolar.imagery.download import DownloadSummary, download_tiles
from deepsolar.imagery.sources import ImagerySource, SourceConfig


class DownloadTilesJob(StrictModel):
    """Parameters of the ``download-tiles`` flow: region + source + grid -> tiles and manifest."""

    region: RegionConfig
    source: SourceConfig
    grid: TileGridConfig = Field(default_factory=TileGridConfig)
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    out_dir: Path = Path("out/tiles")
    max_tiles: int = Field(
        1_000_000,
        ge=1,
        description="refuse regions with more tiles than this (a state at zoom 21 has ~1e8-1e9)",
    )


def plan_tiles(region: Region, grid: TileGrid, max_tiles: int) -> int:
    """Count the tiles covering ``region``; refuse empty regions and ones above ``max_tiles``."""
    n = grid.count_tiles(region.geometry, limit=max_tiles)  # stops counting past max_tiles
    if n == 0:
        raise RegionError(
            f"{region.name} covers no tile of the zoom-{grid.zoom} grid",
            fix="check the region's coordinates (longitude first) and extent",
        )
    if n > max_tiles:
        raise RegionError(
            f"{region.name[:200]} needs more than {max_tiles:,} tiles at zoom {grid.zoom} (at "
            f"least {n:,}), above max_tiles={max_tiles:,}",
            fix="choose a smaller region (county or tract), or raise max_tiles deliberately",
        )
    return n


def check_coverage(region: Region, source: ImagerySource) -> None:
    """Refuse a region that the source has no imagery for (known only for some sources)."""
    coverage = source.coverage_lonlat()
    if coverage is not None and not coverage.intersects(region.geometry):
        w, s, e, n = coverage.bounds
        raise RegionError(
            f"{region.name} does not overlap the imagery of source {source.name!r} "
            f"(which covers lon {w:.5f}..{e:.5f}, lat {s:.5f}..{n:.5f})",
            fix="choose a region inside the source's extent, or another source",
        )


def preflight(job: DownloadTilesJob) -> int:
    """Every check that needs no Prefect server, run before one starts.

    The region resolves, the source opens (a raster is read and checked), the region overlaps
    it, the tile count is under max_tiles. A bad input is then one line in about a second, not
    after the server's start-up.

    Args:
        job: the validated job.

    Returns:
        The number of tiles the region needs.
    """
    return plan(job)[1]


def plan(job: DownloadTilesJob) -> tuple[Region, int]:
    """Resolve the job's region and count its tiles (the flow's ``plan-tiles`` step).

    Args:
        job: the validated job.

    Returns:
        The resolved region and its number of tiles.

    Raises:
        RegionError: the source does not cover the region, or it needs no or too many tiles.
    """
    region = resolve_region(job.region)
    with job.source.build() as source:
        check_coverage(region, source)
    return region, plan_tiles(region, job.grid.build(), job.max_tiles)


def fetch(
    job: DownloadTilesJob, region: Region, n_tiles: int, *, progress: bool = True
) -> dict[str, Any]:
    """Download the planned tiles into ``job.out_dir`` (the flow's ``fetch-tiles`` step).

    Args:
        job: the validated job.
        region: the region from :func:`plan`.
        n_tiles: its number of tiles (for the progress bar's total).
        progress: show a progress bar.

    Returns:
        The download summary as plain JSON-able values (:func:`summary_dict`).
    """
    grid = job.grid.build()
    tiles = SizedIterable(grid.tiles_for_geometry(region.geometry), n_tiles)
    summary = download_tiles(
        tiles, job.source.build(), job.out_dir, job.download, progress=progress
    )
    return summary_dict(summary)


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"job": DownloadTilesJob}


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters from ``download-tiles --config FILE [--set k=v ...]``.

    Args:
        args: the parsed command line.

    Returns:
        ``{"job": mapping}``: the file with the ``--set`` items applied.
    """
    return {"job": config_with_sets(args.config, args.set)}


def check(params: dict[str, Any], where: str) -> None:
    """Run :func:`preflight` on the job, before the flow starts.

    Args:
        params: the validated parameters.
        where: where they came from (the config file), for error messages.
    """
    preflight(params["job"])


def format_result(summary: dict[str, Any], params: dict[str, Any]) -> str:
    """What ``download-tiles`` prints when it finishes.

    Args:
        summary: the flow's result.
        params: the parameters it ran with.

    Returns:
        The tile folder and the manifest, one per line.
    """
    return f"tiles: {summary['out_dir']}\nmanifest: {summary['manifest_path']}"


def run(job: DownloadTilesJob | dict[str, Any]) -> dict[str, Any]:
    """Download every tile of the job's region into ``job.out_dir`` (resumable), without Prefect.

    Args:
        job: the job (or its parameters as a mapping).

    Returns:
        The download summary (``n_ok``, ``n_outside``, ``n_failed``, ``manifest_path``, ...).
    """
    job = validate_config(DownloadTilesJob, job)
    region, n = plan(job)
    return fetch(job, region, n)


def run_download_tiles(job: DownloadTilesJob, *, progress: bool = True) -> DownloadSummary:
    """Resolve the region, plan its tiles and download them into ``job.out_dir`` (resumable).

    Args:
        job: the validated job.
        progress: show a progress bar.

    Returns:
        The download summary.
    """
    region = resolve_region(job.region)
    grid = job.grid.build()
    source = job.source.build()
    check_coverage(region, source)
    n = plan_tiles(region, grid, job.max_tiles)
    tiles = grid.tiles_for_geometry(region.geometry)
    return download_tiles(
        SizedIterable(tiles, n), source, job.out_dir, job.download, progress=progress
    )


def summary_dict(summary: DownloadSummary) -> dict[str, Any]:
    """A DownloadSummary as plain JSON-able values (for flow results and logs).

    Args:
        summary: the summary of a download.

    Returns:
        Its fields, paths as strings.
    """
    d = dataclasses.asdict(summary)
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


class SizedIterable:
    """An iterator that knows its length, so progress bars show a total without a list in memory."""

    def __init__(self, it: Iterable[Any], n: int) -> None:
        self._it, self._n = it, n

    def __iter__(self) -> Iterator[Any]:
        return iter(self._it)

    def __len__(self) -> int:
        return self._n
