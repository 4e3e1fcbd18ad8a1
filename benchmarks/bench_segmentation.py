"""Extra time per positive tile for greedy-CAM segmentation, as a ratio to classification alone.

Classification = preprocessing (320 -> 299 px, [-1, 1]) + Inception-v3 forward (with the Mixed_5d /
Mixed_7c hooks that segmentation relies on). Segmentation extra, per positive tile = the 2-stage
branch on the captured Mixed_5d map + CAM + bilinear upsampling to 320x320 + min-max + threshold
+ area (per-row latitude) + mask PNG encoding. Weights are random (timing does not depend on them).

    python benchmarks/bench_segmentation.py --tiles 16 --threads 1
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
import torch
from PIL import Image
from torchvision.models import Inception3

from deepsolar.classifier.model import preprocess
from deepsolar.geo.tiling import TileGrid
from deepsolar.segmentation.area import mask_area_m2_tile
from deepsolar.segmentation.branch import GreedyCamBranch
from deepsolar.segmentation.cam import (
    cam_to_mask,
    classify_with_taps,
    greedy_cam,
    mask_to_png_array,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--input-px", type=int, default=299)
    ap.add_argument("--tile-px", type=int, default=320)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = Inception3(num_classes=2, aux_logits=False, init_weights=False).to(dev).eval()
    branch = GreedyCamBranch().to(dev).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (args.tile_px, args.tile_px, 3), np.uint8))
              for _ in range(args.tiles)]  # fmt: skip
    tile = TileGrid(21, args.tile_px).tile_at(-71.06, 42.36)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    # warm-up
    classify_with_taps(model, preprocess(images[0], args.input_px)[None].to(dev))
    t_cls = t_seg = 0.0
    for i in range(0, args.tiles, args.batch):
        chunk = images[i : i + args.batch]
        t0 = time.perf_counter()
        x = torch.stack([preprocess(im, args.input_px) for im in chunk]).to(dev)
        fwd = classify_with_taps(model, x)
        sync()
        t1 = time.perf_counter()
        native = greedy_cam(branch, fwd.tap)  # every tile treated as positive
        _, masks = cam_to_mask(native, args.tile_px, 0.37)
        masks = masks.cpu().numpy()
        for m in masks:
            mask_area_m2_tile(m, tile)
            Image.fromarray(mask_to_png_array(m)).save(io.BytesIO(), format="PNG")
        sync()
        t_cls += t1 - t0
        t_seg += time.perf_counter() - t1
    n = args.tiles
    out = {
        "device": str(dev), "threads": args.threads, "tiles": n, "batch": args.batch,
        "input_px": args.input_px, "tile_px": args.tile_px,
        "classify_ms_per_tile": 1e3 * t_cls / n,
        "segment_extra_ms_per_positive_tile": 1e3 * t_seg / n,
        "ratio_extra_to_classification": t_seg / t_cls,
    }  # fmt: skip
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
