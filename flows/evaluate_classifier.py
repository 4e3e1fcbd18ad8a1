r"""Flow ``evaluate-classifier``: metrics of a trained checkpoint on labelled chip sets.

For each source (and all together): ``metrics.json`` (precision, recall, F1, ROC-AUC, PR-AUC,
confusion matrix, threshold sweep), ``roc.png``, ``pr.png`` and ``predictions.csv``; plus
``summary.json``; and ``report.{json,csv,md}``: one row per source and one overall, the model
beside the all-positive baseline, with 95% bootstrap intervals on precision / recall / F1 (also
printed). Sources: ``--source PATH`` (repeatable; no config needed), else the ``data.test`` list
of ``--config``, else that of the checkpoint's own config. A PATH is a folder with ``images/``
(+ optional ``masks/``, same file names; positive = any non-zero mask pixel), a folder with
``pos/`` + ``neg/``, or a ``manifest.csv`` (with ``--split`` to keep one split).

    python -m flows.evaluate_classifier --checkpoint out/classifier-real/best.pt \
        --source my-chips/ --source ../shared/data/pv_chips/skylight_roof/valid
    python -m flows.evaluate_classifier --checkpoint out/classifier-real/best.pt \
        --config configs/classifier-real-chips.yaml --out out/classifier-real/eval
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.classifier.config import ChipSource
from deepsolar.jobs.command_line import run_main
from deepsolar.jobs.evaluate_classifier import EvaluateClassifierParams, evaluate_step, prepare


@task(name="evaluate-checkpoint", cache_policy=NO_CACHE)
def evaluate_task(p: EvaluateClassifierParams, sources: list[ChipSource]) -> dict[str, Any]:
    """Task ``evaluate-checkpoint``: runs :func:`deepsolar.jobs.evaluate_classifier.evaluate_step`.

    Scores the checkpoint on every set and on all of them together, and writes the per-set
    metrics, curves, predictions and the ``report.{json,csv,md}`` into ``p.out_dir``.

    Args:
        p: the validated parameters.
        sources: the labelled chip sets to evaluate on.

    Returns:
        The evaluation summary (per-set metrics under ``sources``, ``threshold``, ...).
    """
    return evaluate_step(p, sources)


# Validated by validate_config inside, so a bad field is a ConfigError naming it.
@flow(name="evaluate-classifier", validate_parameters=False)
def evaluate_classifier_flow(params: EvaluateClassifierParams) -> dict[str, Any]:
    """Score a classifier checkpoint on labelled chip sets; log one line of metrics per set.

    Validates the parameters and resolves the sets first
    (:func:`deepsolar.jobs.evaluate_classifier.prepare`), then runs the ``evaluate-checkpoint``
    task.

    Args:
        params: the parameters (or a mapping of them): checkpoint, sets (else ``data.test`` of
            ``config_path``, else of the checkpoint's config), threshold, batch size, device,
            bootstrap replicates, output folder.

    Returns:
        The evaluation summary (per-set metrics under ``sources``, ``threshold``, ...).

    Raises:
        ConfigError: a parameter is invalid, or no set is given anywhere.
        InputDataError: the checkpoint is missing.
    """
    p, sources = prepare(params)
    summary = evaluate_task(p, sources)
    logger = get_run_logger()
    for name, m in summary["sources"].items():
        logger.info(
            "%s: P %s R %s F1 %s ROC-AUC %s (n=%d, %d positive)",
            name, m["precision"], m["recall"], m["f1"], m["roc_auc"], m["n"], m["n_positive"],
        )  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.evaluate_classifier``: the same command line as ``deepsolar evaluate-classifier``.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when the job was refused or failed (one line on stderr).
    """
    return run_main("evaluate-classifier", argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
