"""train-classifier and evaluate-classifier flows under a temporary Prefect API."""

from __future__ import annotations

import json

import pytest

from deepsolar.core.errors import ConfigError
from flows.evaluate_classifier import evaluate_classifier_flow
from flows.train_classifier import train_classifier_flow


def _config(tmp_path, make_chips, num_workers):
    return {
        "model": {"weights": "none", "input_size_px": 75, "aux_logits": False, "bn_momentum": 0.1},
        "data": {
            "train": [
                {"kind": "folder", "path": str(make_chips(tmp_path / "train")), "name": "tr"}
            ],
            "val": [{"kind": "folder", "path": str(make_chips(tmp_path / "val", 2, seed=1))}],
            "test": [
                {
                    "kind": "folder",
                    "path": str(make_chips(tmp_path / "t1", 2, seed=2)),
                    "name": "t1",
                },
                {
                    "kind": "folder",
                    "path": str(make_chips(tmp_path / "t2", 2, seed=3)),
                    "name": "t2",
                },
            ],
            "batch_size": 4,
            "eval_batch_size": 4,
            "num_workers": num_workers,
        },
        "train": {"epochs": 1, "num_threads": 1, "progress": False},
    }


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_train_then_evaluate_flows(tmp_path, make_chips):
    # One DataLoader worker: pins the fix for workers dying under Prefect (forkserver start).
    out = tmp_path / "run"
    res = train_classifier_flow(
        {"config": _config(tmp_path, make_chips, num_workers=1), "out_dir": str(out)}
    )
    assert res["best_epoch"] == 1 and (out / "best.pt").is_file()
    assert set(res["test"]["sources"]) == {"t1", "t2"} and res["test"]["all"]["n"] == 8
    assert json.loads((out / "summary.json").read_text())["best_checkpoint"] == str(out / "best.pt")
    assert (out / "test" / "t1" / "metrics.json").is_file()

    # evaluate-classifier defaults to the checkpoint's own data.test
    ev = evaluate_classifier_flow(
        {"checkpoint": str(out / "best.pt"), "out_dir": str(tmp_path / "ev")}
    )
    assert ev["sources"]["t1"] == res["test"]["sources"]["t1"]
    assert (tmp_path / "ev" / "summary.json").is_file()


@pytest.mark.usefixtures("prefect_harness")
def test_bad_parameters_fail_before_any_work(tmp_path, make_chips):
    cfg = _config(tmp_path, make_chips, num_workers=0)
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        train_classifier_flow(
            {"config": cfg, "overrides": {"optim": {"learning_rate": 1}}, "out_dir": str(out)}
        )
    with pytest.raises(ConfigError, match="epochs"):
        train_classifier_flow(
            {"config": cfg, "overrides": {"train": {"epochs": -1}}, "out_dir": str(out)}
        )
    with pytest.raises(ConfigError, match="config_path or config"):
        train_classifier_flow({"out_dir": str(out)})
    assert not out.exists()
    with pytest.raises(ConfigError, match="threshold"):
        evaluate_classifier_flow({"checkpoint": "x.pt", "threshold": 1.5})
