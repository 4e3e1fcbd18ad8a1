"""The package's layering (docs/architecture.md) is a contract: lint-imports checks it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_dependencies_run_one_way():
    res = _lint()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_the_check_fails_on_an_upward_import(tmp_path):
    # the same checker with core placed above maps must report the imports of core by maps
    ini = tmp_path / "upside-down.ini"
    ini.write_text(
        "[importlinter]\nroot_package = deepsolar\n\n"
        "[importlinter:contract:upside-down]\nname = upside down\ntype = layers\n"
        "layers =\n    deepsolar.core\n    deepsolar.maps\n"
    )
    res = _lint("--config", str(ini))
    assert res.returncode != 0
    assert "deepsolar.maps" in res.stdout and "BROKEN" in res.stdout
