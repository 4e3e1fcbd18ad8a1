"""Classifier throughput at DeepSolar's 299 px: our training loop and batched inference, each as a
ratio to the network's bare forward (inference) and bare forward+backward (training), measured on
the same machine in the same run.

- bare forward: ``model.eval()`` on a random in-memory batch, no data loading.
- bare forward+backward: ``model.train()``, DeepSolar's loss, ``backward()``; no data, no step.
- training loop: ``deepsolar.classifier.train.fit`` on SYNTHETIC 320x320 PNG tiles (decode, resize,
  rot90, loss, RMSpropTF step); the best of the images/s it records for its two epochs.
- inference: ``deepsolar.classifier.predict.predict_proba`` on the same PNG paths (decode, resize,
  softmax), best of two passes after a warm-up.

The bare numbers are measured before and after the pipeline and the best of each is kept.

A ratio near 1 means the pipeline adds little over the network itself.

    python benchmarks/bench_classifier.py                       # 299 px, batch 4, CPU-sized
    python benchmarks/bench_classifier.py --batch 32 --iters 20 # on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepsolar.classifier.config import TrainClassifierConfig
from deepsolar.classifier.loss import DeepSolarLoss
from deepsolar.classifier.model import build_classifier, model_outputs
from deepsolar.classifier.predict import load_classifier, predict_proba
from deepsolar.classifier.train import fit
from deepsolar.core.device import resolve_device


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bare(cfg: TrainClassifierConfig, dev: torch.device, batch: int, iters: int) -> dict:
    """Images/s of the bare network: forward (eval) and forward+backward (train)."""
    torch.manual_seed(0)
    model = build_classifier(cfg.model).to(dev)
    on_gpu = dev.type == "cuda"
    amp, ch_last = on_gpu and cfg.train.amp_bf16, on_gpu and cfg.train.channels_last
    if ch_last:
        model = model.to(memory_format=torch.channels_last)
    s = cfg.model.input_size_px
    x = torch.randn(batch, 3, s, s, device=dev)
    if ch_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch, device=dev) % 2
    loss_fn = DeepSolarLoss(cfg.loss)

    def fwd() -> None:
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            model(x)

    def fwd_bwd() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits, aux = model_outputs(model(x))
        loss_fn(logits, y, aux).backward()
        model.zero_grad(set_to_none=True)

    out = {}
    for name, mode, fn in (("forward", "eval", fwd), ("forward_backward", "train", fwd_bwd)):
        getattr(model, mode)()
        fn()  # warm-up (allocator, oneDNN/cuDNN kernel choice)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(dev)
        out[name] = batch * iters / (time.perf_counter() - t0)
    return out


def write_tiles(root: Path, n: int, size: int = 320) -> Path:
    """SYNTHETIC 320x320 RGB PNG tiles (DeepSolar's tile size) in pos/ and neg/."""
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = "pos" if i % 2 else "neg"
        (root / sub).mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(a).save(root / sub / f"{i}.png")
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=299, help="input px (aux head needs 299)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3, help="timed batches per measurement")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    n = args.batch * args.iters
    with tempfile.TemporaryDirectory(prefix="bench-classifier-") as tmp:
        tmp_path = Path(tmp)
        tiles = write_tiles(tmp_path / "tiles", n)
        val = write_tiles(tmp_path / "val", 2)
        cfg = TrainClassifierConfig.model_validate(
            {
                "model": {
                    "weights": "none",
                    "input_size_px": args.size,
                    "aux_logits": args.size >= 299,
                },
                "data": {
                    "train": [{"kind": "folder", "path": str(tiles)}],
                    "val": [{"kind": "folder", "path": str(val)}],
                    "batch_size": args.batch,
                    "eval_batch_size": args.batch,
                    "num_workers": args.workers,
                },
                "train": {"epochs": 2, "device": args.device, "progress": False,
                          "num_threads": args.threads},
            }
        )  # fmt: skip
        # Bare numbers before and after the pipeline runs, best of each: on a shared machine
        # this keeps a burst of someone else's load from skewing the ratios.
        b1 = bare(cfg, dev, args.batch, args.iters)
        res = fit(cfg, tmp_path / "run")
        train_ips = max(r["train_images_per_s"] for r in res.history)
        clf = load_classifier(res.best_checkpoint, args.device)
        paths = sorted(str(p) for p in tiles.rglob("*.png"))
        kw = {"batch_size": args.batch, "num_workers": args.workers}
        predict_proba(clf, paths[: args.batch], **kw)  # warm-up
        infer_ips = 0.0
        for _ in range(2):
            t0 = time.perf_counter()
            predict_proba(clf, paths, **kw)
            _sync(dev)
            infer_ips = max(infer_ips, len(paths) / (time.perf_counter() - t0))
        del clf
        b2 = bare(cfg, dev, args.batch, args.iters)
        b = {k: max(b1[k], b2[k]) for k in b1}

    result = {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "input_px": args.size,
        "batch": args.batch,
        "iters": args.iters,
        "workers": args.workers,
        "bare_forward_img_s": b["forward"],
        "bare_forward_backward_img_s": b["forward_backward"],
        "train_loop_img_s": train_ips,
        "inference_img_s": infer_ips,
        "train_ratio_to_forward_backward": train_ips / b["forward_backward"],
        "inference_ratio_to_forward": infer_ips / b["forward"],
    }
    print(f"Inception-v3 {args.size}px, batch {args.batch}, {args.iters} timed batches, "
          f"device {result['device']}, {result['torch_threads']} threads, "
          f"{args.workers} workers")  # fmt: skip
    print(f"{'':<22}{'images/s':>10}{'ratio to bare':>16}")
    print(f"{'bare forward':<22}{b['forward']:>10.2f}{'1.00':>16}")
    print(f"{'bare forward+backward':<22}{b['forward_backward']:>10.2f}{'1.00':>16}")
    print(f"{'training loop (fit)':<22}{train_ips:>10.2f}"
          f"{result['train_ratio_to_forward_backward']:>16.2f}")  # fmt: skip
    print(f"{'inference (predict)':<22}{infer_ips:>10.2f}"
          f"{result['inference_ratio_to_forward']:>16.2f}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
