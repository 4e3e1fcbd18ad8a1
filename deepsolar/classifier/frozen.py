"""Train only the unfrozen tail of a backbone on cached features of its frozen head part.

With ``optim.finetune: from_block`` everything before ``unfreeze_from`` never changes, so its
output for a chip (and each of its four 90-degree rotations when ``data.rot90`` is on) can be
computed once and kept in memory (float16). Each epoch then runs only the trainable tail: on a CPU
this makes fine-tuning the last blocks of an ImageNet backbone several times faster (measured in
``benchmarks/bench_classifier.py``). The result is the same model: the tail shares the
classifier's modules, and a rotation drawn per sample per epoch replaces DeepSolar's random
rotation of the input (the rotation is applied to the image before the frozen part).

Supported for timm EfficientNet-style backbones (``conv_stem``, ``bn1``, ``blocks``,
``conv_head``, ``bn2``, ``forward_head``): ``efficientnet_lite0`` / ``efficientnet_lite2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from deepsolar.classifier.data import ChipDataset, raise_batch_errors
from deepsolar.core.errors import ConfigError


def supports_cache(model: nn.Module) -> bool:
    """True for EfficientNet-style timm models (the layout :class:`TrainableTail` runs).

    Args:
        model: the classifier.

    Returns:
        Whether ``model`` has ``conv_stem``, ``bn1``, ``blocks``, ``conv_head``, ``bn2`` and
        ``forward_head``.
    """
    return all(hasattr(model, n) for n in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")) and (
        hasattr(model, "forward_head")
    )


def _first_block(unfreeze_from: str, n_blocks: int) -> int:
    if unfreeze_from == "conv_head":
        return n_blocks
    if unfreeze_from.startswith("blocks."):
        return int(unfreeze_from.split(".")[1])
    raise ConfigError(
        f"feature caching needs unfreeze_from at a block after the stem (got {unfreeze_from})",
        where="optim.unfreeze_from",
        fix="use blocks.N or conv_head, or set train.cache_frozen_features: false",
    )


class _ModelPart(nn.Module):
    """A part of ``model`` before or from block ``k`` (it shares ``model``'s modules).

    Args:
        model: an EfficientNet-style timm model (:func:`supports_cache`).
        first_trainable: ``k``, the index of the first trainable block.
    """

    def __init__(self, model: nn.Module, first_trainable: int) -> None:
        super().__init__()
        self.model, self.k = model, first_trainable


class FrozenHead(_ModelPart):
    """conv_stem -> bn1 -> blocks[:k] of ``model`` (shared modules, eval mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part's features of a batch.

        Args:
            x: the preprocessed images, N x 3 x H x W.

        Returns:
            The output of ``blocks[k - 1]`` (of bn1 when ``k`` is 0).
        """
        m = self.model
        x = m.bn1(m.conv_stem(x))
        for block in m.blocks[: self.k]:
            x = block(x)
        return x


class TrainableTail(_ModelPart):
    """blocks[k:] -> conv_head -> bn2 -> head of ``model`` (shared modules)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the frozen part's features.

        Args:
            x: features from :class:`FrozenHead` (or :class:`CachedFeatures`).

        Returns:
            The logits, N x classes.
        """
        m = self.model
        for block in m.blocks[self.k :]:
            x = block(x)
        return m.forward_head(m.bn2(m.conv_head(x)))


def split_model(model: nn.Module, unfreeze_from: str) -> tuple[FrozenHead, TrainableTail]:
    """The frozen part and the trainable tail of ``model`` at ``unfreeze_from``.

    Args:
        model: an EfficientNet-style timm model.
        unfreeze_from: the first trainable module, ``blocks.N`` or ``conv_head``.

    Returns:
        The frozen head and the trainable tail (sharing ``model``'s modules).

    Raises:
        ConfigError: ``model`` is not EfficientNet-style, or ``unfreeze_from`` is not after the
            stem.
    """
    if not supports_cache(model):
        raise ConfigError(
            "feature caching is only implemented for EfficientNet-style backbones",
            where="train.cache_frozen_features",
            fix="set it to false for this model.arch",
        )
    k = _first_block(unfreeze_from, len(model.blocks))
    return FrozenHead(model, k), TrainableTail(model, k)


class CachedFeatures(Dataset):
    """Cached frozen-part outputs, ``rotations`` x N x C x h x w (float16), as ChipDataset items.

    With several rotations each item draws one with the (seeded) torch RNG, as ChipDataset's
    ``rot90`` does.

    Args:
        features: the cached features, rotations x N x C x h x w.
        labels: the label of each of the N chips.
    """

    def __init__(self, features: torch.Tensor, labels: Sequence[int]) -> None:
        self.features = features
        self.labels = list(labels)

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitem__(self, index: int) -> dict:
        r = int(torch.randint(0, self.features.shape[0], (1,))) if self.features.shape[0] > 1 else 0
        return {"image": self.features[r, index].float(), "label": self.labels[index],
                "index": index, "error": "", "error_where": "", "error_fix": ""}  # fmt: skip


@torch.no_grad()
def cache_features(
    head: FrozenHead,
    dataset: ChipDataset,
    *,
    rotations: int,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = False,
) -> CachedFeatures:
    """Run the frozen part once per chip and rotation (k x 90 degrees, k < ``rotations``).

    Args:
        head: the frozen part (put in eval mode).
        dataset: the chips (read without augmentation).
        rotations: number of 90-degree rotations to cache (1: the image as is).
        device: where the frozen part runs.
        batch_size: chips per batch.
        progress: show a progress bar.

    Returns:
        The features (on the CPU, float16) with the chips' labels.

    Raises:
        InputDataError: a chip cannot be read.
    """
    head.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    per_rot: list[list[torch.Tensor]] = [[] for _ in range(rotations)]
    for batch in tqdm(loader, desc="frozen features", disable=not progress, leave=False):
        raise_batch_errors(batch)
        x = batch["image"].to(device)
        for k in range(rotations):
            f = head(torch.rot90(x, k, dims=(2, 3)) if k else x)
            per_rot[k].append(f.to("cpu", torch.float16))
    feats = torch.stack([torch.cat(r) for r in per_rot])
    return CachedFeatures(feats, [c.label for c in dataset.chips])
