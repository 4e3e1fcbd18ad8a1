"""The deployments as users run them: a real ``prefect server start`` on 127.0.0.1 (free port,
temporary PREFECT_HOME), ``prefect work-pool create``, ``prefect deploy --all`` from prefect.yaml,
``prefect worker start``, then ``prefect deployment run ... --watch`` on a tiny local GeoTIFF;
and the server refusing an invalid parameter before any run exists. Every process started here
is stopped (its whole process group), also when a test fails."""

from __future__ import annotations

import json
import subprocess

import httpx
import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from deepsolar.imagery.manifest import read_manifest
from tests.orchestration.orch_helpers import (
    PREFECT,
    REPO,
    free_port,
    prefect_env,
    start,
    stop,
    wait_healthy,
)

POOL = "deepsolar"
FLOWS = {
    "download-tiles", "train-classifier", "evaluate-classifier", "train-segmenter",
    "evaluate-segmenter", "train-mask-head", "calibrate-cam", "synthetic-scene",
    "segment-tiles", "map-region", "solarforest", "demo",
}  # fmt: skip


def test_prefect_yaml_deploys_every_flow_on_the_process_pool() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deps = spec["deployments"]
    import importlib

    names = set()
    for d in deps:
        module, func = d["entrypoint"].split(":")
        fl = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), func)
        names.add(fl.name)
        assert d["work_pool"]["name"] == POOL and d["enforce_parameter_schema"] is True
    assert names == FLOWS
    (rescan,) = [d for d in deps if d.get("schedules")]
    assert rescan["entrypoint"].endswith("map_region_flow")
    assert rescan["schedules"][0]["cron"] == "0 3 1 * *"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A real Prefect server + process pool + every deployment + a worker; yields (env, api)."""
    tmp = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = prefect_env(tmp / "home", api)
    procs = []
    try:
        server = start(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            tmp / "server.log", env,
        )  # fmt: skip
        procs.append(server)
        wait_healthy(api, server, tmp / "server.log")
        for cmd in (
            [PREFECT, "work-pool", "create", POOL, "--type", "process"],
            [
                PREFECT,
                "--no-prompt",
                "deploy",
                "--all",
                "--prefect-file",
                str(REPO / "prefect.yaml"),
            ],
        ):
            res = subprocess.run(
                cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240
            )
            assert res.returncode == 0, f"{cmd}:\n{res.stdout}\n{res.stderr}"
        procs.append(
            start([PREFECT, "worker", "start", "--pool", POOL, "--type", "process"],
                  tmp / "worker.log", env)
        )  # fmt: skip
        yield env, api, tmp
    finally:
        for p in reversed(procs):
            stop(p)


def _raster(path) -> list[float]:
    """A 60 m x 60 m 0.1 m/px RGB GeoTIFF in UTM 13N (a SYNTHETIC gradient); returns a bbox in it."""
    from pyproj import Transformer

    yy, xx = np.mgrid[0:600, 0:600]
    img = np.stack([(xx % 256), (yy % 256), ((xx + yy) % 256)]).astype("uint8")
    with rasterio.open(
        path, "w", driver="GTiff", width=600, height=600, count=3, dtype="uint8",
        crs="EPSG:32613", transform=from_origin(350000.0, 3883000.0, 0.1, 0.1),
    ) as dst:  # fmt: skip
        dst.write(img)
    t = Transformer.from_crs("EPSG:32613", "EPSG:4326", always_xy=True)
    w, s = t.transform(350010.0, 3882950.0)
    e, n = t.transform(350050.0, 3882990.0)
    return [w, s, e, n]


def _run(env, deployment: str, params: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PREFECT, "deployment", "run", deployment, "--params", json.dumps(params), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _flow_runs(api: str) -> list[dict]:
    r = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=10)
    r.raise_for_status()
    return r.json()


@pytest.mark.slow
@pytest.mark.network
def test_deployment_run_round_trip(deployed, tmp_path) -> None:
    env, api, _ = deployed
    deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    assert {d["name"] for d in deployments} >= FLOWS | {"monthly-rescan"}
    (rescan,) = [d for d in deployments if d["name"] == "monthly-rescan"]
    (sched,) = rescan["schedules"]
    assert sched["schedule"]["cron"] == "0 3 1 * *" and sched["active"] is False
    assert rescan["parameters"]["job"]["store_dir"] == "out/demo/store"
    schema = next(d for d in deployments if d["name"] == "map-region")["parameter_openapi_schema"]
    assert {"job", "scale"} <= set(schema["properties"]) and "MapRegionJob" in schema["definitions"]

    bbox = _raster(tmp_path / "ortho.tif")
    out = tmp_path / "tiles"
    job = {
        "region": {"bbox": bbox},
        "source": {"kind": "local", "path": str(tmp_path / "ortho.tif"), "name": "ortho"},
        "grid": {"zoom": 21, "tile_size_px": 320},
        "out_dir": str(out),
    }
    res = _run(env, "download-tiles/download-tiles", {"job": job},
               "--watch", "--watch-interval", "1", "--watch-timeout", "240")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Completed" in res.stdout
    (run,) = [
        r for r in _flow_runs(api) if r["parameters"].get("job", {}).get("out_dir") == str(out)
    ]
    assert run["state_type"] == "COMPLETED"
    man = read_manifest(out / "manifest.gpkg")
    ok = man[man["status"] == "ok"]
    assert len(ok) > 0 and all((out / p).is_file() for p in ok["path"])


@pytest.mark.slow
@pytest.mark.network
def test_server_rejects_an_invalid_parameter_before_any_run(deployed, tmp_path) -> None:
    env, api, _ = deployed
    before = len(_flow_runs(api))
    job = {
        "region": {"bbox": [-106.65, 35.08, -106.64, 35.09]},
        "source": {"kind": "local", "path": str(tmp_path / "none.tif")},
        "grid": {"zoom": 99},  # the schema's maximum is 23
        "out_dir": str(tmp_path / "never"),
    }
    res = _run(env, "download-tiles/download-tiles", {"job": job})
    assert res.returncode != 0
    msg = " ".join((res.stdout + res.stderr).split())
    assert "Validation failed for field 'job.grid.zoom'" in msg and "maximum of 23" in msg
    assert len(_flow_runs(api)) == before, "no flow run may be created"
    assert not (tmp_path / "never").exists()
