"""LightGBM Boosters and scikit-learn-API models, saved in LightGBM's native text format.

The text format holds only the Booster, so a classifier's labels travel in the meta and the
loaded predictor turns probabilities back into labels the way ``LGBMClassifier.predict`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shipway.core.errors import InvalidInput
from shipway.registry.flavors._common import defined_in, require, version_of

__all__ = ["LIGHTGBM", "LightGBMFlavor"]

FILE = "model.txt"
PURPOSE = "Saving or loading a LightGBM model"


def _lightgbm() -> Any:
    return require("lightgbm", "lightgbm", PURPOSE)


class _LightGBMPredictor:
    """A loaded Booster that predicts like the object it was saved from."""

    def __init__(self, booster: Any, classes: list[Any] | None) -> None:
        self.booster = booster
        self.classes = None if classes is None else np.asarray(classes)

    def predict(self, frame: Any) -> Any:
        """Labels for a classifier, the Booster's raw predictions otherwise."""
        out = self.booster.predict(frame)
        if self.classes is None:
            return out
        # Mirror LGBMClassifier.predict: argmax over the class probabilities, with the binary
        # case widened to [1 - p, p] so ties (p == 0.5) go to the first class just the same.
        proba = np.column_stack((1.0 - out, out)) if out.ndim == 1 else out
        return self.classes[np.argmax(proba, axis=1)]


class LightGBMFlavor:
    """LightGBM models saved with ``Booster.save_model`` as text."""

    name = "lightgbm"
    format = "lightgbm-text"
    extra: str | None = "lightgbm"

    def handles(self, model: Any) -> bool:
        """Whether ``model`` is a LightGBM Booster or scikit-learn-API model."""
        if defined_in(model, "lightgbm") is None:
            return False
        # The type came from lightgbm, so it is already imported: the isinstance check is free.
        lgb = _lightgbm()
        return isinstance(model, lgb.Booster | lgb.LGBMModel)

    def save(self, model: Any, folder: Path) -> dict[str, Any]:
        """Write the model's Booster to ``folder/model.txt``; a classifier's labels go in the meta."""
        lgb = _lightgbm()
        classes: list[Any] | None = None
        if isinstance(model, lgb.Booster):
            booster, kind = model, "Booster"
        elif isinstance(model, lgb.LGBMModel):
            if not getattr(model, "__sklearn_is_fitted__", lambda: True)():
                raise InvalidInput(f"Cannot save an unfitted {type(model).__name__}: call fit() first.")
            booster, kind = model.booster_, type(model).__name__
            # With a custom objective LGBMClassifier.predict returns raw scores, not labels.
            if isinstance(model, lgb.LGBMClassifier) and not callable(model.objective):
                classes = np.asarray(model.classes_).tolist()
        else:
            raise InvalidInput(f"Cannot save {type(model).__qualname__} with the lightgbm flavor.")
        booster.save_model(str(folder / FILE))
        return {
            "format": self.format,
            "lightgbm_version": version_of(lgb),
            "class": kind,
            "classes": classes,
        }

    def load(self, folder: Path, meta: dict[str, Any], *, trust: bool = False) -> Any:
        """Load the Booster; predictions are labels when the saved model was a classifier."""
        lgb = _lightgbm()
        path = folder / FILE
        if not path.is_file():
            raise InvalidInput(f"No LightGBM model file at {path}: the model folder is incomplete.")
        classes = meta.get("classes")
        if classes is not None and not isinstance(classes, list):
            raise InvalidInput("The LightGBM model's meta has 'classes' that is not a list.")
        return _LightGBMPredictor(lgb.Booster(model_file=str(path)), classes)


LIGHTGBM = LightGBMFlavor()
