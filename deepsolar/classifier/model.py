"""The 2-class tile classifier, DeepSolar-style, and DeepSolar's preprocessing.

DeepSolar's network is torchvision's ``Inception3`` with both heads (main 2048->2, auxiliary
768->2) replaced and re-initialised, BatchNorm set to TF's decay 0.9997 (PyTorch momentum 0.0003)
and eps 1e-3, dropout 0.2. Inputs are resized to ``input_size_px`` and scaled to [-1, 1], which is
what the Google-trained weights expect, so ``transform_input`` stays off.

Other backbones (``model.arch``; see :mod:`deepsolar.classifier.backbones`) are timm models with a
fresh 2-class head and the same BatchNorm settings, dropout and [-1, 1] input scaling.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models import Inception3, Inception_V3_Weights

from deepsolar.classifier.backbones import (
    BackboneSpec,
    create_timm_model,
    get_spec,
    load_lite_imagenet,
)
from deepsolar.classifier.config import ClassifierConfig
from deepsolar.core.checkpoints import resolve_checkpoint
from deepsolar.core.errors import InputDataError, OfflineError
from deepsolar.core.io import reading_input

IMAGENET_WEIGHTS = Inception_V3_Weights.IMAGENET1K_V1
# [-1, 1] scaling written as a torchvision-style normalisation of [0, 1] pixels.
NORMALIZE: dict[str, list[float]] = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
HEAD_KEYS = ("fc.weight", "fc.bias", "AuxLogits.fc.weight", "AuxLogits.fc.bias")
HEAD_INIT_STD = 0.001  # TF-slim's initialiser for the aux logits; small logits = soft start


def imagenet_weights_path() -> Path:
    """Where torch hub caches (and looks for) the ImageNet Inception-v3 weights.

    Returns:
        ``<torch.hub.get_dir()>/checkpoints/<file name of the weights URL>``.
    """
    name = Path(IMAGENET_WEIGHTS.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """Torchvision's IMAGENET1K_V1 weights: from the hub cache, else downloaded into it.

    Returns:
        The Inception-v3 state dict (1000-class heads).

    Raises:
        OfflineError: the weights are not cached and cannot be downloaded.
        InputDataError: the cached file is damaged (hash mismatch or unreadable).
    """
    target = imagenet_weights_path()
    try:
        # Loads the cached file when present; otherwise downloads (hash-checked) to ``target``.
        return IMAGENET_WEIGHTS.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise OfflineError(
            f"cannot download the ImageNet Inception-v3 weights ({err})",
            where=IMAGENET_WEIGHTS.url,
            fix=(
                f"on a connected machine download {IMAGENET_WEIGHTS.url} and place the file "
                f"'{target.name}' in the directory '{target.parent}' (torch.hub.get_dir()/"
                "checkpoints/; TORCH_HOME moves it), or set model.weights to a local file "
                "or 'none'"
            ),
        ) from None
    except RuntimeError as err:  # hash mismatch or unreadable cache file
        raise InputDataError(
            f"the ImageNet weights file is damaged ({err})",
            where=str(target),
            fix="delete the file and download it again",
        ) from None


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A local weights file: a plain state dict or a deepsolar checkpoint (``model_state``).

    ``builtin`` is the shipped reference classifier (data/models/builtin-classifier.pt).

    Args:
        path: the weights file, or ``builtin``.

    Returns:
        The state dict.

    Raises:
        InputDataError: the file is missing, unreadable, or holds no state dict of tensors.
    """
    p = resolve_checkpoint(path, "classifier")
    if not p.is_file():
        raise InputDataError(
            "weights file not found",
            where=str(p),
            fix="set model.weights to an existing file, 'builtin', 'imagenet' or 'none'",
        )
    with reading_input(
        "cannot read weights",
        where=p,
        fix="pass a file saved with torch.save(state_dict) (weights_only-loadable)",
    ):
        obj = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model_state" in obj:
        obj = obj["model_state"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputDataError(
            "the file holds no state dict of tensors",
            where=str(p),
            fix="save the model with torch.save(model.state_dict(), path)",
        )
    return obj


def _init_head(layer: nn.Linear) -> None:
    nn.init.trunc_normal_(
        layer.weight, std=HEAD_INIT_STD, a=-2 * HEAD_INIT_STD, b=2 * HEAD_INIT_STD
    )
    nn.init.zeros_(layer.bias)


def _copy_backbone(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    where: str,
    *,
    is_head: Callable[[str], bool],
    optional: Callable[[str], bool] = lambda _key: False,
    network: str,
    fix: str,
) -> None:
    """Copy every non-head tensor of ``state`` into ``model``; heads stay freshly initialised.

    Args:
        model: the freshly built network.
        state: the source weights.
        where: the source's name for the error message.
        is_head: keys that are never copied (re-initialised heads).
        optional: keys the source may lack (e.g. an auxiliary head that will be dropped).
        network: what the weights must fit, for the error message.
        fix: what to do, for the error message.
    """
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and not is_head(k)}
    missing = [k for k in own if k not in keep and not is_head(k) and not optional(k)]
    bad_shape = [k for k, v in keep.items() if v.shape != own[k].shape]
    if missing or bad_shape:
        sample = ", ".join((missing + bad_shape)[:5])
        raise InputDataError(
            f"weights do not fit {network} ({len(missing)} missing, {len(bad_shape)} of the "
            f"wrong shape, e.g. {sample})",
            where=where,
            fix=fix,
        )
    model.load_state_dict(keep, strict=False)


