"""Class activation maps and masks, DeepSolar's way.

CAM = sum_k W[positive, k] * A_k at the feature map's native resolution (35x35 for the greedy
branch at 299 px, 8x8 for the classifier's own ``Mixed_7c``), bilinearly upsampled to the tile,
min-max normalised per tile and thresholded (pixel is panel where the normalised CAM > 0.37).
Masks are only made for tiles the classifier calls positive.

Options beside DeepSolar's rule (``CamConfig``): an absolute floor on the raw map (the logit
margin map by default, :func:`margin_map`), so that a tile may mark nothing, and morphological
clean-up in metres (:func:`clean_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from deepsolar.classifier.backbones import get_spec
from deepsolar.segmentation.branch import DEFAULT_TAP, GreedyCamBranch, feature_taps
from deepsolar.segmentation.config import MaskCleanConfig

POSITIVE_CLASS = 1


def class_activation_map(
    features: torch.Tensor, weight: torch.Tensor, class_index: int = POSITIVE_CLASS
) -> torch.Tensor:
    """``sum_k W[class, k] * features[:, k]`` -> B x h x w (no bias: min-max removes it anyway).

    Args:
        features: the feature map, B x C x h x w.
        weight: the linear head's weight, n_classes x C.
        class_index: the class whose map is drawn (1: solar).

    Returns:
        The CAM, B x h x w, float32, at the features' resolution.

    Raises:
        ValueError: the shapes do not match.
    """
    if features.ndim != 4 or weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"features B x C x h x w and weight n_classes x C expected, got "
            f"{tuple(features.shape)} and {tuple(weight.shape)}"
        )
    return torch.einsum("bchw,c->bhw", features.float(), weight[class_index].float())


def upsample(cam: torch.Tensor, size_px: tuple[int, int] | int) -> torch.Tensor:
    """Bilinear (half-pixel centres, no corner alignment) B x h x w -> B x H x W.

    Args:
        cam: the maps, B x h x w.
        size_px: the output size, px: (H, W), or one int for a square.

    Returns:
        The upsampled maps (``cam`` itself when already that size).
    """
    size = (size_px, size_px) if isinstance(size_px, int) else tuple(size_px)
    if tuple(cam.shape[-2:]) == size:
        return cam
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def minmax_per_tile(cam: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1]; a flat map (no evidence anywhere) becomes all zeros.

    Args:
        cam: the maps, B x H x W.

    Returns:
        The normalised maps, B x H x W, 0-1.
    """
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    span = hi - lo
    return torch.where(span > 0, (cam - lo) / span.clamp_min(torch.finfo(cam.dtype).tiny), 0.0)


def threshold_mask(cam_norm: torch.Tensor, threshold: float = 0.37) -> torch.Tensor:
    """Boolean panel mask: normalised CAM strictly above ``threshold``.

    Args:
        cam_norm: min-max normalised CAMs, 0-1.
        threshold: the threshold on the normalised CAM, 0-1 (DeepSolar: 0.37).

    Returns:
        The mask, True on panel pixels.
    """
    return cam_norm > threshold


def cam_to_mask(
    cam_native: torch.Tensor, size_px: tuple[int, int] | int, threshold: float = 0.37
) -> tuple[torch.Tensor, torch.Tensor]:
    """Native CAM -> (normalised CAM at tile size, boolean mask), in DeepSolar's order.

    Args:
        cam_native: the CAMs at the features' resolution, B x h x w.
        size_px: the tile size, px: (H, W), or one int for a square.
        threshold: the threshold on the normalised CAM, 0-1.

    Returns:
        The normalised CAMs (0-1) and the masks, both B x H x W.
    """
    norm = minmax_per_tile(upsample(cam_native, size_px))
    return norm, threshold_mask(norm, threshold)


