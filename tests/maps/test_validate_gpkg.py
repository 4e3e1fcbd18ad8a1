"""GDAL's own GeoPackage validator (validate_gpkg.py from GDAL's Python samples) passes on a run's
GeoPackage. Skipped where it is not installed, except in CI (CI=true)."""

from __future__ import annotations

import glob
import os
import subprocess

import pytest

from tests.maps.maps_helpers import SYSTEM_PYTHON, skip_or_fail, system_python_has

# Debian's python3-gdal ships it as a module and as an example script.
SCRIPT_CANDIDATES = [
    "/usr/share/doc/python3-gdal/examples/validate_gpkg.py",
    *glob.glob("/usr/lib/python3/dist-packages/osgeo_utils/samples/validate_gpkg.py"),
]


def validator_command() -> list[str]:
    if system_python_has("osgeo_utils.samples.validate_gpkg"):
        return [SYSTEM_PYTHON, "-m", "osgeo_utils.samples.validate_gpkg"]
    for script in SCRIPT_CANDIDATES:
        if os.path.isfile(script) and system_python_has("osgeo.gdal"):
            return [SYSTEM_PYTHON, script]
    skip_or_fail("GDAL's validate_gpkg.py is not available (python3-gdal is not installed)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def validate():
    cmd = validator_command()

    def run(path) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run(
            [*cmd, "--warning-as-error", str(path)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    return run


def test_run_geopackage_passes_gdal_validator(validate, run_gpkg):
    proc = validate(run_gpkg)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validator_really_checks(validate, run_gpkg, tmp_path):
    """The validator must fail a damaged copy, or passing it would prove nothing."""
    import shutil
    import sqlite3

    bad = tmp_path / "bad.gpkg"
    shutil.copy(run_gpkg, bad)
    with sqlite3.connect(bad) as con:
        con.execute("PRAGMA application_id = 0")
    proc = validate(bad)
    assert proc.returncode != 0
