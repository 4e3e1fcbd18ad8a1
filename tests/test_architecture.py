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


MAX_FUNCTION_LINES = 80  # issue 13: a function a reader takes in at once (docstring not counted)


def _long_functions(root: Path) -> list[str]:
    import ast

    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            first = node.body[0]
            doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            n = node.end_lineno - node.lineno + 1  # signature and body ...
            n -= first.end_lineno - first.lineno + 1 if doc else 0  # ... without the docstring
            if n > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n})")
    return found


def test_no_library_function_is_longer_than_80_lines():
    assert _long_functions(REPO / "deepsolar") == []


def test_the_length_check_sees_a_long_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # + the def line
    (pkg / "m.py").write_text(f'def f():\n    """Doc."""\n{body}\n\ndef g():\n    return 1\n')
    assert [s.split()[1] for s in _long_functions(pkg)] == ["f"]
