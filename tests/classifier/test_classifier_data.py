"""Chip reading (greyscale, RGBA, palette, 16-bit, corrupt, tiny), sources, splits, scene labels."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from shapely.geometry import box
from torch.utils.data import DataLoader

from deepsolar.classifier.config import FolderSource, ManifestSource, SceneSource
from deepsolar.classifier.data import (
    Chip,
    ChipDataset,
    class_counts,
    labels_from_truth,
    load_source,
    pv_area_per_tile_m2,
    raise_batch_errors,
    read_chip,
    read_mask,
    stratified_split,
)
from deepsolar.core.errors import InputDataError
from deepsolar.geo.tiling import Tile


def _png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


# ---------------------------------------------------------------- reading


def test_greyscale_becomes_three_equal_channels(tmp_path):
    grey = np.arange(32 * 40, dtype=np.uint32).reshape(32, 40).astype(np.uint8)
    img = np.asarray(read_chip(_png(tmp_path / "g.png", grey)))
    assert img.shape == (32, 40, 3)
    assert (
        (img[..., 0] == grey).all() and (img[..., 1] == grey).all() and (img[..., 2] == grey).all()
    )


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 200, 30, 0  # fully transparent
    img = np.asarray(read_chip(_png(tmp_path / "a.png", rgba)))
    assert img.shape == (20, 20, 3)
    assert tuple(img[5, 5]) == (10, 200, 30)


def test_palette_and_greyscale_alpha(tmp_path):
    p = tmp_path / "p.png"
    Image.fromarray(np.full((20, 20, 3), (5, 6, 7), dtype=np.uint8)).convert("P").save(p)
    assert np.asarray(read_chip(p)).shape == (20, 20, 3)
    la = tmp_path / "la.png"
    Image.new("LA", (20, 20), (99, 0)).save(la)
    assert tuple(np.asarray(read_chip(la))[0, 0]) == (99, 99, 99)


def test_16_bit_is_rejected_naming_the_file(tmp_path):
    p = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(p)
    with pytest.raises(InputDataError) as err:
        read_chip(p)
    assert str(p) in str(err.value) and "8-bit" in str(err.value)


def test_corrupt_and_truncated_files_are_reported_with_their_path(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(InputDataError) as err:
        read_chip(bad)
    assert str(bad) in str(err.value) and "decode" in str(err.value)
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        full, quality=95
    )
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:600])
    with pytest.raises(InputDataError) as err:
        read_chip(cut)
    assert str(cut) in str(err.value)
    with pytest.raises(InputDataError, match="not found"):
        read_chip(tmp_path / "missing.png")


def test_too_small_is_rejected_and_odd_sizes_are_resized(tmp_path):
    with pytest.raises(InputDataError, match="smaller than 16"):
        read_chip(_png(tmp_path / "tiny.png", np.zeros((8, 30, 3), np.uint8)))
    odd = _png(tmp_path / "odd.png", np.zeros((37, 101, 3), np.uint8))
    ds = ChipDataset([Chip(odd, 1, "t")], 75)
    assert ds[0]["image"].shape == (3, 75, 75)


# ---------------------------------------------------------------- dataset


def test_rot90_only_rotates(tmp_path):
    arr = np.zeros((80, 80, 3), np.uint8)
    arr[:20, :40] = 255  # an asymmetric block
    chip = Chip(_png(tmp_path / "r.png", arr), 1, "t")
    plain = ChipDataset([chip], 80)[0]["image"]
    rotations = [torch.rot90(plain, k, dims=(1, 2)) for k in range(4)]
    torch.manual_seed(0)
    aug = ChipDataset([chip], 80, rot90=True)
    seen = set()
    for _ in range(24):
        x = aug[0]["image"]
        k = [i for i, r in enumerate(rotations) if torch.equal(r, x)]
        assert len(k) == 1
        seen.add(k[0])
    assert seen == {0, 1, 2, 3}


def test_bad_chip_in_a_batch_raises_one_clear_error(tmp_path):
    good = _png(tmp_path / "ok.png", np.zeros((30, 30, 3), np.uint8))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"nope")
    ds = ChipDataset([Chip(good, 0, "t"), Chip(bad, 1, "t")], 75)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    with pytest.raises(InputDataError) as err:
        raise_batch_errors(batch)
    assert str(bad) in str(err.value)


# ---------------------------------------------------------------- sources


def _folder(tmp_path, n_pos=3, n_neg=4):
    for sub, n in (("pos", n_pos), ("neg", n_neg)):
        for i in range(n):
            _png(tmp_path / "set" / sub / f"{i}.png", np.full((24, 24, 3), i * 10, np.uint8))
    (tmp_path / "set" / "pos" / "notes.txt").write_text("not an image")
    return tmp_path / "set"


def test_folder_source(tmp_path):
    root = _folder(tmp_path)
    chips = load_source(FolderSource(path=root))
    assert class_counts(chips) == {"positive": 3, "negative": 4}
    assert all(c.path.suffix == ".png" for c in chips)
    capped = load_source(FolderSource(path=root, max_per_class=2))
    assert class_counts(capped) == {"positive": 2, "negative": 2}
    (root / "neg").rename(root / "negatives")
    with pytest.raises(InputDataError, match="neg/"):
        load_source(FolderSource(path=root))
    custom = load_source(FolderSource(path=root, negative_dir="negatives"))
    assert class_counts(custom)["negative"] == 4


def test_manifest_source(tmp_path):
    for split, names in (("train", ["a.png", "b.png", "c.png"]), ("valid", ["d.png"])):
        for n in names:
            _png(tmp_path / split / "images" / n, np.zeros((24, 24, 3), np.uint8))
    pd.DataFrame(
        {
            "split": ["train", "train", "train", "valid"],
            "image": ["a.png", "b.png", "c.png", "d.png"],
            "n_solar_polygons": [0, 2, 1, 0],
        }
    ).to_csv(tmp_path / "manifest.csv", index=False)
    chips = load_source(ManifestSource(path=tmp_path / "manifest.csv", split="train"))
    assert [(c.path.name, c.label) for c in chips] == [("a.png", 0), ("b.png", 1), ("c.png", 1)]
    assert chips[0].source == f"{tmp_path.name}/train"
    with pytest.raises(InputDataError, match="split == 'test'"):
        load_source(ManifestSource(path=tmp_path / "manifest.csv", split="test"))
    (tmp_path / "train" / "images" / "b.png").unlink()
    with pytest.raises(InputDataError, match="do not exist"):
        load_source(ManifestSource(path=tmp_path / "manifest.csv", split="train"))


def test_shared_chip_manifest(shared_data):
    src = ManifestSource(path=shared_data / "pv_chips/skylight_roof/manifest.csv", split="train")
    chips = load_source(src)
    assert class_counts(chips) == {"positive": 82, "negative": 758}
    grey = ManifestSource(
        path="${DEEPSOLAR_SHARED_DATA}/pv_chips/solar_pv_gray/manifest.csv", split="valid"
    )
    chips = load_source(grey)
    img = np.asarray(read_chip(chips[0].path))
    assert img.shape[2] == 3


def test_stratified_split_is_seeded_and_keeps_class_shares():
    chips = [Chip(__import__("pathlib").Path(f"{i}.png"), int(i < 20), "s") for i in range(100)]
    tr1, va1 = stratified_split(chips, 0.2, seed=3)
    tr2, va2 = stratified_split(chips, 0.2, seed=3)
    _, va3 = stratified_split(chips, 0.2, seed=4)
    assert va1 == va2 and tr1 == tr2 and va1 != va3
    assert class_counts(va1) == {"positive": 4, "negative": 16}
    assert not set(c.path for c in tr1) & set(c.path for c in va1)
    with pytest.raises(InputDataError, match="stratified"):
        stratified_split(chips[:21], 0.2, seed=0)  # one negative only


# ---------------------------------------------------------------- synthetic-scene labels

X0, Y0 = -1_000_000.0, 1_500_000.0  # an EPSG:5070 (CONUS Albers) spot


def _b(x0, y0, x1, y1):
    return box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def _tiles_and_panels():
    tiles = gpd.GeoDataFrame(
        {"tile_id": ["A", "B", "C"]},
        geometry=[_b(0, 0, 20, 20), _b(20, 0, 40, 20), _b(40, 0, 60, 20)],
        crs="EPSG:5070",
    ).to_crs("EPSG:4326")
    panels = gpd.GeoDataFrame(
        geometry=[
            _b(2, 2, 4, 3),  # 2 m² in A
            _b(3, 2, 5, 3),  # overlaps the first: the union adds 1 m², not 2
            _b(18, 10, 22, 11),  # 4 m² across A|B: 2 + 2
            _b(22, 2, 23, 2.5),  # 0.5 m² in B
        ],
        crs="EPSG:5070",
    ).to_crs("EPSG:4326")
    return tiles, panels


def test_pv_area_and_labels_from_truth_by_hand():
    tiles, panels = _tiles_and_panels()
    area = pv_area_per_tile_m2(tiles, panels)
    assert area["A"] == pytest.approx(5.0, rel=1e-6)
    assert area["B"] == pytest.approx(2.5, rel=1e-6)
    assert area["C"] == 0.0
    assert labels_from_truth(tiles, panels).to_dict() == {"A": 1, "B": 1, "C": 0}
    assert labels_from_truth(tiles, panels, min_pv_area_m2=3.0).to_dict() == {
        "A": 1,
        "B": 0,
        "C": 0,
    }
    assert labels_from_truth(tiles, panels.iloc[:0]).to_dict() == {"A": 0, "B": 0, "C": 0}
    with pytest.raises(InputDataError, match="CRS"):
        labels_from_truth(tiles.set_crs(None, allow_override=True), panels)


def test_scene_source_reads_ok_tiles_with_truth_labels(tmp_path):
    tiles, panels = _tiles_and_panels()
    tiles["path"] = [f"tiles/{t}.png" for t in tiles["tile_id"]]
    tiles["status"] = ["ok", "ok", "failed"]
    for rel in tiles["path"][:2]:
        _png(tmp_path / rel, np.zeros((32, 32, 3), np.uint8))
    tiles.to_file(tmp_path / "manifest.gpkg", layer="tiles")
    panels["visible"] = [True, True, True, False]
    panels.to_file(tmp_path / "truth.gpkg", layer="panels")
    chips = load_source(
        SceneSource(
            path=tmp_path / "manifest.gpkg",
            truth_path=tmp_path / "truth.gpkg",
            truth_visible_column="visible",
            min_pv_area_m2=2.2,
        )
    )
    # C failed to download and is skipped; B keeps 2 m² of visible PV (< 2.2) -> negative.
    assert [(c.path.name, c.label) for c in chips] == [("A.png", 1), ("B.png", 0)]
    assert chips[0].path == tmp_path / "tiles" / "A.png"


def test_scene_source_masks_rasterise_truth_per_tile_and_are_cached(tmp_path):
    tile = Tile(21, 32, 3_420_680, 6_640_864)  # Albuquerque
    left, bottom, right, top = tile.bounds_3857
    mid_x, mid_y = (left + right) / 2, (bottom + top) / 2
    tiles = gpd.GeoDataFrame(
        {"tile_id": [tile.id], "path": ["t.png"], "status": ["ok"], "zoom": [21],
         "tile_size_px": [32], "x": [tile.x], "y": [tile.y]},
        geometry=[box(left, bottom, right, top)], crs="EPSG:3857",
    )  # fmt: skip
    _png(tmp_path / "t.png", np.zeros((32, 32, 3), np.uint8))
    tiles.to_file(tmp_path / "manifest.gpkg", layer="tiles")
    # PV on the tile's north-west quarter exactly
    panels = gpd.GeoDataFrame(geometry=[box(left, mid_y, mid_x, top)], crs="EPSG:3857")
    panels.to_file(tmp_path / "truth.gpkg", layer="panels")
    src = SceneSource(path=tmp_path / "manifest.gpkg", truth_path=tmp_path / "truth.gpkg",
                      min_pv_area_m2=0.1, masks=True)  # fmt: skip

    [chip] = load_source(src)
    assert chip.label == 1 and chip.mask is not None
    assert chip.mask.parent.parent == tmp_path / "truth-masks"
    m = read_mask(chip.mask)
    expected = np.zeros((32, 32), bool)
    expected[:16, :16] = True  # rows from the north, columns from the west
    assert np.array_equal(m, expected)

    written = chip.mask.stat().st_mtime_ns
    assert load_source(src)[0].mask.stat().st_mtime_ns == written  # reused, not rewritten
    panels.iloc[:0].to_file(tmp_path / "truth.gpkg", layer="panels")  # the truth changes
    [chip2] = load_source(src)
    assert chip2.mask != chip.mask and not read_mask(chip2.mask).any() and chip2.label == 0
    # without the option the chips carry no mask
    assert load_source(src.model_copy(update={"masks": False}))[0].mask is None
