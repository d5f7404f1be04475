"""Package namespaces whose names are imported when first used (PEP 562), so that importing a package
costs nothing until one of its names is asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: dict[str, Any], exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for the package whose globals are `package`: each name of `exports` comes from
    the module it maps to, imported on first access and then kept as a plain attribute."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        package[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(package) | set(exports))

    return __getattr__, __dir__
