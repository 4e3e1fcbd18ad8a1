"""SYNTHETIC scene files: determinism, georeference and tags, scene.json, reading the truth back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import rasterio
from pyproj import Transformer

from deepsolar.core.errors import InputDataError
from deepsolar.core.io import file_sha256
from deepsolar.geo.tiling import (
    ORIGIN_SHIFT_M,
    TileGrid,
    ground_resolution_m_per_px,
    mercator_m_per_px,
)
from deepsolar.synthetic import (
    IMAGE_NAME,
    LABELS_NAME,
    MASK_NAME,
    METADATA_NAME,
    TRUTH_NAME,
    Label,
    SceneResult,
    SyntheticSceneConfig,
    generate_scene,
    read_truth,
)
from tests.synthetic.synthetic_helpers import SMALL, footprint_lonlat

# ---------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    cfg = dict(seed=11, width_px=768, height_px=768, superblock_m=90)
    a = generate_scene(cfg, tmp_path / "a")
    b = generate_scene(cfg, tmp_path / "b")
    c = generate_scene({**cfg, "seed": 12}, tmp_path / "c")
    assert file_sha256(a.image_path) == file_sha256(b.image_path)
    assert file_sha256(a.truth_mask_path) == file_sha256(b.truth_mask_path)
    assert file_sha256(a.labels_path) == file_sha256(b.labels_path)
    ta, tb = read_truth(a.truth_path), read_truth(b.truth_path)
    assert ta.drop(columns="geometry").equals(tb.drop(columns="geometry"))
    assert all(ga.equals(gb) for ga, gb in zip(ta.geometry, tb.geometry, strict=True))
    assert file_sha256(a.image_path) != file_sha256(c.image_path)
    # nothing half-written is left behind
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        [IMAGE_NAME, TRUTH_NAME, MASK_NAME, LABELS_NAME, METADATA_NAME]
    )


# ---------------------------------------------------------------------------------- georeference


def test_cog_is_georeferenced_tagged_and_on_the_zoom21_grid(small: SceneResult) -> None:
    res = mercator_m_per_px(21)
    with rasterio.open(small.image_path) as src:
        assert src.crs.to_epsg() == 3857
        assert (src.width, src.height, src.count) == (2048, 2048, 3)
        assert src.dtypes == ("uint8",) * 3
        t = src.transform
        tags = src.tags()
        assert src.block_shapes[0] == (512, 512)
        assert src.overviews(1), "a COG carries overviews"
        assert src.compression is not None
        assert src.colorinterp[0].name == "red"
    assert tags["SYNTHETIC"] == "true" and tags["SYNTHETIC_SEED"] == "3"
    assert "SYNTHETIC" in tags["TIFFTAG_IMAGEDESCRIPTION"]
    assert t.a == pytest.approx(res, rel=1e-12) and t.e == pytest.approx(-res, rel=1e-12)
    assert t.b == 0 and t.d == 0
    # origin on a pixel boundary of the zoom-21 world image, hence on DeepSolar's 320 px tile grid
    col0, row0 = (t.c + ORIGIN_SHIFT_M) / res, (ORIGIN_SHIFT_M - t.f) / res
    assert abs(col0 - round(col0)) < 1e-6 and abs(row0 - round(row0)) < 1e-6
    cfg = SyntheticSceneConfig(**SMALL)
    tile = TileGrid(21, 320).tile_at(cfg.center_lon, cfg.center_lat)
    left, _, _, top = tile.bounds_3857
    assert ((left - t.c) / res) == pytest.approx(round((left - t.c) / res), abs=1e-6)
    assert ((t.f - top) / res) == pytest.approx(round((t.f - top) / res), abs=1e-6)
    # the configured centre is the raster centre (within a pixel)
    cx, cy = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(
        cfg.center_lon, cfg.center_lat
    )
    assert abs(t.c + 1024 * res - cx) <= res and abs(t.f - 1024 * res - cy) <= res
    assert small.m_per_px == pytest.approx(res * math.cos(math.radians(cfg.center_lat)))
    # mask and labels share the image grid
    for p in (small.truth_mask_path, small.labels_path):
        with rasterio.open(p) as src:
            assert src.transform == t and src.crs.to_epsg() == 3857 and src.shape == (2048, 2048)
            assert src.tags()["SYNTHETIC"] == "true"


def test_other_projected_crs_uses_ground_resolution(tmp_path: Path) -> None:
    cfg = dict(seed=2, width_px=768, height_px=768, crs="EPSG:32613", superblock_m=90)
    out = generate_scene(cfg, tmp_path)
    with rasterio.open(out.image_path) as src:
        assert src.crs.to_epsg() == 32613
        lat = SyntheticSceneConfig(**cfg).center_lat
        assert src.transform.a == pytest.approx(ground_resolution_m_per_px(lat, 21), rel=1e-12)
    assert out.m_per_px == pytest.approx(ground_resolution_m_per_px(lat, 21))
    footprint = footprint_lonlat(out).buffer(1e-7)
    for layer in ("panels", "lookalikes"):
        gdf = read_truth(out.truth_path, layer)
        assert all(footprint.contains(g) for g in gdf.geometry)


def test_scene_json_labels_synthetic(small: SceneResult) -> None:
    meta = json.loads(small.metadata_path.read_text())
    assert meta["label"] == "SYNTHETIC"
    assert meta["config"] == SyntheticSceneConfig(**SMALL).model_dump(mode="json")
    assert meta["arrays"]["residential"] + meta["arrays"]["commercial"] == small.n_arrays
    assert meta["label_classes"]["pv"] == Label.PV
    assert all((small.metadata_path.parent / name).is_file() for name in meta["files"].values())


def test_read_truth_errors(tmp_path: Path, small: SceneResult) -> None:
    with pytest.raises(InputDataError, match="not found"):
        read_truth(tmp_path / "missing.gpkg")
    with pytest.raises(InputDataError, match="missing"):
        read_truth(small.truth_path, "houses")  # type: ignore[arg-type]
    junk = tmp_path / "junk.gpkg"
    junk.write_text("not a geopackage")
    with pytest.raises(InputDataError):
        read_truth(junk)
