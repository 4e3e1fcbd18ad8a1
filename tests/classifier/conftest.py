"""Fixtures for the classifier tests: tiny SYNTHETIC chip folders (tests/fixtures/chips.py)."""

from __future__ import annotations

import pytest

from tests.fixtures.chips import write_chips


@pytest.fixture
def make_chips():
    """``make_chips(root, n_per_class=4, size=80, seed=0) -> root`` with pos/ and neg/."""
    return write_chips
