"""Optimiser, learning-rate schedule and fine-tuning strategy from an :class:`OptimConfig`.

DeepSolar: TF1 RMSProp (lr 0.001, decay 0.9, momentum 0.9, epsilon 0.1; ``timm.optim.RMSpropTF``
reproduces TF's epsilon-inside-the-root and ones-initialised square average), L2 weight decay
4e-5 on conv/linear weights (TF-slim regularises weights, not biases or BatchNorm), learning rate
halved every 5 epochs (staircase), every layer trained.
"""

from __future__ import annotations

import torch
from timm.optim import RMSpropTF
from torch import nn
from torch.optim.lr_scheduler import StepLR

from deepsolar.classifier.backbones import get_spec
from deepsolar.classifier.config import OptimConfig


def _module_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0]


def _head_modules(model: nn.Module, arch: str) -> tuple[str, ...]:
    spec = get_spec(arch)
    if spec.head_modules:
        return spec.head_modules
    head = model.get_classifier()  # timm:<name>
    return tuple(n for n, m in model.named_modules() if m is head)


def _blocks_after(model: nn.Module, arch: str, first: str) -> tuple[str, ...]:
    """``first`` and every module after it in forward order (timm:<name>: top-level children)."""
    blocks = get_spec(arch).blocks or tuple(n for n, _ in model.named_children())
    if first not in blocks:
        raise ValueError(f"optim.unfreeze_from '{first}' is not a block of {arch}: {blocks}")
    later = blocks[blocks.index(first) :]
    if arch == "inception_v3":
        return (*later, "AuxLogits")
    # timm EfficientNets: bn2 follows conv_head; everything after the last block trains.
    names = [n for n, _ in model.named_children()]
    top = first.split(".")[0]
    tail = tuple(names[names.index(top) + 1 :]) if top in names else ()
    return (*later, *tail)


def apply_finetune(model: nn.Module, cfg: OptimConfig, arch: str = "inception_v3") -> list[str]:
    """Set ``requires_grad`` per the strategy; return the names of the trainable parameters.

    - ``full``: everything trains (DeepSolar).
    - ``head``: only the new heads (Inception: ``fc``, ``AuxLogits.fc``; timm: its classifier).
    - ``from_block``: ``unfreeze_from`` and every block after it, plus the heads (and
      Inception's auxiliary branch); everything before it stays frozen.

    Args:
        model: the classifier from :func:`~deepsolar.classifier.model.build_classifier`
            (changed in place).
        cfg: the optimiser block (``finetune``, ``unfreeze_from``).
        arch: ``model.arch`` (which modules are heads and blocks).

    Returns:
        The names of the parameters that train.
    """
    heads = _head_modules(model, arch)
    if cfg.finetune == "full":
        trainable_prefixes: tuple[str, ...] | None = None
    elif cfg.finetune == "head":
        trainable_prefixes = heads
    else:
        trainable_prefixes = (*_blocks_after(model, arch, str(cfg.unfreeze_from)), *heads)
    names = []
    for name, p in model.named_parameters():
        module = _module_of(name)
        train = trainable_prefixes is None or any(
            module == pre or module.startswith(pre + ".") for pre in trainable_prefixes
        )
        p.requires_grad_(train)
        if train:
            names.append(name)
    return names


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, but BatchNorm layers whose parameters are frozen keep their statistics.

    Args:
        model: the classifier (changed in place).
    """
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = [p for p in m.parameters(recurse=False)]
            if params and not any(p.requires_grad for p in params):
                m.eval()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed (conv/linear weights) and not decayed.

    Args:
        model: the classifier.
        weight_decay: weight decay of the conv/linear weights (biases and norms get 0).

    Returns:
        Optimiser parameter groups: the decayed one, then the not-decayed one when non-empty.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """RMSpropTF (DeepSolar) or AdamW over the trainable parameters.

    Args:
        model: the classifier, ``requires_grad`` already set.
        cfg: the optimiser block (``name``, learning rate, weight decay and the optimiser's
            settings).

    Returns:
        The optimiser.
    """
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "rmsprop_tf":
        r = cfg.rmsprop
        # Coupled decay = gradient of TF-slim's L2 term 0.5 * wd * ||w||^2.
        return RMSpropTF(
            groups, lr=cfg.lr, alpha=r.decay, momentum=r.momentum, eps=r.eps, decoupled_decay=False
        )
    a = cfg.adamw
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=a.betas, eps=a.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> StepLR:
    """Staircase step decay, stepped once per epoch: lr x factor every N epochs.

    Args:
        optimizer: the optimiser.
        cfg: the optimiser block (``lr_decay_every_epochs``, ``lr_decay_factor``).

    Returns:
        The scheduler.
    """
    return StepLR(optimizer, step_size=cfg.lr_decay_every_epochs, gamma=cfg.lr_decay_factor)
