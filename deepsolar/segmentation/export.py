r"""Export a classifier + greedy-CAM segmenter pair as a compact reference model (half precision).

Floating-point tensors are stored as float16 (loading casts them back to float32); optimiser
state is dropped. The segmenter's backbone fingerprint is recomputed on the half-precision
classifier as it loads, so the exported pair still checks as matching.

    python -c "from deepsolar.segmentation.export import export_pair; \
        export_pair('out/reference/best.pt', 'out/reference-seg/segmenter.pt', 'data/models')"

The supervised mask head (trained on the exported builtin classifier) is exported the same way::

    python -c "from deepsolar.segmentation.export import export_mask_head; \
        export_mask_head('out/reference-mask-head/mask_head.pt', 'data/models')"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deepsolar.classifier.checkpoint import load_checkpoint
from deepsolar.classifier.predict import load_classifier
from deepsolar.core.checkpoints import BUILTIN_FILES, load_checkpoint_of, save_checkpoint
from deepsolar.segmentation.branch import backbone_fingerprint, resolve_tap
from deepsolar.segmentation.maskhead import MASK_HEAD_CHECKPOINT
from deepsolar.segmentation.train import SEGMENTER_CHECKPOINT

DROP = ("optimizer_state", "scheduler_state")


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def _compact(ckpt: dict[str, Any], state_key: str) -> dict[str, Any]:
    out = {k: v for k, v in ckpt.items() if k not in DROP}
    out[state_key] = _half(ckpt[state_key])
    out["precision"] = "float16"
    return out


def export_pair(
    classifier: str | Path, segmenter: str | Path, out_dir: str | Path
) -> tuple[Path, Path]:
    """Write ``builtin-classifier.pt`` and ``builtin-segmenter.pt`` (float16) into ``out_dir``.

    Args:
        classifier: a train-classifier checkpoint (best.pt).
        segmenter: the train-segmenter checkpoint trained on it (segmenter.pt).
        out_dir: destination folder (e.g. ``data/models``).

    Returns:
        The two written paths.
    """
    out = Path(out_dir)
    clf_path = save_checkpoint(
        out / BUILTIN_FILES["classifier"], _compact(load_checkpoint(classifier), "model_state")
    )
    seg = _compact(load_checkpoint_of(segmenter, SEGMENTER_CHECKPOINT), "branch_state")
    clf = load_classifier(clf_path, "cpu")
    tap = resolve_tap(seg["config"]["branch"].get("tap"), clf.config.model.arch)
    seg["backbone_fingerprint"] = backbone_fingerprint(clf.model, tap)
    seg["classifier_checkpoint"] = "builtin"
    seg["config"] = {**seg["config"], "classifier_checkpoint": "builtin"}
    seg_path = save_checkpoint(out / BUILTIN_FILES["segmenter"], seg)
    return clf_path, seg_path


def export_mask_head(
    mask_head: str | Path, out_dir: str | Path, classifier: str | Path = "builtin"
) -> Path:
    """Write ``builtin-mask-head.pt`` (float16) into ``out_dir``.

    Args:
        mask_head: a train-mask-head checkpoint (mask_head.pt) trained on ``classifier``.
        out_dir: destination folder (e.g. ``data/models``).
        classifier: the classifier it pairs with (default: the builtin one); its fingerprint up
            to the deepest tap is recomputed as it loads, and must match the training's.

    Returns:
        The written path.
    """
    full = load_checkpoint_of(mask_head, MASK_HEAD_CHECKPOINT)
    ckpt = _compact(full, "decoder_state")
    for k, v in ckpt["decoder_state"].items():  # a tensor float16 cannot hold stays float32
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            ckpt["decoder_state"][k] = full["decoder_state"][k]
    clf = load_classifier(classifier, "cpu")
    fingerprint = backbone_fingerprint(clf.model, ckpt["taps"][-1])
    if fingerprint != ckpt["backbone_fingerprint"]:
        raise ValueError(f"{mask_head} was not trained on {classifier}")
    ckpt["classifier_checkpoint"] = str(classifier)
    ckpt["config"] = {**ckpt["config"], "classifier_checkpoint": str(classifier)}
    return save_checkpoint(Path(out_dir) / BUILTIN_FILES["mask_head"], ckpt)
