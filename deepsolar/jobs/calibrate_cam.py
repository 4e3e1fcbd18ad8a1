"""The ``calibrate-cam`` job: fit a CAM floor or a CAM threshold on labelled training chips.

:class:`CalibrateCamJob` is the flow's parameter model; :func:`run` fits in this process (no
Prefect) with :mod:`deepsolar.segmentation.calibrate`; :func:`format_result` prints the
``cam:`` lines to put in a segment-tiles / map-region config. Torch is imported only inside
:func:`run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from deepsolar.classifier.config import ChipSource
from deepsolar.core.config import StrictModel, config_with_sets, validate_config
from deepsolar.jobs.cli_options import bind_flags, chip_sources


class CalibrateCamJob(StrictModel):
    """Parameters of ``calibrate-cam``: the checkpoints, the training chips and what to fit."""

    fit: Literal["floor", "threshold"] = Field(
        "floor", description="floor: CamConfig.floor; threshold: CamConfig.threshold"
    )
    classifier_checkpoint: Path = Field(Path("builtin"), description="'builtin': the shipped one")
    segmenter_checkpoint: Path | None = Field(
        None, description="the greedy branch (default: builtin with the builtin classifier)"
    )
    method: Literal["greedy", "plain"] = "greedy"
    stage: int | None = Field(None, ge=1, description="greedy stage (default: the last trained)")
    sources: list[ChipSource] = Field(
        min_length=1, description="the training chips (with masks for --fit threshold)"
    )
    quantile: float = Field(0.1, gt=0.0, lt=1.0, description="fit floor: the positives' quantile")
    on: Literal["positive", "margin"] = Field("positive", description="fit floor: which CAM map")
    objective: Literal["area", "iou"] = Field(
        "area", description="fit threshold: match the total area, or the best pixel IoU"
    )
    cam_floor: float | None = Field(None, description="fit threshold: under this CamConfig.floor")
    device: str = "auto"


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"job": CalibrateCamJob}
#: Inputs that must exist before the flow starts.
INPUT_PATHS = ("job.classifier_checkpoint", "job.segmenter_checkpoint")


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters: ``--config`` (if any), ``--set``, the ``--source`` chips, options.

    Args:
        args: the parsed command line.

    Returns:
        ``{"job": mapping}``.
    """
    job = config_with_sets(args.config, args.set)
    if args.source:
        job["sources"] = chip_sources(args, args.ground_m_per_px)
    parameters = {"job": job}
    bind_flags(parameters, args, "calibrate-cam")
    return parameters


def run(job: CalibrateCamJob | dict[str, Any]) -> dict[str, Any]:
    """Fit the floor or the threshold in this process (no Prefect).

    Args:
        job: the job (or its parameters as a mapping).

    Returns:
        ``fit``, the fitted ``floor`` (raw CAM units) or ``threshold`` (normalised CAM, 0-1),
        and the evidence: ``maxima`` (one row per sample) or ``sweep`` (one row per candidate).
    """
    from deepsolar.segmentation import calibrate
    from deepsolar.segmentation.config import CamConfig, default_segmenter
    from deepsolar.segmentation.pipeline import Segmenter

    job = validate_config(CalibrateCamJob, job)
    seg_ckpt = default_segmenter(job.classifier_checkpoint, job.segmenter_checkpoint, job.method)
    cam = CamConfig(method=job.method, stage=job.stage, floor=job.cam_floor)
    seg = Segmenter.from_checkpoints(
        job.classifier_checkpoint, seg_ckpt if job.method == "greedy" else None, cam, job.device
    )
    out: dict[str, Any] = job.model_dump(
        mode="json", include={"fit", "quantile", "on", "objective"}
    )
    if job.fit == "threshold":
        threshold, sweep = calibrate.fit_cam_threshold(seg, job.sources, job.objective)
        return {**out, "threshold": threshold, "sweep": sweep.to_dict(orient="records")}
    maxima = calibrate.cam_maxima(seg, job.sources)
    floor = calibrate.floor_from_maxima(maxima, job.quantile, job.on)
    columns = ["label", "called", f"max_{job.on}"]
    return {**out, "floor": floor, "maxima": maxima[columns].to_dict(orient="records")}


def format_result(res: dict[str, Any], params: dict[str, Any]) -> str:
    """What ``calibrate-cam`` prints: the evidence, then the ``cam:`` lines for a config.

    Args:
        res: the flow's result.
        params: the parameters it ran with.

    Returns:
        The lines to print.
    """
    if res["fit"] == "threshold":
        lines = ["threshold  area pred/true  pixel IoU"]
        for r in res["sweep"]:
            mark = "  <- chosen" if r["threshold"] == res["threshold"] else ""
            lines.append(f"{r['threshold']:9.2f}  {r['area_ratio']:14.3f}  {r['iou']:9.3f}{mark}")
        lines += [f"chosen by {res['objective']} on the training samples",
                  f"cam:\n  threshold: {res['threshold']:g}"]  # fmt: skip
        return "\n".join(lines)
    on, floor = res["on"], res["floor"]
    pos = [r for r in res["maxima"] if r["label"] == 1]
    neg_called = [r[f"max_{on}"] for r in res["maxima"] if r["label"] == 0 and r["called"]]
    emptied = sum(m <= floor for m in neg_called) / len(neg_called) if neg_called else float("nan")
    return (
        f"{len(pos)} positive / {len(res['maxima']) - len(pos)} negative samples; floor = "
        f"{floor:.6g} ({res['quantile']:g}-quantile of the positives' {on} maxima); it would "
        f"empty {emptied:.0%} of the {len(neg_called)} false positives\n"
        f"cam:\n  floor: {floor:.6g}\n  floor_on: {on}"
    )
