"""Import every module of a mixer family package, so that adding a file is all it takes to register a mixer."""

from __future__ import annotations

import importlib
import pkgutil


def import_all(package_name: str, package_path) -> None:
    for info in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
