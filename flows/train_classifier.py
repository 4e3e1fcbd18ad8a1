"""Flow ``train-classifier``: train the Inception-v3 tile classifier, then test it on held-out sets.

Writes to ``out_dir``: ``last.pt`` (every epoch, resumable), ``best.pt`` (best validation
``train.best_metric``), ``history.json``, ``data_split.json``, ``val/metrics.json`` + ROC/PR PNGs,
and - when the config lists ``data.test`` sources - ``test/summary.json`` with per-set metrics.

Run (Prefect starts a temporary API when no server is configured)::

    python -m flows.train_classifier --config configs/classifier-real-chips.yaml \\
        --out out/classifier-real
    python -m flows.train_classifier --config configs/classifier-real-chips.yaml \\
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
    return fit_step(cfg, out_dir, resume)


@task(name="evaluate-held-out", cache_policy=NO_CACHE)
def test_task(checkpoint: Path, cfg: TrainClassifierConfig, out_dir: Path) -> dict[str, Any]:
    return test_step(checkpoint, cfg, out_dir)


# Validated by validate_config inside, so a bad field is a ConfigError naming it.
@flow(name="train-classifier", validate_parameters=False)
def train_classifier_flow(params: TrainClassifierParams) -> dict[str, Any]:
    """Validate everything first, then train, then test on the held-out sources."""
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
    return "  n/a" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.train_classifier``: the same command line as ``deepsolar train-classifier``."""
    return run_main("train-classifier", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
