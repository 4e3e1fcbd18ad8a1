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

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field, model_validator

from deepsolar.classifier.config import TrainClassifierConfig, deep_merge, load_train_config
from deepsolar.classifier.metrics import write_json
from deepsolar.classifier.predict import evaluate_checkpoint
from deepsolar.classifier.train import fit
from deepsolar.core.config import StrictModel, validate_config
from deepsolar.core.errors import DeepSolarError, InputDataError
from deepsolar.core.runtime import check_input_paths
from deepsolar.preflight import check_chip_sources


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


@task(name="train-classifier-fit", cache_policy=NO_CACHE)
def fit_task(cfg: TrainClassifierConfig, out_dir: Path, resume: Path | None) -> dict[str, Any]:
    return fit(cfg, out_dir, resume=resume).summary()


@task(name="evaluate-held-out", cache_policy=NO_CACHE)
def test_task(checkpoint: Path, cfg: TrainClassifierConfig, out_dir: Path) -> dict[str, Any]:
    return evaluate_checkpoint(
        checkpoint,
        cfg.data.test,
        out_dir,
        batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        device=cfg.train.device,
        seed=cfg.train.seed,
    )


# Validated by validate_config inside, so a bad field is a ConfigError naming it.
@flow(name="train-classifier", validate_parameters=False)
def train_classifier_flow(params: TrainClassifierParams) -> dict[str, Any]:
    """Validate everything first, then train, then test on the held-out sources."""
    p = validate_config(TrainClassifierParams, params)
    cfg = p.resolve()
    if p.resume is not None and not p.resume.is_file():
        raise InputDataError("resume checkpoint not found", where=str(p.resume), fix="check it")
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
    write_json(p.out_dir / "summary.json", summary)
    return summary


def _fmt(v: Any) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", required=True, type=Path, help="classifier YAML (configs/)")
    ap.add_argument("--out", type=Path, default=Path("out/classifier"), help="output folder")
    ap.add_argument("--resume", type=Path, help="continue from this last.pt")
    ap.add_argument("--epochs", type=float, help="override train.epochs")
    ap.add_argument(
        "--override",
        type=json.loads,
        default={},
        help='JSON merged over the config, e.g. \'{"optim": {"name": "adamw"}}\'',
    )
    ap.add_argument("--no-test", action="store_true", help="skip the held-out evaluation")
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = dict(args.override)
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
