"""The ``synthetic-scene`` job: render a seeded SYNTHETIC orthophoto with its PV ground truth.

:class:`SyntheticSceneJob` is the flow's parameter model; :func:`run` renders in this process (no
Prefect) with :func:`deepsolar.synthetic.generate_scene`. The scene is a function of its config
(seed included): the same config gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from deepsolar.core.config import StrictModel, config_with_sets, validate_config
from deepsolar.jobs.cli_options import bind_flags
from deepsolar.synthetic import SyntheticSceneConfig


class SyntheticSceneJob(StrictModel):
    """Parameters of ``synthetic-scene``: the scene config and the output folder."""

    scene: SyntheticSceneConfig = Field(default_factory=SyntheticSceneConfig)
    out_dir: Path = Path("out/synthetic")


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"job": SyntheticSceneJob}


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters: ``--config`` (scene fields) with ``--set``, then ``--seed``, ``--out``.

    Args:
        args: the parsed command line.

    Returns:
        ``{"job": {"scene": mapping, "out_dir": ...}}``.
    """
    parameters = {"job": {"scene": config_with_sets(args.config, args.set)}}
    bind_flags(parameters, args, "synthetic-scene")
    return parameters


def run(job: SyntheticSceneJob | dict[str, Any]) -> dict[str, Any]:
    """Render the scene into ``job.out_dir`` in this process (no Prefect).

    Args:
        job: the job (or its parameters as a mapping).

    Returns:
        The written paths (orthophoto, truth GeoPackage, truth mask, labels, metadata), the size
        in pixels, ``m_per_px`` (ground metres per pixel at the centre) and the truth counts.
    """
    from deepsolar.synthetic import generate_scene

    job = validate_config(SyntheticSceneJob, job)
    res = generate_scene(job.scene, job.out_dir)
    keys = ("image_path", "truth_path", "truth_mask_path", "labels_path", "metadata_path")
    return {
        **{k: str(getattr(res, k)) for k in keys},
        "width_px": res.width_px,
        "height_px": res.height_px,
        "m_per_px": res.m_per_px,
        "n_arrays": res.n_arrays,
        "n_lookalikes": res.n_lookalikes,
    }


def format_result(res: dict[str, Any], params: dict[str, Any]) -> str:
    """What ``synthetic-scene`` prints: the orthophoto, its size and the truth.

    Args:
        res: the flow's result.
        params: the parameters it ran with.

    Returns:
        One line.
    """
    return (
        f"SYNTHETIC scene: {res['image_path']} ({res['width_px']}x{res['height_px']} px, "
        f"{res['m_per_px']:.4f} m/px), {res['n_arrays']} PV arrays, {res['n_lookalikes']} "
        f"look-alikes; truth {res['truth_path']}"
    )
