"""The download-tiles flow under Prefect's test harness, on a real GeoTIFF written here."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, RegionError
from deepsolar.geo.tiling import TileGrid
from deepsolar.imagery.manifest import read_manifest
from deepsolar.jobs.download_tiles import DownloadTilesJob
from flows.download_tiles import download_tiles_flow, main

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture()
def utm_raster(tmp_path):
    """A 0.1 m/px RGB orthophoto in UTM 13N over Albuquerque (EPSG:32613), a gradient pattern."""
    path = tmp_path / "ortho.tif"
    h = w = 600
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx % 256), (yy % 256), ((xx + yy) % 256)]).astype("uint8")
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=3,
        dtype="uint8",
        crs="EPSG:32613",
        transform=from_origin(350000.0, 3883000.0, 0.1, 0.1),
    ) as dst:
        dst.write(img)
    return path


def _job(raster, out, **kw) -> DownloadTilesJob:
    # bbox inside the raster (UTM 13N 350000-350060 E, 3882940-3883000 N ~ -106.6434, 35.0838)
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:32613", "EPSG:4326", always_xy=True)
    w, s = t.transform(350010.0, 3882950.0)
    e, n = t.transform(350050.0, 3882990.0)
    data = {
        "region": {"bbox": [w, s, e, n]},
        "source": {"kind": "local", "path": str(raster), "name": "ortho"},
        "grid": {"zoom": 21, "tile_size_px": 320},
        "out_dir": str(out),
    }
    data.update(kw)
    return validate_config(DownloadTilesJob, data)


def test_flow_downloads_every_tile_then_resumes(utm_raster, tmp_path) -> None:
    job = _job(utm_raster, tmp_path / "out")
    expected = TileGrid(21, 320).count_tiles(box(*job.region.bbox))
    first = download_tiles_flow(job)
    assert first["n_tiles"] == expected and first["n_failed"] == 0
    assert first["n_ok"] + first["n_outside"] == expected and first["n_ok"] > 0
    man = read_manifest(first["manifest_path"])
    assert len(man) == expected and man["tile_id"].is_unique
    assert set(man["status"]) <= {"ok", "outside"}
    for rel in man.loc[man["status"] == "ok", "path"]:
        assert (tmp_path / "out" / rel).is_file()
    second = download_tiles_flow(job)
    assert second["n_skipped"] == expected and second["n_fetched"] == 0


def test_flow_rejects_bad_parameters_before_work(utm_raster, tmp_path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        _job(utm_raster, tmp_path / "o", region={"state": "MA", "county": "25017"})
    job = _job(utm_raster, tmp_path / "o", max_tiles=3)
    with pytest.raises(RegionError, match="above max_tiles=3"):
        download_tiles_flow(job)
    assert not (tmp_path / "o").exists(), "nothing may be written when the job is refused"


def test_region_outside_the_source_is_refused_before_work(utm_raster, tmp_path) -> None:
    job = _job(utm_raster, tmp_path / "o", region={"bbox": [-71.1, 42.3, -71.09, 42.31]})
    with pytest.raises(RegionError, match="does not overlap the imagery"):
        download_tiles_flow(job)
    assert not (tmp_path / "o").exists()


def test_cli_reports_one_line_errors(tmp_path, capsys) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("region: {state: Atlantis}\nsource: {kind: local, path: x.tif}\n")
    assert main(["--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "unknown state 'Atlantis'" in err and "Traceback" not in err