def margin_map(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Each position's share of the head's logit margin (positive minus negative class).

    ``sum_k (W[pos, k] - W[neg, k]) A_k + (b[pos] - b[neg])``: with global average pooling, the
    margin of the tile is the spatial mean of this map, so a position above 0 votes "solar". No
    min-max: its zero is meaningful, which is what an absolute floor needs.

    Args:
        features: the feature map, B x C x h x w.
        weight: the 2-class linear head's weight, 2 x C.
        bias: the head's bias (None: no bias term).

    Returns:
        The margin map, B x h x w, in logits.
    """
    diff = class_activation_map(features, weight, POSITIVE_CLASS) - class_activation_map(
        features, weight, 1 - POSITIVE_CLASS
    )
    if bias is not None:
        diff = diff + (bias[POSITIVE_CLASS] - bias[1 - POSITIVE_CLASS]).float()
    return diff


@dataclass
class CamMaps:
    """Native-resolution maps of one CAM kind: DeepSolar's positive-class CAM and the margin."""

    positive: torch.Tensor  # B x h x w
    margin: torch.Tensor  # B x h x w

    def __getitem__(self, idx: Any) -> CamMaps:
        return CamMaps(self.positive[idx], self.margin[idx])


def mask_from_cam(
    maps: CamMaps,
    size_px: tuple[int, int] | int,
    *,
    threshold: float = 0.37,
    floor: float | None = None,
    floor_on: str = "margin",
    floor_scope: str = "pixel",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised CAM, mask) at ``size_px``: DeepSolar's min-max + threshold, optional floor.

    With a ``floor`` on the raw upsampled map ``floor_on`` (margin / positive): ``pixel`` keeps
    only pixels above it; ``tile`` keeps a tile's DeepSolar mask whole when the map's maximum is
    above it and marks nothing otherwise.

    Args:
        maps: the native-resolution positive-class CAMs and margin maps.
        size_px: the output size, px: (H, W), or one int for a square.
        threshold: the threshold on the normalised CAM, 0-1.
        floor: the absolute floor, in the raw map's units (None: no floor).
        floor_on: ``margin`` or ``positive``: the map the floor applies to.
        floor_scope: ``pixel`` or ``tile``.

    Returns:
        The normalised CAMs (0-1) and the masks, both B x H x W.
    """
    up = upsample(maps.positive, size_px)
    norm = minmax_per_tile(up)
    mask = threshold_mask(norm, threshold)
    if floor is not None:
        raw = up if floor_on == "positive" else upsample(maps.margin, size_px)
        if floor_scope == "tile":
            mask = mask & (raw.flatten(1).max(dim=1).values > floor)[:, None, None]
        else:
            mask = mask & (raw > floor)
    return norm, mask


def _disc(diameter_px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter_px, diameter_px))


def clean_mask(mask: np.ndarray, m_per_px: float, clean: MaskCleanConfig) -> np.ndarray:
    """Opening, closing and hole filling of a boolean mask, sizes in metres.

    See :class:`~deepsolar.segmentation.config.MaskCleanConfig`. A size under one pixel is a no-op.
    OpenCV's default border for morphology leaves pixels outside the image out of erosion and
    dilation, so pieces touching the tile edge are not eaten from the edge.

    Args:
        mask: the H x W mask.
        m_per_px: the mask's ground resolution, m/px.
        clean: opening and closing diameters (m) and the largest hole to fill (m²).

    Returns:
        The cleaned boolean mask (the mask itself when cleaning is off or it is empty).

    Raises:
        ValueError: cleaning is on and ``m_per_px`` is not a positive finite number.
    """
    m = np.asarray(mask, dtype=bool)
    if not clean.active or not m.any():
        return m
    if not (m_per_px > 0 and np.isfinite(m_per_px)):
        raise ValueError(f"mask cleaning needs the pixel size in metres, got {m_per_px!r}")
    out = m.astype(np.uint8)
    for size_m, op in ((clean.open_m, cv2.MORPH_OPEN), (clean.close_m, cv2.MORPH_CLOSE)):
        d = 2 * int(round(size_m / m_per_px / 2)) + 1  # odd: a centred disc shifts nothing
        if d >= 3:
            out = cv2.morphologyEx(out, op, _disc(d))
    res = out.astype(bool)
    max_hole_px = clean.fill_holes_m2 / (m_per_px * m_per_px)
    if max_hole_px >= 1 and not res.all():
        bg, n = ndimage.label(~res)  # 4-connected background pieces
        if n:
            sizes = np.bincount(bg.ravel(), minlength=n + 1)
            edge = np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))
            hole = sizes <= max_hole_px
            hole[0] = False
            hole[edge] = False  # background open to the tile edge is not a hole
            res = res | hole[bg]
    return res


@dataclass
class ForwardResult:
    """One classifier pass over a batch, with the tapped feature maps."""

    probs: torch.Tensor  # B, positive-class probability
    tap: torch.Tensor  # B x C x h x w: the greedy branch's input (Inception: Mixed_5d, 288 ch)
    final: torch.Tensor  # B x C' x h' x w': the last feature map (Inception: Mixed_7c, 2048 ch)
    taps: dict[str, torch.Tensor] = field(default_factory=dict)  # ``extra`` maps (mask head)


@torch.no_grad()
def classify_with_taps(
    model: nn.Module,
    x: torch.Tensor,
    *,
    arch: str = "inception_v3",
    tap: str = DEFAULT_TAP,
    extra: tuple[str, ...] = (),
) -> ForwardResult:
    """Run the classifier (eval mode) once, keeping the tapped and the last feature maps.

    Args:
        model: the classifier.
        x: B x 3 x H x W preprocessed images.
        arch: ``model.arch`` (names the last feature map).
        tap: the greedy branch's input module.
        extra: more modules whose outputs are kept in ``ForwardResult.taps`` (the mask head's).

    Returns:
        The positive-class probabilities (0-1) and the kept feature maps.
    """
    model.eval()
    final = get_spec(arch).final_features
    with feature_taps(model, tuple(dict.fromkeys((tap, final, *extra)))) as taps:
        out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    return ForwardResult(
        probs=torch.softmax(logits.float(), dim=1)[:, POSITIVE_CLASS],
        tap=taps.outputs[tap],
        final=taps.outputs[final],
        taps={name: taps.outputs[name] for name in extra},
    )


@torch.no_grad()
def greedy_cam(
    branch: GreedyCamBranch, tapped: torch.Tensor, stage: int | None = None
) -> torch.Tensor:
    """Native-resolution CAM of the greedy branch at ``stage`` (default: its last).

    Args:
        branch: the greedy CAM branch (put in eval mode).
        tapped: the tapped feature map, B x C x h x w.
        stage: the 1-based stage (None: the last).

    Returns:
        The positive-class CAM, B x h x w.
    """
    branch.eval()
    k = branch.n_stages if stage is None else stage
    a = branch.feature_map(tapped.float(), k)
    return class_activation_map(a, branch.heads[k - 1].weight)


@torch.no_grad()
def greedy_cam_maps(
    branch: GreedyCamBranch, tapped: torch.Tensor, stage: int | None = None
) -> CamMaps:
    """Positive-class CAM and logit-margin map of the greedy branch at ``stage``.

    Args:
        branch: the greedy CAM branch (put in eval mode).
        tapped: the tapped feature map, B x C x h x w.
        stage: the 1-based stage (None: the last).

    Returns:
        Both maps at the tapped map's resolution.
    """
    branch.eval()
    k = branch.n_stages if stage is None else stage
    a = branch.feature_map(tapped.float(), k)
    w = branch.heads[k - 1].weight
    return CamMaps(class_activation_map(a, w), margin_map(a, w, branch.heads[k - 1].bias))


@torch.no_grad()
def plain_cam_maps(model: nn.Module, final: torch.Tensor, arch: str = "inception_v3") -> CamMaps:
    """Positive-class CAM and logit-margin map (fc bias included) of the classifier itself.

    Args:
        model: the classifier.
        final: its last feature map, B x C x h x w.
        arch: ``model.arch`` (names the linear head).

    Returns:
        Both maps at the last feature map's resolution.
    """
    fc: nn.Linear = model.get_submodule(get_spec(arch).classifier)
    a = final.float()
    return CamMaps(class_activation_map(a, fc.weight), margin_map(a, fc.weight, fc.bias))


@torch.no_grad()
def plain_cam(model: nn.Module, final: torch.Tensor, arch: str = "inception_v3") -> torch.Tensor:
    """Native CAM of the classifier's own last layer: last features x linear head weights.

    Inception: ``Mixed_7c`` x ``fc`` (8x8 at 299 px); EfficientNet: ``bn2`` x ``classifier``.

    Args:
        model: the classifier.
        final: its last feature map, B x C x h x w.
        arch: ``model.arch`` (names the linear head).

    Returns:
        The positive-class CAM, B x h x w.
    """
    fc: nn.Linear = model.get_submodule(get_spec(arch).classifier)
    return class_activation_map(final.float(), fc.weight)


def mask_to_png_array(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Boolean mask -> uint8 0/255 (what mask PNGs hold).

    Args:
        mask: the mask (tensor or array; nonzero = panel).

    Returns:
        The uint8 array, 255 on panel pixels.
    """
    m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return (m.astype(bool) * 255).astype(np.uint8)
