r"""Flow ``segment-tiles``: a tile store + classifier + segmenter -> masks, areas, a table.

For every tile with status 'ok' in the store's ``manifest.gpkg`` (layer ``tiles``): the positive
probability; for tiles the classifier calls positive, a CAM mask (PNG 0/255) in
``<store>/masks/<zoom>-<size>/<x>/<y>.png`` and its ground area in m² (per-row latitude). The table
``<store>/segmentation.parquet`` has tile_id, prob, is_positive, mask_path, area_m2, error.

Scale-out: the tiles are cut into shards (``scale.shard_size_tiles`` tiles, in row-band order:
sorted by tile row, then column) and each shard is one Prefect task run through the task runner
of ``scale.task_runner`` (threads, processes, or a Dask cluster). Resumable twice over: a shard
task caches on its inputs (tiles, checkpoint bytes, CAM settings - not the run id) with its result
persisted under ``scale.results_dir``, so a re-run skips finished shards without loading a model;
inside a shard, finished batches are in the store's journal and skipped. Optional PNG overlays of
CAM + mask for a sample of positive tiles::

    python -m flows.segment_tiles --manifest out/demo/store/manifest.gpkg \
        --classifier out/classifier/best.pt --segmenter out/segmenter/segmenter.pt --overlays 8
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from tqdm.auto import tqdm

from deepsolar.core.config import validate_config
from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.segment_tiles import (
    ScaleOutConfig,
    SegmentTilesJob,
    finish,
    plan,
    restore_records,
    shard_job,
)
from deepsolar.segmentation.shards import RESULTS_DIRNAME, TileShard, segment_shard


# Cached on its inputs (shard tiles + job + run key, which hashes both checkpoints' bytes and the
# CAM settings) and the task's source - not the flow run id - so any later run skips it.
@task(name="segment-shard", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def segment_shard_task(job: SegmentTilesJob, shard: TileShard, key: str) -> list[dict[str, Any]]:
    """Task ``segment-shard``: runs :func:`deepsolar.segmentation.shards.segment_shard`.

    Classifies and segments one shard, journalling each finished batch in the store.

    Args:
        job: the job as a shard sees it (:func:`deepsolar.jobs.segment_tiles.shard_job`).
        shard: the shard's tiles.
        key: the run key (both checkpoints' bytes and the CAM settings).

    Returns:
        One record per tile of the shard (probability, positive, mask path, area in m², error).

    Raises:
        InputDataError: a checkpoint cannot be read.
        ConfigError: the device is unavailable or the checkpoints do not fit together.
    """
    return segment_shard(job, shard, key)


def run_shards(
    job: SegmentTilesJob, shards: list[TileShard], key: str, scale: ScaleOutConfig, store: Path
) -> dict[str, Any]:
    """Submit every shard to the configured task runner; count the ones served from the cache.

    The runner is entered here rather than set on a subflow, so the shard list never travels as a
    flow-run parameter (a state has millions of tiles).

    Args:
        job: the validated job.
        shards: the store's tiles cut into shards (:func:`deepsolar.jobs.segment_tiles.plan`).
        key: the run key.
        scale: the task runner, and where shard results are persisted (``results_dir``).
        store: the tile store's folder (results default to ``<store>/.prefect-results``).

    Returns:
        ``records``: every shard's records in shard order; ``n_cached``: the number of shards
        served from the cache.
    """
    results_dir = (scale.results_dir or store / RESULTS_DIRNAME).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    shard_task = segment_shard_task.with_options(
        result_storage=results_dir  # a Path: Prefect stores results + cache keys there as files
    )
    job_key = shard_job(job)  # overlays are not part of a shard
    records: list[dict[str, Any]] = []
    n_cached = 0
    n_tiles = sum(len(s.rows) for s in shards)
    # a bar on a terminal (tqdm turns itself off when stderr is not one, e.g. under a worker)
    with (
        scale.task_runner.build() as runner,
        tqdm(total=n_tiles, unit="tile", desc="segment shards", disable=None) as bar,
    ):
        futures = [
            runner.submit(shard_task, {"job": job_key, "shard": s, "key": key}) for s in shards
        ]
        for s, fut in zip(shards, futures, strict=True):
            records.extend(fut.result())
            n_cached += fut.state.name == "Cached"
            bar.update(len(s.rows))
    return {"records": records, "n_cached": n_cached}


@task(name="segment-tile-store", cache_policy=NO_CACHE)
def segment_task(job: SegmentTilesJob) -> dict[str, Any]:
    """Task ``segment-tile-store``: runs :func:`deepsolar.jobs.segment_tiles.finish`.

    Args:
        job: the validated job.

    Returns:
        The segmentation summary (``n_tiles``, ``n_positive``, ``n_errors``,
        ``total_area_m2`` in m², ``table_path``, ...).
    """
    # every tile is in the journal by now: this rebuilds the table (atomically) and the overlays
    return finish(job)


# Annotated with the model alone so a deployment's parameter schema is strict (the server rejects
# a bad field before a run is created); validated by validate_config inside, so a direct call with
# a bad dict is a ConfigError naming the field.
@flow(name="segment-tiles", validate_parameters=False)
def segment_tiles_flow(job: SegmentTilesJob, scale: ScaleOutConfig | None = None) -> dict[str, Any]:
    """Classify every 'ok' tile of a store and segment the positive ones, in cached shards.

    Plans the run (:func:`deepsolar.jobs.segment_tiles.plan`), submits one ``segment-shard``
    task per shard to the configured runner, restores the records of cached shards into the
    journal, then writes the table and overlays (``segment-tile-store`` task).

    Args:
        job: the job (or its parameters as a mapping): the store's manifest, checkpoints, CAM
            settings, batch size (tiles), device and overlays.
        scale: shard size (``shard_size_tiles``, tiles), task runner and results folder; None:
            one thread, 1024 tiles per shard.

    Returns:
        The segmentation summary, with ``n_done_before``, ``n_shards``, ``n_shards_cached`` and
        ``task_runner``.

    Raises:
        ConfigError: a parameter is invalid (naming the field).
        InputDataError: the store or a checkpoint cannot be read.
    """
    job = validate_config(SegmentTilesJob, job)
    scale = validate_config(ScaleOutConfig, scale if scale is not None else {}, where="scale")
    log = get_run_logger()
    p = plan(job, scale)  # store checked, shards cut, checkpoints loaded (clear errors first)
    store, shards, key, n_before = p.store, p.shards, p.key, p.n_before
    log.info(
        "%d tiles in %d shards of <= %d on %s; %d done before",
        sum(len(s.rows) for s in shards), len(shards), scale.shard_size_tiles,
        scale.task_runner.describe(), n_before,
    )  # fmt: skip
    sharded = run_shards(job, shards, key, scale, store)
    # A shard served from the cache may predate a deleted journal: put its records back.
    restore_records(p, sharded["records"])
    summary = segment_task(job)
    summary.update(
        n_done_before=n_before,
        n_shards=len(shards),
        n_shards_cached=sharded["n_cached"],
        task_runner=scale.task_runner.describe(),
    )
    log.info(
        "%d tiles (%d done before, %d of %d shards cached), %d positive, %d unreadable, "
        "%.1f m² of panels; table %s",
        summary["n_tiles"], n_before, sharded["n_cached"], len(shards), summary["n_positive"],
        summary["n_errors"], summary["total_area_m2"], summary["table_path"],
    )  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.segment_tiles``: the same command line as ``deepsolar segment-tiles``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the job was refused or failed (one line on stderr).
    """
    return run_main("segment-tiles", argv, description=__doc__)


if __name__ == "__main__":
    # Run the imported module's main, not __main__'s: the shard tasks' cache keys include their
    # qualified names, which must be the same however the flow is started.
    from deepsolar.core.runtime import run_entry
    from flows.segment_tiles import main as _main

    sys.exit(run_entry(_main, "segment-tiles"))
