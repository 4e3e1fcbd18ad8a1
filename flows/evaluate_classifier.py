"""Flow ``evaluate-classifier``: metrics of a trained checkpoint on labelled chip sets.

For each source (and all together): ``metrics.json`` (precision, recall, F1, ROC-AUC, PR-AUC,
confusion matrix, threshold sweep), ``roc.png``, ``pr.png`` and ``predictions.csv``; plus
``summary.json``; and ``report.{json,csv,md}``: one row per source and one overall, the model
beside the all-positive baseline, with 95% bootstrap intervals on precision / recall / F1 (also
printed). Sources: ``--source PATH`` (repeatable; no config needed), else the ``data.test`` list
of ``--config``, else that of the checkpoint's own config. A PATH is a folder with ``images/``
(+ optional ``masks/``, same file names; positive = any non-zero mask pixel), a folder with
``pos/`` + ``neg/``, or a ``manifest.csv`` (with ``--split`` to keep one split).

    python -m flows.evaluate_classifier --checkpoint out/classifier-real/best.pt \\
        --source my-chips/ --source ../shared/data/pv_chips/skylight_roof/valid
    python -m flows.evaluate_classifier --checkpoint out/classifier-real/best.pt \\
        --config configs/classifier-real-chips.yaml --out out/classifier-real/eval
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.classifier.config import ChipSource
from deepsolar.classifier.data import source_from_path
from deepsolar.classifier.predict import format_report_table
from deepsolar.core.errors import DeepSolarError
from deepsolar.jobs.cli_options import build_parser
from deepsolar.jobs.evaluate_classifier import (  # noqa: F401 - resolve_sources re-exported
    EvaluateClassifierParams,
    evaluate_step,
    prepare,
    resolve_sources,
)


@task(name="evaluate-checkpoint", cache_policy=NO_CACHE)
def evaluate_task(p: EvaluateClassifierParams, sources: list[ChipSource]) -> dict[str, Any]:
    return evaluate_step(p, sources)


# Validated by validate_config inside, so a bad field is a ConfigError naming it.
@flow(name="evaluate-classifier", validate_parameters=False)
def evaluate_classifier_flow(params: EvaluateClassifierParams) -> dict[str, Any]:
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
    args = build_parser("evaluate-classifier", description=__doc__).parse_args(argv)
    try:
        sources = [source_from_path(s, split=args.split) for s in args.source or []]
        p = EvaluateClassifierParams(
            checkpoint=args.checkpoint,
            sources=sources,
            bootstrap_reps=args.bootstrap_reps,
            ground_m_per_px=args.ground_m_per_px,
            subtiles=not args.whole_chips,
            config_path=args.config,
            out_dir=args.out,
            threshold=args.threshold,
            device=args.device,
        )
        res = evaluate_classifier_flow(p)
    except DeepSolarError as err:
        print(f"evaluate-classifier failed: {err}", file=sys.stderr)
        return 1
    print(f"threshold {res['threshold']}, input {res['input_size_px']} px")
    print(format_report_table(res))
    print(
        f"[lo, hi]: 95% bootstrap intervals ({p.bootstrap_reps} resamples of the chips); "
        "all-positive = the trivial classifier that calls every chip solar; ROC-AUC n/a when "
        "a class has fewer than 5 chips"
    )
    print(f"written to {args.out} (report.md, report.csv, report.json, summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
