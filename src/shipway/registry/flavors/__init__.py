"""The model flavors Shipway knows, and picking the one that saves a given model.

Importing this package imports no ML library: each flavor recognises models by their
classes' module names and imports its library only to save or load.
"""

from __future__ import annotations

from typing import Any

from shipway.core.errors import InvalidInput
from shipway.registry.flavors.base import Flavor, Predictor
from shipway.registry.flavors.lightgbm import LIGHTGBM
from shipway.registry.flavors.onnx import ONNX
from shipway.registry.flavors.pyfunc import PYFUNC
from shipway.registry.flavors.sklearn import SKLEARN
from shipway.registry.flavors.torch import TORCH
from shipway.registry.flavors.xgboost import XGBOOST

__all__ = ["FLAVORS", "Flavor", "Predictor", "flavor_for", "get_flavor"]

# Checked in this order; the first flavor that handles a model saves it. XGBoost's and
# LightGBM's scikit-learn wrappers subclass sklearn's BaseEstimator, so they come before
# sklearn: their native formats are smaller, faster and need no skops trust list. pyfunc
# accepts anything with predict, so it comes last, as the catch-all.
FLAVORS: tuple[Flavor, ...] = (XGBOOST, LIGHTGBM, SKLEARN, ONNX, TORCH, PYFUNC)


def flavor_for(model: Any) -> Flavor:
    """The first flavor in :data:`FLAVORS` that can save ``model``."""
    for flavor in FLAVORS:
        if flavor.handles(model):
            return flavor
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    raise InvalidInput(
        f"No flavor can save a {kind}: a model must be a scikit-learn, XGBoost, LightGBM, ONNX or "
        "PyTorch model, or an object with a predict method, or a function."
    )


def get_flavor(name: str) -> Flavor:
    """The flavor called ``name``."""
    for flavor in FLAVORS:
        if flavor.name == name:
            return flavor
    known = ", ".join(f.name for f in FLAVORS)
    raise InvalidInput(f"Unknown model flavor {name!r}; known flavors: {known}.")
