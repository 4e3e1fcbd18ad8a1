"""Helpers of the orchestration tests: a tile store of SYNTHETIC 80-px chips in several tile rows
(so the segment work splits into shards), the segment job, output comparison, and starting /
stopping the real processes (each in its own process group, so a stop ends its children too)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from PIL import Image

from deepsolar.geo.tiling import TileGrid
from deepsolar.imagery.manifest import TileRecord, tile_relpath, write_manifest

INPUT_PX = 139  # Mixed_7c is 3x3 here, so the plain CAM has a shape (1x1 at 75 px)
ROWS, COLS = 4, 6  # 24 tiles


def synthetic_chip(rng: np.random.Generator, positive: bool, size: int = 80) -> np.ndarray:
    a = rng.integers(90, 170, (size, size, 3), dtype=np.uint8)
    if positive:  # a dark "panel" rectangle
        a[size // 4 : size // 2, size // 5 : size // 2] = 25
    return a


def build_store(root: Path) -> Path:
    """ROWS x COLS zoom-21 80-px SYNTHETIC tiles (one unreadable) + manifest.gpkg in ``root``."""
    grid = TileGrid(21, 80)
    base = grid.tile_at(-106.65, 35.08)
    rng = np.random.default_rng(2)
    records = []
    for j in range(ROWS):
        for i in range(COLS):
            tile = grid.tile(base.x + i, base.y + j)
            rel = tile_relpath(tile)
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if (i, j) == (1, 2):
                p.write_bytes(b"not a png")
            else:
                Image.fromarray(synthetic_chip(rng, (i + j) % 2 == 0)).save(p)
            records.append(TileRecord.for_tile(tile, "synthetic", "ok", path=rel, checksum="x"))
    write_manifest(records, root / "manifest.gpkg")
    return root


def seg_job(store: Path, classifier: Path) -> dict:
    """Plain CAM (no segmenter to train), every readable tile positive so every tile has a mask;
    one torch thread so every worker computes bit-identical numbers."""
    return {
        "manifest": str(store / "manifest.gpkg"),
        "classifier_checkpoint": str(classifier),
        "cam": {"method": "plain", "classifier_threshold": 1e-6},
        "batch_size": 2,
        "device": "cpu",
        "num_threads": 1,
    }


def store_outputs(store: Path) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """The segmentation table (store path in error messages replaced by ``<store>``) and every
    mask's bytes, for comparing two runs in two copies of a store."""
    table = pd.read_parquet(store / "segmentation.parquet")
    table["error"] = table["error"].str.replace(str(store), "<store>", regex=False)
    masks = {
        p.relative_to(store).as_posix(): p.read_bytes() for p in (store / "masks").rglob("*.png")
    }
    return table, masks


def assert_same_outputs(a: Path, b: Path) -> None:
    ta, ma = store_outputs(a)
    tb, mb = store_outputs(b)
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    assert ma.keys() == mb.keys() and len(ma) > 0
    assert all(ma[k] == mb[k] for k in ma), "mask PNGs differ"


def journal_records(store: Path) -> list[dict]:
    out = []
    for line in (store / "segmentation.journal.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn line from a killed run
    return out


REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], log: Path, env: dict[str, str], cwd: Path = REPO) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc._log_fh = fh  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_s``."""
    try:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # the leader may be gone while children of its group still run
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=grace_s)
    finally:
        proc._log_fh.close()  # type: ignore[attr-defined]


def wait_healthy(api_url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {timeout_s} s:\n{log.read_text()}")


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """This environment with a private PREFECT_HOME (profiles, SQLite database, local results)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        PREFECT_CLI_COLORS="false",
        PREFECT_CLI_WRAP_LINES="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
        PREFECT_LOGGING_LEVEL="INFO",
        OMP_NUM_THREADS="1",  # the CI machine has 2 cores
        PYTHONUNBUFFERED="1",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env
