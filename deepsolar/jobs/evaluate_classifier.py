"""The ``evaluate-classifier`` job: metrics of a trained checkpoint on labelled chip sets.

:class:`EvaluateClassifierParams` is the flow's parameter model; :func:`run` evaluates in this
process (no Prefect). Torch is imported only inside the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from deepsolar.classifier.config import ChipSource, check_chip_sources, load_train_config
from deepsolar.core.config import StrictModel, apply_override, validate_config
from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.jobs.cli_options import bind_flags, chip_sources


class EvaluateClassifierParams(StrictModel):
    """Parameters of ``evaluate-classifier``: a checkpoint and the labelled sets to score it on."""

    checkpoint: Path
    out_dir: Path = Path("out/classifier-eval")
    sources: list[ChipSource] = Field(
        default_factory=list, description="labelled sets; default: data.test of config_path"
    )
    config_path: Path | None = Field(None, description="take data.test from this YAML")
    threshold: float | None = Field(None, gt=0.0, lt=1.0, description="default: checkpoint's")
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0)
    device: str = "auto"
    bootstrap_reps: int = Field(1000, ge=1, description="bootstrap replicates for the intervals")
    seed: int = Field(0, description="seed of the bootstrap resamples")
    subtiles: bool = Field(
        True,
        description="cut chips larger than a tile into tile-sized sub-tiles as the checkpoint "
        "was trained to (false: resize whole chips, DeepSolar's way)",
    )
    ground_m_per_px: float | None = Field(
        None, gt=0.0, le=100.0, description="metres per pixel of chips whose metadata lacks it"
    )


def resolve_sources(p: EvaluateClassifierParams) -> list[ChipSource]:
    """Explicit sources, else the config file's data.test, else the checkpoint's data.test.

    Args:
        p: the validated parameters.

    Returns:
        The sets to evaluate on.

    Raises:
        ConfigError: none of the three lists any set.
    """
    if p.sources:
        return list(p.sources)
    if p.config_path is not None:
        test = load_train_config(p.config_path).data.test
    else:
        from deepsolar.classifier.checkpoint import config_from_checkpoint, load_checkpoint

        test = config_from_checkpoint(load_checkpoint(p.checkpoint), str(p.checkpoint)).data.test
    if not test:
        raise ConfigError(
            "no sources to evaluate on",
            where="evaluate-classifier parameters",
            fix="pass sources, or a config_path whose data.test lists held-out sets",
        )
    return test


def prepare(
    params: EvaluateClassifierParams | dict[str, Any],
) -> tuple[EvaluateClassifierParams, list[ChipSource]]:
    """Validate the parameters, check the checkpoint exists and resolve the sets.

    Args:
        params: the parameters (or a mapping of them).

    Returns:
        The validated parameters and the sets to evaluate on.

    Raises:
        InputDataError: the checkpoint is missing.
    """
    from deepsolar.core.checkpoints import resolve_checkpoint

    p = validate_config(EvaluateClassifierParams, params)
    if not resolve_checkpoint(p.checkpoint, "classifier").is_file():
        raise InputDataError(
            "checkpoint not found", where=str(p.checkpoint), fix="check the path or use 'builtin'"
        )
    return p, resolve_sources(p)


def evaluate_step(p: EvaluateClassifierParams, sources: list[ChipSource]) -> dict[str, Any]:
    """Score the checkpoint on every set (and all together); write the reports.

    Args:
        p: the validated parameters.
        sources: the sets to evaluate on.

    Returns:
        The evaluation summary (per-set metrics under ``sources``, ``threshold``, ...).
    """
    from deepsolar.classifier.predict import evaluate_checkpoint

    return evaluate_checkpoint(
        p.checkpoint,
        sources,
        p.out_dir,
        threshold=p.threshold,
        batch_size=p.batch_size,
        num_workers=p.num_workers,
        device=p.device,
        seed=p.seed,
        bootstrap_reps=p.bootstrap_reps,
        subtiles=p.subtiles,
        ground_m_per_px=p.ground_m_per_px,
    )


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"params": EvaluateClassifierParams}
#: Inputs that must exist before the flow starts ('builtin' is skipped: no torch needed).
INPUT_PATHS = ("params.checkpoint",)


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters from ``evaluate-classifier --checkpoint CKPT [options]``.

    ``--set`` items first, then the ``--source`` sets (``--split`` keeps one split of a
    manifest), then every bound option.

    Args:
        args: the parsed command line.

    Returns:
        ``{"params": mapping}``.
    """
    data: dict[str, Any] = {}
    for item in args.set or []:
        apply_override(data, item)
    if args.source:
        data["sources"] = chip_sources(args)
    parameters = {"params": data}
    bind_flags(parameters, args, "evaluate-classifier")
    return parameters


def check(params: dict[str, Any], where: str) -> None:
    """A config's held-out sets validate and exist.

    Args:
        params: the validated parameters.
        where: where they came from (the config file), for error messages.
    """
    p = params["params"]
    if p.config_path is not None:
        check_chip_sources(load_train_config(p.config_path).data.test, str(p.config_path))


def format_result(res: dict[str, Any], params: dict[str, Any]) -> str:
    """What ``evaluate-classifier`` prints: the per-set table beside the all-positive baseline.

    Args:
        res: the flow's result.
        params: the parameters it ran with.

    Returns:
        The lines to print.
    """
    from deepsolar.classifier.predict import format_report_table

    p = params["params"]
    return "\n".join([
        f"threshold {res['threshold']}, input {res['input_size_px']} px",
        format_report_table(res),
        f"[lo, hi]: 95% bootstrap intervals ({p.bootstrap_reps} resamples of the chips); "
        "all-positive = the trivial classifier that calls every chip solar; ROC-AUC n/a when "
        "a class has fewer than 5 chips",
        f"written to {p.out_dir} (report.md, report.csv, report.json, summary.json)",
    ])  # fmt: skip


def run(params: EvaluateClassifierParams | dict[str, Any]) -> dict[str, Any]:
    """Evaluate a checkpoint in this process (no Prefect).

    Args:
        params: the parameters (or a mapping of them).

    Returns:
        The evaluation summary.
    """
    p, sources = prepare(params)
    return evaluate_step(p, sources)
