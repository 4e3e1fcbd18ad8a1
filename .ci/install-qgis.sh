#!/usr/bin/env bash
# Install what the QGIS / GDAL GeoPackage tests need (tests/maps/test_qgis.py,
# tests/maps/test_validate_gpkg.py): Debian's headless QGIS Python bindings and GDAL's Python
# utilities, which ship validate_gpkg.py (osgeo_utils.samples.validate_gpkg).
# Idempotent: does nothing when /usr/bin/python3 can already import both.
# Debian/Ubuntu only; run as root (or with sudo available). About 100 MB with --no-install-recommends.
set -euo pipefail

SYS_PY=/usr/bin/python3
have() {
    QT_QPA_PLATFORM=offscreen "$SYS_PY" -c "import qgis.core, osgeo.gdal, osgeo_utils.samples.validate_gpkg" \
        >/dev/null 2>&1
}

if [ -x "$SYS_PY" ] && have; then
    echo "install-qgis: python3-qgis and python3-gdal already importable; nothing to do"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-qgis: apt-get not found; install python3-qgis, qgis-providers and python3-gdal" \
         "with your system's package manager" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-qgis: must run as root (or with sudo)" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
    python3-qgis qgis-providers gdal-bin python3-gdal

if have; then
    echo "install-qgis: ok ($(QT_QPA_PLATFORM=offscreen "$SYS_PY" -c 'from qgis.core import Qgis; print("QGIS", Qgis.QGIS_VERSION)' 2>/dev/null))"
else
    echo "install-qgis: installed, but $SYS_PY still cannot import qgis.core / osgeo" >&2
    exit 1
fi
