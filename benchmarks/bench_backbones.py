"""Train and inference throughput of every backbone, as ratios to DeepSolar's Inception-v3 (299 px)
measured on the same machine in the same run.

For each backbone at its input size: images/s of a forward pass (inference, eval mode) and of a
training step (forward + DeepSolar's loss + backward + AdamW step, every layer trained). For the
EfficientNets also the training step of ``optim.finetune: from_block`` with
``train.cache_frozen_features`` (only the tail after the frozen blocks runs; the one-off cost of
caching is a forward pass of the frozen part per chip and rotation). Random in-memory batches, no
data loading. Measurements are interleaved in rounds and the best round is kept, so a burst of
someone else's load on a shared machine does not skew one backbone's figure.

    python benchmarks/bench_backbones.py                    # CPU-sized: batch 8, 2 rounds
    python benchmarks/bench_backbones.py --batch 64 --iters 10 --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from deepsolar.classifier.config import ClassifierConfig, LossConfig, OptimConfig
from deepsolar.classifier.frozen import split_model
from deepsolar.classifier.loss import DeepSolarLoss
from deepsolar.classifier.model import build_classifier, model_outputs
from deepsolar.classifier.recipe import apply_finetune, set_train_mode
from deepsolar.core.device import resolve_device

# (label, arch, input px, from_block for the cached-tail measurement)
BACKBONES = [
    ("inception_v3 299", "inception_v3", 299, None),
    ("efficientnet_lite0 224", "efficientnet_lite0", 224, "blocks.4"),
    ("efficientnet_lite0 160", "efficientnet_lite0", 160, "blocks.4"),
    ("efficientnet_lite2 260", "efficientnet_lite2", 260, "blocks.4"),
]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _rate(fn: Callable[[], None], batch: int, iters: int, dev: torch.device) -> float:
    fn()  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(dev)
    return batch * iters / (time.perf_counter() - t0)


def measure(arch: str, px: int, from_block: str | None, dev: torch.device, batch: int,
            iters: int) -> dict[str, float]:  # fmt: skip
    """images/s: forward, full training step, cached-tail training step (EfficientNets)."""
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(arch=arch, weights="none", input_size_px=px)).to(dev)
    x = torch.randn(batch, 3, px, px, device=dev)
    y = torch.arange(batch, device=dev) % 2
    loss_fn = DeepSolarLoss(LossConfig())
    out: dict[str, float] = {}

    def forward() -> None:
        with torch.no_grad():
            model(x)

    model.eval()
    out["forward"] = _rate(forward, batch, iters, dev)

    def step_of(net: torch.nn.Module, inp: torch.Tensor, opt: torch.optim.Optimizer):
        def step() -> None:
            logits, aux = model_outputs(net(inp))
            loss_fn(logits, y, aux).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    apply_finetune(model, OptimConfig(), arch)
    set_train_mode(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    out["train_full"] = _rate(step_of(model, x, opt), batch, iters, dev)
    if from_block is not None:
        apply_finetune(model, OptimConfig(finetune="from_block", unfreeze_from=from_block), arch)
        head, tail = split_model(model, from_block)
        model.eval()
        with torch.no_grad():
            feats = head(x)
        set_train_mode(model)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        out["train_cached_tail"] = _rate(step_of(tail, feats, opt), batch, iters, dev)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=2, help="timed batches per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best is kept")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for label, arch, px, fb in BACKBONES:
            r = measure(arch, px, fb, dev, args.batch, args.iters)
            prev = best.setdefault(label, {})
            for k, v in r.items():
                prev[k] = max(prev.get(k, 0.0), v)
    base = best[BACKBONES[0][0]]
    name = str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    print(f"backbone throughput, batch {args.batch}, {args.iters} batches x best of "
          f"{args.rounds} rounds, {name}, {torch.get_num_threads()} threads; ratios to "
          f"{BACKBONES[0][0]}")  # fmt: skip
    hdr = f"{'backbone':<24}{'infer img/s':>12}{'x':>7}{'train img/s':>13}{'x':>7}"
    print(hdr + f"{'cached-tail img/s':>19}{'x':>7}")
    for label, *_ in BACKBONES:
        r = best[label]
        tail = r.get("train_cached_tail")
        tail_s = f"{tail:>19.1f}{tail / base['train_full']:>7.2f}" if tail else f"{'-':>19}{'':>7}"
        print(f"{label:<24}{r['forward']:>12.1f}{r['forward'] / base['forward']:>7.2f}"
              f"{r['train_full']:>13.1f}{r['train_full'] / base['train_full']:>7.2f}{tail_s}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": name, "results": best}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
