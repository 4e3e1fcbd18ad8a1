"""The one downloader and the resumable tile loop, against tests/fixtures/tileserver.py on 127.0.0.1.

Tile images are the server's SYNTHETIC pattern; rasters are SYNTHETIC files written here.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from deepsolar.core.errors import DownloadError, SourceError
from deepsolar.core.http import HttpFetcher
from deepsolar.geo.tiling import TileGrid
from deepsolar.imagery.download import _OutDirLock, download_tiles
from deepsolar.imagery.manifest import JOURNAL_NAME, MANIFEST_NAME, read_journal, read_manifest
from deepsolar.imagery.sources import LocalRasterSourceConfig, XYZSourceConfig
from tests.fixtures.downloads import FAST, GRID, LAT, LON
from tests.fixtures.downloads import block_tiles as _tiles
from tests.fixtures.downloads import tile_url as _url
from tests.fixtures.tileserver import Fault, TileServer
from tests.fixtures.tileserver import tile_pixels as _expected


def _check_store(out: Path, tiles) -> None:
    """Every tile exactly once in the manifest, ok, its PNG valid and equal to the pattern, its
    checksum right, and no temp file anywhere."""
    gdf = read_manifest(out)
    assert sorted(gdf["tile_id"]) == sorted(t.id for t in tiles)
    assert gdf["tile_id"].is_unique
    assert (gdf["status"] == "ok").all()
    by_id = {t.id: t for t in tiles}
    for row in gdf.itertuples():
        data = (out / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.checksum
        img = cv2.cvtColor(
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
        )
        assert np.array_equal(img, _expected(by_id[row.tile_id]))
    assert not [p for p in out.rglob("*") if p.name.endswith(".part") or ".tmp" in p.name]
    assert gdf.crs.to_epsg() == 4326
    t = by_id[gdf.iloc[0]["tile_id"]]
    assert gdf.iloc[0].geometry.equals_exact(t.footprint(), 1e-9)


# --------------------------------------------------------------------------------------------
# Body check and Retry-After


# --------------------------------------------------------------------------------------------
# Retries


# --------------------------------------------------------------------------------------------
# Politeness


@pytest.mark.network
def test_concurrency_is_bounded(server: TileServer, tmp_path: Path) -> None:
    server.add_fault(Fault("slow", delay_s=0.15, times=None))
    tiles = _tiles(4, 3)
    cfg = FAST.model_copy(update={"max_concurrency": 3})
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    t0 = time.monotonic()
    summary = download_tiles(tiles, src, tmp_path / "store", cfg, progress=False)
    elapsed = time.monotonic() - t0
    assert summary.n_ok == 12 and summary.requests == 12
    assert server.max_in_flight == 3  # bounded, and actually parallel
    assert elapsed >= 12 / 3 * 0.15 * 0.9


@pytest.mark.network
def test_disk_cache(server: TileServer, tmp_path: Path) -> None:
    tiles = _tiles(3, 2)
    cfg = FAST.model_copy(update={"cache_dir": tmp_path / "cache"})
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    download_tiles(tiles, src, tmp_path / "a", cfg, progress=False)
    assert server.n_requests == 6
    # A second store fed from the cache: no request at all.
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    s2 = download_tiles(tiles, src, tmp_path / "b", cfg, progress=False)
    assert server.n_requests == 6 and s2.cache_hits == 6
    _check_store(tmp_path / "b", tiles)
    # A damaged cache entry is dropped and fetched again, never served.
    entry = next((tmp_path / "cache").rglob("*.bin"))
    entry.write_bytes(entry.read_bytes()[:100])
    with HttpFetcher(cfg) as f:
        for t in tiles:
            f.get_image(_url(server, t), expected_size=(256, 256))
    assert server.n_requests == 7


# --------------------------------------------------------------------------------------------
# The tile loop: failures, resume, locking


@pytest.mark.network
def test_failed_tile_is_recorded_and_a_rerun_fixes_it(server: TileServer, tmp_path: Path) -> None:
    tiles = _tiles(4, 3)
    bad = tiles[5]
    server.add_fault(Fault("status", status=503, times=None, path_regex=f"/{bad.x}/{bad.y}\\.png"))
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    out = tmp_path / "store"
    cfg = FAST.model_copy(update={"max_retries": 2})
    with pytest.raises(DownloadError) as e:
        download_tiles(tiles, src, out, cfg, progress=False)
    msg = str(e.value)
    assert "1 of 12 tiles failed" in msg and bad.id in msg and "re-run" in msg and str(out) in msg
    s = e.value.summary
    assert (s.n_ok, s.n_failed, s.n_outside, s.n_tiles) == (11, 1, 0, 12)
    gdf = read_manifest(out / MANIFEST_NAME)
    row = gdf[gdf.tile_id == bad.id].iloc[0]
    assert row.status == "failed" and "HTTP 503" in row.error and "3 attempts" in row.error
    assert not (out / "tiles").joinpath(f"18-256/{bad.x}/{bad.y}.png").exists()
    # The server recovers; the re-run fetches only the failed tile.
    server.clear_faults()
    server.reset_counters()
    s = download_tiles(tiles, src, out, cfg, progress=False)
    assert (s.n_ok, s.n_skipped, s.n_fetched, s.requests) == (12, 11, 1, 1)
    _check_store(out, tiles)
    # raise_on_failure=False returns the summary instead.
    server.add_fault(Fault("status", status=404, times=None))
    s = download_tiles(
        _tiles(1, 1, TileGrid(17, 256)),
        XYZSourceConfig(url_template=server.xyz_template).build(),
        tmp_path / "other",
        cfg,
        progress=False,
        raise_on_failure=False,
    )
    assert s.n_failed == 1 and "HTTP 404" in s.failures[0][1]


@pytest.mark.network
def test_interrupted_download_resumes_without_loss_or_duplicates(
    server: TileServer, tmp_path: Path
) -> None:
    tiles = _tiles(6, 4)
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    out = tmp_path / "store"
    seen = []

    def stop_after_5(rec):
        seen.append(rec.tile_id)
        if len(seen) == 5:
            raise KeyboardInterrupt  # what Ctrl-C does mid-run

    cfg = FAST.model_copy(update={"max_concurrency": 4})
    with pytest.raises(KeyboardInterrupt):
        download_tiles(tiles, src, out, cfg, progress=False, on_tile=stop_after_5)
    journal = read_journal(out / JOURNAL_NAME)
    assert len(journal) == 5 and set(journal) == set(seen)
    assert len(read_manifest(out)) == 5  # the manifest of an interrupted run matches its journal
    first_requests = server.n_requests
    s = download_tiles(tiles, src, out, cfg, progress=False)
    assert s.n_ok == 24 and s.n_skipped == 5 and s.n_failed == 0
    # Only unfinished tiles were fetched again (tiles written while the interrupt was handled
    # are adopted from disk); at most the requests in flight at the interrupt were repeated.
    assert server.n_requests - first_requests == s.requests <= 24 - 5
    assert server.n_requests <= 24 + cfg.max_concurrency
    _check_store(out, tiles)
    # Journal lines: one per tile (nothing recorded twice).
    lines = (out / JOURNAL_NAME).read_text().splitlines()
    assert len(lines) == 24
    # A third run does nothing.
    server.reset_counters()
    s = download_tiles(tiles, src, out, cfg, progress=False)
    assert s.n_skipped == 24 and server.n_requests == 0


_KILLED_CHILD = textwrap.dedent(
    """
    import sys
    from deepsolar.core.http import DownloadConfig
    from deepsolar.imagery.download import download_tiles
    from deepsolar.imagery.sources import XYZSourceConfig
    from deepsolar.geo.tiling import TileGrid

    url, out = sys.argv[1], sys.argv[2]
    grid = TileGrid(18, 256)
    t0 = grid.tile_at(-77.0365, 38.8977)
    tiles = [grid.tile(t0.x + i, t0.y + j) for j in range(5) for i in range(8)]
    cfg = DownloadConfig(max_concurrency=3, max_requests_per_s=None, backoff_base_s=0.01)
    download_tiles(tiles, XYZSourceConfig(url_template=url).build(), out, cfg, progress=False)
    """
)


@pytest.mark.slow
@pytest.mark.network
def test_killed_process_resumes_without_loss_or_duplicates(
    server: TileServer, tmp_path: Path
) -> None:
    server.add_fault(Fault("slow", delay_s=0.1, times=None))
    out = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, server.xyz_template, str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    journal = out / JOURNAL_NAME
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.is_file() and len(journal.read_bytes().splitlines()) >= 6:
            break
        if proc.poll() is not None:
            pytest.fail(f"child exited early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no cleanup, no finally, no manifest
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = len(read_journal(journal))
    assert 6 <= done_before < 40
    server.clear_faults()
    grid = GRID
    t0 = grid.tile_at(LON, LAT)
    tiles = [grid.tile(t0.x + i, t0.y + j) for j in range(5) for i in range(8)]
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    s = download_tiles(tiles, src, out, FAST, progress=False)
    assert s.n_ok == 40 and s.n_skipped >= done_before and s.n_failed == 0
    _check_store(out, tiles)
    assert len(read_journal(journal)) == 40


@pytest.mark.network
def test_store_guards(server: TileServer, tmp_path: Path) -> None:
    tiles = _tiles(2, 2)
    out = tmp_path / "store"
    src = XYZSourceConfig(url_template=server.xyz_template, name="server-a").build()
    download_tiles(tiles, src, out, FAST, progress=False)
    # Another source into the same store is refused (tiles would silently mix).
    other = XYZSourceConfig(url_template=server.xyz_template, name="server-b").build()
    with pytest.raises(SourceError, match="server-a"):
        download_tiles(tiles, other, out, FAST, progress=False)
    # Two runs into one folder at once: the second is refused.
    with _OutDirLock(out), pytest.raises(SourceError, match="another download"):
        download_tiles(tiles, src, out, FAST, progress=False)
    # Lost journal (files kept) and a torn last line: the files are adopted, nothing refetched.
    (out / JOURNAL_NAME).unlink()
    (out / JOURNAL_NAME).write_text('{"tile_id": "18-256-1-')
    server.reset_counters()
    s = download_tiles(tiles, src, out, FAST, progress=False)
    assert s.n_ok == 4 and server.n_requests == 0
    _check_store(out, tiles)
    # Duplicate tiles in the input are fetched and recorded once.
    s = download_tiles(tiles + tiles, src, tmp_path / "dup", FAST, progress=False)
    assert s.n_tiles == 4 and len(read_manifest(tmp_path / "dup")) == 4


@pytest.mark.network
def test_coverage_marks_tiles_outside_without_requests(server: TileServer, tmp_path: Path) -> None:
    tiles = _tiles(4, 1)
    w, s, e, n = tiles[0].bounds_lonlat
    src = XYZSourceConfig(
        url_template=server.xyz_template, bounds_lonlat=(w + 1e-6, s + 1e-6, e - 1e-6, n - 1e-6)
    ).build()
    summary = download_tiles(tiles, src, tmp_path / "store", FAST, progress=False)
    assert (summary.n_ok, summary.n_outside) == (1, 3) and server.n_requests == 1
    gdf = read_manifest(tmp_path / "store")
    assert sorted(gdf.status) == ["ok", "outside", "outside", "outside"]
    assert gdf[gdf.status == "outside"].path.isna().all()


def test_local_source_goes_through_the_same_loop(tmp_path: Path) -> None:
    """A SYNTHETIC 0.1 m UTM raster: tiles inside are ok, tiles beyond it are 'outside'."""
    grid = TileGrid(21, 320)
    t0 = grid.tile_at(LON, LAT)
    left, bottom, right, top = t0.bounds_3857
    e, n = Transformer.from_crs("EPSG:3857", "EPSG:32618", always_xy=True).transform(left, top)
    path = tmp_path / "ortho.tif"
    rng = np.random.default_rng(1)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=400,
        height=400,
        count=3,
        dtype="uint8",
        crs="EPSG:32618",
        transform=from_origin(round(e), round(n), 0.1, 0.1),
    ) as d:
        d.write(rng.integers(30, 220, (3, 400, 400), dtype=np.uint8))
    src = LocalRasterSourceConfig(path=path, name="ortho").build()
    tiles = [grid.tile(t0.x + i, t0.y + j) for j in range(-1, 5) for i in range(-1, 5)]
    s = download_tiles(
        tiles,
        src,
        tmp_path / "store",
        FAST.model_copy(update={"max_concurrency": 2}),
        progress=False,
    )
    assert s.n_ok + s.n_outside == len(tiles) and s.n_ok >= 4 and s.n_outside >= 11
    assert s.requests == 0
    gdf = read_manifest(tmp_path / "store")
    assert set(gdf.source) == {"ortho"} and len(gdf) == len(tiles)
    for row in gdf[gdf.status == "ok"].itertuples():
        img = cv2.imread(str(tmp_path / "store" / row.path))
        assert img.shape == (320, 320, 3) and img.any()
    s2 = download_tiles(tiles, src, tmp_path / "store", FAST, progress=False)
    assert s2.n_skipped == len(tiles)


def test_manifest_rows_are_in_grid_order_whatever_the_completion_order(tmp_path) -> None:
    from deepsolar.geo.tiling import TileGrid
    from deepsolar.imagery.manifest import TileRecord, read_manifest, write_manifest

    grid = TileGrid(21, 320)
    base = grid.tile_at(-106.6, 35.08)
    tiles = [grid.tile(base.x + dx, base.y + dy) for dy in range(3) for dx in range(3)]
    shuffled = [tiles[i] for i in (4, 0, 8, 2, 6, 1, 7, 3, 5)]  # as threads might finish
    a = write_manifest(
        [TileRecord.for_tile(t, "s", "outside") for t in shuffled], tmp_path / "a.gpkg"
    )
    b = write_manifest([TileRecord.for_tile(t, "s", "outside") for t in tiles], tmp_path / "b.gpkg")
    ids_a, ids_b = list(read_manifest(a)["tile_id"]), list(read_manifest(b)["tile_id"])
    assert ids_a == ids_b == [t.id for t in tiles]
