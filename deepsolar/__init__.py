"""deepsolar: find solar panels in aerial imagery and build a solar deployment database.

A reproduction of DeepSolar (Yu et al., Joule 2018). The library lives here; Prefect flows that
wire it together live in the top-level ``flows`` package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A PEP 562 module ``__getattr__`` that imports a package's exports on first use.

    Each name of ``exports`` is imported from its submodule on first access and cached in the
    package, so the package's light modules (pydantic configs) import without torch.

    Args:
        package: the package's module name (``__name__`` of its ``__init__``).
        exports: exported name -> submodule (relative to ``package``) that defines it.

    Returns:
        The ``__getattr__`` to assign in the package's ``__init__``.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    return __getattr__
