"""The recipe matches DeepSolar (reference doc) and the fine-tuning strategies freeze what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.optim import RMSpropTF

from deepsolar.classifier.config import (
    ClassifierConfig,
    DataConfig,
    LossConfig,
    OptimConfig,
    TrainClassifierConfig,
    TrainConfig,
    load_train_config,
)
from deepsolar.classifier.loss import DeepSolarLoss
from deepsolar.classifier.model import build_classifier
from deepsolar.classifier.recipe import (
    apply_finetune,
    build_optimizer,
    build_scheduler,
    set_train_mode,
)
from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_classifier(ClassifierConfig(weights="none", input_size_px=75, aux_logits=False))


def test_defaults_are_deepsolars():
    m, lo, o, t = ClassifierConfig(), LossConfig(), OptimConfig(), TrainConfig()
    d = DataConfig(train=[{"kind": "folder", "path": "x"}])
    assert (m.arch, m.weights, m.input_size_px, m.aux_logits) == (
        "inception_v3",
        "imagenet",
        299,
        True,
    )
    assert (m.dropout, m.bn_momentum, m.bn_eps, m.threshold) == (0.2, 0.0003, 1e-3, 0.5)
    assert (lo.alpha, lo.label_smoothing, lo.aux_weight) == (9.0, 0.1, 0.4)
    assert (o.name, o.lr, o.weight_decay, o.finetune) == ("rmsprop_tf", 1e-3, 4e-5, "full")
    assert (o.rmsprop.decay, o.rmsprop.momentum, o.rmsprop.eps) == (0.9, 0.9, 0.1)
    assert (o.lr_decay_factor, o.lr_decay_every_epochs) == (0.5, 5)
    assert (d.batch_size, d.rot90, d.hflip) == (32, True, False)
    assert t.epochs == 17.5


def test_deepsolar_yaml_is_the_default_recipe():
    cfg = load_train_config(REPO / "configs" / "classifier-deepsolar.yaml")
    assert cfg == TrainClassifierConfig(data=cfg.data)


def test_real_chips_yaml_validates():
    cfg = load_train_config(REPO / "configs" / "classifier-real-chips.yaml")
    assert cfg.loss == LossConfig() and cfg.optim.rmsprop == OptimConfig().rmsprop
    assert len(cfg.data.test) == 2


def test_rmsprop_tf_parameters_and_weight_decay_groups(small_model):
    opt = build_optimizer(small_model, OptimConfig())
    assert isinstance(opt, RMSpropTF)
    for g in opt.param_groups:
        assert (g["lr"], g["alpha"], g["momentum"], g["eps"]) == (1e-3, 0.9, 0.9, 0.1)
        assert g["decoupled_decay"] is False  # TF-slim's L2 term, i.e. coupled decay
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 4e-5 and plain["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"])  # conv / linear weights
    assert all(p.ndim == 1 for p in plain["params"])  # biases, BatchNorm
    n_params = sum(1 for p in small_model.parameters())
    assert len(decayed["params"]) + len(plain["params"]) == n_params


def test_step_decay_halves_lr_every_5_epochs(small_model):
    opt = build_optimizer(small_model, OptimConfig())
    sched = build_scheduler(opt, OptimConfig())
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-3] * 5 + [5e-4] * 5 + [2.5e-4] * 5 + [1.25e-4])


def test_adamw_option(small_model):
    opt = build_optimizer(small_model, OptimConfig(name="adamw", lr=3e-4, weight_decay=0.01))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["weight_decay"] == 0.01 and opt.param_groups[0]["lr"] == 3e-4


def test_from_block_needs_a_known_block_of_the_arch():
    data = {"train": [{"kind": "folder", "path": "x"}]}
    bad = {"finetune": "from_block", "unfreeze_from": "Mixed_9z"}
    with pytest.raises(ConfigError, match="Mixed_6a"):
        validate_config(TrainClassifierConfig, {"optim": bad, "data": data})
    with pytest.raises(ConfigError, match="unfreeze_from"):
        validate_config(OptimConfig, {"finetune": "from_block"})
    lite = {"arch": "efficientnet_lite0", "input_size_px": 224}
    with pytest.raises(ConfigError, match=r"blocks\.5"):  # names lite's own blocks
        validate_config(TrainClassifierConfig, {"model": lite, "optim": bad, "data": data})
    ok = {"finetune": "from_block", "unfreeze_from": "blocks.5"}
    assert validate_config(TrainClassifierConfig, {"model": lite, "optim": ok, "data": data})
    with pytest.raises(ConfigError, match="random weights"):
        validate_config(
            TrainClassifierConfig,
            {
                "model": {"weights": "none"},
                "optim": {"finetune": "head"},
                "data": {"train": [{"kind": "folder", "path": "x"}]},
            },
        )


def _trainable_modules(model):
    return {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad}


def test_head_only_trains_only_the_new_heads():
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(weights="none"))
    names = apply_finetune(model, OptimConfig(finetune="head"))
    assert set(names) == {"fc.weight", "fc.bias", "AuxLogits.fc.weight", "AuxLogits.fc.bias"}
    assert _trainable_modules(model) == {"fc", "AuxLogits.fc"}
    apply_finetune(model, OptimConfig())  # back to full
    assert all(p.requires_grad for p in model.parameters())


def test_unfreeze_from_block():
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(weights="none"))
    apply_finetune(model, OptimConfig(finetune="from_block", unfreeze_from="Mixed_6e"))
    top = {m.split(".")[0] for m in _trainable_modules(model)}
    assert top == {"Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AuxLogits", "fc"}
    assert not model.Mixed_6d.branch1x1.conv.weight.requires_grad
    assert model.Mixed_6e.branch1x1.conv.weight.requires_grad


def test_head_only_step_changes_nothing_else(small_model):
    model = small_model
    apply_finetune(model, OptimConfig(finetune="head"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model, OptimConfig(finetune="head"))
    set_train_mode(model)
    assert not model.Conv2d_1a_3x3.bn.training  # frozen BN keeps its statistics
    assert model.dropout.training
    x = torch.randn(4, 3, 75, 75)
    loss = DeepSolarLoss()(model(x), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}
    apply_finetune(model, OptimConfig())
