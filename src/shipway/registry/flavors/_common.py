"""Helpers the flavors share: recognising a library's types by module name, and importing it lazily."""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
from collections.abc import Iterator
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


@contextlib.contextmanager
def long_lived_imports() -> Iterator[None]:
    """Keep the cyclic garbage collector off the objects that the imports inside this block create.

    Importing an ML library creates objects that live as long as the process: scikit-learn
    with SciPy adds about 150,000 modules, classes and functions. The collector finds no garbage
    among them, but it still walks all of them several times during the import and in every
    full collection afterwards. At interpreter exit it runs several full collections, about
    0.1 s each on a small machine, so a cold load paid about 0.45 s just to exit. So the
    collector is paused during the import. If the import added modules, everything alive
    afterwards then goes to the collector's permanent generation (``gc.freeze``), which is
    what long-running servers do after start-up. This happens once per library and process.
    The price: objects that already existed and later become garbage only through a
    reference cycle are not reclaimed until ``gc.unfreeze()``. Objects freed by reference
    counting, which is most of them, are unaffected.
    """
    was_enabled = gc.isenabled()
    modules_before = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) > modules_before:
            gc.freeze()
        if was_enabled:
            gc.enable()


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise MissingDependency naming the extra that installs it."""
    found = sys.modules.get(module)
    if found is not None:
        return found
    try:
        with long_lived_imports():
            return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency.for_extra(extra, module, purpose) from exc


def version_of(module: ModuleType) -> str:
    """A module's ``__version__``, or "unknown" for one that does not say."""
    return str(getattr(module, "__version__", "unknown"))
