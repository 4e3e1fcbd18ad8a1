"""The ``evaluate-segmenter`` job: CAM masks against truth masks, beside trivial baselines.

:class:`EvaluateSegmenterJob` is the flow's parameter model; :func:`run` evaluates in this process
(no Prefect). Torch is imported only inside the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepsolar.core.config import StrictModel, config_with_sets, validate_config
from deepsolar.core.errors import ConfigError
from deepsolar.jobs.cli_options import bind_flags, chip_sources
from deepsolar.segmentation.config import EvaluateSegmentationConfig


class EvaluateSegmenterJob(StrictModel):
    """Parameters of ``evaluate-segmenter``: the evaluation config and the output folder."""

    evaluation: EvaluateSegmentationConfig
    out_dir: Path = Path("out/segmenter-eval")


def evaluate_step(job: EvaluateSegmenterJob) -> dict[str, Any]:
    """Score every method's masks on every set; write the tables and reports.

    Args:
        job: the validated job.

    Returns:
        The report (rows under ``table``).
    """
    from deepsolar.segmentation.evaluate import evaluate_segmentation

    return evaluate_segmentation(job.evaluation, job.out_dir)


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"job": EvaluateSegmenterJob}
#: Inputs that must exist before the flow starts (the chip sets are checked as they are read).
INPUT_PATHS = tuple(
    f"job.evaluation.{k}_checkpoint" for k in ("classifier", "segmenter", "mask_head")
)


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters from ``evaluate-segmenter [--config FILE] [options]``.

    The config file (if any) with ``--set`` applied, then the ``--source`` sets, then every
    bound option (``--classifier``, ``--cam-threshold``, ...).

    Args:
        args: the parsed command line.

    Returns:
        ``{"job": {"evaluation": ..., "out_dir": ...}}``.

    Raises:
        ConfigError: no classifier checkpoint or no set is given.
    """
    evaluation = config_with_sets(args.config, args.set)
    if args.source:
        sources = chip_sources(args, args.ground_m_per_px)
        evaluation["sets"] = [src.model_dump(exclude_none=True) for src in sources]
    parameters = {"job": {"evaluation": evaluation}}
    bind_flags(parameters, args, "evaluate-segmenter")
    if "classifier_checkpoint" not in evaluation:
        raise ConfigError(
            "no classifier checkpoint", where="evaluate-segmenter",
            fix="pass --classifier best.pt (or a --config with classifier_checkpoint)",
        )  # fmt: skip
    if not evaluation.get("sets"):
        raise ConfigError(
            "no sets to evaluate on", where="evaluate-segmenter",
            fix="pass --source PATH (a folder with images/ + masks/, or a manifest.csv)",
        )  # fmt: skip
    return parameters


def format_result(report: dict[str, Any], params: dict[str, Any]) -> str:
    """What ``evaluate-segmenter`` prints: the IoU / area table beside the baselines.

    Args:
        report: the flow's result.
        params: the parameters it ran with.

    Returns:
        The lines to print.
    """
    from deepsolar.segmentation.evaluate import format_table

    job = params["job"]
    return "\n".join([
        format_table(report),
        f"[lo, hi]: 95% bootstrap intervals ({job.evaluation.bootstrap_reps} resamples of the "
        "positive chips); whole-tile = every pixel panel; mean-fraction = the chips' mean panel "
        "fraction (in-sample); notes in table.md",
        f"written to {job.out_dir} (table.md/.csv/.json, report.md, per_tile.csv, overlays/)",
    ])  # fmt: skip


def run(job: EvaluateSegmenterJob | dict[str, Any]) -> dict[str, Any]:
    """Evaluate in this process (no Prefect).

    Args:
        job: the job (or its parameters as a mapping).

    Returns:
        The report.
    """
    return evaluate_step(validate_config(EvaluateSegmenterJob, job))
