"""Flow ``synthetic-scene``: a seeded SYNTHETIC orthophoto with its PV ground truth.

Writes into ``--out`` (default ``out/synthetic``) a Cloud-Optimised GeoTIFF over real
Albuquerque (NM) census tracts, the truth panels as a GeoPackage, a truth mask and labels, every
file labelled SYNTHETIC (docs/synthetic-scene.md). The scene is a function of its config, seed
included::

    python -m flows.synthetic_scene --out out/synthetic            # the default scene (seed 0)
    python -m flows.synthetic_scene --out out/other --seed 7       # another scene
    python -m flows.synthetic_scene --out out/x --config scene.yaml --set width_px=2048
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.synthetic_scene import SyntheticSceneJob, run


@task(name="render-synthetic-scene", cache_policy=NO_CACHE)
def render_task(job: SyntheticSceneJob) -> dict[str, Any]:
    """Task ``render-synthetic-scene``: runs :func:`deepsolar.jobs.synthetic_scene.run`.

    Args:
        job: the validated job.

    Returns:
        The written paths, the size in pixels, ``m_per_px`` and the truth counts.
    """
    return run(job)


@flow(name="synthetic-scene", validate_parameters=True)
def synthetic_scene_flow(job: SyntheticSceneJob) -> dict[str, Any]:
    """Render the scene of ``job.scene`` into ``job.out_dir``; log what was written.

    Args:
        job: the scene config and the output folder.

    Returns:
        What :func:`render_task` returns.
    """
    res = render_task(job)
    get_run_logger().info("%d PV arrays -> %s", res["n_arrays"], res["image_path"])
    return res


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.synthetic_scene``: the same command line as ``deepsolar synthetic-scene``.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when the job was refused or failed (the reason on stderr).
    """
    return run_main("synthetic-scene", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
