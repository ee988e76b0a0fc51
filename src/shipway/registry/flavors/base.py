"""The interface every model flavor implements: save a model into a folder, load it back.

A flavor writes its files into an empty folder and returns a small JSON-able ``meta`` dict
(format name, library versions, anything its loader needs). Shipway then hashes every
file into the version's manifest; at load time it verifies the digests and scans any
pickle stream *before* calling ``load``. ``load`` returns an object with
``predict(frame: pandas.DataFrame) -> numpy.ndarray | pandas.DataFrame``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Predictor(Protocol):
    """What a loaded model offers: predictions for a DataFrame."""

    def predict(self, frame: Any) -> Any: ...


class Flavor(Protocol):
    """Saving and loading one kind of model in a safe, native format."""

    name: str
    # The artifact format recorded on the version (e.g. "skops", "xgboost-ubj", "onnx").
    format: str
    # The pip extra that installs what this flavor needs (None when always available).
    extra: str | None

    def handles(self, model: Any) -> bool:
        """Whether ``model`` is an object this flavor can save (checked without importing heavy libraries)."""
        ...

    def save(self, model: Any, folder: Path) -> dict[str, Any]:
        """Write ``model`` into the empty ``folder``; return the meta its loader needs."""
        ...

    def load(self, folder: Path, meta: dict[str, Any], *, trust: bool = False) -> Predictor:
        """Load the model saved in ``folder`` by :meth:`save`."""
        ...
