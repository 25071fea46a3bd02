"""Lazy package exports: a package's public names imported from their modules on first use.

    __getattr__, __dir__ = lazy_exports(globals(), {"Name": "package.module", ...})

so importing the package loads none of those modules (``import doodl`` loads no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], public: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` (PEP 562) for ``public``: name -> module path."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name in public:
            return getattr(import_module(public[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*namespace, *public])

    return __getattr__, __dir__
