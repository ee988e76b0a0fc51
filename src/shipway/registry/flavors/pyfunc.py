"""Arbitrary Python models: any object with ``predict``, or a plain function, saved with cloudpickle.

This is the catch-all for models no native flavor covers. Unpickling runs code chosen by
whoever saved the model, so loading is refused unless the caller says it trusts the source.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from shipway.core.errors import InvalidInput, PermissionDenied
from shipway.registry.flavors._common import require, version_of

__all__ = ["PYFUNC", "PyfuncFlavor"]

FILE = "model.cloudpickle"
PURPOSE = "Saving or loading a Python-function model"


def _cloudpickle() -> Any:
    return require("cloudpickle", "pyfunc", PURPOSE)


class _FunctionPredictor:
    """A plain callable behind ``predict(frame)``."""

    def __init__(self, function: Any) -> None:
        self.function = function

    def predict(self, frame: Any) -> Any:
        """What the function returns for ``frame``."""
        return self.function(frame)


class PyfuncFlavor:
    """Objects with ``predict`` and plain callables, saved with cloudpickle."""

    name = "pyfunc"
    format = "cloudpickle"
    extra: str | None = "pyfunc"

    def handles(self, model: Any) -> bool:
        """Whether ``model`` is an instance with a ``predict`` method, or a callable that is not a class."""
        # A class is callable and may define predict, but calling it builds an object, not predictions.
        if isinstance(model, type):
            return False
        return callable(getattr(model, "predict", None)) or callable(model)

    def save(self, model: Any, folder: Path) -> dict[str, Any]:
        """Write ``model`` to ``folder/model.cloudpickle``."""
        if not self.handles(model):
            raise InvalidInput(
                f"Cannot save {type(model).__qualname__}: it has no predict method and is not callable."
            )
        cloudpickle = _cloudpickle()
        kind = "predict" if callable(getattr(model, "predict", None)) else "callable"
        with (folder / FILE).open("wb") as out:
            cloudpickle.dump(model, out)
        return {
            "format": self.format,
            "kind": kind,
            "cloudpickle_version": version_of(cloudpickle),
            # Unpickling needs a compatible interpreter; say which one wrote it.
            "python_version": ".".join(map(str, sys.version_info[:3])),
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        }

    def load(self, folder: Path, meta: dict[str, Any], *, trust: bool = False) -> Any:
        """Unpickle the model, which runs its code: refused unless ``trust`` is set."""
        path = folder / FILE
        if not trust:
            raise PermissionDenied(
                f"Refusing to load the Python-function model in {folder}: cloudpickle executes arbitrary "
                "code when loaded; pass trust=True only if you trust who registered it.",
                details={"format": self.format},
            )
        if not path.is_file():
            raise InvalidInput(f"No cloudpickle file at {path}: the model folder is incomplete.")
        cloudpickle = _cloudpickle()
        with path.open("rb") as src:
            model = cloudpickle.load(src)
        if meta.get("kind") == "callable" or not callable(getattr(model, "predict", None)):
            return _FunctionPredictor(model)
        return model


PYFUNC = PyfuncFlavor()
