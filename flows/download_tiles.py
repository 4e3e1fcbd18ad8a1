"""Flow ``download-tiles``: region + source + zoom -> tiles on disk + manifest.

Run it from a YAML config without a server (Prefect starts a temporary one)::

    python -m flows.download_tiles --config configs/download-tiles.example.yaml
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger, task

from deepsolar.core.config import validate_config
from deepsolar.core.errors import DeepSolarError
from deepsolar.jobs.cli_options import build_parser
from deepsolar.jobs.download_tiles import DownloadTilesJob, fetch, plan, preflight
from deepsolar.preflight import config_with_sets


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
    args = build_parser("download-tiles", description=__doc__).parse_args(argv)
    try:
        data = config_with_sets(args.config, args.set)
        job = validate_config(DownloadTilesJob, data, where=str(args.config))
        preflight(job)
        summary = download_tiles_flow(job)
    except DeepSolarError as err:
        print(f"download-tiles failed: {err}", file=sys.stderr)
        return 1
    print(f"tiles: {summary['out_dir']}\nmanifest: {summary['manifest_path']}")
    return 0


if __name__ == "__main__":
    from deepsolar.core.runtime import run_entry

    sys.exit(run_entry(main, "download-tiles"))
