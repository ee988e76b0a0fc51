"""scikit-learn estimators and pipelines, persisted with skops instead of pickle.

skops stores an object tree as JSON plus NumPy arrays and rebuilds only the types it is told
to trust. Loading lists the types the file needs beyond skops' own defaults and trusts them
only when every one matches an allow-list of type-name prefixes; anything else (a function
from the training script, a class from a third-party package) is refused by name.
"""

from __future__ import annotations

import sys
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
            sklearn.utils.all_estimators = lambda *args, **kwargs: []  # type: ignore[assignment]
            try:
                require("skops.io", "sklearn", "Saving or loading a scikit-learn model")
            finally:
                sklearn.utils.all_estimators = real
    return require("skops.io", "sklearn", "Saving or loading a scikit-learn model")


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
