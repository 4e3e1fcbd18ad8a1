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
    region, n = plan(job)
    get_run_logger().info("%s: %d tiles at zoom %d", region.name, n, job.grid.zoom)
    return region, n


@task(name="fetch-tiles")
def fetch_task(job: DownloadTilesJob, region: Any, n_tiles: int) -> dict[str, Any]:
    return fetch(job, region, n_tiles)


@flow(name="download-tiles", validate_parameters=True)
def download_tiles_flow(job: DownloadTilesJob) -> dict[str, Any]:
    """Download every tile of ``job.region`` from ``job.source`` into ``job.out_dir`` (resumable)."""
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
    """``python -m flows.download_tiles``: the same command line as ``deepsolar download-tiles``."""
    return run_main("download-tiles", argv, description=__doc__)


if __name__ == "__main__":
    from deepsolar.core.runtime import run_entry

    sys.exit(run_entry(main, "download-tiles"))
