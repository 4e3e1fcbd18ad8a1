"""The job registry: every job resolves, has its options and a flow; run(job) needs no Prefect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from deepsolar.jobs.cli_options import OPTIONS
from deepsolar.jobs.registry import JOBS

REPO = Path(__file__).resolve().parents[2]


def test_every_job_resolves_to_a_model_a_run_options_and_a_flow():
    assert set(JOBS) <= set(OPTIONS)
    for name, spec in JOBS.items():
        model = spec.model_class()
        assert hasattr(model, "model_fields"), name
        assert callable(spec.run_function()), name
        assert (REPO / (spec.flow.replace(".", "/") + ".py")).is_file(), name
        assert spec.summary and spec.example.startswith(f"deepsolar {name}"), name


def _raster(path: Path) -> Path:
    """A 0.1 m/px RGB orthophoto in UTM 13N over Albuquerque (SYNTHETIC gradient pixels)."""
    yy, xx = np.mgrid[0:600, 0:600]
    img = np.stack([(xx % 256), (yy % 256), ((xx + yy) % 256)]).astype("uint8")
    with rasterio.open(
        path, "w", driver="GTiff", width=600, height=600, count=3, dtype="uint8",
        crs="EPSG:32613", transform=from_origin(350000.0, 3883000.0, 0.1, 0.1),
    ) as dst:  # fmt: skip
        dst.write(img)
    return path


def test_download_tiles_run_needs_no_prefect(tmp_path):
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:32613", "EPSG:4326", always_xy=True)
    w, s = t.transform(350010.0, 3882950.0)
    e, n = t.transform(350050.0, 3882990.0)
    job = {
        "region": {"bbox": [w, s, e, n]},
        "source": {"kind": "local", "path": str(_raster(tmp_path / "ortho.tif")), "name": "o"},
        "grid": {"zoom": 21, "tile_size_px": 320},
        "out_dir": str(tmp_path / "store"),
    }
    code = (
        "import json, sys\n"
        "from deepsolar.jobs.download_tiles import run\n"
        f"res = run(json.loads({json.dumps(json.dumps(job))}))\n"
        "print(json.dumps({'n_ok': res['n_ok'], 'n_failed': res['n_failed'],"
        " 'prefect': any(m == 'prefect' or m.startswith('prefect.') for m in sys.modules)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["n_ok"] > 0 and res["n_failed"] == 0
    assert res["prefect"] is False
    assert (tmp_path / "store" / "manifest.gpkg").is_file()
