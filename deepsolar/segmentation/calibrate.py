"""A calibrated activation floor for ``CamConfig.floor``: a quantile of the CAM maxima of truly
positive training tiles.

DeepSolar's per-tile min-max marks part of every tile called positive, however weak its CAM. A
floor on the raw CAM lets a tile mark nothing, but raw CAM values have model-specific units, so
the floor is learned from labelled data the model was trained on: with ``quantile`` q, about a
fraction q of the truly positive training tiles would have their strongest pixel under the floor
(and mark nothing), while false positives whose CAM is weaker than that are emptied.

    python -m deepsolar.segmentation.calibrate --classifier builtin --segmenter builtin \\
        --source ../shared/data/pv_chips/solar_pv_gray/manifest.csv --split train \\
        --ground-m-per-px 0.2 --quantile 0.1

prints the floor and the ``cam:`` lines to put in a segment-tiles / map-region config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deepsolar.classifier.config import ChipSource
from deepsolar.classifier.data import load_sources, read_chip, source_from_path
from deepsolar.classifier.subtiles import expand_chips
from deepsolar.errors import DeepSolarError, InputDataError
from deepsolar.segmentation.config import CamConfig, default_segmenter
from deepsolar.segmentation.pipeline import Segmenter


def cam_kind(segmenter: Segmenter) -> str:
    """The key of :meth:`Segmenter.native_cam_maps` that its CamConfig reads."""
    if segmenter.cam.method == "plain":
        return "plain"
    return f"stage{segmenter.cam.stage or segmenter.seg.stages_trained}"


def cam_maxima(
    segmenter: Segmenter, sources: Sequence[ChipSource], *, batch_size: int = 16, seed: int = 0
) -> pd.DataFrame:
    """One row per tile-sized sample (chips cut into cells as the classifier was trained):
    ``label``, ``prob``, ``called`` (prob >= threshold), ``max_positive`` (raw positive-class
    CAM) and ``max_margin`` (raw logit-margin map), both at native resolution."""
    chips = expand_chips(
        load_sources(sources, seed=seed), segmenter.clf.config.data.subtiles, training=True,
        seed=seed,
    )  # fmt: skip
    kind = cam_kind(segmenter)
    rows = []
    for i in range(0, len(chips), batch_size):
        part = chips[i : i + batch_size]
        images = []
        for c in part:
            im = read_chip(c.path)
            images.append(im.crop(c.window) if c.window is not None else im)
        probs, maps = segmenter.native_cam_maps(segmenter.preprocess(images))
        m = maps[kind]
        pos_max = m.positive.flatten(1).max(dim=1).values.cpu().numpy()
        mar_max = m.margin.flatten(1).max(dim=1).values.cpu().numpy()
        for j, c in enumerate(part):
            p = float(probs[j])
            rows.append({
                "path": str(c.path), "window": c.window, "label": int(c.label), "prob": p,
                "called": p >= segmenter.threshold, "max_positive": float(pos_max[j]),
                "max_margin": float(mar_max[j]),
            })  # fmt: skip
    return pd.DataFrame(rows)


def floor_from_maxima(maxima: pd.DataFrame, quantile: float, on: str = "positive") -> float:
    """The ``quantile`` of the truly positive samples' maxima of map ``on`` (positive/margin)."""
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    pos = maxima.loc[maxima["label"] == 1, f"max_{on}"].to_numpy(dtype=float)
    if len(pos) == 0:
        raise InputDataError(
            "no positive sample to calibrate the floor on",
            where="calibrate",
            fix="pass sources with positive (solar) chips",
        )
    return float(np.quantile(pos, quantile))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--classifier", type=Path, default=Path("builtin"))
    ap.add_argument("--segmenter", type=Path, help="default: builtin with the builtin classifier")
    ap.add_argument("--method", choices=["greedy", "plain"], default="greedy")
    ap.add_argument("--stage", type=int, help="greedy stage (default: the last trained)")
    ap.add_argument("--source", action="append", required=True, metavar="PATH",
                    help="training chips (folder or manifest.csv); repeatable")  # fmt: skip
    ap.add_argument("--split", help="with a manifest: keep this split (use the training one)")
    ap.add_argument("--ground-m-per-px", type=float, help="metres per pixel of the chips")
    ap.add_argument("--quantile", type=float, default=0.1)
    ap.add_argument("--on", choices=["positive", "margin"], default="positive")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        seg_ckpt = default_segmenter(args.classifier, args.segmenter, args.method)
        seg = Segmenter.from_checkpoints(
            args.classifier, seg_ckpt if args.method == "greedy" else None,
            CamConfig(method=args.method, stage=args.stage), args.device,
        )  # fmt: skip
        sources = []
        for s in args.source:
            src = source_from_path(s, split=args.split)
            if args.ground_m_per_px:
                src = src.model_copy(update={"ground_m_per_px": args.ground_m_per_px})
            sources.append(src)
        maxima = cam_maxima(seg, sources)
        floor = floor_from_maxima(maxima, args.quantile, args.on)
    except DeepSolarError as err:
        print(f"calibrate failed: {err}", file=sys.stderr)
        return 1
    pos = maxima[maxima["label"] == 1]
    neg_called = maxima[(maxima["label"] == 0) & maxima["called"]]
    col = f"max_{args.on}"
    print(
        f"{len(pos)} positive / {len(maxima) - len(pos)} negative samples; floor = "
        f"{floor:.6g} ({args.quantile:g}-quantile of the positives' {args.on} maxima); it would "
        f"empty {(neg_called[col] <= floor).mean() if len(neg_called) else float('nan'):.0%} of "
        f"the {len(neg_called)} false positives"
    )
    print(f"cam:\n  floor: {floor:.6g}\n  floor_on: {args.on}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
