"""Finding the tool and resource modules: every module of a package, in name order."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType


def modules_of(package: str, path: Iterable[str]) -> tuple[ModuleType, ...]:
    """The package's modules (not its subpackages, nor names starting with `_`), imported, each of
    which must have a `register` function."""
    found = []
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if info.ispkg or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        if not callable(getattr(module, "register", None)):
            raise TypeError(f"{module.__name__} has no register() function")
        found.append(module)
    return tuple(found)
