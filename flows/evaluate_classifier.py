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

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from deepsolar.classifier.checkpoint import config_from_checkpoint, load_checkpoint
from deepsolar.classifier.config import ChipSource, load_train_config
from deepsolar.classifier.data import source_from_path
from deepsolar.classifier.predict import evaluate_checkpoint, format_report_table
from deepsolar.core.checkpoints import resolve_checkpoint
from deepsolar.core.config import StrictModel, validate_config
from deepsolar.core.errors import ConfigError, DeepSolarError, InputDataError


class EvaluateClassifierParams(StrictModel):
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
    """Explicit sources, else the config file's data.test, else the checkpoint's data.test."""
    if p.sources:
        return list(p.sources)
    if p.config_path is not None:
        test = load_train_config(p.config_path).data.test
    else:
        test = config_from_checkpoint(load_checkpoint(p.checkpoint), str(p.checkpoint)).data.test
    if not test:
        raise ConfigError(
            "no sources to evaluate on",
            where="evaluate-classifier parameters",
            fix="pass sources, or a config_path whose data.test lists held-out sets",
        )
    return test


@task(name="evaluate-checkpoint", cache_policy=NO_CACHE)
def evaluate_task(p: EvaluateClassifierParams, sources: list[ChipSource]) -> dict[str, Any]:
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


# Validated by validate_config inside, so a bad field is a ConfigError naming it.
@flow(name="evaluate-classifier", validate_parameters=False)
def evaluate_classifier_flow(params: EvaluateClassifierParams) -> dict[str, Any]:
    p = validate_config(EvaluateClassifierParams, params)
    if not resolve_checkpoint(p.checkpoint, "classifier").is_file():
        raise InputDataError(
            "checkpoint not found", where=str(p.checkpoint), fix="check the path or use 'builtin'"
        )
    sources = resolve_sources(p)
    summary = evaluate_task(p, sources)
    logger = get_run_logger()
    for name, m in summary["sources"].items():
        logger.info(
            "%s: P %s R %s F1 %s ROC-AUC %s (n=%d, %d positive)",
            name, m["precision"], m["recall"], m["f1"], m["roc_auc"], m["n"], m["n_positive"],
        )  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument(
        "--source",
        action="append",
        metavar="PATH",
        help="a labelled chip folder (images/ + masks/, or pos/ + neg/) or a manifest.csv; "
        "repeatable; replaces --config",
    )
    ap.add_argument("--split", help="with a manifest source: keep rows of this split")
    ap.add_argument("--config", type=Path, help="YAML whose data.test lists the sets")
    ap.add_argument("--out", type=Path, default=Path("out/classifier-eval"))
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bootstrap-reps", type=int, default=1000, help="replicates (default 1000)")
    ap.add_argument(
        "--ground-m-per-px", type=float, help="metres per pixel of chips that do not say"
    )
    ap.add_argument(
        "--whole-chips", action="store_true", help="resize whole chips instead of sub-tiling"
    )
    args = ap.parse_args(argv)
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
