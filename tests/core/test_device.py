"""Device, seed and epoch-seed helpers shared by every training loop (core.device, core.training)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from deepsolar.core.device import (
    CLASSIFIER_SEED_STAGE,
    MASK_HEAD_SEED_STAGE,
    epoch_seed,
    resolve_device,
    seed_everything,
)
from deepsolar.core.errors import ConfigError
from deepsolar.core.training import BestEpoch, epoch_steps


def test_epoch_seed_keeps_each_loops_formula():
    """The formulas each loop had before they shared one function: changing one changes weights."""
    for seed in (0, 7, 2**40):
        for epoch in (0, 3):
            classifier = (seed * 1_000_003 + epoch) % 2**63
            mask_head = (seed * 1_000_003 + 7 * 10_007 + epoch) % 2**63
            assert epoch_seed(seed, epoch) == classifier
            assert epoch_seed(seed, epoch, CLASSIFIER_SEED_STAGE) == classifier
            assert epoch_seed(seed, epoch, MASK_HEAD_SEED_STAGE) == mask_head
            for stage in (1, 2, 3):
                greedy = (seed * 1_000_003 + stage * 10_007 + epoch) % 2**63
                assert epoch_seed(seed, epoch, stage) == greedy


def test_seed_everything_repeats_every_generator():
    seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(1))
    seed_everything(5)
    b = (random.random(), np.random.rand(), torch.rand(1))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu-please")


def test_fractional_last_epoch_and_best_epoch():
    assert epoch_steps(2.0, 1, 10) == 10
    assert epoch_steps(2.5, 2, 10) == 5
    assert epoch_steps(2.01, 2, 10) == 1
    best = BestEpoch()
    assert best.update(-math.inf, 1) and best.epoch == 1  # the first epoch always is the best
    assert not best.update(-math.inf, 2)
    assert best.update(0.3, 3) and not best.update(0.3, 4) and best.epoch == 3
