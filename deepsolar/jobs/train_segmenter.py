"""The ``train-segmenter`` job: DeepSolar's greedy layer-wise CAM branch on a trained classifier.

:class:`TrainSegmenterJob` is the flow's parameter model; :func:`run` trains every stage in turn
in this process (no Prefect); ``flows.train_segmenter`` runs :func:`train_stage` as one task per
stage. Torch is imported only inside the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepsolar.classifier.config import check_chip_sources
from deepsolar.core.config import StrictModel, config_with_sets, validate_config
from deepsolar.core.runtime import check_input_paths
from deepsolar.jobs.cli_options import bind_flags
from deepsolar.segmentation.config import TrainSegmenterConfig


class TrainSegmenterJob(StrictModel):
    """Parameters of ``train-segmenter``: the training config and the output folder."""

    config: TrainSegmenterConfig
    out_dir: Path = Path("out/segmenter")


def train_stage(cfg: TrainSegmenterConfig, out_dir: Path, stage: int) -> tuple[dict, list[dict]]:
    """Train (or resume, or skip when finished) greedy stages up to ``stage``.

    Args:
        cfg: the training config.
        out_dir: the output folder (``stage_k.pt``, ``segmenter.pt``).
        stage: the stage to train (1-based).

    Returns:
        The run's summary and the history rows of this stage.
    """
    from deepsolar.segmentation.train import fit_segmenter

    res = fit_segmenter(cfg, out_dir, upto_stage=stage)
    return res.summary(), [h for h in res.history if h["stage"] == stage]


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"job": TrainSegmenterJob}


def trainer_parameters(args: Any, command: str) -> dict[str, Any]:
    """A trainer's parameters from ``<command> --config FILE [--set k=v ...] [--out DIR]``.

    The two commands that train on a frozen classifier (``train-segmenter``,
    ``train-mask-head``) share this command line.

    Args:
        args: the parsed command line.
        command: the command (its bound options apply).

    Returns:
        ``{"job": {"config": <the file with --set applied>, "out_dir": ...}}``.
    """
    parameters = {"job": {"config": config_with_sets(args.config, args.set)}}
    bind_flags(parameters, args, command)
    return parameters


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters from ``train-segmenter --config FILE [--set k=v ...] [--out DIR]``.

    Args:
        args: the parsed command line.

    Returns:
        See :func:`trainer_parameters`.
    """
    return trainer_parameters(args, "train-segmenter")


def check_trainer_inputs(cfg: Any, where: str) -> None:
    """The classifier checkpoint and the chip sources of a trainer config exist.

    For the configs that train on a frozen classifier (``TrainSegmenterConfig``,
    ``TrainMaskHeadConfig``).

    Args:
        cfg: the validated config.
        where: where the config came from, for the error message.

    Raises:
        ConfigError: a checkpoint or a chip source is missing.
    """
    check_input_paths({"classifier_checkpoint": cfg.classifier_checkpoint}, where)
    check_chip_sources(cfg.data.train, where)


def check(params: dict[str, Any], where: str) -> None:
    """The config's classifier checkpoint and chip sources exist (both trainers' check).

    Args:
        params: the validated parameters.
        where: where they came from (the config file), for error messages.
    """
    check_trainer_inputs(params["job"].config, where)


def run(job: TrainSegmenterJob | dict[str, Any]) -> dict[str, Any]:
    """Train every stage in turn, in this process (no Prefect).

    Args:
        job: the job (or its parameters as a mapping).

    Returns:
        The summary of the last stage (``final_checkpoint``).
    """
    job = validate_config(TrainSegmenterJob, job)
    summary: dict[str, Any] = {}
    for stage in range(1, job.config.branch.n_stages + 1):
        summary, _ = train_stage(job.config, job.out_dir, stage)
    return summary
