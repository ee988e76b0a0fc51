"""ONNX models, saved as ``model.onnx`` and run with ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shipway.core.errors import InvalidInput
from shipway.registry.flavors._common import defined_in, require, version_of

__all__ = ["ONNX", "OnnxFlavor"]

FILE = "model.onnx"
PURPOSE = "Saving or loading an ONNX model"
# ONNX Runtime's names for tensor element types, and the NumPy dtype to feed each.
DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def _cast(values: Any, onnx_type: str) -> Any:
    dtype = DTYPES.get(onnx_type)
    if dtype is None:
        raise InvalidInput(
            f"The ONNX model takes {onnx_type} input, which Shipway cannot build from a DataFrame."
        )
    return np.asarray(values).astype(dtype, copy=False)


class _OnnxPredictor:
    """An InferenceSession behind ``predict(frame)``."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.inputs = session.get_inputs()

    def predict(self, frame: Any) -> Any:
        """The model's first output for ``frame``."""
        if len(self.inputs) == 1:
            only = self.inputs[0]
            feeds = {only.name: _cast(frame.to_numpy(), only.type)}
        else:
            missing = [i.name for i in self.inputs if i.name not in frame.columns]
            if missing:
                raise InvalidInput(
                    f"The ONNX model needs columns {', '.join(missing)}, which the frame lacks."
                )
            # Several inputs: one per column, each a (rows, 1) tensor named like the column.
            feeds = {i.name: _cast(frame[i.name].to_numpy().reshape(-1, 1), i.type) for i in self.inputs}
        return self.session.run(None, feeds)[0]


class OnnxFlavor:
    """``onnx.ModelProto`` objects (or their serialized bytes) saved as ``model.onnx``."""

    name = "onnx"
    format = "onnx"
    extra: str | None = "onnx"

    def handles(self, model: Any) -> bool:
        """Whether ``model`` is an ONNX ModelProto, or bytes that look like a serialized one."""
        if isinstance(model, bytes | bytearray):
            # A serialized ModelProto starts with field 1 (ir_version, a varint): tag byte 0x08.
            # Cheap and import-free; save() parses the bytes properly before writing them.
            return bytes(model[:1]) == b"\x08"
        return defined_in(model, "onnx") is not None and type(model).__name__ == "ModelProto"

    def save(self, model: Any, folder: Path) -> dict[str, Any]:
        """Write ``model`` to ``folder/model.onnx``."""
        onnx = require("onnx", "onnx", PURPOSE)
        if isinstance(model, bytes | bytearray):
            data = bytes(model)
            try:
                proto = onnx.load_model_from_string(data)
            except Exception as exc:  # protobuf raises its own DecodeError
                raise InvalidInput(f"These bytes are not a serialized ONNX model: {exc}") from exc
        elif isinstance(model, onnx.ModelProto):
            proto, data = model, model.SerializeToString()
        else:
            raise InvalidInput(f"Cannot save {type(model).__qualname__} with the onnx flavor.")
        if not proto.graph.input or not proto.graph.output:
            raise InvalidInput("The ONNX model has no graph inputs or outputs.")
        (folder / FILE).write_bytes(data)
        return {
            "format": self.format,
            "onnx_version": version_of(onnx),
            "ir_version": int(proto.ir_version),
            "opsets": {op.domain or "ai.onnx": int(op.version) for op in proto.opset_import},
            "inputs": [i.name for i in proto.graph.input],
            "outputs": [o.name for o in proto.graph.output],
        }

    def load(self, folder: Path, meta: dict[str, Any], *, trust: bool = False) -> Any:
        """Open an ONNX Runtime session on the CPU for the saved model."""
        ort = require("onnxruntime", "onnx", PURPOSE)
        path = folder / FILE
        if not path.is_file():
            raise InvalidInput(f"No ONNX model file at {path}: the model folder is incomplete.")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return _OnnxPredictor(session)


ONNX = OnnxFlavor()
