"""DeepSolar's cost-sensitive loss.

Per sample: softmax cross-entropy with label smoothing, multiplied by ``1 + alpha * y`` (alpha 9:
a positive weighs 10x), then averaged over the batch - divided by the batch size, not by the sum of
the weights. ``torch.nn.CrossEntropyLoss(weight=...)`` divides by the sum of the weights, which is
a different loss (the positives' share no longer grows with their count). The auxiliary head adds
``aux_weight`` (0.4) times the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepsolar.classifier.config import LossConfig


def weighted_smoothed_ce(
    logits: torch.Tensor, targets: torch.Tensor, *, alpha: float, label_smoothing: float
) -> torch.Tensor:
    """mean_i[ CE_smooth(logits_i, y_i) * (1 + alpha * y_i) ] for y in {0, 1}.

    Args:
        logits: the logits, N x 2.
        targets: the labels, N (0 or 1).
        alpha: extra weight of a positive (9: a positive weighs 10x).
        label_smoothing: label smoothing, fraction 0-1.

    Returns:
        The loss, a scalar (divided by N, not by the sum of the weights).
    """
    per_sample = F.cross_entropy(
        logits.float(), targets, reduction="none", label_smoothing=label_smoothing
    )
    weights = 1.0 + alpha * targets.to(per_sample.dtype)
    return (per_sample * weights).mean()


class DeepSolarLoss(nn.Module):
    """Main-head loss plus ``aux_weight`` x the auxiliary head's loss (when it is given).

    Args:
        cfg: ``alpha``, ``label_smoothing`` and ``aux_weight`` (None: the defaults).
    """

    def __init__(self, cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LossConfig()

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, aux_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss of a batch.

        Args:
            logits: the main head's logits, N x 2.
            targets: the labels, N (0 or 1).
            aux_logits: the auxiliary head's logits, N x 2 (None: no auxiliary term).

        Returns:
            The loss, a scalar.
        """
        c = self.cfg
        loss = weighted_smoothed_ce(
            logits, targets, alpha=c.alpha, label_smoothing=c.label_smoothing
        )
        if aux_logits is not None and c.aux_weight > 0:
            loss = loss + c.aux_weight * weighted_smoothed_ce(
                aux_logits, targets, alpha=c.alpha, label_smoothing=c.label_smoothing
            )
        return loss
