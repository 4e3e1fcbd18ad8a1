"""The SYNTHETIC demo scene: determinism, georeference, exact truth, realism constraints."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import rasterize
from shapely.geometry import Point, box
from sklearn.model_selection import cross_val_score
from sklearn.tree import DecisionTreeClassifier

from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.geo.tiling import (
    ORIGIN_SHIFT_M,
    TileGrid,
    ground_resolution_m_per_px,
    mercator_m_per_px,
)
from deepsolar.synthetic import (
    COMMERCIAL_AREA_RANGE_M2,
    EQUAL_AREA_CRS,
    IMAGE_NAME,
    LABELS_NAME,
    MASK_NAME,
    METADATA_NAME,
    RESIDENTIAL_AREA_RANGE_M2,
    TRUTH_NAME,
    Label,
    SceneResult,
    SyntheticSceneConfig,
    generate_scene,
    read_truth,
    scene_georeference,
)

# A small scene (125 m a side) with raised shares so that every kind of object shows up.
SMALL = dict(
    seed=3,
    width_px=2048,
    height_px=2048,
    superblock_m=100,
    commercial_share=0.5,
    residential_pv_share=0.7,
    dark_roof_share=0.35,
    skylight_share=0.5,
    occluding_tree_share=0.6,
    pool_share=0.4,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SceneResult:
    return generate_scene(SMALL, tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def small_arrays(small: SceneResult) -> dict[str, np.ndarray]:
    with rasterio.open(small.image_path) as src:
        img = np.moveaxis(src.read(), 0, 2)
    with rasterio.open(small.truth_mask_path) as src:
        mask = src.read(1)
    with rasterio.open(small.labels_path) as src:
        labels = src.read(1)
    return {"img": img, "mask": mask, "labels": labels}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _footprint_lonlat(res: SceneResult) -> shapely.Polygon:
    t = Transformer.from_crs(res.crs, "EPSG:4326", always_xy=True)
    left, bottom, right, top = res.bounds
    xs = np.linspace(left, right, 9)
    ys = np.linspace(bottom, top, 9)
    ring = [(x, bottom) for x in xs] + [(right, y) for y in ys] + [(x, top) for x in xs[::-1]]
    ring += [(left, y) for y in ys[::-1]]
    lon, lat = t.transform(*zip(*ring, strict=True))
    return shapely.Polygon(zip(lon, lat, strict=True))


def _albuquerque_tracts() -> gpd.GeoDataFrame:
    libpysal = pytest.importorskip("libpysal")
    gdf = gpd.read_file(libpysal.examples.get_path("10740.shp"))
    if gdf.crs is None:  # the Census 2000 shapefile ships without .prj: NAD83 lon/lat
        gdf = gdf.set_crs("EPSG:4269")
    return gdf.to_crs("EPSG:4326")


# ---------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    cfg = dict(seed=11, width_px=768, height_px=768, superblock_m=90)
    a = generate_scene(cfg, tmp_path / "a")
    b = generate_scene(cfg, tmp_path / "b")
    c = generate_scene({**cfg, "seed": 12}, tmp_path / "c")
    assert _sha(a.image_path) == _sha(b.image_path)
    assert _sha(a.truth_mask_path) == _sha(b.truth_mask_path)
    assert _sha(a.labels_path) == _sha(b.labels_path)
    ta, tb = read_truth(a.truth_path), read_truth(b.truth_path)
    assert ta.drop(columns="geometry").equals(tb.drop(columns="geometry"))
    assert all(ga.equals(gb) for ga, gb in zip(ta.geometry, tb.geometry, strict=True))
    assert _sha(a.image_path) != _sha(c.image_path)
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
    footprint = _footprint_lonlat(out).buffer(1e-7)
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


# ---------------------------------------------------------------------------------- truth


def test_truth_polygons_inside_valid_and_sized(small: SceneResult) -> None:
    panels = read_truth(small.truth_path)
    assert set(panels["kind"]) == {"residential", "commercial"}
    assert panels.crs.to_epsg() == 4326
    assert panels["synthetic"].all()
    assert panels["array_id"].is_unique
    footprint = _footprint_lonlat(small)
    assert all(g.is_valid and footprint.contains(g) for g in panels.geometry)
    # area_m2 is the EPSG:5070 area of the polygon
    assert np.allclose(panels["area_m2"], panels.to_crs(EQUAL_AREA_CRS).area, rtol=1e-9)
    res = panels[panels.kind == "residential"]["area_m2"]
    com = panels[panels.kind == "commercial"]["area_m2"]
    assert res.between(*RESIDENTIAL_AREA_RANGE_M2).all()
    assert com.between(*COMMERCIAL_AREA_RANGE_M2).all()
    assert panels["occluded_fraction"].between(0, 1).all()
    assert (panels["occluded_fraction"] > 0.02).any(), "some arrays are partly hidden by trees"
    # arrays do not overlap one another
    ea = panels.to_crs(EQUAL_AREA_CRS).geometry
    assert shapely.union_all(ea.values).area == pytest.approx(ea.area.sum(), rel=1e-9)


def test_mask_matches_polygons_minus_occluders(
    small: SceneResult, small_arrays: dict[str, np.ndarray]
) -> None:
    panels = read_truth(small.truth_path).to_crs(small.crs)
    mask = small_arrays["mask"].astype(bool)
    px_m2 = small.m_per_px**2
    covered = np.zeros_like(mask)
    for _, row in panels.iterrows():
        fp = rasterize(
            [row.geometry], out_shape=mask.shape, transform=small.transform, dtype=np.uint8
        ).astype(bool)
        covered |= fp
        area = row["area_m2"]
        assert fp.sum() * px_m2 == pytest.approx(area, rel=0.03, abs=0.3)
        visible = (mask & fp).sum() * px_m2
        assert visible == pytest.approx(area * (1 - row["occluded_fraction"]), rel=0.03, abs=0.3)
        assert visible == pytest.approx(row["visible_area_m2"], rel=0.03, abs=0.3)
    assert not (mask & ~covered).any(), "every PV pixel belongs to a truth polygon"
    assert (mask == (small_arrays["labels"] == Label.PV)).all()
    assert ((small_arrays["labels"] == Label.TREE) & covered).any(), "trees hide some panel pixels"


def test_lookalikes_present_and_inside(small: SceneResult) -> None:
    look = read_truth(small.truth_path, "lookalikes")
    assert len(look) == small.n_lookalikes > 0
    assert set(look["kind"]) <= {"dark_roof", "skylight", "car", "pool"}
    assert {"dark_roof", "skylight"} <= set(look["kind"])
    assert look["synthetic"].all()
    footprint = _footprint_lonlat(small).buffer(1e-7)
    assert all(footprint.contains(g) for g in look.geometry)


def test_colour_alone_does_not_separate_pv_from_lookalikes(
    small_arrays: dict[str, np.ndarray],
) -> None:
    img, labels = small_arrays["img"], small_arrays["labels"]
    pv = img[labels == Label.PV].astype(float)
    dark = img[np.isin(labels, [Label.DARK_ROOF, Label.SKYLIGHT])].astype(float)
    assert len(pv) > 1000 and len(dark) > 1000
    lo, hi = np.percentile(dark, 5, axis=0), np.percentile(dark, 95, axis=0)
    mean_pv = pv.mean(axis=0)
    assert ((mean_pv >= lo) & (mean_pv <= hi)).all(), (mean_pv, lo, hi)


def test_read_truth_errors(tmp_path: Path, small: SceneResult) -> None:
    with pytest.raises(InputDataError, match="not found"):
        read_truth(tmp_path / "missing.gpkg")
    with pytest.raises(InputDataError, match="missing"):
        read_truth(small.truth_path, "houses")  # type: ignore[arg-type]
    junk = tmp_path / "junk.gpkg"
    junk.write_text("not a geopackage")
    with pytest.raises(InputDataError):
        read_truth(junk)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"crs": "EPSG:4326"}, "crs"),
        ({"crs": "EPSG:999999"}, "crs"),
        ({"width_px": 10}, "width_px"),
        ({"colour": "red"}, "colour"),
        ({"residential_pv_share": 1.5}, "residential_pv_share"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        generate_scene(bad, tmp_path)
    assert not any(tmp_path.iterdir())


def test_out_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="output folder"):
        generate_scene({"width_px": 256, "height_px": 256}, f)


# ---------------------------------------------------------------------------------- default scene


def test_default_centre_inside_tracts_and_scene_spans_three() -> None:
    tracts = _albuquerque_tracts()
    cfg = SyntheticSceneConfig()
    centre = Point(cfg.center_lon, cfg.center_lat)
    assert tracts.geometry.contains(centre).sum() == 1
    transform, _ = scene_georeference(cfg)
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * cfg.width_px, top + transform.e * cfg.height_px
    scene = (
        gpd.GeoSeries([box(left, bottom, right, top)], crs=cfg.crs).to_crs(EQUAL_AREA_CRS).iloc[0]
    )
    overlap = tracts[tracts.to_crs(EQUAL_AREA_CRS).intersection(scene).area > 1.0]
    assert len(overlap) >= 3, overlap["STFID"].tolist()


@pytest.mark.slow
def test_default_scene(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    out = generate_scene(None, tmp_path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 120, f"default scene took {elapsed:.0f} s"
    assert (out.width_px, out.height_px) == (6400, 6400)
    panels = read_truth(out.truth_path)
    grid = TileGrid(21, 320)
    tiles = np.array([grid.count_tiles(g) for g in panels.geometry])
    assert (tiles >= 4).sum() >= 3, "several arrays span many 320 px tiles"
    assert (panels.kind == "residential").sum() >= 10 and (panels.kind == "commercial").sum() >= 3
    assert (panels["occluded_fraction"] > 0.02).sum() >= 3
    look = read_truth(out.truth_path, "lookalikes")
    assert set(look["kind"]) == {"dark_roof", "skylight", "car", "pool"}
    # the scene overlaps at least three built-in tracts
    tracts = _albuquerque_tracts()
    scene = gpd.GeoSeries([_footprint_lonlat(out)], crs="EPSG:4326").to_crs(EQUAL_AREA_CRS).iloc[0]
    assert (tracts.to_crs(EQUAL_AREA_CRS).intersection(scene).area > 1.0).sum() >= 3
    # a shallow colour rule (depth-3 tree on RGB) cannot separate PV from dark look-alikes
    with rasterio.open(out.image_path) as src:
        img = np.moveaxis(src.read(), 0, 2)
    with rasterio.open(out.labels_path) as src:
        labels = src.read(1)
    rng = np.random.default_rng(0)
    pv = img[labels == Label.PV]
    dark = img[np.isin(labels, [Label.DARK_ROOF, Label.SKYLIGHT])]
    n = 20000
    x = np.concatenate(
        [pv[rng.integers(0, len(pv), n)], dark[rng.integers(0, len(dark), n)]]
    ).astype(float)
    y = np.r_[np.ones(n), np.zeros(n)]
    acc = cross_val_score(
        DecisionTreeClassifier(max_depth=3), x, y, cv=3, scoring="balanced_accuracy"
    ).mean()
    assert acc < 0.85, f"colour alone separates PV from look-alikes too well ({acc:.2f})"
