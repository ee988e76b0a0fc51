"""XGBoost Boosters and scikit-learn-API models, saved in XGBoost's native UBJSON format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipway.core.errors import InvalidInput
from shipway.registry.flavors._common import defined_in, require, version_of

__all__ = ["XGBOOST", "XGBoostFlavor"]

FILE = "model.ubj"
# The classes a saved model is loaded back into: a name read from meta must be one of these,
# never an arbitrary attribute of the xgboost module.
CLASSES = ("Booster", "XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")


def _xgboost() -> Any:
    return require("xgboost", "xgboost", "Saving or loading an XGBoost model")


class _BoosterPredictor:
    """A bare Booster behind ``predict(frame)``: Boosters only predict on a DMatrix."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def predict(self, frame: Any) -> Any:
        """Predictions of the booster for ``frame``."""
        return self.booster.predict(_xgboost().DMatrix(frame))


class XGBoostFlavor:
    """XGBoost models saved with ``save_model`` as UBJSON."""

    name = "xgboost"
    format = "xgboost-ubj"
    extra: str | None = "xgboost"

    def handles(self, model: Any) -> bool:
        """Whether ``model`` is an XGBoost Booster or scikit-learn-API model."""
        if defined_in(model, "xgboost") is None:
            return False
        # The type came from xgboost, so it is already imported: the isinstance check is free.
        xgb = _xgboost()
        return isinstance(model, xgb.Booster | xgb.XGBModel)

    def _class_name(self, model: Any) -> str:
        xgb = _xgboost()
        for cls in type(model).__mro__:
            if cls.__name__ in CLASSES and getattr(xgb, cls.__name__, None) is cls:
                return cls.__name__
        raise InvalidInput(
            f"Cannot save {type(model).__qualname__} with the xgboost flavor: "
            f"expected one of {', '.join(CLASSES)} (or a subclass)."
        )

    def save(self, model: Any, folder: Path) -> dict[str, Any]:
        """Write ``model`` to ``folder/model.ubj``."""
        xgb = _xgboost()
        class_name = self._class_name(model)
        model.save_model(str(folder / FILE))
        return {
            "format": self.format,
            "xgboost_version": version_of(xgb),
            "class": class_name,
        }

    def load(self, folder: Path, meta: dict[str, Any], *, trust: bool = False) -> Any:
        """Load the model into the class it was saved from."""
        xgb = _xgboost()
        class_name = str(meta.get("class", "Booster"))
        if class_name not in CLASSES:
            raise InvalidInput(
                f"Unknown XGBoost class {class_name!r} in the model's meta; expected one of "
                f"{', '.join(CLASSES)}."
            )
        path = folder / FILE
        if not path.is_file():
            raise InvalidInput(f"No XGBoost model file at {path}: the model folder is incomplete.")
        model = getattr(xgb, class_name)()
        model.load_model(str(path))
        return _BoosterPredictor(model) if class_name == "Booster" else model


XGBOOST = XGBoostFlavor()
