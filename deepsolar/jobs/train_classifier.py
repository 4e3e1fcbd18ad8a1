"""The ``train-classifier`` job: train the tile classifier, then test it on held-out sets.

:class:`TrainClassifierParams` is the flow's parameter model; :func:`run` trains and tests in this
process (no Prefect). Torch is imported only inside the steps (:func:`fit_step`,
:func:`test_step`), which ``flows.train_classifier`` runs as tasks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from deepsolar.classifier.config import (
    TrainClassifierConfig,
    check_chip_sources,
    load_train_config,
)
from deepsolar.core.config import StrictModel, apply_override, validate_config
from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.jobs.cli_options import bind_flags


class TrainClassifierParams(StrictModel):
    """Parameters of ``train-classifier``: a config file and/or an inline config, plus overrides."""

    config_path: Path | None = Field(None, description="YAML with model/loss/optim/data/train")
    config: dict[str, Any] | None = Field(None, description="inline config (merged over the file)")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="nested keys merged last, e.g. {'train': {'epochs': 1}}"
    )
    out_dir: Path = Path("out/classifier")
    resume: Path | None = Field(None, description="a last.pt to continue from")
    evaluate_test: bool = Field(True, description="evaluate best.pt on data.test afterwards")

    @model_validator(mode="after")
    def _some_config(self) -> TrainClassifierParams:
        if self.config_path is None and self.config is None:
            raise ValueError("give config_path or config")
        return self

    def resolve(self) -> TrainClassifierConfig:
        """The validated training config (raises ConfigError naming each bad field)."""
        return load_train_config(self.config_path, config=self.config, overrides=self.overrides)


def prepare(params: TrainClassifierParams | dict[str, Any]) -> tuple[TrainClassifierParams, Any]:
    """Validate the parameters and the training config; check the resume checkpoint exists.

    Args:
        params: the parameters (or a mapping of them).

    Returns:
        The validated parameters and the resolved ``TrainClassifierConfig``.

    Raises:
        ConfigError: a bad field (named).
        InputDataError: ``resume`` names no file.
    """
    p = validate_config(TrainClassifierParams, params)
    cfg = p.resolve()
    if p.resume is not None and not p.resume.is_file():
        raise InputDataError("resume checkpoint not found", where=str(p.resume), fix="check it")
    return p, cfg


def fit_step(cfg: TrainClassifierConfig, out_dir: Path, resume: Path | None) -> dict[str, Any]:
    """Train (or resume) the classifier into ``out_dir``.

    Args:
        cfg: the training config.
        out_dir: the output folder (``last.pt``, ``best.pt``, ``history.json``, ...).
        resume: a ``last.pt`` to continue from, or None.

    Returns:
        The training summary (``best_checkpoint``, ``best_epoch``, ``val_metrics``, ...).
    """
    from deepsolar.classifier.train import fit

    return fit(cfg, out_dir, resume=resume).summary()


def test_step(checkpoint: Path, cfg: TrainClassifierConfig, out_dir: Path) -> dict[str, Any]:
    """Evaluate a checkpoint on the config's held-out sets (``data.test``).

    Args:
        checkpoint: the checkpoint to test (``best.pt``).
        cfg: the training config (its test sets, batch size, workers, device, seed).
        out_dir: where the per-set metrics go.

    Returns:
        The evaluation summary (per-set metrics under ``sources``).
    """
    from deepsolar.classifier.predict import evaluate_checkpoint

    return evaluate_checkpoint(
        checkpoint,
        cfg.data.test,
        out_dir,
        batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        device=cfg.train.device,
        seed=cfg.train.seed,
    )


def write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` into the output folder.

    Args:
        out_dir: the output folder.
        summary: the run's summary.
    """
    from deepsolar.classifier.metrics import write_json

    write_json(out_dir / "summary.json", summary)


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"params": TrainClassifierParams}


def _json_object(text: str) -> dict[str, Any]:
    """``--override``'s JSON object (deprecated; ``--set`` replaces it)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"--override is not valid JSON ({err.msg})",
            where=f"--override {text[:200]!r}",
            fix='give a JSON object, e.g. \'{"optim": {"lr": 0.0005}}\'',
        ) from None
    if not isinstance(value, dict):
        raise ConfigError("--override must be a JSON object", fix="wrap it in {...}")
    return value


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters from ``train-classifier --config FILE [options]``.

    ``--override`` (deprecated JSON), then ``--set``, become the config's overrides; the bound
    options (``--out``, ``--resume``, ``--epochs``, ``--no-test``) apply over them.

    Args:
        args: the parsed command line.

    Returns:
        ``{"params": mapping}``.
    """
    overrides = _json_object(args.override) if args.override else {}
    for item in args.set or []:
        apply_override(overrides, item)
    parameters: dict[str, Any] = {"params": {"overrides": overrides}}
    bind_flags(parameters, args, "train-classifier")
    return parameters


def check(params: dict[str, Any], where: str) -> None:
    """The training config validates, its chip sources and the resume checkpoint exist.

    Args:
        params: the validated parameters.
        where: where they came from (the config file), for error messages.
    """
    p, cfg = prepare(params["params"])
    check_chip_sources([*cfg.data.train, *cfg.data.val, *cfg.data.test], where)


def _fmt(x: Any) -> str:
    return "  n/a" if x is None else f"{x:.3f}"


def format_result(res: dict[str, Any], params: dict[str, Any]) -> str:
    """What ``train-classifier`` prints: the best checkpoint, its metrics, the held-out sets.

    Args:
        res: the flow's result.
        params: the parameters it ran with.

    Returns:
        The lines to print.
    """
    lines = [
        f"\nbest checkpoint: {res['best_checkpoint']} (epoch {res['best_epoch']})",
        f"validation: {json.dumps(res['val_metrics'])}",
    ]
    if res.get("held_out_metrics"):
        lines.append(f"held-out split: {json.dumps(res['held_out_metrics'])}")
    if "test" in res:
        lines.append(
            f"{'held-out set':<28} {'n':>5} {'pos':>5} {'prec':>6} {'recall':>6} {'F1':>6}"
        )
        lines += [
            f"{name:<28} {m['n']:>5} {m['n_positive']:>5} {_fmt(m['precision']):>6} "
            f"{_fmt(m['recall']):>6} {_fmt(m['f1']):>6}"
            for name, m in res["test"]["sources"].items()
        ]
    return "\n".join(lines)


def run(params: TrainClassifierParams | dict[str, Any]) -> dict[str, Any]:
    """Train, then test on the held-out sources, in this process (no Prefect).

    Args:
        params: the parameters (or a mapping of them).

    Returns:
        The training summary, with ``test`` when held-out sets were evaluated.
    """
    p, cfg = prepare(params)
    summary = fit_step(cfg, p.out_dir, p.resume)
    if p.evaluate_test and cfg.data.test:
        summary["test"] = test_step(Path(summary["best_checkpoint"]), cfg, p.out_dir / "test")
    write_summary(p.out_dir, summary)
    return summary
