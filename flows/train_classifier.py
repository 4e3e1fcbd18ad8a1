r"""Flow ``train-classifier``: train the Inception-v3 tile classifier, then test it on held-out sets.

Writes to ``out_dir``: ``last.pt`` (every epoch, resumable), ``best.pt`` (best validation
``train.best_metric``), ``history.json``, ``data_split.json``, ``val/metrics.json`` + ROC/PR PNGs,
and - when the config lists ``data.test`` sources - ``test/summary.json`` with per-set metrics.

Run (Prefect starts a temporary API when no server is configured)::

    python -m flows.train_classifier --config configs/classifier-real-chips.yaml \
        --out out/classifier-real
    python -m flows.train_classifier --config configs/classifier-real-chips.yaml \
        --out out/classifier-real --resume out/classifier-real/last.pt
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.classifier.config import TrainClassifierConfig
from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.train_classifier import (
    TrainClassifierParams,
    fit_step,
    prepare,
    test_step,
    write_summary,
)


@task(name="train-classifier-fit", cache_policy=NO_CACHE)
def fit_task(cfg: TrainClassifierConfig, out_dir: Path, resume: Path | None) -> dict[str, Any]:
    """Task ``train-classifier-fit``: runs :func:`deepsolar.jobs.train_classifier.fit_step`.

    Trains (or resumes) the classifier, writing ``last.pt`` every epoch, ``best.pt``,
    ``history.json`` and the validation metrics into ``out_dir``.

    Args:
        cfg: the training config.
        out_dir: the output folder.
        resume: a ``last.pt`` to continue from, or None.

    Returns:
        The training summary (``best_checkpoint``, ``best_epoch``, ``best_metric``,
        ``best_score``, ``val_metrics``, ...).
    """
    return fit_step(cfg, out_dir, resume)


@task(name="evaluate-held-out", cache_policy=NO_CACHE)
def test_task(checkpoint: Path, cfg: TrainClassifierConfig, out_dir: Path) -> dict[str, Any]:
    """Task ``evaluate-held-out``: runs :func:`deepsolar.jobs.train_classifier.test_step`.

    Args:
        checkpoint: the checkpoint to test (``best.pt``).
        cfg: the training config (its ``data.test`` sets, batch size, workers, device, seed).
        out_dir: where the per-set metrics go.

    Returns:
        The evaluation summary (per-set metrics under ``sources``).
    """
    return test_step(checkpoint, cfg, out_dir)


# Validated by validate_config inside, so a bad field is a ConfigError naming it.
@flow(name="train-classifier", validate_parameters=False)
def train_classifier_flow(params: TrainClassifierParams) -> dict[str, Any]:
    """Validate everything first, then train, then test on the held-out sources.

    Runs :func:`deepsolar.jobs.train_classifier.prepare`, the ``train-classifier-fit`` task, the
    ``evaluate-held-out`` task on ``best.pt`` (when ``evaluate_test`` and the config lists
    ``data.test``), then writes ``summary.json``.

    Args:
        params: the parameters (or a mapping of them): config file and/or inline config,
            overrides, output folder, a ``last.pt`` to resume from, whether to test.

    Returns:
        The training summary, with ``test`` when held-out sets were evaluated.

    Raises:
        ConfigError: a parameter or a config field is invalid (naming it).
        InputDataError: ``resume`` names no file.
    """
    p, cfg = prepare(params)
    logger = get_run_logger()
    summary = fit_task(cfg, p.out_dir, p.resume)
    logger.info(
        "best epoch %s (%s = %s): %s",
        summary["best_epoch"], summary["best_metric"], summary["best_score"],
        summary["best_checkpoint"],
    )  # fmt: skip
    if p.evaluate_test and cfg.data.test:
        summary["test"] = test_task(Path(summary["best_checkpoint"]), cfg, p.out_dir / "test")
        for name, m in summary["test"]["sources"].items():
            logger.info(
                "test %s: P %s R %s F1 %s (n=%d, %d positive)",
                name, m["precision"], m["recall"], m["f1"], m["n"], m["n_positive"],
            )  # fmt: skip
    write_summary(p.out_dir, summary)
    return summary


def _fmt(v: Any) -> str:
    """A metric with 3 decimals, or ``n/a`` when undefined."""
    return "  n/a" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.train_classifier``: the same command line as ``deepsolar train-classifier``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the job was refused or failed (one line on stderr).
    """
    return run_main("train-classifier", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
