"""The ``train-classifier`` job: train the tile classifier, then test it on held-out sets.

:class:`TrainClassifierParams` is the flow's parameter model; :func:`run` trains and tests in this
process (no Prefect). Torch is imported only inside the steps (:func:`fit_step`,
:func:`test_step`), which ``flows.train_classifier`` runs as tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from deepsolar.classifier.config import TrainClassifierConfig, load_train_config
from deepsolar.core.config import StrictModel, validate_config
from deepsolar.core.errors import InputDataError


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
