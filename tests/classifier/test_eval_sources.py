"""Chip sources anyone can point at (images/ + masks/, pos/ + neg/, manifest.csv) and the
classifier report rows with the all-positive baseline. SYNTHETIC chips unless marked real."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from deepsolar.classifier.config import FolderSource, ImagesSource, ManifestSource
from deepsolar.classifier.data import load_source, read_mask, source_from_path
from deepsolar.classifier.metrics import ALL_POSITIVE, MODEL, report_rows
from deepsolar.core.errors import InputDataError


def write_synthetic_images_folder(root, images="images", masks="masks"):
    """SYNTHETIC: 3 chips with a 'panel' mask (JPEG image, PNG mask), 2 with an all-zero mask,
    1 without a mask file. Returns {file name: label}."""
    rng = np.random.default_rng(0)
    (root / images).mkdir(parents=True)
    (root / masks).mkdir(parents=True)
    truth = {}
    for i in range(6):
        a = rng.integers(90, 170, (40, 48, 3), dtype=np.uint8)
        m = np.zeros((40, 48), np.uint8)
        if i < 3:
            m[5 : 10 + 3 * i, 8:20] = 255 if i else 1  # any non-zero pixel counts
            a[m > 0] = 30
        Image.fromarray(a).save(root / images / f"synthetic_{i}.jpg")
        if i < 5:
            Image.fromarray(m).save(root / masks / f"synthetic_{i}.png")
        truth[f"synthetic_{i}.jpg"] = int(i < 3)
    return truth


def test_images_folder_labels_come_from_masks(tmp_path):
    truth = write_synthetic_images_folder(tmp_path / "mine")
    src = source_from_path(tmp_path / "mine")
    assert isinstance(src, ImagesSource) and src.display_name == "mine"
    chips = load_source(src)
    assert {c.path.name: c.label for c in chips} == truth
    masks = {c.path.name: c.mask for c in chips}
    assert masks["synthetic_5.jpg"] is None and masks["synthetic_0.jpg"].suffix == ".png"
    assert read_mask(masks["synthetic_0.jpg"]).sum() == 5 * 12  # the mask with 1s, not 255s


def test_images_folder_case_insensitive_names_and_split_like_display_name(tmp_path):
    write_synthetic_images_folder(tmp_path / "set" / "valid", images="Images", masks="Masks")
    src = source_from_path(tmp_path / "set" / "valid")
    assert isinstance(src, ImagesSource) and src.display_name == "set/valid"
    assert sum(c.label for c in load_source(src)) == 3


def test_images_folder_errors_name_the_problem(tmp_path):
    write_synthetic_images_folder(tmp_path / "a")
    strict = ImagesSource(path=tmp_path / "a", missing_mask_is_negative=False)
    with pytest.raises(InputDataError, match="no mask for synthetic_5.jpg"):
        load_source(strict)
    Image.new("L", (48, 40)).save(tmp_path / "a" / "masks" / "synthetic_0.bmp")
    with pytest.raises(InputDataError, match="two masks share the stem 'synthetic_0'"):
        load_source(ImagesSource(path=tmp_path / "a"))
    with pytest.raises(InputDataError, match="missing 'images/'"):
        load_source(ImagesSource(path=tmp_path))


def test_source_from_path_detects_every_kind(tmp_path, make_chips):
    folder = source_from_path(make_chips(tmp_path / "pn", 2))
    assert isinstance(folder, FolderSource) and len(load_source(folder)) == 4
    rows = pd.DataFrame(
        {"split": ["x", "y"], "image": ["pn/pos/0.png", "pn/neg/0.png"], "label": [1, 0]}
    )
    rows.to_csv(tmp_path / "manifest.csv", index=False)
    by_file = source_from_path(tmp_path / "manifest.csv", split="y")
    assert isinstance(by_file, ManifestSource) and by_file.split == "y"
    assert [c.label for c in load_source(by_file)] == [0]
    by_dir = source_from_path(tmp_path)  # no images/, no pos/neg: its manifest.csv
    assert isinstance(by_dir, ManifestSource) and len(load_source(by_dir)) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputDataError, match="cannot tell what kind"):
        source_from_path(tmp_path / "empty")
    with pytest.raises(InputDataError, match="source not found"):
        source_from_path(tmp_path / "nowhere")
    with pytest.raises(InputDataError, match="manifest CSV"):
        source_from_path(tmp_path / "pn" / "pos" / "0.png")


def test_real_split_folder_labels_agree_with_the_manifest(shared_data):
    # real: the shared skylight chips' valid split read as a plain images/ + masks/ folder
    root = shared_data / "pv_chips" / "skylight_roof"
    as_folder = load_source(source_from_path(root / "valid"))
    as_manifest = load_source(source_from_path(root / "manifest.csv", split="valid"))
    assert {c.path.name: c.label for c in as_folder} == {c.path.name: c.label for c in as_manifest}
    assert 0 < sum(c.label for c in as_folder) < len(as_folder)
    assert all(c.mask is not None and c.mask.is_file() for c in as_manifest)


def test_report_rows_model_beside_all_positive_baseline_by_hand():
    y = np.array([1] * 6 + [0] * 14)
    # positives 0.6-0.95 except one missed (0.2); negatives 0.05-0.45 except one called (0.9)
    p = np.r_[0.2, np.linspace(0.6, 0.95, 5), np.linspace(0.05, 0.45, 13), 0.9]
    model, base = report_rows("s", y, p, 0.5, reps=400, seed=0)
    assert (model["predictor"], base["predictor"]) == (MODEL, ALL_POSITIVE)
    assert (model["tp"], model["fp"], model["fn"]) == (5, 1, 1)
    assert model["precision"] == pytest.approx(5 / 6) and model["recall"] == pytest.approx(5 / 6)
    assert model["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert base["precision"] == pytest.approx(6 / 20) and base["recall"] == 1.0
    assert base["f1"] == pytest.approx(2 * 0.3 / 1.3) and base["roc_auc"] == 0.5
    assert base["recall_lo"] == base["recall_hi"] == 1.0
    for r in (model, base):
        for k in ("precision", "recall", "f1"):
            assert r[f"{k}_lo"] <= r[k] <= r[f"{k}_hi"]


def test_roc_auc_is_na_below_five_chips_of_a_class():
    y = np.array([1] * 4 + [0] * 30)
    p = np.linspace(0, 1, 34)
    model, base = report_rows("s", y, p, 0.5, reps=50)
    assert model["roc_auc"] is None and base["roc_auc"] is None
    model, _ = report_rows("s", np.r_[y, 1], np.r_[p, 0.9], 0.5, reps=50)
    assert model["roc_auc"] is not None
