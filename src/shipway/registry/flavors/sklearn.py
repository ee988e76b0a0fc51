"""scikit-learn estimators and pipelines, persisted with skops instead of pickle.

skops stores an object tree as JSON plus NumPy arrays and rebuilds only the types it is told
to trust. Loading lists the types the file needs beyond skops' own defaults and trusts them
only when every one matches an allow-list of type-name prefixes; anything else (a function
from the training script, a class from a third-party package) is refused by name.
"""

from __future__ import annotations

import functools
import sys
import types
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shipway.core.errors import InvalidInput, PermissionDenied
from shipway.registry.flavors._common import defined_in, long_lived_imports, require, version_of

__all__ = ["DEFAULT_TRUSTED_PREFIXES", "SKLEARN", "SklearnFlavor"]

FILE = "model.skops"
DEFAULT_TRUSTED_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.", "scipy.sparse.", "builtins.")
# Builtins that run code, touch files or reach into objects: a "builtins." prefix must not
# let a FunctionTransformer(func=eval) through.
DENIED_BUILTINS = frozenset(
    {
        "builtins.__import__",
        "builtins.breakpoint",
        "builtins.compile",
        "builtins.delattr",
        "builtins.eval",
        "builtins.exec",
        "builtins.getattr",
        "builtins.globals",
        "builtins.input",
        "builtins.locals",
        "builtins.open",
        "builtins.setattr",
        "builtins.vars",
    }
)


def _skops_io() -> Any:
    require("sklearn", "sklearn", "Saving or loading a scikit-learn model")
    if "skops.io" not in sys.modules:
        # On import, skops pre-trusts every public scikit-learn estimator by walking all of
        # scikit-learn through all_estimators(), which imports every submodule (and PyTorch,
        # when installed) and costs one to two seconds of every cold load. Shipway never relies
        # on that default: load() computes the trusted list itself from the allow-list below.
        # So skops is imported with an empty estimator list, which only makes its own default
        # stricter for anyone else in this process.
        with long_lived_imports():
            import sklearn.utils

            real = sklearn.utils.all_estimators
            sklearn.utils.all_estimators = _no_estimators  # type: ignore[assignment]
            try:
                require("skops.io", "sklearn", "Saving or loading a scikit-learn model")
            finally:
                sklearn.utils.all_estimators = real
                _restore_whichmodule()
    return require("skops.io", "sklearn", "Saving or loading a scikit-learn model")


def _no_estimators(*args: Any, **kwargs: Any) -> list[Any]:
    # skops.io._trusted_types calls all_estimators() at import, after loading skops.io._utils and
    # before it names SciPy's ufuncs (its next default-trusted list). Those ufuncs have no
    # __module__, so skops finds each one's module by getattr on every loaded module in turn:
    # ~230 ufuncs x ~1,100 modules, 0.25-0.4 s of every cold load. _whichmodule gives the
    # same answers faster; it is swapped in only for the rest of this import.
    utils = sys.modules.get("skops.io._utils")
    original = getattr(utils, "whichmodule", None)
    if original is not None and not hasattr(original, "__wrapped__"):
        fast = functools.partial(_whichmodule, original)
        fast.__wrapped__ = original  # type: ignore[attr-defined]
        utils.whichmodule = fast  # type: ignore[union-attr]
    return []


def _restore_whichmodule() -> None:
    utils = sys.modules.get("skops.io._utils")
    swapped = getattr(utils, "whichmodule", None)
    if swapped is not None and hasattr(swapped, "__wrapped__"):
        utils.whichmodule = swapped.__wrapped__  # type: ignore[union-attr]


def _whichmodule(original: Any, obj: Any, name: str) -> str:
    """skops' whichmodule, answering the same: the first loaded module whose attribute ``name``
    is ``obj``. A plain module without a module-level ``__getattr__`` answers that from its
    ``__dict__``, which skips raising and catching an AttributeError for each of them."""
    module_name = getattr(obj, "__module__", None)
    if module_name is not None or "." in name or hasattr(types.ModuleType, name):
        return original(obj, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for module_name, module in sys.modules.copy().items():
            if module_name in ("__main__", "__mp_main__") or module is None:
                continue
            if type(module) is types.ModuleType and "__getattr__" not in module.__dict__:
                found = module.__dict__.get(name)
            else:
                try:
                    found = getattr(module, name, None)
                except (AttributeError, ImportError):
                    continue
            if found is obj:
                return module_name
    return "__main__"


class SklearnFlavor:
    """scikit-learn estimators and pipelines saved with skops."""

    name = "sklearn"
    format = "skops"
    extra: str | None = "sklearn"

    def __init__(self, trusted_prefixes: Iterable[str] = ()) -> None:
        # Callers that ship their own estimator classes add their package's prefix here.
        self.trusted_prefixes = DEFAULT_TRUSTED_PREFIXES + tuple(trusted_prefixes)

    def handles(self, model: Any) -> bool:
        """Whether ``model`` is a scikit-learn object that can predict."""
        return defined_in(model, "sklearn") is not None and hasattr(model, "predict")

    def save(self, model: Any, folder: Path) -> dict[str, Any]:
        """Write ``model`` to ``folder/model.skops``."""
        sio = _skops_io()
        import sklearn
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(model)
        except NotFittedError:
            raise InvalidInput(
                f"This {type(model).__name__} has not been fitted; call fit() before registering it."
            ) from None
        sio.dump(model, folder / FILE)
        return {
            "format": self.format,
            "sklearn_version": version_of(sklearn),
            "skops_version": version_of(require("skops", "sklearn", "Saving a scikit-learn model")),
            "estimator_class": f"{type(model).__module__}.{type(model).__qualname__}",
        }

    def untrusted_types(self, path: Path) -> list[str]:
        """Types in the skops file at ``path`` that skops' defaults do not cover."""
        return list(_skops_io().get_untrusted_types(file=path))

    def refused_types(self, types: Iterable[str]) -> list[str]:
        """The subset of ``types`` outside this flavor's allow-list."""
        return sorted(t for t in types if t in DENIED_BUILTINS or not t.startswith(self.trusted_prefixes))

    def load(self, folder: Path, meta: dict[str, Any], *, trust: bool = False) -> Any:
        """Load the estimator, refusing types outside the allow-list unless ``trust`` is set."""
        sio = _skops_io()
        path = folder / FILE
        if not path.is_file():
            raise InvalidInput(f"No skops file at {path}: the model folder is incomplete.")
        needed = self.untrusted_types(path)
        refused = self.refused_types(needed)
        if refused and not trust:
            raise PermissionDenied(
                f"Refusing to load the scikit-learn model in {path}: it needs types outside the "
                f"allow-list ({', '.join(self.trusted_prefixes)}): {', '.join(refused)}. "
                "Loading them can run their code; pass trust=True only if you trust who registered it.",
                details={"untrusted_types": refused},
            )
        # skops still rebuilds the object tree itself: trusting types never unpickles anything.
        return sio.load(path, trusted=needed)


SKLEARN = SklearnFlavor()
