"""Where per-shard work runs: a validated task-runner choice that builds a Prefect task runner.

``threads`` (default) and ``processes`` run on this machine; ``dask`` either connects to an
existing Dask scheduler (``address: tcp://scheduler:8786``, e.g. one started by a Kubernetes or
HPC deployment) or starts a cluster of ``cluster_class`` (default: a ``LocalCluster`` of
``n_workers`` processes). The Dask runner needs the ``dask`` extra (``pip install
'deepsolar[dask]'``, i.e. prefect-dask); it is imported only when chosen.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import Field, model_validator

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import ConfigError


class TaskRunnerConfig(StrictModel):
    """How to run the shards of a flow (classify/segment tile shards)."""

    kind: Literal["threads", "processes", "dask"] = Field(
        "threads",
        description="threads / processes on this machine, or a Dask cluster (prefect-dask)",
    )
    max_workers: int | None = Field(
        None, ge=1, description="threads/processes: pool size (default: Prefect's default)"
    )
    address: str | None = Field(
        None,
        description="dask: address of an existing scheduler, e.g. tcp://10.0.0.5:8786; "
        "when empty a cluster is started for the run",
    )
    cluster_class: str | None = Field(
        None,
        description="dask: import path of the cluster to start, e.g. "
        "dask_kubernetes.operator.KubeCluster (default distributed.LocalCluster)",
    )
    n_workers: int | None = Field(None, ge=1, description="dask: workers of a started cluster")
    threads_per_worker: int = Field(1, ge=1, description="dask: threads per started worker")
    cluster_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="dask: extra keyword arguments of the cluster class"
    )
    adapt_min: int | None = Field(None, ge=0, description="dask: adaptive scaling, minimum")
    adapt_max: int | None = Field(None, ge=1, description="dask: adaptive scaling, maximum")

    @model_validator(mode="after")
    def _consistent(self) -> TaskRunnerConfig:
        dask_only = {
            "address": self.address,
            "cluster_class": self.cluster_class,
            "n_workers": self.n_workers,
            "cluster_kwargs": self.cluster_kwargs or None,
            "adapt_min": self.adapt_min,
            "adapt_max": self.adapt_max,
        }
        if self.kind != "dask":
            given = [k for k, v in dask_only.items() if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to kind: dask")
        elif self.address and any(v is not None for k, v in dask_only.items() if k != "address"):
            raise ValueError(
                "address connects to an existing cluster: leave cluster_class, n_workers, "
                "cluster_kwargs and adapt_* empty"
            )
        if self.kind == "dask" and self.max_workers is not None:
            raise ValueError("max_workers applies to threads/processes; use n_workers for dask")
        return self

    def build(self) -> Any:
        """A fresh Prefect task runner (each flow run needs its own instance).

        Returns:
            A ``ThreadPoolTaskRunner``, ``ProcessPoolTaskRunner`` or ``DaskTaskRunner``.

        Raises:
            ConfigError: If ``kind`` is ``dask`` and prefect-dask is not installed.
        """
        if self.kind == "threads":
            from prefect.task_runners import ThreadPoolTaskRunner

            return ThreadPoolTaskRunner(max_workers=self.max_workers)
        if self.kind == "processes":
            from prefect.task_runners import ProcessPoolTaskRunner

            return ProcessPoolTaskRunner(max_workers=self.max_workers)
        if importlib.util.find_spec("prefect_dask") is None:
            raise ConfigError(
                "task_runner kind 'dask' needs prefect-dask, which is not installed",
                where="task_runner.kind",
                fix="pip install 'deepsolar[dask]' (or prefect-dask), or use kind: threads",
            )
        from prefect_dask import DaskTaskRunner

        if self.address:
            return DaskTaskRunner(address=self.address)
        kwargs: dict[str, Any] = {"threads_per_worker": self.threads_per_worker}
        if self.n_workers is not None:
            kwargs["n_workers"] = self.n_workers
        kwargs.update(self.cluster_kwargs)
        adapt = {
            k: v
            for k, v in (("minimum", self.adapt_min), ("maximum", self.adapt_max))
            if v is not None
        }
        return DaskTaskRunner(
            cluster_class=self.cluster_class or "distributed.LocalCluster",
            cluster_kwargs=kwargs,
            adapt_kwargs=adapt or None,
        )

    def describe(self) -> str:
        """One line for logs: which runner, where.

        Returns:
            E.g. ``threads (max_workers=4)`` or ``dask at tcp://host:8786``.
        """
        if self.kind != "dask":
            return f"{self.kind} (max_workers={self.max_workers or 'default'})"
        if self.address:
            return f"dask at {self.address}"
        return (
            f"dask, new {self.cluster_class or 'LocalCluster'} "
            f"({self.n_workers or 'default'} workers x {self.threads_per_worker} threads)"
        )
