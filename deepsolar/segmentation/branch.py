"""DeepSolar's greedy layer-wise CAM branch on an intermediate feature map of the classifier.

Stage 1 = conv3x3 C_tap->C + ReLU, global average pooling, linear C->2 without bias. Stage k > 1
adds conv3x3 C->C + ReLU on top of stage k-1 (frozen) and a fresh linear C->2. Every stage keeps
its own linear head, so a checkpoint trained to stage 2 can still give stage 1's CAM.

The tapped map is DeepSolar's Inception-v3 ``Mixed_5d`` (35x35x288 at 299 px) by default; other
backbones tap the block named by ``branch.tap`` (default per arch in
:data:`deepsolar.classifier.backbones.SPECS`). The backbone is the classifier itself:
:func:`tap_features` runs it only up to the tap (a forward hook stops the pass there), and
:class:`FeatureTaps` captures the tap and the last feature map with forward hooks while the
classifier runs, so segmentation of positive tiles costs only the branch on top of classification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from deepsolar.classifier.backbones import get_spec
from deepsolar.segmentation.config import TAP_CHANNELS, BranchConfig

DEFAULT_TAP = "Mixed_5d"


def resolve_tap(tap: str | None, arch: str) -> str:
    """The module the branch taps: ``tap`` if given, else the arch's default (Inception: Mixed_5d).

    Args:
        tap: a dotted module name of the classifier, or None/empty for the default.
        arch: the classifier's ``model.arch``.

    Returns:
        The dotted module name.

    Raises:
        ValueError: no ``tap`` is given and ``arch`` has no default (``timm:<name>``).
    """
    if tap:
        return tap
    default = get_spec(arch).default_tap
    if not default:
        raise ValueError(f"{arch} has no default CAM tap: set branch.tap to a module name")
    return default


class _StopForward(Exception):
    """Raised by the tap hook: nothing after the tapped module needs to run."""


def tap_features(model: nn.Module, x: torch.Tensor, tap: str = DEFAULT_TAP) -> torch.Tensor:
    """The output of module ``tap`` for preprocessed ``x``; later modules are not computed.

    Args:
        model: the classifier (eval mode for frozen BatchNorm statistics).
        x: B x 3 x H x W preprocessed images.
        tap: dotted module name (Inception: ``Mixed_5d``; EfficientNet: ``blocks.4``).

    Returns:
        B x C x h x w features (Inception Mixed_5d: 288 x 35 x 35 at 299 px).
    """
    kept: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        kept["out"] = out
        raise _StopForward

    handle = model.get_submodule(tap).register_forward_hook(hook)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "out" not in kept:
        raise ValueError(f"module '{tap}' did not run in the classifier's forward pass")
    return kept["out"]


def taps_features(
    model: nn.Module, x: torch.Tensor, taps: tuple[str, ...] | list[str]
) -> dict[str, torch.Tensor]:
    """The outputs of modules ``taps`` for preprocessed ``x``; the pass stops once all have run.

    Args:
        model: the classifier (eval mode for frozen BatchNorm statistics).
        x: B x 3 x H x W preprocessed images.
        taps: dotted module names.

    Returns:
        Each tap's B x C x h x w output by name, in the order they ran (shallow to deep).

    Raises:
        ValueError: a module did not run in the forward pass.
    """
    kept: dict[str, torch.Tensor] = {}
    want = set(taps)

    def keeper(name: str):
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            kept[name] = out
            if want <= set(kept):
                raise _StopForward

        return hook

    handles = [model.get_submodule(t).register_forward_hook(keeper(t)) for t in want]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [t for t in taps if t not in kept]
    if missing:
        raise ValueError(f"module(s) {missing} did not run in the classifier's forward pass")
    return kept


def mixed5d_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Inception-v3's ``Mixed_5d`` output (B x 288 x 35 x 35 at 299 px) for preprocessed ``x``.

    Args:
        model: the Inception-v3 classifier.
        x: B x 3 x H x W preprocessed images.

    Returns:
        The ``Mixed_5d`` features.
    """
    return tap_features(model, x, DEFAULT_TAP)


def freeze_backbone(model: nn.Module) -> None:
    """Backbone in eval mode (BatchNorm uses its running statistics) with no gradients.

    Args:
        model: the classifier (changed in place).
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def modules_up_to(model: nn.Module, tap: str) -> list[str]:
    """Dotted names of the modules that run before and including ``tap`` (declaration order).

    At each level of ``tap``'s path, the siblings declared before it come first (torchvision's
    Inception3 and timm's EfficientNets declare modules in forward order).

    Args:
        model: the classifier.
        tap: a dotted module name.

    Returns:
        The module names, ``tap`` last.

    Raises:
        ValueError: ``tap`` is not a module of ``model``.
    """
    names, parent, prefix = [], model, ""
    for part in tap.split("."):
        children = [n for n, _ in parent.named_children()]
        if part not in children:
            raise ValueError(f"'{tap}' is not a module of the classifier")
        names += [prefix + n for n in children[: children.index(part)]]
        parent, prefix = parent.get_submodule(part), prefix + part + "."
    return [*names, tap]


def backbone_fingerprint(model: nn.Module, tap: str = DEFAULT_TAP) -> str:
    """sha256 of every tensor up to ``tap``: ties a trained branch to its backbone.

    Args:
        model: the classifier.
        tap: the dotted module name the branch taps.

    Returns:
        The hex digest of the names, dtypes and bytes of the tensors up to ``tap``.
    """
    h = hashlib.sha256()
    state = model.state_dict()
    prefixes = tuple(n + "." for n in modules_up_to(model, tap))
    for key in sorted(k for k in state if k.startswith(prefixes)):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tap_channels(model: nn.Module, tap: str, input_size_px: int) -> int:
    """Channels of the tapped map, from one dry forward pass of a blank image.

    Args:
        model: the classifier (its train/eval mode is restored).
        tap: the dotted module name.
        input_size_px: side of the square network input, px.

    Returns:
        The number of channels.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        c = tap_features(model, torch.zeros(1, 3, input_size_px, input_size_px, device=dev), tap)
    model.train(was_training)
    return int(c.shape[1])


