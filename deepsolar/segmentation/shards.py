"""Shards of a tile store for scaled-out segmentation: planning, one shard's work, the shared journal.

The ``segment-tiles`` flow runs :func:`segment_shard` once per shard through a configurable task
runner (:class:`ScaleOutConfig`); every shard appends the same journal records as
:func:`deepsolar.segmentation.pipeline.segment_tile_store`, so either can resume the other.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any

from deepsolar.classifier.data import read_chip
from deepsolar.core.config import StrictModel
from deepsolar.core.device import resolve_device
from deepsolar.core.errors import InputDataError
from deepsolar.geo.tiling import Tile
from deepsolar.imagery.manifest import read_manifest
from deepsolar.segmentation.area import mask_area_m2_tile
from deepsolar.segmentation.cam import mask_to_png_array
from deepsolar.segmentation.config import (  # noqa: F401 - ScaleOutConfig re-exported
    ScaleOutConfig,
    uses_segmenter,
)
from deepsolar.segmentation.pipeline import (
    JOURNAL_NAME,
    Segmenter,
    SegmentTilesJob,
    _record,
    image_m_per_px,
    mask_relpath,
    read_journal,
    write_png_atomic,
)

RESULTS_DIRNAME = ".prefect-results"


class TileShard(StrictModel):
    """One shard: the tiles it covers, in row-band order (its identity for the cache)."""

    index: int
    rows: list[tuple[str, int, int, int, int, str]]  # tile_id, zoom, size_px, x, y, path


def store_paths(manifest: Path) -> tuple[Path, Path]:
    """The tile store's folder and its manifest file.

    Args:
        manifest: the store's ``manifest.gpkg``, or its folder.

    Returns:
        (store folder, manifest.gpkg path).
    """
    p = Path(manifest)
    return (p, p / "manifest.gpkg") if p.is_dir() else (p.parent, p)


def plan_shards(manifest: Path, shard_size_tiles: int) -> list[TileShard]:
    """The store's 'ok' tiles sorted by row then column, cut into shards of ``shard_size_tiles``.

    Args:
        manifest: the store's ``manifest.gpkg``, or its folder.
        shard_size_tiles: tiles per shard (the last may hold fewer).

    Returns:
        The shards, numbered from 0.

    Raises:
        InputDataError: the manifest cannot be read.
    """
    _, manifest_path = store_paths(manifest)
    tiles = read_manifest(manifest_path)
    tiles = tiles[tiles["status"] == "ok"].sort_values(["y", "x"], kind="stable")
    rows = [
        (str(r.tile_id), int(r.zoom), int(r.tile_size_px), int(r.x), int(r.y), str(r.path))
        for r in tiles[["tile_id", "zoom", "tile_size_px", "x", "y", "path"]].itertuples(index=False)
    ]  # fmt: skip
    return [
        TileShard(index=i, rows=rows[s : s + shard_size_tiles])
        for i, s in enumerate(range(0, len(rows), shard_size_tiles))
    ]


_local = threading.local()


def cached_segmenter(job: SegmentTilesJob) -> Segmenter:
    """One loaded model pair per thread (the CAM taps hook the model, so threads cannot share).

    Args:
        job: the segment-tiles job (checkpoints, CAM settings and device key the cache).

    Returns:
        This thread's segmenter for ``job`` (loaded on first use; a new key replaces the old).

    Raises:
        InputDataError: a checkpoint cannot be read.
        ConfigError: the device is unavailable or the checkpoints do not fit together.
    """
    key = (
        str(job.classifier_checkpoint), str(job.segmenter_checkpoint), job.cam.model_dump_json(),
        job.device,
    )  # fmt: skip
    cache = getattr(_local, "segmenters", None)
    if cache is None:
        cache = _local.segmenters = {}
    if key not in cache:
        cache.clear()
        cache[key] = Segmenter.from_checkpoints(
            job.classifier_checkpoint,
            job.segmenter_checkpoint if uses_segmenter(job.cam.method) else None,
            job.cam,
            job.device,
        )
    return cache[key]


def append_records(journal_path: Path, records: list[dict[str, Any]]) -> None:
    """Append journal lines under an exclusive lock (shards may run in parallel processes).

    A torn last line left by a killed run is ended first, so new records start on a fresh line.

    Args:
        journal_path: the segmentation journal (JSON lines; created if missing).
        records: the records to append (nothing is written when empty).
    """
    if not records:
        return
    with open(journal_path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:  # a run killed mid-line left a torn tail: start a fresh line
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write("".join(json.dumps(r) + "\n" for r in records).encode())
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def segment_shard(job: SegmentTilesJob, shard: TileShard, key: str) -> list[dict[str, Any]]:
    """Classify + segment one shard; journal each batch; return the shard's records in order.

    Batches are fixed slices of the shard, and a batch is journalled in one locked write, so a
    resumed shard recomputes only whole unfinished batches: the same inputs as an uninterrupted
    run, hence the same numbers.

    Args:
        job: the segment-tiles job.
        shard: the shard's tiles.
        key: the :func:`~deepsolar.segmentation.pipeline.run_key` of the run.

    Returns:
        One record per tile of the shard (probability, positive, mask path, area in m², error).

    Raises:
        InputDataError: a checkpoint cannot be read.
        ConfigError: the device is unavailable or the checkpoints do not fit together.
    """
    store, _ = store_paths(job.manifest)
    journal_path = store / JOURNAL_NAME
    if job.num_threads and resolve_device(job.device).type == "cpu":
        import torch

        torch.set_num_threads(job.num_threads)
    done = read_journal(journal_path, key)
    segmenter: Segmenter | None = None
    for i in range(0, len(shard.rows), job.batch_size):
        batch = shard.rows[i : i + job.batch_size]
        if all(r[0] in done for r in batch):
            continue
        if segmenter is None:
            segmenter = cached_segmenter(job)
        images, ok_rows, records = [], [], []
        for r in batch:
            try:
                images.append(read_chip(store / r[5]))
                ok_rows.append(r)
            except InputDataError as err:
                records.append(_record(r[0], float("nan"), False, None, 0.0, str(err), key))
        gsd = [
            image_m_per_px(Tile(r[1], r[2], r[3], r[4]), im)
            for r, im in zip(ok_rows, images, strict=True)
        ]
        results = segmenter.segment(images, gsd) if images else []
        for (tile_id, zoom, size, x, y, path), res in zip(ok_rows, results, strict=True):
            mask_rel, area = None, 0.0
            if res.is_positive:
                mask_rel = mask_relpath(path)
                write_png_atomic(mask_to_png_array(res.mask), store / mask_rel)
                area = mask_area_m2_tile(res.mask, Tile(zoom, size, x, y))
            records.append(_record(tile_id, res.prob, res.is_positive, mask_rel, area, None, key))
        new = [rec for rec in records if rec["tile_id"] not in done]
        append_records(journal_path, new)
        done.update((rec["tile_id"], rec) for rec in new)
    return [done[r[0]] for r in shard.rows]
