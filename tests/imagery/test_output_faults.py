"""Issue 12, item 6: output-folder faults and impossible jobs are ordinary one-line errors.

Read-only and full disks are real file systems (a small tmpfs mounted here); those tests need
root (CI runs as root) and are skipped with the reason elsewhere. Tiles are the local test
server's SYNTHETIC pattern; rasters are SYNTHETIC files written here."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, InputDataError, OutputError, RegionError
from deepsolar.core.http import DownloadConfig
from deepsolar.geo.region import Region, RegionConfig
from deepsolar.geo.tiling import TileGrid
from deepsolar.imagery.download import download_tiles
from deepsolar.imagery.manifest import MANIFEST_NAME, read_manifest
from deepsolar.imagery.sources import LocalRasterSourceConfig, XYZSourceConfig
from deepsolar.jobs.download_tiles import DownloadTilesJob, plan_tiles
from tests.fixtures.tileserver import TileServer

LON, LAT = -77.0365, 38.8977
GRID = TileGrid(18, 256)
FAST = DownloadConfig(backoff_base_s=0.01, backoff_max_s=0.05, max_requests_per_s=None, timeout_s=5)


def _tiles(n_x: int, n_y: int):
    t0 = GRID.tile_at(LON, LAT)
    return [GRID.tile(t0.x + i, t0.y + j) for j in range(n_y) for i in range(n_x)]


@contextlib.contextmanager
def _tmpfs(where: Path, *opts: str):
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            ",".join(opts),
            f"deepsolar-test-{uuid.uuid4().hex[:6]}",
            str(where),
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()[:200]}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture()
def server():
    with TileServer() as srv:
        yield srv


def test_output_path_is_a_file(server: TileServer, tmp_path: Path) -> None:
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    (tmp_path / "f").write_text("not a folder")
    with pytest.raises(OutputError, match="is a file, not a folder") as e:
        download_tiles(_tiles(1, 1), src, tmp_path / "f", FAST, progress=False)
    assert "What to do: choose another out_dir" in str(e.value)
    with pytest.raises(OutputError, match="a file is in the way") as e:
        download_tiles(_tiles(1, 1), src, tmp_path / "f" / "store", FAST, progress=False)
    assert server.n_requests == 0


@pytest.mark.network
def test_read_only_folder(server: TileServer, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "ro", "ro", "size=1m") as ro:
        src = XYZSourceConfig(url_template=server.xyz_template).build()
        with pytest.raises(OutputError, match="Read-only file system") as e:
            download_tiles(_tiles(1, 1), src, ro / "store", FAST, progress=False)
        assert "What to do: choose an out_dir you can write to" in str(e.value)
    assert server.n_requests == 0


@pytest.mark.network
def test_full_disk_is_named_and_a_rerun_on_space_finishes(
    server: TileServer, tmp_path: Path
) -> None:
    tiles = _tiles(8, 6)  # 48 tiles of ~33 KB: 1.6 MB, on a 640 KB disk
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    with _tmpfs(tmp_path / "small", "size=640k") as small:
        out = small / "store"
        with pytest.raises(OutputError) as e:
            download_tiles(tiles, src, out, FAST, progress=False)
        msg = str(e.value)
        assert "no space left" in msg and "free disk space" in msg and "gpkg_contents" not in msg
        # Free the space by moving the store to a big disk: the re-run keeps what was written.
        kept = sorted(p.relative_to(out) for p in out.rglob("*.png"))
        assert kept
        big = tmp_path / "big"
        subprocess.run(["cp", "-a", str(out), str(big)], check=True)
    s = download_tiles(tiles, src, big, FAST, progress=False)
    assert s.n_ok == 48 and s.n_skipped >= 1
    assert len(read_manifest(big)) == 48


@pytest.mark.network
def test_stale_manifest_temp_files_are_removed(server: TileServer, tmp_path: Path) -> None:
    out = tmp_path / "store"
    src = XYZSourceConfig(url_template=server.xyz_template).build()
    download_tiles(_tiles(2, 1), src, out, FAST, progress=False)
    stale = [out / ".manifest.k3j2h1.tmp.gpkg", out / ".manifest.k3j2h1.tmp.gpkg-journal"]
    for p in stale:
        p.write_bytes(b"half a manifest")
    download_tiles(_tiles(2, 1), src, out, FAST, progress=False)
    assert not any(p.exists() for p in stale)
    assert (out / MANIFEST_NAME).is_file()


def _cog(path: Path) -> Path:
    data = np.random.default_rng(0).integers(0, 255, (3, 2048, 2048), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=2048,
        height=2048,
        count=3,
        dtype="uint8",
        crs="EPSG:3857",
        transform=from_origin(-8575000.0, 4705000.0, 0.3, 0.3),
    ) as dst:
        dst.write(data)
    return path


def test_truncated_geotiff_is_refused_before_any_tile(tmp_path: Path) -> None:
    full = _cog(tmp_path / "ortho.tif")
    LocalRasterSourceConfig(path=full).build()  # the whole file is fine
    cut = tmp_path / "cut.tif"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with rasterio.open(cut) as src:  # the index is at the start: GDAL opens it happily
        assert src.width == 2048
    with pytest.raises(InputDataError, match="truncated") as e:
        LocalRasterSourceConfig(path=cut).build()
    assert "gdalinfo -checksum" in str(e.value)


def test_bbox_beyond_the_mercator_grid_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"beyond latitude \+/-85.05"):
        validate_config(RegionConfig, {"bbox": [0, 85.06, 1, 86]})
    # A geometry from elsewhere (a boundary file) gets the same answer from the grid.
    with pytest.raises(RegionError, match="where the Web-Mercator tile grid ends"):
        TileGrid(21, 320).count_tiles(box(0, 85.1, 1, 89))


def test_the_whole_world_at_zoom_23_is_refused_in_under_a_second() -> None:
    world = Region("bbox (-180, -85, 180, 85)", box(-180, -85, 180, 85))
    t0 = time.perf_counter()
    with pytest.raises(RegionError, match="needs more than 1,000,000 tiles") as e:
        plan_tiles(world, TileGrid(23, 320), 1_000_000)
    assert time.perf_counter() - t0 < 1.0
    assert len(str(e.value)) < 400
    # A long thin region (small area, many rows) stops counting past the limit too.
    strip = Region("strip", box(-100.0, 20.0, -99.9999, 60.0))
    t0 = time.perf_counter()
    with pytest.raises(RegionError, match="above max_tiles=1,000"):
        plan_tiles(strip, TileGrid(23, 320), 1000)
    assert time.perf_counter() - t0 < 1.0
    # Below the limit the count is exact.
    small = box(-77.04, 38.89, -77.035, 38.895)
    grid = TileGrid(21, 320)
    assert plan_tiles(Region("s", small), grid, 10**6) == sum(
        1 for _ in grid.tiles_for_geometry(small)
    )
    # The job model accepts the world (the count is the refusal, not the parser).
    validate_config(
        DownloadTilesJob,
        {"region": {"bbox": [-180, -85, 180, 85]}, "source": {"kind": "local", "path": "x.tif"}},
    )
