"""A real, headless QGIS (Debian's python3-qgis) opens every layer of a run's GeoPackage with its
default style applied and renders it. Skipped where /usr/bin/python3 cannot import qgis, except
in CI (CI=true), where .ci/install-qgis.sh installs it and a skip would hide a failure."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from deepsolar.maps.aggregate import DEFAULT_DENSITY_FIELD
from tests.maps.maps_helpers import SYSTEM_PYTHON, skip_or_fail, system_python_has

CHECK = Path(__file__).with_name("qgis_check.py")


@pytest.fixture(scope="module")
def qgis_report(run_gpkg, tmp_path_factory) -> dict:
    if not system_python_has("qgis.core"):
        skip_or_fail(f"{SYSTEM_PYTHON} cannot import qgis (python3-qgis is not installed)")
    png_dir = tmp_path_factory.mktemp("qgis_png")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(png_dir)}
    env.pop("PYTHONPATH", None)  # the venv's packages must not shadow the system's
    proc = subprocess.run(
        [SYSTEM_PYTHON, str(CHECK), str(run_gpkg), str(png_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, f"QGIS check crashed:\n{proc.stderr[-3000:]}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no report from QGIS:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    report = json.loads(lines[-1])
    report["png_dir"] = str(png_dir)
    return report


def test_qgis_opens_every_layer(qgis_report, run_layers):
    layers = qgis_report["layers"]
    assert set(layers) == set(run_layers)
    for name, info in layers.items():
        assert info["valid"], name
        assert info["features"] == len(run_layers[name]), name


def test_default_styles_are_applied(qgis_report, run_layers):
    layers = qgis_report["layers"]
    header = f"Panel density, scanned area (m²/sq mi)\nfield: {DEFAULT_DENSITY_FIELD}"
    for name in ("tracts", "counties", "states"):
        info = layers[name]
        assert info["renderer"] == "RuleRenderer", name
        assert info["aliases"][DEFAULT_DENSITY_FIELD] == "Panel density, scanned area (m²/sq mi)"
        # the legend QGIS shows starts with the field's name and unit
        assert info["legend"][0] == header, name
        # features per rule, as QGIS evaluates the filters: every unit lands in one rule
        unit = run_layers[name]
        rules = [r for r in info["rules"] if r["filter"]]
        assert sum(r["features"] for r in rules) == len(unit), name
        partial = next(r for r in rules if r["label"].startswith("partially scanned"))
        assert partial["features"] == int((unit["scan_status"] == "partial").sum()), name
        assert info["labels_enabled"] and '"scan_note"' in info["label_expression"]
        assert info["qgis_abstract"].startswith("SYNTHETIC: "), name  # gpkg_contents.description
    classes = [r for r in layers["tracts"]["rules"] if r["depth"] == 1]
    assert len(classes) == 5 and all(r["features"] > 0 for r in classes)
    assert (
        sum(r["features"] for r in classes)
        == run_layers["tracts"][DEFAULT_DENSITY_FIELD].notna().sum()
    )
    tiles = layers["tiles"]
    assert tiles["legend"][:3] == [
        "Tiles: classifier call [is_positive]",
        "classified positive (solar)",
        "classified negative",
    ]
    by_label = {r["label"]: r["features"] for r in tiles["rules"]}
    n_pos = int(run_layers["tiles"]["is_positive"].sum())
    assert by_label["classified positive (solar)"] == n_pos > 0
    assert by_label["classified negative"] == len(run_layers["tiles"]) - n_pos
    assert layers["scan_footprint"]["legend"] == ["scanned area (union of the scanned tiles)"]
    systems = layers["systems"]
    assert systems["renderer"] == "singleSymbol"
    assert systems["brush_none"] is True  # outlined
    assert systems["stroke_color"] == "#e31a1c"
    assert systems["aliases"]["area_m2"] == "Panel area (m²)"
    assert layers["panels"]["brush_none"] is False
    assert layers["tiles"]["aliases"]["tile_id"] == "Tile id"


def test_every_layer_renders_with_its_legend(qgis_report):
    for name, info in qgis_report["layers"].items():
        assert info["non_background_px"] > 50, name
        assert info["legend"], name
        # the print layout (map item + legend item) draws more than the bare map: the legend
        assert info["layout_non_background_px"] > info["non_background_px"], name
    assert qgis_report["layers"]["tracts"]["distinct_colours"] >= 5  # the colour ramp shows
    pngs = sorted(p.name for p in Path(qgis_report["png_dir"]).glob("qgis_*.png"))
    assert len(pngs) == len(qgis_report["layers"])
