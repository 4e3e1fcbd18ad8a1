"""DeepSolar's greedy layer-wise CAM branch on Inception-v3's ``Mixed_5d`` output.

Stage 1 = conv3x3 288->C + ReLU, global average pooling, linear C->2 without bias. Stage k > 1
adds conv3x3 C->C + ReLU on top of stage k-1 (frozen) and a fresh linear C->2. Every stage keeps
its own linear head, so a checkpoint trained to stage 2 can still give stage 1's CAM.

The backbone is the classifier itself: :func:`mixed5d_features` runs torchvision's sub-modules up to
``Mixed_5d`` (no copy, nothing after it is computed), and :class:`InceptionTaps` captures
``Mixed_5d`` and ``Mixed_7c`` with forward hooks while the classifier runs, so segmentation of
positive tiles costs only the branch on top of classification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.models import Inception3

from deepsolar.segmentation.config import TAP_CHANNELS, BranchConfig

# torchvision Inception3 modules that run before and including Mixed_5d, in forward order.
BACKBONE_MODULES: tuple[str, ...] = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
)


def mixed5d_features(model: Inception3, x: torch.Tensor) -> torch.Tensor:
    """Inception-v3's ``Mixed_5d`` output (B x 288 x 35 x 35 at 299 px) for preprocessed ``x``."""
    if getattr(model, "transform_input", False):
        x = model._transform_input(x)
    for name in BACKBONE_MODULES:
        x = getattr(model, name)(x)
    return x


def freeze_backbone(model: Inception3) -> None:
    """Backbone in eval mode (BatchNorm uses its running statistics) with no gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def backbone_fingerprint(model: Inception3) -> str:
    """sha256 of every tensor up to ``Mixed_5d``: ties a trained branch to its backbone."""
    h = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(k for k in state if k.split(".")[0] in BACKBONE_MODULES):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class InceptionTaps:
    """Forward hooks that keep ``Mixed_5d`` and ``Mixed_7c`` outputs of the last forward pass."""

    def __init__(self, model: Inception3, layers: tuple[str, ...] = ("Mixed_5d", "Mixed_7c")):
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [
            getattr(model, name).register_forward_hook(self._keeper(name)) for name in layers
        ]

    def _keeper(self, name: str):
        def hook(_module: nn.Module, _inp: object, out: torch.Tensor) -> None:
            self.outputs[name] = out

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@contextmanager
def inception_taps(
    model: Inception3, layers: tuple[str, ...] = ("Mixed_5d", "Mixed_7c")
) -> Iterator[InceptionTaps]:
    taps = InceptionTaps(model, layers)
    try:
        yield taps
    finally:
        taps.remove()


class CamStage(nn.Module):
    """conv3x3 (same padding) + ReLU; Grad-CAM's target layer is the whole block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class GreedyCamBranch(nn.Module):
    """Stacked CAM stages on the 288-channel ``Mixed_5d`` map; one bias-free 2-class head each."""

    def __init__(self, cfg: BranchConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or BranchConfig()
        c = self.cfg.channels
        self.stages = nn.ModuleList(
            CamStage(TAP_CHANNELS if i == 0 else c, c) for i in range(self.cfg.n_stages)
        )
        self.heads = nn.ModuleList(nn.Linear(c, 2, bias=False) for _ in range(self.cfg.n_stages))

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    def _check_stage(self, stage: int | None) -> int:
        k = self.n_stages if stage is None else int(stage)
        if not 1 <= k <= self.n_stages:
            raise ValueError(f"stage must be in 1..{self.n_stages}, got {stage}")
        return k

    def feature_map(self, features: torch.Tensor, stage: int | None = None) -> torch.Tensor:
        """Activation of stage ``stage``'s conv + ReLU (B x C x h x w)."""
        k = self._check_stage(stage)
        x = features
        for block in self.stages[:k]:
            x = block(x)
        return x

    def forward(self, features: torch.Tensor, stage: int | None = None) -> torch.Tensor:
        """2-class logits of stage ``stage`` (default: the last): GAP then its linear head."""
        k = self._check_stage(stage)
        a = self.feature_map(features, k)
        return self.heads[k - 1](a.mean(dim=(2, 3)))

    def freeze_below(self, stage: int) -> list[str]:
        """Train only stage ``stage`` (conv + head); everything else is frozen. Returns trainable names."""
        k = self._check_stage(stage)
        trainable = []
        for i, (block, head) in enumerate(zip(self.stages, self.heads, strict=True), start=1):
            on = i == k
            for name, p in [*block.named_parameters(prefix=f"stages.{i - 1}"),
                            *head.named_parameters(prefix=f"heads.{i - 1}")]:  # fmt: skip
                p.requires_grad_(on)
                if on:
                    trainable.append(name)
        return trainable


class StageModel(nn.Module):
    """Features -> logits of one stage (what Grad-CAM and the training step see)."""

    def __init__(self, branch: GreedyCamBranch, stage: int) -> None:
        super().__init__()
        self.branch = branch
        self.stage = stage

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.branch(features, self.stage)
