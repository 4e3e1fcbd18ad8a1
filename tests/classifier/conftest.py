"""Fixtures for the classifier tests: tiny SYNTHETIC chip folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_chips(root: Path, n_per_class: int = 4, size: int = 80, seed: int = 0) -> Path:
    """SYNTHETIC chips: grey-ish noise; positives carry a dark rectangle (a 'panel')."""
    rng = np.random.default_rng(seed)
    for sub, label in (("pos", 1), ("neg", 0)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            a = rng.integers(90, 170, (size, size, 3), dtype=np.uint8)
            if label:
                a[20:45, 15:60] = 25
            Image.fromarray(a).save(root / sub / f"{i}.png")
    return root


@pytest.fixture
def make_chips():
    """``make_chips(root, n_per_class=4, size=80, seed=0) -> root`` with pos/ and neg/."""
    return write_chips
