"""Server faults that must never abort a run or record a wrong tile, against tests/fixtures/tileserver.py
on 127.0.0.1 (issue 12, items 3-4). Tile images are the server's SYNTHETIC pattern."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from deepsolar.core.errors import DownloadError
from deepsolar.geo.tiling import TileGrid
from deepsolar.imagery.download import download_tiles
from deepsolar.imagery.manifest import read_manifest
from deepsolar.imagery.sources import XYZSourceConfig
from tests.fixtures.downloads import FAST
from tests.fixtures.downloads import block_tiles as _tiles
from tests.fixtures.tileserver import (
    Fault,
    TileServer,
)

pytestmark = pytest.mark.network


# --------------------------------------------------------------------------------------------
# Item 3: any error of one request is that tile's failure, retried and reported


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


# --------------------------------------------------------------------------------------------
# Item 4: never record a wrong tile as ok


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
