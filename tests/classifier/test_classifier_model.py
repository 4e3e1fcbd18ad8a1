"""Inception-v3 construction, weights loading (ImageNet path, local file, offline) and preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import Inception3, resnet18

from deepsolar.classifier.config import ClassifierConfig
from deepsolar.classifier.model import (
    build_classifier,
    imagenet_weights_path,
    model_outputs,
    preprocess,
)
from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, InputDataError, OfflineError

IMAGENET_FILE = "inception_v3_google-0cc3c7bd.pth"


@pytest.fixture
def hub_dir(tmp_path):
    """An empty torch hub cache, restored afterwards."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def test_preprocess_scales_to_minus_one_one_and_resizes():
    img = np.zeros((40, 60, 3), dtype=np.uint8)
    img[:, 30:] = 255
    x = preprocess(img, 75)
    assert x.shape == (3, 75, 75)
    assert x.dtype == torch.float32
    assert float(x.min()) == pytest.approx(-1.0)
    assert float(x.max()) == pytest.approx(1.0)
    assert float(x[0, 37, 0]) == pytest.approx(-1.0) and float(x[0, 37, 74]) == pytest.approx(1.0)


def test_random_model_heads_bn_and_dropout():
    model = build_classifier(ClassifierConfig(weights="none", input_size_px=75, aux_logits=False))
    assert model.fc.out_features == 2 and model.fc.in_features == 2048
    assert model.AuxLogits is None
    assert model.dropout.p == pytest.approx(0.2)
    assert not model.transform_input  # inputs are already in [-1, 1]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == pytest.approx(0.0003) and m.eps == 1e-3 for m in bns)
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 75, 75))
    assert out.shape == (2, 2)


@pytest.mark.slow
def test_aux_head_is_2_class_and_used_in_training_at_299():
    model = build_classifier(ClassifierConfig(weights="none"))
    assert model.AuxLogits.fc.out_features == 2 and model.AuxLogits.fc.in_features == 768
    model.train()
    with torch.no_grad():
        logits, aux = model_outputs(model(torch.zeros(2, 3, 299, 299)))
    assert logits.shape == (2, 2) and aux is not None and aux.shape == (2, 2)


def test_aux_head_needs_299_px():
    with pytest.raises(ConfigError, match="299"):
        validate_config(ClassifierConfig, {"input_size_px": 160, "aux_logits": True})
    assert validate_config(ClassifierConfig, {"input_size_px": 160, "aux_logits": False})
    # Not given: on at DeepSolar's 299 px, off below it and for backbones without one.
    assert validate_config(ClassifierConfig, {"input_size_px": 160}).aux_logits is False
    assert validate_config(ClassifierConfig, {}).aux_logits is True
    lite = {"arch": "efficientnet_lite0", "input_size_px": 320}
    assert validate_config(ClassifierConfig, lite).aux_logits is False
    with pytest.raises(ConfigError, match="no auxiliary head"):
        validate_config(ClassifierConfig, {**lite, "aux_logits": True})


def test_imagenet_offline_names_file_and_directory(hub_dir, monkeypatch):
    # A proxy on a closed local port makes the real download fail fast, online or not.
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(OfflineError) as err:
        build_classifier(ClassifierConfig(weights="imagenet"))
    msg = str(err.value)
    assert IMAGENET_FILE in msg
    assert str(hub_dir / "checkpoints") in msg
    assert imagenet_weights_path() == hub_dir / "checkpoints" / IMAGENET_FILE


@pytest.mark.slow
def test_imagenet_loads_a_placed_file_and_reinitialises_heads(hub_dir):
    # A 1000-class torchvision Inception-v3 state dict placed where the hub looks for it.
    torch.manual_seed(1)
    src = Inception3(num_classes=1000, aux_logits=True, init_weights=True)
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(src.state_dict(), hub_dir / "checkpoints" / IMAGENET_FILE)
    model = build_classifier(ClassifierConfig(weights="imagenet"))
    assert torch.equal(model.Conv2d_1a_3x3.conv.weight, src.Conv2d_1a_3x3.conv.weight)
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, src.Mixed_7c.branch_pool.conv.weight)
    assert model.fc.weight.shape == (2, 2048) and model.AuxLogits.fc.weight.shape == (2, 768)
    assert float(model.fc.weight.detach().abs().max()) <= 0.002 + 1e-9  # fresh head, std 0.001
    # BN statistics came with the weights, BN settings are DeepSolar's.
    assert torch.equal(
        model.Mixed_5b.branch1x1.bn.running_var, src.Mixed_5b.branch1x1.bn.running_var
    )
    assert model.Mixed_5b.branch1x1.bn.momentum == pytest.approx(0.0003)


def test_local_weights_file(tmp_path):
    torch.manual_seed(2)
    src = build_classifier(ClassifierConfig(weights="none", input_size_px=75, aux_logits=False))
    path = tmp_path / "w.pt"
    torch.save({"model_state": src.state_dict()}, path)  # a deepsolar-style checkpoint
    model = build_classifier(
        ClassifierConfig(weights=str(path), input_size_px=75, aux_logits=False)
    )
    assert torch.equal(model.Mixed_6e.branch7x7_1.conv.weight, src.Mixed_6e.branch7x7_1.conv.weight)
    # aux head requested but the file has none: a clear error, not a silent random aux branch
    with pytest.raises(InputDataError, match="missing"):
        build_classifier(ClassifierConfig(weights=str(path)))


def test_bad_weights_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(InputDataError) as err:
        build_classifier(ClassifierConfig(weights=str(junk), input_size_px=75, aux_logits=False))
    assert str(junk) in str(err.value)
    other = tmp_path / "resnet.pt"
    torch.save(resnet18().state_dict(), other)
    with pytest.raises(InputDataError, match="do not fit"):
        build_classifier(ClassifierConfig(weights=str(other), input_size_px=75, aux_logits=False))
    with pytest.raises(InputDataError, match="not found"):
        build_classifier(ClassifierConfig(weights=str(tmp_path / "nope.pt")))
