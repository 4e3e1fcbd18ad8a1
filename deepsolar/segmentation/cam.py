"""Class activation maps and masks, DeepSolar's way.

CAM = sum_k W[positive, k] * A_k at the feature map's native resolution (35x35 for the greedy
branch at 299 px, 8x8 for the classifier's own ``Mixed_7c``), bilinearly upsampled to the tile,
min-max normalised per tile and thresholded (pixel is panel where the normalised CAM > 0.37).
Masks are only made for tiles the classifier calls positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepsolar.classifier.backbones import get_spec
from deepsolar.segmentation.branch import DEFAULT_TAP, GreedyCamBranch, feature_taps

POSITIVE_CLASS = 1


def class_activation_map(
    features: torch.Tensor, weight: torch.Tensor, class_index: int = POSITIVE_CLASS
) -> torch.Tensor:
    """``sum_k W[class, k] * features[:, k]`` -> B x h x w (no bias: min-max removes it anyway)."""
    if features.ndim != 4 or weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"features B x C x h x w and weight n_classes x C expected, got "
            f"{tuple(features.shape)} and {tuple(weight.shape)}"
        )
    return torch.einsum("bchw,c->bhw", features.float(), weight[class_index].float())


def upsample(cam: torch.Tensor, size_px: tuple[int, int] | int) -> torch.Tensor:
    """Bilinear (half-pixel centres, no corner alignment) B x h x w -> B x H x W."""
    size = (size_px, size_px) if isinstance(size_px, int) else tuple(size_px)
    if tuple(cam.shape[-2:]) == size:
        return cam
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def minmax_per_tile(cam: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1]; a flat map (no evidence anywhere) becomes all zeros."""
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    span = hi - lo
    return torch.where(span > 0, (cam - lo) / span.clamp_min(torch.finfo(cam.dtype).tiny), 0.0)


def threshold_mask(cam_norm: torch.Tensor, threshold: float = 0.37) -> torch.Tensor:
    """Boolean panel mask: normalised CAM strictly above ``threshold``."""
    return cam_norm > threshold


def cam_to_mask(
    cam_native: torch.Tensor, size_px: tuple[int, int] | int, threshold: float = 0.37
) -> tuple[torch.Tensor, torch.Tensor]:
    """Native CAM -> (normalised CAM at tile size, boolean mask), in DeepSolar's order."""
    norm = minmax_per_tile(upsample(cam_native, size_px))
    return norm, threshold_mask(norm, threshold)


@dataclass
class ForwardResult:
    """One classifier pass over a batch, with the tapped feature maps."""

    probs: torch.Tensor  # B, positive-class probability
    tap: torch.Tensor  # B x C x h x w: the greedy branch's input (Inception: Mixed_5d, 288 ch)
    final: torch.Tensor  # B x C' x h' x w': the last feature map (Inception: Mixed_7c, 2048 ch)


@torch.no_grad()
def classify_with_taps(
    model: nn.Module, x: torch.Tensor, *, arch: str = "inception_v3", tap: str = DEFAULT_TAP
) -> ForwardResult:
    """Run the classifier (eval mode) once, keeping the tapped and the last feature maps.

    Args:
        model: the classifier.
        x: B x 3 x H x W preprocessed images.
        arch: ``model.arch`` (names the last feature map).
        tap: the greedy branch's input module.
    """
    model.eval()
    final = get_spec(arch).final_features
    with feature_taps(model, (tap, final)) as taps:
        out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    return ForwardResult(
        probs=torch.softmax(logits.float(), dim=1)[:, POSITIVE_CLASS],
        tap=taps.outputs[tap],
        final=taps.outputs[final],
    )


@torch.no_grad()
def greedy_cam(
    branch: GreedyCamBranch, tapped: torch.Tensor, stage: int | None = None
) -> torch.Tensor:
    """Native-resolution CAM of the greedy branch at ``stage`` (default: its last)."""
    branch.eval()
    k = branch.n_stages if stage is None else stage
    a = branch.feature_map(tapped.float(), k)
    return class_activation_map(a, branch.heads[k - 1].weight)


@torch.no_grad()
def plain_cam(model: nn.Module, final: torch.Tensor, arch: str = "inception_v3") -> torch.Tensor:
    """Native CAM of the classifier's own last layer: last features x linear head weights.

    Inception: ``Mixed_7c`` x ``fc`` (8x8 at 299 px); EfficientNet: ``bn2`` x ``classifier``.
    """
    fc: nn.Linear = model.get_submodule(get_spec(arch).classifier)
    return class_activation_map(final.float(), fc.weight)


def mask_to_png_array(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Boolean mask -> uint8 0/255 (what mask PNGs hold)."""
    m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return (m.astype(bool) * 255).astype(np.uint8)
