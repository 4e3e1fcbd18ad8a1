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

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deepsolar.classifier.config import TrainClassifierConfig, deep_merge
from deepsolar.core.config import apply_override
from deepsolar.core.errors import DeepSolarError
from deepsolar.core.runtime import check_input_paths
from deepsolar.jobs.cli_options import build_parser
from deepsolar.jobs.train_classifier import (
    TrainClassifierParams,
    fit_step,
    prepare,
    test_step,
    write_summary,
)
from deepsolar.preflight import check_chip_sources


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
    args = build_parser("train-classifier", description=__doc__).parse_args(argv)
    overrides: dict[str, Any] = dict(args.override)
    try:
        for item in args.set:
            apply_override(overrides, item)
    except DeepSolarError as err:
        print(f"train-classifier failed: {err}", file=sys.stderr)
        return 1
    if args.epochs is not None:
        overrides = deep_merge(overrides, {"train": {"epochs": args.epochs}})
    try:
        params = TrainClassifierParams(
            config_path=args.config,
            overrides=overrides,
            out_dir=args.out,
            resume=args.resume,
            evaluate_test=not args.no_test,
        )
        cfg = params.resolve()  # fail before Prefect starts
        check_chip_sources([*cfg.data.train, *cfg.data.val, *cfg.data.test], str(args.config))
        check_input_paths({"resume": args.resume}, "--resume")
        res = train_classifier_flow(params)
    except DeepSolarError as err:
        print(f"train-classifier failed: {err}", file=sys.stderr)
        return 1
    print(f"\nbest checkpoint: {res['best_checkpoint']} (epoch {res['best_epoch']})")
    print(f"validation: {json.dumps(res['val_metrics'])}")
    if res.get("held_out_metrics"):
        print(f"held-out split: {json.dumps(res['held_out_metrics'])}")
    if "test" in res:
        print(f"{'held-out set':<28} {'n':>5} {'pos':>5} {'prec':>6} {'recall':>6} {'F1':>6}")
        for name, m in res["test"]["sources"].items():
            print(
                f"{name:<28} {m['n']:>5} {m['n_positive']:>5} {_fmt(m['precision']):>6} "
                f"{_fmt(m['recall']):>6} {_fmt(m['f1']):>6}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
