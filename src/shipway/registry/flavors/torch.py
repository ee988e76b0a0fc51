"""PyTorch modules, saved as TorchScript so loading needs no Python class from the training code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from shipway.core.errors import InvalidInput
from shipway.registry.flavors._common import require, version_of

__all__ = ["TORCH", "TorchFlavor"]

FILE = "model.pt"
PURPOSE = "Saving or loading a PyTorch model"


def _torch() -> Any:
    return require("torch", "torch", PURPOSE)


class _TorchPredictor:
    """A TorchScript module in eval mode behind ``predict(frame)``."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def predict(self, frame: Any) -> Any:
        """The module's output for ``frame`` as float32 features, as a NumPy array."""
        torch = _torch()
        # torch.tensor copies: pandas may hand out read-only arrays, which from_numpy warns about.
        inputs = torch.tensor(frame.to_numpy(dtype=np.float32))
        with torch.no_grad():
            out = self.module(inputs)
        # A module returning several tensors is read like an ONNX model: its first output.
        if isinstance(out, tuple | list):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise InvalidInput(f"The PyTorch model returned {type(out).__name__}, not a tensor.")
        return out.detach().cpu().numpy()


class TorchFlavor:
    """``torch.nn.Module`` objects saved with ``torch.jit.save`` after scripting."""

    name = "torch"
    format = "torchscript"
    extra: str | None = "torch"

    def handles(self, model: Any) -> bool:
        """Whether ``model`` is a ``torch.nn.Module`` (scripted or not)."""
        # A torch module cannot exist unless torch is imported, so never import it here.
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def save(self, model: Any, folder: Path) -> dict[str, Any]:
        """Script ``model`` unless it already is, and write it to ``folder/model.pt``."""
        torch = _torch()
        if not isinstance(model, torch.nn.Module):
            raise InvalidInput(f"Cannot save {type(model).__qualname__} with the torch flavor.")
        scripted = model
        if not isinstance(model, torch.jit.ScriptModule):
            try:
                scripted = torch.jit.script(model)
            except Exception as exc:  # TorchScript's compiler raises many kinds of errors
                raise InvalidInput(
                    f"{type(model).__qualname__} cannot be compiled with torch.jit.script ({exc}). "
                    "Script or trace it yourself (torch.jit.trace(model, example_input)) and register "
                    "the result."
                ) from exc
        torch.jit.save(scripted, str(folder / FILE))
        return {
            "format": self.format,
            "torch_version": version_of(torch),
            "module_class": f"{type(model).__module__}.{type(model).__qualname__}",
        }

    def load(self, folder: Path, meta: dict[str, Any], *, trust: bool = False) -> Any:
        """Load the TorchScript module on the CPU, in eval mode."""
        torch = _torch()
        path = folder / FILE
        if not path.is_file():
            raise InvalidInput(f"No TorchScript file at {path}: the model folder is incomplete.")
        module = torch.jit.load(str(path), map_location="cpu")
        module.eval()
        return _TorchPredictor(module)


TORCH = TorchFlavor()
