"""DeepSolar's cost-sensitive loss: a hand-computed value, and why CrossEntropyLoss(weight) differs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from deepsolar.classifier.config import LossConfig
from deepsolar.classifier.loss import DeepSolarLoss, weighted_smoothed_ce

LOGITS = torch.tensor([[2.0, 0.5], [0.1, 1.1], [1.0, -1.0]])
TARGETS = torch.tensor([0, 1, 1])


def test_hand_computed_value():
    # Per sample: CE against smoothed targets (0.95 on the true class, 0.05 on the other), times
    # 1 + 9y, then divided by the batch size (3):
    #   s1 (y=0): lse = 2 + ln(1 + e^-1.5) = 2.201413 -> 0.95*0.201413 + 0.05*1.701413 = 0.276413
    #   s2 (y=1): lse = 1.1 + ln(1 + e^-1) = 1.413262 -> 0.05*1.313262 + 0.95*0.313262 = 0.363262
    #   s3 (y=1): lse = 1 + ln(1 + e^-2) = 1.126928   -> 0.05*0.126928 + 0.95*2.126928 = 2.026928
    #   (0.276413 + 10*0.363262 + 10*2.026928) / 3 = 8.059437
    expected = (0.276413 + 10 * 0.363262 + 10 * 2.026928) / 3
    got = DeepSolarLoss(LossConfig())(LOGITS, TARGETS)
    assert float(got) == pytest.approx(expected, abs=2e-6)
    assert float(got) == pytest.approx(8.05943675453157, rel=1e-6)


def test_differs_from_crossentropyloss_with_class_weights():
    ours = float(DeepSolarLoss(LossConfig())(LOGITS, TARGETS))
    torch_weighted = float(
        torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0]), label_smoothing=0.1)(
            LOGITS, TARGETS
        )
    )
    # CrossEntropyLoss(weight=...) divides by the sum of the weights (21), not the batch size (3).
    assert abs(ours - torch_weighted) > 1.0


def test_without_smoothing_it_is_the_weighted_sum_over_batch_size():
    ours = weighted_smoothed_ce(LOGITS, TARGETS, alpha=9.0, label_smoothing=0.0)
    w = torch.tensor([1.0, 10.0])
    summed = F.cross_entropy(LOGITS, TARGETS, weight=w, reduction="sum") / len(TARGETS)
    mean_by_weight = F.cross_entropy(LOGITS, TARGETS, weight=w, reduction="mean")
    assert float(ours) == pytest.approx(float(summed), rel=1e-6)
    assert not math.isclose(float(ours), float(mean_by_weight), rel_tol=1e-3)


def test_alpha_zero_is_plain_cross_entropy():
    ours = weighted_smoothed_ce(LOGITS, TARGETS, alpha=0.0, label_smoothing=0.1)
    assert float(ours) == pytest.approx(
        float(F.cross_entropy(LOGITS, TARGETS, label_smoothing=0.1)), rel=1e-6
    )


def test_aux_head_adds_0_4_times_the_same_loss():
    aux = torch.tensor([[0.3, -0.2], [1.5, 0.0], [0.0, 0.7]])
    loss = DeepSolarLoss(LossConfig())
    total = float(loss(LOGITS, TARGETS, aux))
    assert total == pytest.approx(float(loss(LOGITS, TARGETS)) + 0.4 * float(loss(aux, TARGETS)))
    no_aux = DeepSolarLoss(LossConfig(aux_weight=0.0))
    assert float(no_aux(LOGITS, TARGETS, aux)) == pytest.approx(float(loss(LOGITS, TARGETS)))


def test_configurable_alpha_and_smoothing():
    a = float(DeepSolarLoss(LossConfig(alpha=4.0, label_smoothing=0.0))(LOGITS, TARGETS))
    b = float(DeepSolarLoss(LossConfig(alpha=9.0, label_smoothing=0.0))(LOGITS, TARGETS))
    assert a < b
    c = float(DeepSolarLoss(LossConfig(label_smoothing=0.2))(LOGITS, TARGETS))
    assert c != pytest.approx(float(DeepSolarLoss()(LOGITS, TARGETS)))
