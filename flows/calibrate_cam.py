r"""Flow ``calibrate-cam``: a CAM floor or a CAM threshold fitted on labelled training chips.

``--fit floor`` (default): the ``--quantile`` of the truly positive training tiles' raw CAM
maxima, so that a tile may mark nothing (``CamConfig.floor``). ``--fit threshold``: the
``CamConfig.threshold`` whose pipeline masks best match the training masks (``--objective area``:
total area, ``iou``: pixel IoU). Fit on chips the model trained on, never on the chips you score.
Prints the evidence and the ``cam:`` lines for a segment-tiles / map-region config::

    python -m flows.calibrate_cam --classifier builtin --segmenter builtin \
        --source ../shared/data/pv_chips/solar_pv_gray/manifest.csv --split train \
        --ground-m-per-px 0.2 --quantile 0.1
    python -m flows.calibrate_cam --fit threshold --source my-training-chips/
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.jobs.calibrate_cam import CalibrateCamJob, run
from deepsolar.jobs.command_line import run_main


@task(name="fit-cam-rule", cache_policy=NO_CACHE)
def fit_task(job: CalibrateCamJob) -> dict[str, Any]:
    """Task ``fit-cam-rule``: runs :func:`deepsolar.jobs.calibrate_cam.run`.

    Args:
        job: the validated job.

    Returns:
        The fitted ``floor`` (raw CAM units) or ``threshold`` (normalised CAM, 0-1) and the
        evidence (``maxima`` or ``sweep``).
    """
    return run(job)


@flow(name="calibrate-cam", validate_parameters=True)
def calibrate_cam_flow(job: CalibrateCamJob) -> dict[str, Any]:
    """Fit the CAM floor or threshold on the job's training chips; log the fitted value.

    Args:
        job: the checkpoints, the training chips and what to fit.

    Returns:
        What :func:`fit_task` returns.
    """
    res = fit_task(job)
    get_run_logger().info("%s = %s", res["fit"], res[res["fit"]])
    return res


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.calibrate_cam``: the same command line as ``deepsolar calibrate-cam``.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when the job was refused or failed (the reason on stderr).
    """
    return run_main("calibrate-cam", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
