"""Imagery sources: local raster warped onto the tile grid, XYZ assembly, Google Static Maps.

All rasters and tile images here are SYNTHETIC (written by the tests / rendered by
tests/fixtures/tileserver.py); no real imagery is used.
"""

from __future__ import annotations

import logging
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, DownloadError, InputDataError, SourceError
from deepsolar.core.http import DownloadConfig, HttpFetcher
from deepsolar.geo.tiling import TileGrid
from deepsolar.imagery.download import download_tiles
from deepsolar.imagery.manifest import JOURNAL_NAME, read_manifest
from deepsolar.imagery.sources import (
    GoogleStaticSourceConfig,
    LocalRasterSourceConfig,
    XYZSourceConfig,
    build_source,
    parse_source_config,
)
from tests.fixtures.tileserver import Fault, TileServer, pattern_pixels, tile_pixels

UTM18 = "EPSG:32618"
LON, LAT = -77.0365, 38.8977  # Washington, DC
FAST = DownloadConfig(backoff_base_s=0.01, backoff_max_s=0.05, max_requests_per_s=None, timeout_s=5)


@pytest.fixture()
def server():
    with TileServer() as srv:
        yield srv


# --------------------------------------------------------------------------------------------
# Local raster


def _to_utm():
    return Transformer.from_crs("EPSG:3857", UTM18, always_xy=True)


def _write_utm_raster(path: Path, tile, *, squares: dict[str, tuple[float, float]]) -> dict:
    """A SYNTHETIC 0.1 m UTM orthophoto: grey 100 with 2 m squares of pure colour at the given
    tile-relative positions (fractions of the tile). Returns the squares' UTM centres."""
    to_utm = _to_utm()
    left, bottom, right, top = tile.bounds_3857
    cx, cy = (left + right) / 2, (bottom + top) / 2
    e0, n0 = to_utm.transform(cx, cy)
    res = 0.1
    size = 600  # 60 m square around the tile centre (the tile is ~18 m wide at z21)
    ul_e, ul_n = round(e0 - size * res / 2), round(n0 + size * res / 2)
    data = np.full((3, size, size), 100, np.uint8)
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    centres = {}
    for name, (fx, fy) in squares.items():
        e, n = to_utm.transform(left + fx * (right - left), top - fy * (top - bottom))
        col, row = (e - ul_e) / res, (ul_n - n) / res
        c0, r0 = round(col - 10), round(row - 10)
        for b in range(3):
            data[b, r0 : r0 + 20, c0 : c0 + 20] = colours[name][b]
        centres[name] = (ul_e + (c0 + 10) * res, ul_n - (r0 + 10) * res)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs=UTM18,
        transform=from_origin(ul_e, ul_n, res, res),
        photometric="RGB",
    ) as dst:
        dst.write(data)
    return centres


def test_local_raster_pixels_land_where_expected(tmp_path: Path) -> None:
    grid = TileGrid(21, 320)
    tile = grid.tile_at(LON, LAT)
    squares = {"red": (0.25, 0.25), "green": (0.75, 0.3), "blue": (0.4, 0.75)}
    centres = _write_utm_raster(tmp_path / "ortho.tif", tile, squares=squares)
    src = LocalRasterSourceConfig(path=tmp_path / "ortho.tif").build()
    img = src.fetch_tile(tile, None)
    assert img is not None and img.shape == (320, 320, 3) and img.dtype == np.uint8
    to_utm = _to_utm()
    expected_px = (2.0 / tile.m_per_px) ** 2  # a 2 m square in ground pixels
    for ch, name in enumerate(("red", "green", "blue")):
        others = [c for c in range(3) if c != ch]
        hit = (img[..., ch] > 180) & (img[..., others[0]] < 60) & (img[..., others[1]] < 60)
        rows, cols = np.nonzero(hit)
        assert abs(hit.sum() - expected_px) < 0.15 * expected_px, name
        # Pixel centres -> EPSG:3857 with the tile's own transform -> UTM: must hit the square.
        mx, my = tile.transform_3857 * (cols.mean() + 0.5, rows.mean() + 0.5)
        e, n = to_utm.transform(mx, my)
        ce, cn = centres[name]
        assert abs(e - ce) < tile.m_per_px and abs(n - cn) < tile.m_per_px, (name, e - ce, n - cn)
    # The grey background is carried through unchanged.
    grey = (np.abs(img.astype(int) - 100).max(axis=-1) <= 1).mean()
    assert grey > 0.9


