"""Tiny end-to-end training (75 px, a few steps), safe checkpoints, identical resume, inference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from deepsolar.classifier.checkpoint import load_checkpoint
from deepsolar.classifier.config import TrainClassifierConfig
from deepsolar.classifier.predict import evaluate_checkpoint, load_classifier, predict_proba
from deepsolar.classifier.train import fit, split_data
from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, InputDataError


def tiny_config(tmp_path, make_chips, epochs=1.0, **train):
    return validate_config(
        TrainClassifierConfig,
        {
            "model": {"weights": "none", "input_size_px": 75, "aux_logits": False,
                      "bn_momentum": 0.1},
            "optim": {"lr": 1e-3},
            "data": {
                "train": [{"kind": "folder", "path": str(make_chips(tmp_path / "train"))}],
                "val": [{"kind": "folder", "path": str(make_chips(tmp_path / "val", 2, seed=1))}],
                "batch_size": 4,
                "eval_batch_size": 4,
                "num_workers": 0,
            },
            "train": {"epochs": epochs, "seed": 7, "num_threads": 1, "progress": False, **train},
        },
    )  # fmt: skip


def test_tiny_end_to_end_and_checkpoint_contents(tmp_path, make_chips):
    cfg = tiny_config(tmp_path, make_chips)
    res = fit(cfg, tmp_path / "out")
    for name in ("last.pt", "best.pt", "history.json", "data_split.json", "val/metrics.json"):
        assert (tmp_path / "out" / name).is_file(), name
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert len(history) == 1 and history[0]["steps"] == 2  # 8 chips, batch 4
    assert np.isfinite(history[0]["train_loss"])

    raw = torch.load(tmp_path / "out" / "best.pt", map_location="cpu", weights_only=True)
    assert raw["class_names"] == ["no_solar", "solar"]
    assert raw["input_size_px"] == 75 and raw["threshold"] == 0.5
    assert raw["normalize"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert TrainClassifierConfig.model_validate(raw["config"]) == cfg
    last = load_checkpoint(tmp_path / "out" / "last.pt")
    assert {"optimizer_state", "scheduler_state"} <= set(last) and last["epoch"] == 1

    # Inference from the checkpoint alone reproduces the validation predictions.
    clf = load_classifier(res.best_checkpoint, device="cpu")
    assert all(torch.equal(v, raw["model_state"][k]) for k, v in clf.model.state_dict().items())
    summary = evaluate_checkpoint(
        res.best_checkpoint, cfg.data.val, tmp_path / "eval", device="cpu"
    )
    table = pd.read_csv(tmp_path / "eval" / "val" / "predictions.csv")
    probs = predict_proba(clf, list(table["path"]), batch_size=3)
    np.testing.assert_allclose(probs, table["prob"], rtol=1e-5, atol=1e-6)
    assert summary["sources"]["val"]["n"] == 4
    assert (tmp_path / "eval" / "val" / "roc.png").is_file()
    # Arrays (greyscale, RGBA) go through the same preprocessing.
    grey = np.asarray(Image.open(table["path"][0]).convert("L"))
    rgba = np.dstack([np.asarray(Image.open(table["path"][0])), np.full(grey.shape, 7, np.uint8)])
    p = predict_proba(clf, [grey, rgba])
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))
    assert predict_proba(clf, [rgba])[0] == pytest.approx(probs[0], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_resume_continues_identically(tmp_path, make_chips):
    cfg2 = tiny_config(tmp_path, make_chips, epochs=2)
    fit(cfg2, tmp_path / "straight")
    cfg1 = cfg2.model_copy(update={"train": cfg2.train.model_copy(update={"epochs": 1.0})})
    fit(cfg1, tmp_path / "resumed")
    fit(cfg2, tmp_path / "resumed", resume=tmp_path / "resumed" / "last.pt")
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["model_state"].items():
        assert torch.equal(v, b["model_state"][k]), k
    strip = ("train_s", "train_images_per_s")
    ha = [{k: v for k, v in r.items() if k not in strip} for r in a["history"]]
    hb = [{k: v for k, v in r.items() if k not in strip} for r in b["history"]]
    assert ha == hb
    assert a["scheduler_state"]["last_epoch"] == b["scheduler_state"]["last_epoch"] == 2

    # Resuming with a different recipe is refused, naming the field.
    changed = cfg2.model_copy(update={"optim": cfg2.optim.model_copy(update={"lr": 0.01})})
    with pytest.raises(ConfigError, match="optim.lr"):
        fit(changed, tmp_path / "resumed", resume=tmp_path / "resumed" / "last.pt")


def test_corrupt_training_chip_is_reported(tmp_path, make_chips):
    cfg = tiny_config(tmp_path, make_chips)
    bad = tmp_path / "train" / "neg" / "3.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(InputDataError) as err:
        fit(cfg, tmp_path / "out")
    assert str(bad) in str(err.value)
    assert not (tmp_path / "out" / "last.pt").exists()


class Arbitrary:
    """Any pickled class: weights_only loading must refuse to import it."""


def test_unsafe_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "deepsolar-classifier", "obj": Arbitrary()}, path)
    with pytest.raises(InputDataError, match="safely"):
        load_checkpoint(path)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(InputDataError, match="not a deepsolar"):
        load_checkpoint(tmp_path / "other.pt")


def test_split_data_holds_out_a_test_share(tmp_path, make_chips):
    root = make_chips(tmp_path / "pool", n_per_class=10, size=24)
    cfg = validate_config(
        TrainClassifierConfig,
        {
            "model": {"weights": "none", "input_size_px": 75, "aux_logits": False},
            "data": {
                "train": [{"kind": "folder", "path": str(root)}],
                "val_fraction": 0.25,
                "test_fraction": 0.2,
            },
        },
    )
    train, val, held_out = split_data(cfg)
    assert [len(train), len(val), len(held_out)] == [12, 4, 4]
    assert sum(c.label for c in held_out) == 2 and sum(c.label for c in val) == 2
    paths = [c.path for c in train + val + held_out]
    assert len(set(paths)) == 20
    assert split_data(cfg) == (train, val, held_out)  # seeded
