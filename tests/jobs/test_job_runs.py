"""Every job's Prefect-free ``run()`` (but the demo's, which is its flow), each in a fresh
``python -c`` process on tiny SYNTHETIC inputs: it succeeds, writes what it says, and never
imports ``prefect``. download-tiles' run is tested in test_jobs_registry.py.

Inputs come from the shared builders: the random-weight classifier checkpoint
(tests/fixtures/classifiers.py), chip folders (tests/fixtures/chips.py), the tile store and segment job of the
orchestration tests (tests/orchestration/orch_helpers.py); the shipped ``builtin`` models (a small
EfficientNet-Lite0) where a trained model is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest

from tests.fixtures.chips import synthetic_images_folder, write_chips
from tests.fixtures.classifiers import random_classifier_checkpoint
from tests.orchestration.orch_helpers import COLS, ROWS, build_store, seg_job

REPO = Path(__file__).resolve().parents[2]
INPUT_PX = 75  # the random classifier's input size (as tests/segmentation's tiny_classifier)
N_TILES = ROWS * COLS  # build_store's tiles, all 'ok' in the manifest, one unreadable

# Each run is a fresh process that imports torch and runs a model: 5-8 s of CPU each.
pytestmark = pytest.mark.slow

_CHILD = """\
import json, sys
from importlib import import_module
run = import_module("deepsolar.jobs." + sys.argv[1]).run
res = run(*json.loads(sys.argv[2]))
prefect = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
with open(sys.argv[3], "w") as f:
    json.dump({"result": res, "prefect": prefect}, f, default=str)