def test_local_raster_edges_coverage_and_threads(tmp_path: Path) -> None:
    grid = TileGrid(21, 320)
    tile = grid.tile_at(LON, LAT)
    _write_utm_raster(tmp_path / "ortho.tif", tile, squares={})
    src = LocalRasterSourceConfig(path=tmp_path / "ortho.tif").build()
    cov = src.coverage_lonlat()
    assert cov is not None and cov.contains(tile.footprint())
    assert src.name == "local:ortho.tif"
    # The raster is 60 m wide, about 3.2 tiles: 2 tiles away is partly covered, 5 away is not.
    partial = src.fetch_tile(grid.tile(tile.x + 2, tile.y), None)
    assert partial is not None
    inside = (partial == 100).all(axis=-1)
    outside = (partial == 0).all(axis=-1)
    assert inside.any() and outside.any() and (inside | outside).mean() > 0.98
    assert outside[:, -1].all() and inside[:, 0].all()  # covered on the west side only
    assert src.fetch_tile(grid.tile(tile.x + 5, tile.y), None) is None
    # Per-thread dataset handles: the same tiles from 4 threads equal the sequential result.
    tiles = [grid.tile(tile.x + dx, tile.y + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    seq = [src.fetch_tile(t, None) for t in tiles]
    with ThreadPoolExecutor(4) as pool:
        par = list(pool.map(lambda t: src.fetch_tile(t, None), tiles * 3))
    for i, a in enumerate(par):
        assert np.array_equal(a, seq[i % len(tiles)])
    src.close()


def test_local_raster_nodata_alpha_grey_and_16bit(tmp_path: Path) -> None:
    grid = TileGrid(21, 320)
    tile = grid.tile_at(LON, LAT)
    left, bottom, right, top = tile.bounds_3857
    e, n = _to_utm().transform((left + right) / 2, (bottom + top) / 2)
    profile = dict(
        driver="GTiff",
        width=400,
        height=400,
        crs=UTM18,
        transform=from_origin(round(e) - 20, round(n) + 20, 0.1, 0.1),
    )
    # Single band, nodata=0 on the whole raster: every tile is empty -> None.
    with rasterio.open(
        tmp_path / "empty.tif", "w", count=1, dtype="uint8", nodata=0, **profile
    ) as d:
        d.write(np.zeros((1, 400, 400), np.uint8))
    assert (
        LocalRasterSourceConfig(path=tmp_path / "empty.tif").build().fetch_tile(tile, None) is None
    )
    # Grey band -> three equal channels.
    with rasterio.open(tmp_path / "grey.tif", "w", count=1, dtype="uint8", **profile) as d:
        d.write(np.full((1, 400, 400), 77, np.uint8))
    img = LocalRasterSourceConfig(path=tmp_path / "grey.tif").build().fetch_tile(tile, None)
    assert img is not None and (img == 77).all()
    # RGBA: alpha 0 on the left half masks it out.
    rgba = np.full((4, 400, 400), 150, np.uint8)
    rgba[3] = 255
    rgba[3, :, :200] = 0
    with rasterio.open(
        tmp_path / "rgba.tif",
        "w",
        count=4,
        dtype="uint8",
        photometric="RGB",
        alpha="YES",
        **profile,
    ) as d:
        d.write(rgba)
    img = LocalRasterSourceConfig(path=tmp_path / "rgba.tif").build().fetch_tile(tile, None)
    assert img is not None
    assert (img[:, :100] == 0).all() and (img[:, -100:] == 150).all()
    # 16-bit needs value_range; with it, values are scaled to 0..255.
    with rasterio.open(tmp_path / "u16.tif", "w", count=3, dtype="uint16", **profile) as d:
        d.write(np.full((3, 400, 400), 2048, np.uint16))
    with pytest.raises(ConfigError, match="value_range"):
        LocalRasterSourceConfig(path=tmp_path / "u16.tif").build()
    img = (
        LocalRasterSourceConfig(path=tmp_path / "u16.tif", value_range=(0, 4096))
        .build()
        .fetch_tile(tile, None)
    )
    assert img is not None and (np.abs(img.astype(int) - 128) <= 1).all()
    with pytest.raises(ConfigError, match="band"):
        LocalRasterSourceConfig(path=tmp_path / "grey.tif", bands=[1, 2, 3]).build()


def test_local_raster_bad_inputs(tmp_path: Path) -> None:
    # No georeference at all.
    plain = tmp_path / "plain.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rasterio warns that the dataset is not georeferenced
        with rasterio.open(
            plain, "w", driver="GTiff", width=10, height=10, count=3, dtype="uint8"
        ) as d:
            d.write(np.zeros((3, 10, 10), np.uint8))
    with pytest.raises(InputDataError) as e:
        LocalRasterSourceConfig(path=plain).build()
    msg = str(e.value)
    assert "not georeferenced" in msg and str(plain) in msg and "gdal_translate -a_srs" in msg
    # A CRS but no geotransform.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(
            tmp_path / "crs_only.tif",
            "w",
            driver="GTiff",
            width=10,
            height=10,
            count=1,
            dtype="uint8",
            crs=UTM18,
        ) as d:
            d.write(np.zeros((1, 10, 10), np.uint8))
    with pytest.raises(InputDataError, match="no geotransform"):
        LocalRasterSourceConfig(path=tmp_path / "crs_only.tif").build()
    # Garbage bytes with a .tif name.
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(InputDataError) as e:
        LocalRasterSourceConfig(path=garbage).build()
    assert str(garbage) in str(e.value) and "gdalinfo" in str(e.value)
    with pytest.raises(InputDataError, match="not found"):
        LocalRasterSourceConfig(path=tmp_path / "missing.tif").build()


# --------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize(
    "template, message",
    [
        ("http://h/{x}/{y}.png", "missing {z}"),
        ("http://h/{z}/{x}.png", "missing {y}"),
        ("ftp://h/{z}/{x}/{y}.png", "http://, https:// or file://"),
        ("h/{z}/{x}/{y}.png", "http://, https:// or file://"),
        ("http://h/{z}/{x}/{y}/{foo}.png", "unknown placeholder"),
        ("http://h/{z/{x}/{y}.png", "braces"),
        ("http:///{z}/{x}/{y}.png", "no host"),
        ("http://h/{z}/{x}/{y}.png?k={key}", "api_key_env"),
    ],
)
def test_bad_url_template_is_a_config_error(template: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_source_config({"kind": "xyz", "url_template": template}, where="run.yaml")
    assert message in str(e.value) and "run.yaml" in str(e.value) and "url_template" in str(e.value)
    with pytest.raises(ConfigError):
        validate_config(XYZSourceConfig, {"url_template": template})


def test_source_union_and_url_building(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_source_config(
        {"kind": "xyz", "url_template": "https://{s}.t.example/{z}/{x}/{-y}.jpg"}
    )
    assert isinstance(cfg, XYZSourceConfig)
    src = cfg.build()
    assert src.name == "xyz:{s}.t.example"
    # TMS row order: {-y} = 2**z - 1 - y; subdomains rotate with x + y.
    assert src.server_tile_url(3, 1, 2) == "https://a.t.example/3/1/5.jpg"
    assert src.server_tile_url(3, 2, 2) == "https://b.t.example/3/2/5.jpg"
    with pytest.raises(ConfigError, match="kind"):
        parse_source_config({"kind": "wms", "url": "x"})
    with pytest.raises(ConfigError, match="apikey: unknown option") as e:
        parse_source_config({"kind": "google_static", "apikey": "inline-keys-are-refused"})
    assert "inline-keys-are-refused" not in str(e.value)  # a pasted key is not echoed
    monkeypatch.setenv("TILE_TOKEN", "tok-abcdef-123456")
    src = build_source(
        {
            "kind": "xyz",
            "url_template": "https://t.example/{z}/{x}/{y}.png?token={key}",
            "api_key_env": "TILE_TOKEN",
        }
    )
    assert src.server_tile_url(1, 0, 0).endswith("token=tok-abcdef-123456")
    assert src.server_tile_url(1, 0, 0, redacted=True).endswith("token=REDACTED")


# --------------------------------------------------------------------------------------------
# XYZ


_expected = tile_pixels


@pytest.mark.network
def test_xyz_320_tile_is_the_exact_crop(server: TileServer) -> None:
    grid = TileGrid(21, 320)
    t0 = grid.tile_at(LON, LAT)
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    with HttpFetcher(FAST) as fetcher:
        # Five neighbours: every offset of the 320-px window in the 256-px server tiles.
        for dx in range(5):
            tile = grid.tile(t0.x + dx, t0.y)
            assert np.array_equal(src.fetch_tile(tile, fetcher), _expected(tile)), tile.id
        n_first = server.n_requests
        src.fetch_tile(grid.tile(t0.x + 1, t0.y), fetcher)  # served from the in-memory tiles
        assert server.n_requests == n_first
    # 5 tiles of 320 px span 1600 px = 6.25 server tiles -> 7 columns x 2 rows fetched once each
    assert n_first <= 7 * 2
    # A 256-px grid at the same zoom is the server's tiling itself.
    tile = TileGrid(21, 256).tile_at(LON, LAT)
    with HttpFetcher(FAST) as fetcher:
        assert np.array_equal(src.fetch_tile(tile, fetcher), _expected(tile))


def _bilinear(zoom: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Independent bilinear sampling of the world pattern at fractional pixel-index positions."""
    x0, y0 = int(np.floor(xs.min())), int(np.floor(ys.min()))
    w, h = int(np.ceil(xs.max())) - x0 + 2, int(np.ceil(ys.max())) - y0 + 2
    world = pattern_pixels(zoom, x0, y0, w, h).astype(float)
    fx, fy = xs - x0, ys - y0
    ix, iy = np.floor(fx).astype(int), np.floor(fy).astype(int)
    wx, wy = (fx - ix)[None, :, None], (fy - iy)[:, None, None]
    a = world[iy][:, ix]
    b = world[iy][:, ix + 1]
    c = world[iy + 1][:, ix]
    d = world[iy + 1][:, ix + 1]
    return a * (1 - wx) * (1 - wy) + b * wx * (1 - wy) + c * (1 - wx) * wy + d * wx * wy


@pytest.mark.network
def test_xyz_overzoom_and_512px_server_tiles(server: TileServer) -> None:
    grid = TileGrid(20, 320)
    tile = grid.tile_at(LON, LAT)
    src = XYZSourceConfig(url_template=server.xyz_template, max_zoom=19).build()
    with HttpFetcher(FAST) as fetcher:
        img = src.fetch_tile(tile, fetcher).astype(float)
    # Output pixel centre j sits at zoom-19 pixel index (px0 + j + 0.5) / 2 - 0.5.
    px0, py0 = tile.pixel_origin()
    xs = (px0 + np.arange(320) + 0.5) / 2 - 0.5
    ys = (py0 + np.arange(320) + 0.5) / 2 - 0.5
    expected = _bilinear(19, xs, ys)
    assert np.abs(img - expected).max() <= 1.0
    assert all(r.path.startswith("/tiles/19/") for r in server.log)
    # 512-px server tiles (a zoom-z tile holds zoom z+1 pixels): each grid pixel is the mean of
    # a 2x2 block of zoom-22 pixels.
    with TileServer(tile_size_px=512) as srv512:
        src = XYZSourceConfig(url_template=srv512.xyz_template, server_tile_size_px=512).build()
        tile = TileGrid(21, 320).tile_at(LON, LAT)
        with HttpFetcher(FAST) as fetcher:
            img = src.fetch_tile(tile, fetcher).astype(float)
        px0, py0 = tile.pixel_origin()
        hi = pattern_pixels(22, 2 * px0, 2 * py0, 640, 640).astype(float)
        expected = hi.reshape(320, 2, 320, 2, 3).mean(axis=(1, 3))
        assert np.abs(img - expected).max() <= 1.0


@pytest.mark.network
def test_xyz_missing_tiles_and_file_scheme(server: TileServer, tmp_path: Path) -> None:
    grid = TileGrid(21, 320)
    tile = grid.tile_at(LON, LAT)
    px0, py0 = tile.pixel_origin()
    z, tx0, ty0 = 21, px0 // 256, py0 // 256
    server.missing = {(z, tx0, ty0)}
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    with HttpFetcher(FAST) as fetcher, pytest.raises(DownloadError) as e:
        src.fetch_tile(tile, fetcher)
    assert e.value.status == 404 and "HTTP 404" in str(e.value) and "missing_tiles" in str(e.value)
    assert len(server.requests_for(f"/{tx0}/{ty0}.png")) == 1  # a 404 is not retried
    # missing_tiles: outside -> the hole is black, the rest is the image.
    src = XYZSourceConfig(url_template=server.xyz_template, missing_tiles="outside").build()
    with HttpFetcher(FAST) as fetcher:
        img = src.fetch_tile(tile, fetcher)
        hole_w = (tx0 + 1) * 256 - px0
        hole_h = (ty0 + 1) * 256 - py0
        assert (img[:hole_h, :hole_w] == 0).all()
        assert np.array_equal(img[hole_h:, :], _expected(tile)[hole_h:, :])
        server.missing = {(z, x, y) for x in range(tx0, tx0 + 2) for y in range(ty0, ty0 + 2)}
        src2 = XYZSourceConfig(url_template=server.xyz_template, missing_tiles="outside").build()
        assert src2.fetch_tile(tile, fetcher) is None
    # file:// templates read a folder of tiles (an offline tile cache).
    for x in range(tx0, tx0 + 2):
        for y in range(ty0, ty0 + 2):
            p = tmp_path / "cache" / str(z) / str(x) / f"{y}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(
                str(p),
                cv2.cvtColor(pattern_pixels(z, x * 256, y * 256, 256, 256), cv2.COLOR_RGB2BGR),
            )
    src = XYZSourceConfig(url_template=f"file://{tmp_path}/cache/{{z}}/{{x}}/{{y}}.png").build()
    with HttpFetcher(FAST) as fetcher:
        assert np.array_equal(src.fetch_tile(tile, fetcher), _expected(tile))
        with pytest.raises(DownloadError, match="not found"):
            src.fetch_tile(grid.tile(tile.x + 3, tile.y), fetcher)


# --------------------------------------------------------------------------------------------
# Google Static Maps

KEY = "AIzaSy-TEST-secret-key-0123456789"


@pytest.mark.network
def test_google_static_tile_and_key_never_leaks(
    server: TileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_GMAPS_KEY", KEY)
    server.static_key = KEY
    src = GoogleStaticSourceConfig(
        api_key_env="TEST_GMAPS_KEY", base_url=server.static_base_url
    ).build()
    grid = TileGrid(21, 320)
    t0 = grid.tile_at(LON, LAT)
    tiles = [grid.tile(t0.x + dx, t0.y + dy) for dx in range(3) for dy in range(2)]
    bad = tiles[4]
    lon, lat = bad.center_lonlat
    # One tile fails for good; another is rate limited once; all other requests succeed.
    server.add_fault(
        Fault(
            "status", status=500, times=None, path_regex=re.escape(f"center={lat:.9f},{lon:.9f}&")
        )
    )
    server.add_fault(Fault("status", status=429, retry_after="0.2", times=1, per_path=False))
    cfg = FAST.model_copy(update={"max_retries": 2, "cache_dir": tmp_path / "cache"})
    with pytest.raises(DownloadError) as e:
        download_tiles(tiles, src, tmp_path / "store", cfg, progress=False)
    assert "1 of 6 tiles failed" in str(e.value)
    assert set(server.keys_seen) == {KEY}  # the key was sent as a query parameter
    gdf = read_manifest(tmp_path / "store")
    assert sorted(gdf["status"]) == ["failed"] + ["ok"] * 5
    ok = gdf[gdf.status == "ok"]
    for _, row in ok.iterrows():
        t = grid.tile_from_id(row.tile_id)
        got = cv2.cvtColor(cv2.imread(str(tmp_path / "store" / row.path)), cv2.COLOR_BGR2RGB)
        assert np.array_equal(got, _expected(t))
    failed = gdf[gdf.status == "failed"].iloc[0]
    assert (
        failed.tile_id == bad.id and "key=REDACTED" in failed.error and "HTTP 500" in failed.error
    )
    # The key is nowhere: errors, logs, journal, manifest, cache, tiles.
    assert KEY not in str(e.value) and KEY not in repr(e.value.summary)
    assert KEY not in caplog.text and "key=REDACTED" in caplog.text
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p
    assert (tmp_path / "store" / JOURNAL_NAME).is_file()


@pytest.mark.network
def test_google_static_config_errors(
    server: TileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError) as e:
        GoogleStaticSourceConfig(api_key_env="NO_SUCH_KEY_VAR").build()
    assert "NO_SUCH_KEY_VAR" in str(e.value) and "export" in str(e.value)
    monkeypatch.setenv("TEST_GMAPS_KEY", "wrong-key-98765")
    src = GoogleStaticSourceConfig(
        api_key_env="TEST_GMAPS_KEY", base_url=server.static_base_url
    ).build()
    # Tiles larger than the API serves are refused before any request.
    big = TileGrid(21, 700).tile_at(LON, LAT)
    with pytest.raises(SourceError, match="640"):
        download_tiles([big], src, tmp_path / "big", FAST, progress=False)
    assert server.n_requests == 0
    # A rejected key (403) stops the whole run at once instead of failing every tile.
    server.static_key = KEY
    grid = TileGrid(21, 320)
    t0 = grid.tile_at(LON, LAT)
    tiles = [grid.tile(t0.x + i, t0.y) for i in range(40)]
    cfg = FAST.model_copy(update={"max_concurrency": 2})
    with pytest.raises(DownloadError) as e:
        download_tiles(tiles, src, tmp_path / "store", cfg, progress=False)
    assert "HTTP 403" in str(e.value) and "API key" in str(e.value)
    assert "wrong-key-98765" not in str(e.value)
    assert server.n_requests <= 4
