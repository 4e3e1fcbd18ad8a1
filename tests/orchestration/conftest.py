"""Fixtures of the orchestration tests: a random-weight classifier checkpoint (saved exactly as
train-classifier saves one) and copies of a SYNTHETIC tile store (see orch_helpers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixtures.classifiers import random_classifier_checkpoint
from tests.orchestration.orch_helpers import INPUT_PX, build_store


@pytest.fixture(scope="session")
def orch_classifier(tmp_path_factory) -> Path:
    return random_classifier_checkpoint(tmp_path_factory.mktemp("orch-clf"), INPUT_PX)


@pytest.fixture(scope="session")
def pristine_store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("orch-store"))


@pytest.fixture()
def store_copy(pristine_store, tmp_path):
    """A fresh copy of the store per call: ``store_copy('name')``."""

    def make(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(pristine_store, dst)
        return dst

    return make
