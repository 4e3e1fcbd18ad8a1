"""The ``train-mask-head`` job: a supervised mask head (light decoder) on a frozen classifier.

:class:`TrainMaskHeadJob` is the flow's parameter model; :func:`run` trains in this process (no
Prefect). Torch is imported only inside the steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deepsolar.core.config import StrictModel, config_with_sets, validate_config
from deepsolar.jobs.cli_options import bind_flags
from deepsolar.jobs.train_segmenter import check_trainer_inputs
from deepsolar.segmentation.config import TrainMaskHeadConfig


class TrainMaskHeadJob(StrictModel):
    """Parameters of ``train-mask-head``: the training config and the output folder."""

    config: TrainMaskHeadConfig
    out_dir: Path = Path("out/mask-head")


def train_step(cfg: TrainMaskHeadConfig, out_dir: Path) -> tuple[dict[str, Any], Any]:
    """Train (or resume) the decoder into ``out_dir``.

    Args:
        cfg: the training config.
        out_dir: the output folder (``last.pt``, ``mask_head.pt``).

    Returns:
        The summary (``final_checkpoint``) and the training result (``history``, ``best_epoch``).
    """
    from deepsolar.segmentation.maskhead import fit_mask_head

    res = fit_mask_head(cfg, out_dir)
    return res.summary(), res


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"job": TrainMaskHeadJob}


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters from ``train-mask-head --config FILE [--set k=v ...] [--out DIR]``.

    Args:
        args: the parsed command line.

    Returns:
        ``{"job": {"config": <the file with --set applied>, "out_dir": ...}}``.
    """
    parameters = {"job": {"config": config_with_sets(args.config, args.set)}}
    bind_flags(parameters, args, "train-mask-head")
    return parameters


def check(params: dict[str, Any], where: str) -> None:
    """The config's classifier checkpoint and chip sources exist.

    Args:
        params: the validated parameters.
        where: where they came from (the config file), for error messages.
    """
    check_trainer_inputs(params["job"].config, where)


def format_result(summary: dict[str, Any], params: dict[str, Any]) -> str:
    """What ``train-mask-head`` prints: the summary as JSON.

    Args:
        summary: the flow's result.
        params: the parameters it ran with.

    Returns:
        The summary, indented JSON.
    """
    return json.dumps(summary, indent=2)


def run(job: TrainMaskHeadJob | dict[str, Any]) -> dict[str, Any]:
    """Train the mask head in this process (no Prefect).

    Args:
        job: the job (or its parameters as a mapping).

    Returns:
        The summary (``final_checkpoint``).
    """
    job = validate_config(TrainMaskHeadJob, job)
    summary, _ = train_step(job.config, job.out_dir)
    return summary
