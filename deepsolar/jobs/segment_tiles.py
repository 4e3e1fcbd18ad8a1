"""The ``segment-tiles`` job: classify + segment a tile store in shards, without Prefect.

The parameter models live beside the pipeline they configure (:class:`SegmentTilesJob` and
:class:`ScaleOutConfig` in :mod:`deepsolar.segmentation.config`) and are re-exported here.
``flows.segment_tiles`` runs the same steps (:func:`plan`, one ``segment_shard`` per shard,
:func:`restore_records`, :func:`finish`) as Prefect tasks, with cached shard results; :func:`run`
runs the shards one after another in this process. Torch is imported only inside the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepsolar.core.config import config_with_sets, validate_config
from deepsolar.jobs.cli_options import bind_flags
from deepsolar.segmentation.config import ScaleOutConfig, SegmentTilesJob

__all__ = ["ScaleOutConfig", "SegmentPlan", "SegmentTilesJob", "finish", "plan", "run"]


@dataclass
class SegmentPlan:
    """What a segment-tiles run works through.

    Attributes:
        store: the tile store's folder.
        shards: the 'ok' tiles cut into shards (``TileShard``), in row-band order.
        key: the run key (both checkpoints' bytes and the CAM settings).
        n_before: tiles already in the store's journal under this key.
    """

    store: Path
    shards: list[Any]
    key: str
    n_before: int

    @property
    def n_tiles(self) -> int:
        """The number of tiles in all shards."""
        return sum(len(s.rows) for s in self.shards)


def plan(job: SegmentTilesJob, scale: ScaleOutConfig) -> SegmentPlan:
    """Check the store, cut its tiles into shards and load the models once (clear errors first).

    Args:
        job: the validated job.
        scale: the shard size (``scale.shard_size_tiles``, tiles).

    Returns:
        The run's plan.
    """
    from deepsolar.imagery.manifest import check_journal_paths
    from deepsolar.segmentation.pipeline import JOURNAL_NAME, read_journal, run_key
    from deepsolar.segmentation.shards import cached_segmenter, plan_shards, store_paths

    store, _ = store_paths(job.manifest)
    # Paths read from the store's files must stay inside it (plan_shards checks the manifest).
    check_journal_paths(store, store / JOURNAL_NAME)
    shards = plan_shards(job.manifest, scale.shard_size_tiles)
    cached_segmenter(job)  # checkpoints load (clear errors) before any shard starts
    key = run_key(job)
    done = read_journal(store / JOURNAL_NAME, key)
    n_before = sum(1 for s in shards for r in s.rows if r[0] in done)
    return SegmentPlan(store=store, shards=shards, key=key, n_before=n_before)


def shard_job(job: SegmentTilesJob) -> SegmentTilesJob:
    """The job as a shard sees it: overlays are drawn once at the end, not per shard.

    Args:
        job: the validated job.

    Returns:
        A copy without overlays.
    """
    return job.model_copy(update={"overlays": 0, "overlay_seed": 0})


def restore_records(p: SegmentPlan, records: list[dict[str, Any]]) -> None:
    """Put back into the journal the records of shards it lacks (a cached shard may predate it).

    Args:
        p: the run's plan.
        records: every shard's records.
    """
    from deepsolar.segmentation.pipeline import JOURNAL_NAME, read_journal
    from deepsolar.segmentation.shards import append_records

    done = read_journal(p.store / JOURNAL_NAME, p.key)
    append_records(p.store / JOURNAL_NAME, [r for r in records if r["tile_id"] not in done])


def finish(job: SegmentTilesJob) -> dict[str, Any]:
    """Write the table (atomically) and the overlays; every tile is in the journal by now.

    Args:
        job: the validated job.

    Returns:
        The segmentation summary (``n_tiles``, ``n_positive``, ``total_area_m2``, ...).
    """
    from deepsolar.segmentation.pipeline import segment_tile_store

    return segment_tile_store(job).as_dict()


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"job": SegmentTilesJob, "scale": ScaleOutConfig}
#: Inputs that must exist before the flow starts.
INPUT_PATHS = ("job.manifest", "job.classifier_checkpoint", "job.segmenter_checkpoint")


def job_and_scale(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A config's job mapping and its scale mapping.

    A file holds either the job alone or the deployment's ``{job: ..., scale: ...}`` layout.

    Args:
        data: the config file's mapping.

    Returns:
        The job's mapping and the scale mapping (``{}`` when the file has none).
    """
    if "job" in data:
        return dict(data["job"] or {}), dict(data.get("scale") or {})
    return data, {}


def set_task_runner(scale: dict[str, Any], args: Any) -> None:
    """Apply ``--runner`` / ``--workers`` / ``--dask-address`` to a scale mapping, in place.

    ``--dask-address`` implies the Dask runner; ``--workers`` sizes the runner given (or the
    config's, else threads). Nothing given: the config's runner, else one thread.

    Args:
        scale: the ``ScaleOutConfig`` mapping.
        args: the parsed command line.
    """
    if not (args.runner or args.dask_address or args.workers):
        return
    current = scale.get("task_runner") or {}
    kind = "dask" if args.dask_address else args.runner or current.get("kind") or "threads"
    runner: dict[str, Any] = {"kind": kind}
    if args.dask_address:
        runner["address"] = args.dask_address
    elif args.workers:
        runner["n_workers" if kind == "dask" else "max_workers"] = args.workers
    scale["task_runner"] = runner


def parameters_from_args(args: Any, command: str = "segment-tiles") -> dict[str, Any]:
    """The flow's parameters: config file (if any), ``--set``, then the bound flags and runner.

    Args:
        args: the parsed command line.
        command: the command whose bound options apply (``map-region`` shares this).

    Returns:
        ``{"job": mapping, "scale": mapping}``.
    """
    job, scale = job_and_scale(config_with_sets(args.config, args.set))
    parameters = {"job": job, "scale": scale}
    bind_flags(parameters, args, command)
    set_task_runner(parameters["scale"], args)
    return parameters


def run(
    job: SegmentTilesJob | dict[str, Any], scale: ScaleOutConfig | dict[str, Any] | None = None
) -> dict[str, Any]:
    """Segment a tile store shard by shard in this process (resumable from the journal).

    Args:
        job: the job (or its parameters as a mapping).
        scale: the shard size; its task runner is not used (shards run one after another).

    Returns:
        The segmentation summary, with ``n_done_before`` and ``n_shards``.
    """
    from deepsolar.segmentation.shards import segment_shard

    job = validate_config(SegmentTilesJob, job)
    scale = validate_config(ScaleOutConfig, scale if scale is not None else {}, where="scale")
    p = plan(job, scale)
    records: list[dict[str, Any]] = []
    for shard in p.shards:
        records.extend(segment_shard(shard_job(job), shard, p.key))
    restore_records(p, records)
    summary = finish(job)
    summary.update(n_done_before=p.n_before, n_shards=len(p.shards), n_shards_cached=0)
    return summary
