"""The ``train-mask-head`` job: a supervised mask head (light decoder) on a frozen classifier.

:class:`TrainMaskHeadJob` is the flow's parameter model; :func:`run` trains in this process (no
Prefect). Torch is imported only inside the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepsolar.core.config import StrictModel, validate_config
from deepsolar.jobs.train_segmenter import check as check_trainer_job
from deepsolar.jobs.train_segmenter import trainer_parameters
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
        See :func:`deepsolar.jobs.train_segmenter.trainer_parameters`.
    """
    return trainer_parameters(args, "train-mask-head")


#: The config's classifier checkpoint and chip sources exist (as for ``train-segmenter``).
check = check_trainer_job


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