"""


def run_job(module: str, tmp_path: Path, *args: Any) -> dict[str, Any]:
    """``deepsolar.jobs.<module>.run(*args)`` in a fresh process (cwd: the repo, one torch
    thread); asserts it succeeded without importing prefect and returns its result."""
    out = tmp_path / f"{module}.result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, module, json.dumps(args, default=str), str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    child = json.loads(out.read_text())
    assert child["prefect"] == [], f"{module}.run imported {child['prefect'][:5]}"
    return child["result"]


def in_unit(x: Any) -> bool:
    return x is None or 0.0 <= x <= 1.0


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return random_classifier_checkpoint(tmp_path_factory.mktemp("clf"), INPUT_PX)


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    return write_chips(tmp_path_factory.mktemp("chips"))


@pytest.fixture(scope="module")
def masked_chips(tmp_path_factory) -> Path:
    return synthetic_images_folder(tmp_path_factory.mktemp("masked") / "mine")


def test_train_classifier_run(tmp_path):
    folder = {"kind": "folder"}
    config = {
        "model": {"weights": "none", "input_size_px": INPUT_PX, "aux_logits": False},
        "data": {
            "train": [{**folder, "path": str(write_chips(tmp_path / "train", 3)), "name": "tr"}],
            "val": [{**folder, "path": str(write_chips(tmp_path / "val", 2, seed=1))}],
            "test": [
                {**folder, "path": str(write_chips(tmp_path / "t1", 2, seed=2)), "name": "t1"}
            ],
            "batch_size": 4,
            "eval_batch_size": 4,
        },
        "train": {"epochs": 1, "num_threads": 1, "progress": False},
    }
    out = tmp_path / "run"
    res = run_job("train_classifier", tmp_path, {"config": config, "out_dir": str(out)})
    assert res["best_epoch"] == 1 and res["best_checkpoint"] == str(out / "best.pt")
    assert (out / "best.pt").stat().st_size > 0 and (out / "last.pt").is_file()
    assert json.loads((out / "summary.json").read_text())["best_checkpoint"] == str(out / "best.pt")
    assert set(res["test"]["sources"]) == {"t1"}
    m = res["test"]["sources"]["t1"]
    assert (m["n"], m["n_positive"]) == (4, 2)
    assert all(in_unit(m[k]) for k in ("precision", "recall", "f1"))
    assert (out / "test" / "t1" / "metrics.json").is_file()


def test_evaluate_classifier_run_on_the_builtin_model(chips, masked_chips, tmp_path):
    out = tmp_path / "ev"
    params = {
        "checkpoint": "builtin",
        "sources": [
            {"kind": "folder", "path": str(chips), "name": "pn"},
            {"kind": "images", "path": str(masked_chips)},
        ],
        "out_dir": str(out),
        "bootstrap_reps": 20,
        "device": "cpu",
    }
    res = run_job("evaluate_classifier", tmp_path, params)
    assert 0 < res["threshold"] < 1 and res["input_size_px"] == 160
    assert set(res["sources"]) == {"pn", "mine"}
    assert (res["all"]["n"], res["all"]["n_positive"]) == (8 + 5, 4 + 3)
    rows = {(r["source"], r["predictor"]): r for r in res["table"]}
    sets = ("pn", "mine", "overall")
    assert set(rows) == {(s, p) for s in sets for p in ("model", "all-positive")}
    assert all(in_unit(r[k]) for r in rows.values() for k in ("precision", "recall", "f1"))
    for name in ("report.md", "report.csv", "report.json", "summary.json"):
        assert (out / name).stat().st_size > 0, name


def test_calibrate_cam_run_fits_a_floor_and_a_threshold(chips, masked_chips, tmp_path):
    base = {"device": "cpu"}  # the builtin classifier + greedy branch
    floor = run_job("calibrate_cam", tmp_path, {**base, "sources": [
        {"kind": "folder", "path": str(chips)}]})  # fmt: skip
    assert floor["fit"] == "floor" and len(floor["maxima"]) == 8
    positives = sorted(r["max_positive"] for r in floor["maxima"] if r["label"] == 1)
    assert positives[0] <= floor["floor"] <= positives[-1]  # the 0.1-quantile of the positives
    threshold = run_job("calibrate_cam", tmp_path, {**base, "fit": "threshold", "sources": [
        {"kind": "images", "path": str(masked_chips)}]})  # fmt: skip
    sweep = [r["threshold"] for r in threshold["sweep"]]
    assert threshold["threshold"] in sweep and sweep == sorted(sweep)
    assert 0.1 <= threshold["threshold"] <= 0.95


def test_train_segmenter_run(classifier, chips, tmp_path):
    config = {
        "classifier_checkpoint": str(classifier),
        "branch": {"channels": 8, "n_stages": 2},
        "optim": {"batch_size": 4, "epochs_per_stage": 1},
        "data": {"train": [{"kind": "folder", "path": str(chips)}]},
        "train": {"progress": False},
    }
    out = tmp_path / "seg"
    res = run_job("train_segmenter", tmp_path, {"config": config, "out_dir": str(out)})
    assert res["final_checkpoint"] == str(out / "segmenter.pt")
    assert res["stage_checkpoints"] == [str(out / "stage_1.pt"), str(out / "stage_2.pt")]
    for p in (res["final_checkpoint"], *res["stage_checkpoints"]):
        assert Path(p).stat().st_size > 0, p
    assert [h["stage"] for h in res["last_epochs"]] == [1, 2]


def test_train_mask_head_run(classifier, masked_chips, tmp_path):
    config = {
        "classifier_checkpoint": str(classifier),
        "head": {"channels": 8},
        "optim": {"batch_size": 4, "epochs": 1},
        "data": {"train": [{"kind": "images", "path": str(masked_chips)}], "val_fraction": 0.4},
        "train": {"progress": False},
    }
    out = tmp_path / "mh"
    res = run_job("train_mask_head", tmp_path, {"config": config, "out_dir": str(out)})
    assert res["final_checkpoint"] == str(out / "mask_head.pt")
    assert (out / "mask_head.pt").stat().st_size > 0
    assert res["best_epoch"] == 1 and res["last_epoch"]["epoch"] == 1
    assert in_unit(res["last_epoch"]["val_iou"])


def test_evaluate_segmenter_run_on_the_builtin_pair(masked_chips, tmp_path):
    out = tmp_path / "ev"
    evaluation = {
        "classifier_checkpoint": "builtin",
        "segmenter_checkpoint": "builtin",
        "sets": [{"kind": "images", "path": str(masked_chips)}],
        "device": "cpu",
        "bootstrap_reps": 20,
        "overlays": 0,
    }
    res = run_job("evaluate_segmenter", tmp_path, {"evaluation": evaluation, "out_dir": str(out)})
    overall = {r["predictor"]: r for r in res["table"] if r["source"] == "overall"}
    assert list(overall) == ["plain", "stage1", "stage2", "whole-tile", "mean-fraction"]
    assert all(r["n_positive"] == 3 and in_unit(r["mean_iou"]) for r in overall.values())
    for name in ("table.md", "table.csv", "table.json", "report.md", "per_tile.csv"):
        assert (out / name).stat().st_size > 0, name


def test_segment_tiles_run_in_shards_then_resumes(tmp_path):
    store = build_store(tmp_path / "store")
    job = seg_job(store, Path("builtin"))  # plain CAM, every readable tile positive
    scale = {"shard_size_tiles": COLS}
    res = run_job("segment_tiles", tmp_path, job, scale)
    assert res["n_shards"] == ROWS and res["n_done_before"] == 0
    table = pd.read_parquet(res["table_path"])
    assert len(table) == N_TILES and table["error"].notna().sum() == 1
    assert res["n_positive"] == N_TILES - 1 == table["is_positive"].sum()
    assert (table["area_m2"][table["is_positive"]] > 0).all()
    assert len(list((store / "masks").rglob("*.png"))) == N_TILES - 1
    again = run_job("segment_tiles", tmp_path, job, scale)  # every tile is in the journal
    assert again["n_done_before"] == N_TILES
    pd.testing.assert_frame_equal(pd.read_parquet(again["table_path"]), table)


def test_map_region_run_on_the_builtin_pair(tmp_path):
    store = build_store(tmp_path / "store")
    job = {"store_dir": str(store), "device": "cpu", "out_dir": str(tmp_path / "maps")}
    res = run_job("map_region", tmp_path, job)
    assert res["download"] is None
    assert res["segmentation"]["n_errors"] == 1  # the unreadable tile is reported, not fatal
    gpkg = res["maps"]["paths"]["geopackage"]
    names = set(gpd.list_layers(gpkg)["name"])
    assert {"tiles", "panels", "systems", "tracts", "counties", "states"} <= names
    tiles = gpd.read_file(gpkg, layer="tiles")
    assert len(tiles) == N_TILES and tiles["prob"].notna().sum() == N_TILES - 1
    assert res["maps"]["counts"]["systems"] <= res["maps"]["counts"]["panels"]


def test_solarforest_run_trains_a_model(shared_data, tmp_path):
    out = tmp_path / "sf"
    params = {
        "features_path": str(shared_data / "tables/deepsolar_tract_va/deepsolar_tract_VA.csv"),
        "output_dir": str(out),
        "mode": "train",
        "model": {"n_estimators": 10, "n_jobs": 1, "pdp_grid_resolution": 5},
    }
    res = run_job("solarforest", tmp_path, params)
    assert res["mode"] == "train"
    assert Path(res["model"]).suffix == ".skops" and Path(res["model"]).stat().st_size > 0
    side = json.loads(Path(res["sidecar"]).read_text())
    assert side["n_train_tracts"] > 1000 and side["config"]["n_estimators"] == 10
    assert (out / "train_metrics.json").is_file()
