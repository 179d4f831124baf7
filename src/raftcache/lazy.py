"""Lazy re-exports: a package names what it re-exports, and each module loads on first use.

Rule: a package whose ``__init__`` re-exports names of heavier modules (the driver, the server,
the client) lists them in one table, name → module, and sets
``__getattr__ = lazy_exports(__name__, table)`` (PEP 562): importing the package imports none
of them, and the first access to a name imports its module. Type checkers read the same names
from an ``if TYPE_CHECKING:`` import beside the table. This module imports nothing of
raftcache, so every package, the top one included, may use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports[name]`` is imported and its ``name``
    returned; any other name raises ``AttributeError``, worded as for any module."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
