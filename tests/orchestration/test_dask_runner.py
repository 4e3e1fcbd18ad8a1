"""Scale-out: the segment shards on a 2-worker Dask LocalCluster give the same outputs as the
single-process run, and the task-runner config refuses contradictory settings."""

from __future__ import annotations

import pytest

from deepsolar.core.errors import ConfigError
from deepsolar.core.runners import TaskRunnerConfig
from tests.orchestration.orch_helpers import COLS, ROWS, assert_same_outputs, seg_job


def test_runner_config_builds_each_kind_and_refuses_contradictions() -> None:
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(TaskRunnerConfig().build(), ThreadPoolTaskRunner)
    assert isinstance(
        TaskRunnerConfig(kind="processes", max_workers=2).build(), ProcessPoolTaskRunner
    )
    remote = TaskRunnerConfig(kind="dask", address="tcp://10.0.0.5:8786")
    assert isinstance(remote.build(), DaskTaskRunner) and "10.0.0.5" in remote.describe()
    local = TaskRunnerConfig(kind="dask", n_workers=3).build()
    assert local.cluster_kwargs["n_workers"] == 3
    from deepsolar.core.config import validate_config

    for bad, msg in [
        ({"kind": "threads", "address": "tcp://x:8786"}, "only apply to kind: dask"),
        ({"kind": "dask", "address": "tcp://x:8786", "n_workers": 2}, "existing cluster"),
        ({"kind": "dask", "max_workers": 2}, "use n_workers"),
        ({"kind": "spark"}, "task_runner|kind"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            validate_config(TaskRunnerConfig, bad, where="task_runner")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_dask_local_cluster_matches_single_process(orch_classifier, store_copy) -> None:
    from flows.segment_tiles import segment_tiles_flow

    single, dask = store_copy("single"), store_copy("dask")
    one = segment_tiles_flow(seg_job(single, orch_classifier), {"shard_size_tiles": 4})
    assert one["task_runner"].startswith("threads") and one["n_shards"] == ROWS * COLS // 4
    many = segment_tiles_flow(
        seg_job(dask, orch_classifier),
        {"shard_size_tiles": 4, "task_runner": {"kind": "dask", "n_workers": 2}},
    )
    assert "dask" in many["task_runner"] and many["n_shards"] == one["n_shards"]
    assert many["n_tiles"] == one["n_tiles"] == ROWS * COLS
    assert many["n_errors"] == 1 and many["n_positive"] > 0
    assert many["total_area_m2"] == one["total_area_m2"] > 0
    assert_same_outputs(single, dask)
