"""Flow ``download-tiles``: region + source + zoom -> tiles on disk + manifest.

Run it from a YAML config without a server (Prefect starts a temporary one)::

    python -m flows.download_tiles --config configs/download-tiles.example.yaml
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger, task

from deepsolar.core.config import validate_config
from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.download_tiles import DownloadTilesJob, fetch, plan


@task(name="plan-tiles")
def plan_task(job: DownloadTilesJob) -> tuple[Any, int]:
    """Task ``plan-tiles``: runs :func:`deepsolar.jobs.download_tiles.plan` and logs the count.

    Args:
        job: the validated job.

    Returns:
        The resolved region and its number of tiles at ``job.grid.zoom``.

    Raises:
        RegionError: the source does not cover the region, or the region needs no tile or more
            than ``job.max_tiles`` tiles.
    """
    region, n = plan(job)
    get_run_logger().info("%s: %d tiles at zoom %d", region.name, n, job.grid.zoom)
    return region, n


@task(name="fetch-tiles")
def fetch_task(job: DownloadTilesJob, region: Any, n_tiles: int) -> dict[str, Any]:
    """Task ``fetch-tiles``: runs :func:`deepsolar.jobs.download_tiles.fetch` (resumable).

    Args:
        job: the validated job.
        region: the region resolved by :func:`plan_task`.
        n_tiles: its number of tiles (the progress bar's total).

    Returns:
        The download summary as JSON-able values (``n_ok``, ``n_outside``, ``n_failed``,
        ``out_dir``, ``manifest_path``, ...).
    """
    return fetch(job, region, n_tiles)


@flow(name="download-tiles", validate_parameters=True)
def download_tiles_flow(job: DownloadTilesJob) -> dict[str, Any]:
    """Download every tile of ``job.region`` from ``job.source`` into ``job.out_dir`` (resumable).

    Runs the ``plan-tiles`` then the ``fetch-tiles`` task and logs the counts.

    Args:
        job: the job (or its parameters as a mapping): region, imagery source, tile grid
            (zoom, tile size in pixels), download settings, output folder and ``max_tiles``.

    Returns:
        The download summary (``n_ok``, ``n_outside``, ``n_failed``, ``manifest_path``, ...).

    Raises:
        ConfigError: a parameter is invalid (naming the field).
        RegionError: the region is outside the source or needs no or too many tiles.
    """
    job = validate_config(DownloadTilesJob, job)
    region, n = plan_task(job)
    summary = fetch_task(job, region, n)
    get_run_logger().info(
        "%d tiles ok, %d outside the source, %d failed; manifest: %s",
        summary["n_ok"],
        summary["n_outside"],
        summary["n_failed"],
        summary["manifest_path"],
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.download_tiles``: the same command line as ``deepsolar download-tiles``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the job was refused or failed (one line on stderr).
    """
    return run_main("download-tiles", argv, description=__doc__)


if __name__ == "__main__":
    from deepsolar.core.runtime import run_entry

    sys.exit(run_entry(main, "download-tiles"))
