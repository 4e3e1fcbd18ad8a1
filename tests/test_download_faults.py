"""Server faults that must never abort a run or record a wrong tile, against tests/tileserver.py
on 127.0.0.1 (issue 12, items 3-4). Tile images are the server's SYNTHETIC pattern."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from tileserver import (
    Fault,
    TileServer,
    corrupt_middle,
    encode,
    pattern_pixels,
    tile_pixels,
    tiles_around,
)

from deepsolar.core.errors import DownloadError
from deepsolar.geo.tiling import Tile, TileGrid
from deepsolar.imagery.download import (
    BadBody,
    DownloadConfig,
    HttpFetcher,
    decode_image,
    download_tiles,
)
from deepsolar.imagery.manifest import read_manifest
from deepsolar.imagery.sources import XYZSourceConfig

pytestmark = pytest.mark.network

LON, LAT = -77.0365, 38.8977
GRID = TileGrid(18, 256)
FAST = DownloadConfig(backoff_base_s=0.01, backoff_max_s=0.05, max_requests_per_s=None, timeout_s=5)


@pytest.fixture()
def server():
    with TileServer() as srv:
        yield srv


def _tiles(n_x: int = 4, n_y: int = 3, grid: TileGrid = GRID):
    return tiles_around(grid, LON, LAT, n_x, n_y)


_expected = tile_pixels


def _url(srv: TileServer, tile) -> str:
    return f"{srv.url}/tiles/{tile.zoom}/{tile.x}/{tile.y}.{srv.image_format}"


# --------------------------------------------------------------------------------------------
# Item 3: any error of one request is that tile's failure, retried and reported


@pytest.mark.parametrize("kind", ["gzip_broken", "redirect_loop"])
def test_one_bad_response_is_retried(server: TileServer, kind: str) -> None:
    # httpx follows 20 redirects: 25 loop hops end the first attempt with TooManyRedirects
    server.add_fault(Fault(kind, times=25 if kind == "redirect_loop" else 1))
    tile = _tiles(1, 1)[0]
    with HttpFetcher(FAST) as f:
        img = f.get_image(_url(server, tile), expected_size=(256, 256))
        assert f.stats.retries == 1
    assert np.array_equal(img, _expected(tile))


@pytest.mark.parametrize(
    "kind, reason", [("gzip_broken", "DecodingError"), ("redirect_loop", "TooManyRedirects")]
)
def test_a_tile_that_always_fails_is_reported_and_the_run_goes_on(
    server: TileServer, tmp_path: Path, kind: str, reason: str
) -> None:
    tiles = _tiles(4, 3)
    bad = tiles[5]
    server.add_fault(Fault(kind, times=None, path_regex=f"/{bad.x}/{bad.y}\\.png"))
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    out = tmp_path / "store"
    with pytest.raises(DownloadError) as e:
        download_tiles(tiles, src, out, FAST.model_copy(update={"max_retries": 2}), progress=False)
    s = e.value.summary
    assert (s.n_ok, s.n_failed) == (11, 1)  # every other tile was fetched
    assert "1 of 12 tiles failed" in str(e.value) and bad.id in str(e.value)
    row = read_manifest(out).set_index("tile_id").loc[bad.id]
    assert row.status == "failed" and reason in row.error and "3 attempts" in row.error


def _assert_cut_at_one_second(server: TileServer, tile: Tile) -> DownloadConfig:
    """With timeout_s 1 and one retry, fetching ``tile`` fails in two attempts of ~1 s each;
    returns that fetcher config."""
    cfg = FAST.model_copy(update={"timeout_s": 1.0, "max_retries": 1})
    t0 = time.monotonic()
    with HttpFetcher(cfg) as f, pytest.raises(DownloadError, match="within timeout_s=1 s"):
        f.get_image(_url(server, tile), expected_size=(256, 256))
    elapsed = time.monotonic() - t0
    assert 2 * 1.0 <= elapsed < 2 * 1.0 + 1.0, elapsed  # two attempts, each cut at 1 s
    return cfg


def test_a_trickling_body_is_cut_at_the_deadline(server: TileServer) -> None:
    server.add_fault(Fault("trickle", delay_s=0.05, times=None))  # a 256-px PNG takes minutes
    _assert_cut_at_one_second(server, _tiles(1, 1)[0])


def test_trickling_headers_are_cut_at_the_deadline(server: TileServer) -> None:
    # the status line and headers one byte every 0.2 s: ~17 s; each read is quick, so httpx's
    # per-read timeout alone would wait for all of them
    server.add_fault(Fault("trickle_headers", delay_s=0.2, times=None))
    tile = _tiles(1, 1)[0]
    cfg = _assert_cut_at_one_second(server, tile)
    server.clear_faults()
    with HttpFetcher(cfg) as f:  # the deadline does not outlive its request
        time.sleep(1.1)
        assert np.array_equal(
            f.get_image(_url(server, tile), expected_size=(256, 256)), _expected(tile)
        )


def test_oversized_image_is_refused_from_its_header(server: TileServer) -> None:
    huge = encode(np.zeros((8000, 8000, 3), np.uint8), "png")
    t0 = time.perf_counter()
    with pytest.raises(BadBody, match="8000x8000 px, expected 256x256"):
        decode_image(huge, (256, 256))
    with pytest.raises(BadBody, match="larger than any tile"):
        decode_image(huge)
    assert time.perf_counter() - t0 < 0.1  # decoding it would take ~0.3 s and 192 MB
    server.add_fault(Fault("huge", times=1))
    tile = _tiles(1, 1)[0]
    with HttpFetcher(FAST) as f:
        assert np.array_equal(
            f.get_image(_url(server, tile), expected_size=(256, 256)), _expected(tile)
        )
        assert f.stats.retries == 1
    # A body larger than max_body_mb is refused as it arrives.
    server.add_fault(Fault("huge", times=None))
    cfg = FAST.model_copy(update={"max_body_mb": 0.01, "max_retries": 0})
    with HttpFetcher(cfg) as f, pytest.raises(DownloadError, match="larger than max_body_mb"):
        f.get_image(_url(server, tile))


# --------------------------------------------------------------------------------------------
# Item 4: never record a wrong tile as ok


def test_corrupt_jpeg_data_with_valid_markers_is_a_failure() -> None:
    img = pattern_pixels(18, 1000, 2000, 256, 256)
    jpg = encode(img, "jpg")
    bad = corrupt_middle(jpg)
    assert bad[:2] == b"\xff\xd8" and bad[-2:] == b"\xff\xd9" and len(bad) == len(jpg)
    with pytest.raises(BadBody, match="JPEG data is corrupt"):
        decode_image(bad, (256, 256))
    png = encode(img, "png")
    with pytest.raises(BadBody, match="corrupt"):
        decode_image(corrupt_middle(png), (256, 256))
    # Of many random corruptions, libjpeg-turbo flags nearly all; the few it cannot see (JPEG has
    # no checksum) are measured here so a regression to a lax decoder shows.
    rng = np.random.default_rng(0)
    caught = 0
    for _ in range(40):
        b = bytearray(jpg)
        at = int(rng.integers(len(b) // 4, 3 * len(b) // 4))
        b[at : at + 50] = rng.integers(0, 255, 50, dtype=np.uint8).tobytes()
        try:
            decode_image(bytes(b), (256, 256))
        except BadBody:
            caught += 1
    assert caught >= 34, caught  # a lax decode (cv2 / Pillow) catches none of them


def test_corrupt_jpeg_tiles_fail_in_the_store(tmp_path: Path) -> None:
    with TileServer(image_format="jpg") as srv:
        tiles = _tiles(3, 2)
        bad = tiles[4]
        srv.add_fault(Fault("corrupt_middle", times=None, path_regex=f"/{bad.x}/{bad.y}\\.jpg"))
        src = XYZSourceConfig(url_template=srv.xyz_template).build()
        cfg = FAST.model_copy(update={"max_retries": 1})
        with pytest.raises(DownloadError, match="1 of 6 tiles failed"):
            download_tiles(tiles, src, tmp_path / "s", cfg, progress=False)
    gdf = read_manifest(tmp_path / "s").set_index("tile_id")
    assert gdf.loc[bad.id, "status"] == "failed"
    assert "JPEG data is corrupt" in gdf.loc[bad.id, "error"]
    assert (gdf.drop(index=bad.id)["status"] == "ok").all()


def test_part_covered_tiles_have_their_own_status(tmp_path: Path) -> None:
    grid = TileGrid(18, 320)  # each 320-px grid tile takes 2x2 or 3x3 server tiles
    tiles = _tiles(4, 3, grid)
    px0, py0 = tiles[0].pixel_origin()
    gap = (18, px0 // 256 + 1, py0 // 256 + 1)  # one server tile under the first grid tiles
    with TileServer(missing={gap}) as srv:
        src = XYZSourceConfig(url_template=srv.xyz_template, missing_tiles="outside").build()
        s = download_tiles(tiles, src, tmp_path / "s", FAST, progress=False)
    gdf = read_manifest(tmp_path / "s").set_index("tile_id")
    touching = {
        t.id
        for t in tiles
        if t.x * 320 < (gap[1] + 1) * 256
        and (t.x + 1) * 320 > gap[1] * 256
        and t.y * 320 < (gap[2] + 1) * 256
        and (t.y + 1) * 320 > gap[2] * 256
    }
    assert touching and len(touching) < len(tiles)
    assert set(gdf.index[gdf.status == "partial"]) == touching
    assert (gdf.drop(index=list(touching)).status == "ok").all()
    assert (s.n_partial, s.n_ok, s.n_failed) == (len(touching), len(tiles) - len(touching), 0)
    for tid in touching:  # the PNG is kept (black where the gap is), but flagged
        assert (tmp_path / "s" / gdf.loc[tid, "path"]).is_file()


def test_a_source_refusing_every_connection_stops_after_a_few_tiles(tmp_path: Path) -> None:
    with TileServer() as srv:
        template = srv.xyz_template
    # The server is stopped: every connection to its port is refused.
    tiles = _tiles(10, 10)
    src = XYZSourceConfig(url_template=template).build()
    cfg = FAST.model_copy(update={"max_retries": 2, "max_concurrency": 2})
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as e:
        download_tiles(tiles, src, tmp_path / "s", cfg, progress=False)
    assert time.monotonic() - t0 < 10
    msg = str(e.value)
    assert msg.startswith("cannot reach 127.0.0.1:") and "failed to connect" in msg
    assert "check the URL template's host and port" in msg
    gdf = read_manifest(tmp_path / "s")
    assert len(gdf) <= 6 and (gdf.status == "failed").all()  # stopped after a few of 100 tiles