class FeatureTaps:
    """Forward hooks that keep the outputs of the named modules during the last forward pass.

    Args:
        model: the classifier.
        layers: dotted module names whose outputs are kept in ``outputs``.
    """

    def __init__(self, model: nn.Module, layers: tuple[str, ...] = ("Mixed_5d", "Mixed_7c")):
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [
            model.get_submodule(name).register_forward_hook(self._keeper(name)) for name in layers
        ]

    def _keeper(self, name: str):
        def hook(_module: nn.Module, _inp: object, out: torch.Tensor) -> None:
            self.outputs[name] = out

        return hook

    def remove(self) -> None:
        """Remove the hooks (``outputs`` keeps the last pass's tensors)."""
        for h in self._handles:
            h.remove()
        self._handles = []


@contextmanager
def feature_taps(
    model: nn.Module, layers: tuple[str, ...] = ("Mixed_5d", "Mixed_7c")
) -> Iterator[FeatureTaps]:
    """Context manager around :class:`FeatureTaps` (hooks removed on exit).

    Args:
        model: the classifier.
        layers: dotted module names whose outputs are kept.

    Yields:
        The hooks; read ``outputs`` after a forward pass.
    """
    taps = FeatureTaps(model, layers)
    try:
        yield taps
    finally:
        taps.remove()


class CamStage(nn.Module):
    """conv3x3 (same padding) + ReLU; Grad-CAM's target layer is the whole block.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's activation.

        Args:
            x: B x ``in_channels`` x h x w.

        Returns:
            B x ``out_channels`` x h x w, non-negative.
        """
        return self.relu(self.conv(x))


class GreedyCamBranch(nn.Module):
    """Stacked CAM stages on the tapped map; one bias-free 2-class head each.

    Args:
        cfg: widths and number of stages.
        in_channels: channels of the tapped map (Inception Mixed_5d: 288).
    """

    def __init__(self, cfg: BranchConfig | None = None, in_channels: int = TAP_CHANNELS) -> None:
        super().__init__()
        self.cfg = cfg or BranchConfig()
        self.in_channels = in_channels
        c = self.cfg.channels
        self.stages = nn.ModuleList(
            CamStage(in_channels if i == 0 else c, c) for i in range(self.cfg.n_stages)
        )
        self.heads = nn.ModuleList(nn.Linear(c, 2, bias=False) for _ in range(self.cfg.n_stages))

    @property
    def n_stages(self) -> int:
        """Number of stages (each with its own head)."""
        return len(self.stages)

    def _check_stage(self, stage: int | None) -> int:
        k = self.n_stages if stage is None else int(stage)
        if not 1 <= k <= self.n_stages:
            raise ValueError(f"stage must be in 1..{self.n_stages}, got {stage}")
        return k

    def feature_map(self, features: torch.Tensor, stage: int | None = None) -> torch.Tensor:
        """Activation of stage ``stage``'s conv + ReLU (B x C x h x w).

        Args:
            features: the tapped map, B x ``in_channels`` x h x w.
            stage: 1-based stage (None: the last).

        Returns:
            The activation, B x ``cfg.channels`` x h x w.

        Raises:
            ValueError: ``stage`` is outside 1..n_stages.
        """
        k = self._check_stage(stage)
        x = features
        for block in self.stages[:k]:
            x = block(x)
        return x

    def forward(self, features: torch.Tensor, stage: int | None = None) -> torch.Tensor:
        """2-class logits of stage ``stage`` (default: the last): GAP then its linear head.

        Args:
            features: the tapped map, B x ``in_channels`` x h x w.
            stage: 1-based stage (None: the last).

        Returns:
            The logits, B x 2.

        Raises:
            ValueError: ``stage`` is outside 1..n_stages.
        """
        k = self._check_stage(stage)
        a = self.feature_map(features, k)
        return self.heads[k - 1](a.mean(dim=(2, 3)))

    def freeze_below(self, stage: int) -> list[str]:
        """Train only stage ``stage`` (conv + head); everything else is frozen.

        Args:
            stage: the 1-based stage to train.

        Returns:
            The names of the trainable parameters.

        Raises:
            ValueError: ``stage`` is outside 1..n_stages.
        """
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
    """Features -> logits of one stage (what Grad-CAM and the training step see).

    Args:
        branch: the CAM branch.
        stage: the 1-based stage whose logits are returned.
    """

    def __init__(self, branch: GreedyCamBranch, stage: int) -> None:
        super().__init__()
        self.branch = branch
        self.stage = stage

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The stage's logits.

        Args:
            features: the tapped map, B x C x h x w.

        Returns:
            The logits, B x 2.
        """
        return self.branch(features, self.stage)
