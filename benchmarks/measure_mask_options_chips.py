"""Measure issue 11's mask options on real chips with masks (the shared ``valid`` splits).

    python benchmarks/measure_mask_options_chips.py --config configs/segmenter-eval-mask-options.yaml \\
        --out out/mask-options-chips [--floor-quantile-source PATH --floor-split train]

One forward pass per chip (cut into cells as the classifier was trained, exactly as
``evaluate-segmenter`` does: ``deepsolar.segmentation.evaluate.item_cell_maps``), then every
mask rule below is applied to the same native maps (``stitch_masks``), so differences come from
the rule alone. Per set and rule, for the CAM the pipeline uses (greedy: the last stage; plain
without a segmenter), on the pipeline's masks (tiles called positive only): micro pixel IoU, mean
per-chip IoU over chips with PV, DeepSolar's per-image and regional area errors, and the share of
predicted area on chips without PV. The calibrated floor is learned on the TRAIN split
(``deepsolar.segmentation.calibrate``), never on the chips scored.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from deepsolar.core.config import load_yaml, validate_config
from deepsolar.segmentation.calibrate import cam_kind, cam_maxima, floor_from_maxima
from deepsolar.segmentation.config import CamConfig
from deepsolar.segmentation.evaluate import (
    EvaluateSegmentationConfig,
    item_cell_maps,
    iter_set,
    mask_counts,
    masked_area,
    per_tile_relative_error,
    regional_relative_error,
    stitch_masks,
)
from deepsolar.segmentation.pipeline import Segmenter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--classifier", help="override the config's classifier_checkpoint")
    ap.add_argument("--segmenter", help="override the config's segmenter_checkpoint ('none')")
    ap.add_argument("--out", type=Path, default=Path("out/mask-options-chips"))
    ap.add_argument("--quantile", type=float, default=0.1)
    ap.add_argument("--max-chips", type=int, help="per set (quick runs)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    data = load_yaml(args.config)
    if args.classifier:
        data["classifier_checkpoint"] = args.classifier
    if args.segmenter:
        data["segmenter_checkpoint"] = None if args.segmenter == "none" else args.segmenter
    cfg = validate_config(EvaluateSegmentationConfig, data, where=str(args.config))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    method = "greedy" if cfg.segmenter_checkpoint else "plain"
    seg = Segmenter.from_checkpoints(
        cfg.classifier_checkpoint, cfg.segmenter_checkpoint, CamConfig(method=method), cfg.device
    )
    kind = cam_kind(seg)
    subtiles = seg.clf.config.data.subtiles if cfg.subtiles else None

    # calibration on the train splits of the same sources
    train_sources = []
    for s in cfg.sets:
        if getattr(s, "split", None) is not None:
            train_sources.append(s.model_copy(update={"split": "train", "max_per_class": 100}))
    maxima = cam_maxima(seg, train_sources) if train_sources else None
    q_floor = floor_from_maxima(maxima, args.quantile) if maxima is not None else None
    print(f"calibrated floor {q_floor} on {0 if maxima is None else len(maxima)} train cells "
          f"({time.monotonic() - t0:.0f} s)", flush=True)  # fmt: skip

    clean = {"open_m": 0.5, "close_m": 0.5, "fill_holes_m2": 1.0}
    rules: list[tuple[str, CamConfig]] = [
        ("DeepSolar (min-max 0.37)", CamConfig(method=method)),
        ("a: floor margin > 0", CamConfig(method=method, floor=0.0)),
        (
            "a: tile scope: margin max > 0 or nothing",
            CamConfig(method=method, floor=0.0, floor_scope="tile"),
        ),
    ]
    if q_floor is not None:
        rules.append((
            f"a: floor positive CAM > q{args.quantile:g} of train maxima ({q_floor:.3g})",
            CamConfig(method=method, floor=q_floor, floor_on="positive"),
        ))  # fmt: skip
        rules.append((
            f"a: tile scope: positive CAM max > q{args.quantile:g} ({q_floor:.3g}) or nothing",
            CamConfig(method=method, floor=q_floor, floor_on="positive", floor_scope="tile"),
        ))  # fmt: skip
    rules += [
        ("b: open 0.5 m", CamConfig(method=method, clean={"open_m": 0.5})),
        ("b: close 0.5 m", CamConfig(method=method, clean={"close_m": 0.5})),
        ("b: open+close 0.5 m + holes 1 m2", CamConfig(method=method, clean=clean)),
        ("a+b: margin > 0, clean", CamConfig(method=method, floor=0.0, clean=clean)),
    ]
    if q_floor is not None:
        rules.append((
            "a+b: calibrated floor, clean",
            CamConfig(method=method, floor=q_floor, floor_on="positive", clean=clean),
        ))  # fmt: skip

    acc: dict[tuple[str, str], list[dict[str, float]]] = {}
    for s in cfg.sets:
        if args.max_chips and hasattr(s, "max_chips"):
            s = s.model_copy(update={"max_chips": args.max_chips})
        n = 0
        for item in iter_set(s):
            if args.max_chips and n >= args.max_chips:
                break
            n += 1
            cm = item_cell_maps(seg, item, subtiles)
            true_area = masked_area(item.truth, item.pixel_area)
            for name, rule in rules:
                im = stitch_masks(cm, cfg.cam_threshold, rule, seg.threshold)
                pipe = im.pipe[kind]
                tp, fp, fn = mask_counts(pipe, item.truth)
                acc.setdefault((s.display_name, name), []).append({
                    "tp": tp, "fp": fp, "fn": fn, "pred_area": masked_area(pipe, item.pixel_area),
                    "true_area": true_area, "positive": bool(im.is_positive),
                })  # fmt: skip
        print(f"{s.display_name}: {n} chips ({time.monotonic() - t0:.0f} s)", flush=True)

    rows = []
    for (set_name, rule_name), recs in acc.items():
        df = pd.DataFrame(recs)
        has = df["true_area"] > 0
        per_iou = (df["tp"] / (df["tp"] + df["fp"] + df["fn"]).where(lambda d: d > 0))[has]
        tot = df[["tp", "fp", "fn"]].sum()
        rows.append({
            "set": set_name, "rule": rule_name, "chips": len(df), "chips_with_pv": int(has.sum()),
            "micro_iou": tot.tp / (tot.tp + tot.fp + tot.fn) if tot.sum() else float("nan"),
            "mean_iou_pv_chips": float(per_iou.mean()),
            "per_image_area_error": per_tile_relative_error(df["pred_area"], df["true_area"]),
            "regional_area_error": regional_relative_error(df["pred_area"], df["true_area"]),
            "pred_area_on_chips_without_pv": float(df.loc[~has, "pred_area"].sum()
                                                  / max(df["pred_area"].sum(), 1e-9)),
            "pv_chips_marking_nothing": int(((df["pred_area"] == 0) & has).sum()),
        })  # fmt: skip
    out = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "classifier": str(cfg.classifier_checkpoint), "segmenter": str(cfg.segmenter_checkpoint),
        "cam": kind, "classifier_threshold": seg.threshold, "calibrated_floor": q_floor,
        "quantile": args.quantile, "elapsed_s": round(time.monotonic() - t0, 1),
    }  # fmt: skip
    out.to_csv(args.out / "table.csv", index=False)
    (args.out / "table.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2, default=float)
    )
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(out.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
