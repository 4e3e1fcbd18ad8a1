"""Fixtures of the orchestration tests: a random-weight classifier checkpoint (saved exactly as
train-classifier saves one) and copies of a SYNTHETIC tile store (see orch_helpers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from orch_helpers import INPUT_PX, build_store

from deepsolar.classifier.checkpoint import checkpoint_meta
from deepsolar.classifier.config import TrainClassifierConfig
from deepsolar.classifier.model import build_classifier
from deepsolar.core.checkpoints import save_checkpoint


@pytest.fixture(scope="session")
def orch_classifier(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("orch-clf")
    torch.manual_seed(0)
    cfg = TrainClassifierConfig.model_validate(
        {
            "model": {"weights": "none", "input_size_px": INPUT_PX, "aux_logits": False},
            "data": {"train": [{"kind": "folder", "path": str(root / "chips")}]},
        }
    )
    model = build_classifier(cfg.model)
    payload = {**checkpoint_meta(cfg), "model_state": model.state_dict(), "epoch": 0}
    return save_checkpoint(root / "best.pt", payload)


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