def build_classifier(cfg: ClassifierConfig) -> nn.Module:
    """The 2-class classifier of ``cfg.arch`` with DeepSolar's BN/dropout settings.

    Args:
        cfg: the model block of a classifier config (arch, weights, dropout, BN settings).

    Returns:
        Inception-v3 (torchvision) or a timm model; heads freshly initialised.
    """
    if cfg.arch != "inception_v3":
        return build_timm_classifier(cfg)
    return build_inception(cfg)


def _timm_pretrained_state(spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """Timm hub weights for ``timm:<name>`` (needs a network connection)."""
    import timm

    try:
        return timm.create_model(spec.timm_name, pretrained=True).state_dict()
    except Exception as err:  # hub errors vary: HTTP, offline mode, missing files
        raise OfflineError(
            f"cannot fetch timm's pretrained weights for '{spec.timm_name}' ({type(err).__name__})",
            where="model.weights",
            fix="run on a connected machine once (timm caches the file), set model.weights to "
            "a local file, or use efficientnet_lite0 / efficientnet_lite2 (offline weights)",
        ) from None


def build_timm_classifier(cfg: ClassifierConfig) -> nn.Module:
    """A timm backbone with a fresh 2-class head; ImageNet weights per ``cfg.weights``.

    Args:
        cfg: the model block of a classifier config (``timm:<name>`` or an EfficientNet-Lite
            arch; ``weights``: ``imagenet``, ``none`` or a file).

    Returns:
        The model, head freshly initialised, BN momentum and epsilon set.

    Raises:
        ConfigError: timm does not know the model.
        OfflineError: the ImageNet weights cannot be fetched.
        InputDataError: the weights do not fit the backbone.
    """
    spec = get_spec(cfg.arch)
    model = create_timm_model(spec, num_classes=2, drop_rate=cfg.dropout)
    head = model.get_classifier()
    head_names = {n for n, m in model.named_modules() if m is head}
    if cfg.weights != "none":
        if cfg.weights != "imagenet":
            state, where = load_state_dict_file(cfg.weights), cfg.weights
        elif spec.weights_package is not None:
            state, where = load_lite_imagenet(spec, model), str(spec.weights_package)
        else:
            state, where = _timm_pretrained_state(spec), f"timm hub: {spec.timm_name}"
        _copy_backbone(
            model, state, where, is_head=lambda k: k.rsplit(".", 1)[0] in head_names,
            network="this backbone", fix="use weights saved from the same model.arch",
        )  # fmt: skip
    if isinstance(head, nn.Linear):
        _init_head(head)
    configure_batchnorm(model, cfg.bn_momentum, cfg.bn_eps)
    return model


def build_inception(cfg: ClassifierConfig) -> Inception3:
    """Inception-v3 with 2-class main and auxiliary heads and DeepSolar's BN/dropout settings.

    Args:
        cfg: the model block of a classifier config (``weights``: ``imagenet``, ``none`` or a
            file; ``aux_logits``: keep the auxiliary head).

    Returns:
        The model, heads freshly initialised (the auxiliary head dropped unless
        ``cfg.aux_logits``).

    Raises:
        OfflineError: the ImageNet weights cannot be downloaded.
        InputDataError: the weights file is unreadable or does not fit Inception-v3.
    """
    random_init = cfg.weights == "none"
    # aux head is always built so that weights with an aux head load; dropped below if unused.
    model = Inception3(
        num_classes=2,
        aux_logits=True,
        transform_input=False,
        init_weights=random_init,
        dropout=cfg.dropout,
    )
    if not random_init:
        if cfg.weights == "imagenet":
            state, where = load_imagenet_state_dict(), str(imagenet_weights_path())
        else:
            state, where = load_state_dict_file(cfg.weights), cfg.weights
        # A source without an aux head is fine when the aux head will be dropped anyway.
        _copy_backbone(
            model, state, where, is_head=lambda k: k in HEAD_KEYS,
            optional=lambda k: not cfg.aux_logits and k.startswith("AuxLogits."),
            network="torchvision's Inception-v3",
            fix="use Inception-v3 weights in torchvision's layout",
        )  # fmt: skip
    _init_head(model.fc)
    _init_head(model.AuxLogits.fc)
    if not cfg.aux_logits:
        model.aux_logits = False
        model.AuxLogits = None
    configure_batchnorm(model, cfg.bn_momentum, cfg.bn_eps)
    return model


def configure_batchnorm(model: nn.Module, momentum: float, eps: float) -> None:
    """Set every BatchNorm layer's momentum and epsilon.

    TF keeps ``decay`` = 1 - PyTorch ``momentum``: 0.9997 -> 0.0003.

    Args:
        model: the network (changed in place).
        momentum: PyTorch BN momentum, fraction 0-1.
        eps: BN epsilon added to the variance.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
            m.eps = eps


def preprocess(
    image: np.ndarray | Image.Image,
    input_size_px: int,
    normalize: dict[str, list[float]] | None = None,
) -> torch.Tensor:
    """DeepSolar preprocessing: RGB uint8 -> bilinear resize to a square -> float CHW.

    With the default normalisation (mean = std = 0.5 on [0, 1] pixels) values are in [-1, 1].

    Args:
        image: an RGB uint8 image (H x W x 3 array or PIL image).
        input_size_px: side of the square network input, px.
        normalize: ``{"mean": [...], "std": [...]}`` per channel on [0, 1] pixels (None:
            :data:`NORMALIZE`).

    Returns:
        The float32 tensor, 3 x ``input_size_px`` x ``input_size_px``.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.size != (input_size_px, input_size_px):
        image = image.resize((input_size_px, input_size_px), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.float32)
    tensor = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    norm = normalize or NORMALIZE
    mean = torch.tensor(norm["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(norm["std"], dtype=torch.float32).view(3, 1, 1)
    return (tensor / 255.0 - mean) / std


def model_outputs(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(main logits, aux logits or None) from Inception3's train/eval outputs.

    Args:
        out: the model's output: a tensor, or a (logits, aux_logits) tuple.

    Returns:
        The main logits and the auxiliary logits (None when there are none).
    """
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, None
