"""Resumable runs: kill a segment-tiles run mid-way (SIGKILL to its process group), re-run it, and
get the same outputs as an uninterrupted run, with the finished shards served from the cache and
no finished tile computed twice."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
import yaml

from tests.orchestration.orch_helpers import (
    COLS,
    ROWS,
    assert_same_outputs,
    journal_records,
    prefect_env,
    seg_job,
    start,
    stop,
)

N_TILES = ROWS * COLS
SHARD = 2  # 12 shards of one batch each


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_killed_run_resumes_with_identical_outputs(orch_classifier, store_copy, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from flows.segment_tiles import RESULTS_DIRNAME, segment_tiles_flow

    scale = {"shard_size_tiles": SHARD}
    reference = store_copy("reference")
    ref = segment_tiles_flow(seg_job(reference, orch_classifier), scale)
    assert ref["n_shards"] == N_TILES // SHARD and ref["n_shards_cached"] == 0

    store = store_copy("killed")
    cfg = tmp_path / "segment.yaml"
    cfg.write_text(yaml.safe_dump({"job": seg_job(store, orch_classifier), "scale": scale}))
    env = prefect_env(tmp_path / "prefect-home", PREFECT_API_URL.value())
    log = tmp_path / "killed-run.log"
    proc = start([sys.executable, "-m", "flows.segment_tiles", "--config", str(cfg)], log, env)
    results = store / RESULTS_DIRNAME
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if results.is_dir() and len(os.listdir(results)) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed:\n{log.read_text()}"
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: no clean-up runs
        proc.wait(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not (store / "segmentation.parquet").exists(), "killed before the table was written"
    n_shards_persisted = len(os.listdir(results))
    done_at_kill = {r["tile_id"] for r in journal_records(store)}
    assert 2 <= n_shards_persisted < N_TILES // SHARD
    assert SHARD * n_shards_persisted <= len(done_at_kill) < N_TILES

    again = segment_tiles_flow(seg_job(store, orch_classifier), scale)
    assert again["n_tiles"] == N_TILES
    assert again["n_done_before"] == len(done_at_kill)
    # every shard whose result was persisted before the kill is skipped without running
    assert again["n_shards_cached"] >= n_shards_persisted
    assert again["n_shards_cached"] < again["n_shards"]
    records = journal_records(store)
    ids = [r["tile_id"] for r in records]
    assert len(ids) == len(set(ids)) == N_TILES, "a finished tile was computed twice"
    assert_same_outputs(reference, store)

    # and a third run is all cache: nothing computed, nothing appended
    third = segment_tiles_flow(seg_job(store, orch_classifier), scale)
    assert third["n_shards_cached"] == third["n_shards"] and third["n_done_before"] == N_TILES
    assert len(journal_records(store)) == N_TILES
