"""Helpers the flavors share: recognising a library's types by module name, and importing it lazily."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from shipway.core.errors import MissingDependency


def from_module(module: str, prefix: str) -> bool:
    """Whether the dotted ``module`` is the package ``prefix`` or one of its submodules."""
    return module == prefix or module.startswith(prefix + ".")


def defined_in(model: Any, package: str) -> type | None:
    """The first class in ``model``'s MRO defined in ``package``, or None.

    Reads only ``__module__`` strings, so checking never imports the package.
    """
    for cls in type(model).__mro__:
        if from_module(getattr(cls, "__module__", "") or "", package):
            return cls
    return None


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise MissingDependency naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency.for_extra(extra, module, purpose) from exc


def version_of(module: ModuleType) -> str:
    """A module's ``__version__``, or "unknown" for one that does not say."""
    return str(getattr(module, "__version__", "unknown"))
