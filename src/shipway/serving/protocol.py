"""The wire formats of the inference endpoints: Open Inference Protocol v2 and plain JSON.

A request body becomes a :class:`Table`: named one-dimensional NumPy columns of equal length,
the unit the batcher stacks and the host checks against the version's signature. Anything a
client can get wrong is a :class:`RequestError` carrying its HTTP status and a stable code:

    400 malformed_json       the body is not JSON (truncated, not UTF-8, ...)
    400 malformed_request    JSON, but not the shape the protocol asks for
    400 invalid_tensor       a tensor's data does not match its own shape or datatype
    400 empty_batch          nothing to predict
    413 payload_too_large    the body is over the server's limit
    415 unsupported_encoding a Content-Encoding other than gzip or deflate
    422 signature_mismatch   well formed, but not what this model version takes
    422 non_finite_value     +-Infinity (never accepted) in a numeric column

The V2 binary tensor extension (what ``tritonclient`` sends by default) is read and written:
the JSON header is followed by raw little-endian tensors, BYTES as 4-byte-length-prefixed items.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from shipway.registry import Signature

# V2 datatype -> NumPy dtype (little-endian on the wire); BYTES are Python str objects here.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(bool),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
# A signature column's kind -> the datatype its metadata advertises.
KIND_DATATYPES = {
    "integer": "INT64",
    "float": "FP64",
    "boolean": "BOOL",
    "string": "BYTES",
    "datetime": "BYTES",
}
OUTPUT_NAME = "predict"
_ORJSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_JSON_HEADERS = [(b"content-type", b"application/json")]


class RequestError(Exception):
    """A request the server refuses: HTTP status, stable code, message and per-field details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or []

    def body(self) -> bytes:
        """``{"error": message, "code", "details"}``: ``error`` stays a string, as V2 clients expect."""
        return orjson.dumps({"error": self.message, "code": self.code, "details": self.details})


def malformed(message: str, field: str | None = None, code: str = "malformed_request") -> RequestError:
    """A 400 naming the offending field."""
    details = [{"field": field, "problem": message}] if field else []
    return RequestError(400, code, message, details)


def mismatch(message: str, details: list[dict[str, Any]] | None = None) -> RequestError:
    """A 422: a well-formed request that the model version cannot take."""
    return RequestError(422, "signature_mismatch", message, details)


@dataclass(slots=True)
class Table:
    """Named 1-D columns of equal length: one request's rows, before checking against a signature."""

    columns: dict[str, np.ndarray]
    rows: int


def loads(body: bytes) -> tuple[Any, bool]:
    """Parsed JSON and whether the lenient parser was needed (NaN, Infinity or huge numbers)."""
    try:
        return orjson.loads(body), False
    except orjson.JSONDecodeError as exc:
        strict_error = exc
    # orjson follows RFC 8259 strictly; Python's parser also reads NaN/Infinity literals, which
    # clients such as pandas' to_json and json.dumps emit. The signature then decides about them.
    try:
        return json.loads(body), True
    except (ValueError, RecursionError):
        raise malformed(f"The body is not valid JSON: {strict_error}.", code="malformed_json") from None


def _count(shape: list[int]) -> int:
    return math.prod(shape)


def _check_shape(shape: Any, field: str) -> list[int]:
    if type(shape) is not list or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise malformed(f"{field}.shape must be a non-empty list of non-negative integers.", field)
    if len(shape) > 2:
        raise mismatch(
            f"{field} has shape {shape}; send one input per column with shape [rows] or [rows, 1], "
            "or a single [rows, columns] input.",
            [{"field": field, "problem": f"has {len(shape)} dimensions; at most 2 are accepted"}],
        )
    return shape


def _json_tensor(data: Any, datatype: str, shape: list[int], field: str) -> np.ndarray:
    """A tensor from V2 JSON ``data`` (flat or nested), checked against its own datatype and shape."""
    count = _count(shape)
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise malformed(
            f"{field}.data is not a rectangular list of values.", field, "invalid_tensor"
        ) from None
    if raw.size != count:
        raise malformed(
            f"{field} has shape {shape}, which holds {count} element(s), but its data has {raw.size}.",
            field,
            "invalid_tensor",
        )
    dtype = DATATYPES[datatype]
    if count == 0:
        return np.empty(shape, dtype)  # refused as an empty batch once the columns are known
    kind = raw.dtype.kind
    problem = None
    if datatype == "BYTES":
        if kind == "U":
            raw = raw.astype(object)
        elif kind != "O" or not all(type(v) is str or v is None for v in raw.flat):
            problem = "BYTES data must be strings"
    elif datatype == "BOOL":
        if kind != "b":
            problem = "BOOL data must be true or false"
    elif dtype.kind in "iu":
        if kind not in "iu":
            problem = f"{datatype} data must be integers"
        elif count and (int(raw.min()) < np.iinfo(dtype).min or int(raw.max()) > np.iinfo(dtype).max):
            problem = f"values are out of range for {datatype}"
        else:
            raw = raw.astype(dtype, copy=False)
    else:  # FP16/32/64: integers widen, null is a missing value (NaN), text is refused
        if kind == "O" and all(v is None or type(v) in (int, float) for v in raw.flat):
            raw = raw.astype(dtype)
        elif kind in "iuf":
            raw = raw.astype(dtype, copy=False)
        else:
            problem = f"{datatype} data must be numbers"
    if problem:
        raise malformed(f"{field}: {problem}.", field, "invalid_tensor")
    return raw.reshape(shape)


def _binary_tensor(buf: memoryview, datatype: str, shape: list[int], field: str) -> np.ndarray:
    """A tensor from the binary extension's raw bytes."""
    count = _count(shape)
    if datatype == "BYTES":
        items: list[Any] = []
        offset, end = 0, len(buf)
        try:
            while offset < end:
                (length,) = struct.unpack_from("<I", buf, offset)
                offset += 4
                if offset + length > end:
                    raise ValueError
                items.append(bytes(buf[offset : offset + length]).decode())
                offset += length
        except (struct.error, ValueError):
            raise malformed(
                f"{field}: the binary BYTES data is not a sequence of length-prefixed UTF-8 strings.",
                field,
                "invalid_tensor",
            ) from None
        raw = np.empty(len(items), dtype=object)
        raw[:] = items
    else:
        dtype = DATATYPES[datatype]
        if len(buf) != count * dtype.itemsize:
            raise malformed(
                f"{field} has shape {shape} of {datatype}, which takes {count * dtype.itemsize} bytes, "
                f"but binary_data_size is {len(buf)}.",
                field,
                "invalid_tensor",
            )
        raw = np.frombuffer(buf, np.uint8) != 0 if datatype == "BOOL" else np.frombuffer(buf, dtype)
    if raw.size != count:
        raise malformed(
            f"{field} has shape {shape} but its data has {raw.size} element(s).", field, "invalid_tensor"
        )
    return raw.reshape(shape)


@dataclass(slots=True)
class InferRequest:
    """A parsed V2 inference request."""

    id: str | None
    tensors: list[tuple[str, np.ndarray]]
    outputs: list[str] | None  # names the client asked for; None means all
    binary_outputs: set[str]  # output names to send with the binary extension ("*" for all)
    lenient: bool


def parse_v2(body: bytes, header_length: int | None) -> InferRequest:
    """Parse a V2 infer body (JSON, or JSON header plus binary tensors)."""
    binary: memoryview | None = None
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise malformed(
                f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes."
            )
        binary = memoryview(body)[header_length:]
        body = body[:header_length]
    obj, lenient = loads(body)
    if type(obj) is not dict:
        raise malformed("The body must be a JSON object with an 'inputs' list.")
    request_id = obj.get("id")
    if request_id is not None and type(request_id) is not str:
        raise malformed("'id' must be a string.", "id")
    parameters = obj.get("parameters") or {}
    if type(parameters) is not dict:
        raise malformed("'parameters' must be an object.", "parameters")
    binary_outputs: set[str] = {"*"} if parameters.get("binary_data_output") is True else set()
    outputs = None
    if obj.get("outputs") is not None:
        requested = obj["outputs"]
        if type(requested) is not list or not all(
            type(o) is dict and type(o.get("name")) is str for o in requested
        ):
            raise malformed("'outputs' must be a list of objects with a 'name'.", "outputs")
        outputs = [o["name"] for o in requested]
        binary_outputs |= {
            o["name"]
            for o in requested
            if type(o.get("parameters")) is dict and o["parameters"].get("binary_data")
        }
    inputs = obj.get("inputs")
    if type(inputs) is not list or not inputs:
        raise malformed("The request needs a non-empty 'inputs' list.", "inputs")
    tensors: list[tuple[str, np.ndarray]] = []
    offset = 0
    for i, spec in enumerate(inputs):
        field = f"inputs[{i}]"
        if type(spec) is not dict:
            raise malformed(f"{field} must be an object with name, shape, datatype and data.", field)
        name, datatype = spec.get("name"), spec.get("datatype")
        if type(name) is not str or not name:
            raise malformed(f"{field}.name must be a non-empty string.", field)
        field = f"inputs[{i}] ({name})"
        if datatype not in DATATYPES:
            raise malformed(
                f"{field}.datatype must be one of {', '.join(DATATYPES)}, not {datatype!r}.", field
            )
        shape = _check_shape(spec.get("shape"), field)
        tensor_params = spec.get("parameters") or {}
        size = tensor_params.get("binary_data_size") if type(tensor_params) is dict else None
        if size is not None:
            if binary is None or type(size) is not int or size < 0 or offset + size > len(binary):
                raise malformed(
                    f"{field}.parameters.binary_data_size does not fit the binary part of the body; "
                    "send the Inference-Header-Content-Length header with binary tensors.",
                    field,
                    "invalid_tensor",
                )
            tensor = _binary_tensor(binary[offset : offset + size], datatype, shape, field)
            offset += size
        elif "data" in spec:
            tensor = _json_tensor(spec["data"], datatype, shape, field)
        else:
            raise malformed(f"{field} has no 'data'.", field)
        tensors.append((name, tensor))
    if binary is not None and offset != len(binary):
        raise malformed(
            f"The body has {len(binary) - offset} byte(s) after the last binary tensor.",
            code="invalid_tensor",
        )
    return InferRequest(request_id, tensors, outputs, binary_outputs, lenient)


def _refuse_infinite(name: str, column: np.ndarray, objects: bool) -> None:
    if column.dtype.kind == "f":
        bad = np.isinf(column).any()
    elif objects and column.dtype.kind == "O":
        bad = any(type(v) is float and math.isinf(v) for v in column)
    else:
        return
    if bad:
        raise RequestError(
            422,
            "non_finite_value",
            f"Column '{name}' has infinite values, which no model input accepts.",
            [{"field": name, "problem": "has infinite values"}],
        )


def v2_table(request: InferRequest, columns: tuple[str, ...] | None) -> Table:
    """Columns from V2 tensors: one input per column, or a single [rows, columns] input."""
    tensors = request.tensors
    first, matrix = tensors[0]
    # One 2-D input holds every column in signature order, unless it is itself a [rows, 1] column.
    if (
        len(tensors) == 1
        and matrix.ndim == 2
        and (matrix.shape[1] != 1 or (columns is not None and first not in columns))
    ):
        name = first
        names = list(columns) if columns is not None else [str(j) for j in range(matrix.shape[1])]
        if matrix.shape[1] != len(names):
            raise mismatch(
                f"Input '{name}' has {matrix.shape[1]} column(s); the model takes {len(names)}: "
                f"{', '.join(names)} (in that order).",
                [{"field": name, "problem": f"has {matrix.shape[1]} columns, expected {len(names)}"}],
            )
        table = {col: matrix[:, j] for j, col in enumerate(names)}
    else:
        table = {}
        for name, tensor in tensors:
            if tensor.ndim == 2 and tensor.shape[1] != 1:
                raise mismatch(
                    f"Input '{name}' has shape {list(tensor.shape)}; with several inputs each one is a "
                    "column of shape [rows] or [rows, 1].",
                    [{"field": name, "problem": f"has shape {list(tensor.shape)}"}],
                )
            if name in table:
                raise malformed(f"Input '{name}' is given twice.", name)
            table[name] = tensor.reshape(-1)
        lengths = {len(c) for c in table.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{n}: {len(c)}" for n, c in table.items())
            raise malformed(f"Every input must have the same number of rows; got {sizes}.", "inputs")
    rows = len(next(iter(table.values())))
    if rows == 0:
        raise malformed("The request has no rows to predict.", "inputs", "empty_batch")
    for name, column in table.items():
        _refuse_infinite(name, column, False)
    return Table(table, rows)


def _column(name: str, values: list[Any] | tuple[Any, ...], lenient: bool) -> np.ndarray:
    """A 1-D array from plain JSON values (numbers, strings, booleans, null)."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is None or arr.ndim != 1:
        raise RequestError(
            422,
            "signature_mismatch",
            f"Column '{name}' has nested values; each value must be a number, string, boolean or null.",
            [{"field": name, "problem": "has nested lists or objects"}],
        )
    if arr.dtype.kind == "U":
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    elif arr.dtype.kind == "O" and any(type(v) in (dict, list) for v in arr):
        raise RequestError(
            422,
            "signature_mismatch",
            f"Column '{name}' has nested values; each value must be a number, string, boolean or null.",
            [{"field": name, "problem": "has nested lists or objects"}],
        )
    if lenient:  # only the lenient parser reads Infinity
        _refuse_infinite(name, arr, True)
    return arr


def parse_v1(body: bytes) -> Table:
    """Columns from ``{"records": [{...}, ...]}`` or ``{"columns": [...], "data": [[...], ...]}``."""
    obj, lenient = loads(body)
    if type(obj) is not dict:
        raise malformed(
            'The body must be a JSON object: {"records": [...]} or {"columns": [...], "data": [...]}.'
        )
    if "records" in obj:
        records = obj["records"]
        if type(records) is not list:
            raise malformed("'records' must be a list of objects, one per row.", "records")
        if not records:
            raise malformed("'records' is empty: there is nothing to predict.", "records", "empty_batch")
        for i, record in enumerate(records):
            if type(record) is not dict:
                raise malformed(f"records[{i}] must be an object of column: value.", f"records[{i}]")
        if len(records) == 1:
            raw = {k: [v] for k, v in records[0].items()}
        else:
            keys = dict.fromkeys(k for record in records for k in record)
            raw = {k: [record.get(k) for record in records] for k in keys}
        rows = len(records)
    elif "columns" in obj or "data" in obj:
        names, data = obj.get("columns"), obj.get("data")
        if type(names) is not list or not names or not all(type(n) is str for n in names):
            raise malformed("'columns' must be a non-empty list of column names.", "columns")
        if len(set(names)) != len(names):
            raise malformed("'columns' names a column more than once.", "columns")
        if type(data) is not list:
            raise malformed("'data' must be a list of rows, each a list of values.", "data")
        if not data:
            raise malformed("'data' is empty: there is nothing to predict.", "data", "empty_batch")
        width = len(names)
        if not all(type(row) is list and len(row) == width for row in data):
            i = next(i for i, row in enumerate(data) if type(row) is not list or len(row) != width)
            raise malformed(f"data[{i}] must be a list of {width} values, one per column.", f"data[{i}]")
        raw = dict(zip(names, zip(*data, strict=True), strict=True))
        rows = len(data)
    else:
        raise malformed('The body needs "records", or "columns" and "data".')
    return Table({name: _column(name, values, lenient) for name, values in raw.items()}, rows)


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype that carries ``array``."""
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'UINT' if kind == 'u' else 'INT'}{array.dtype.itemsize * 8}"
    if kind == "f" and array.dtype.itemsize in (2, 4, 8):
        return f"FP{array.dtype.itemsize * 8}"
    return "BYTES"


def _json_data(array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    if datatype == "FP16" or array.dtype.kind not in "biuf":
        return array.reshape(-1).tolist()
    return np.ascontiguousarray(array).reshape(-1)


def _binary_data(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        items = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        return b"".join(struct.pack("<I", len(b)) + b for b in items)
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()


def output_tensors(predictions: Any) -> list[tuple[str, np.ndarray]]:
    """Named output arrays: ``predict`` for an array, one per column for a DataFrame."""
    if hasattr(predictions, "columns") and hasattr(predictions, "iloc"):
        return [(str(c), predictions[c].to_numpy()) for c in predictions.columns]
    return [(OUTPUT_NAME, np.asarray(predictions))]


def encode_v2(
    request: InferRequest, model_name: str, version: str, predictions: Any
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The V2 response body and its content headers."""
    tensors = output_tensors(predictions)
    if request.outputs is not None:
        known = {name for name, _ in tensors}
        unknown = [n for n in request.outputs if n not in known]
        if unknown:
            raise malformed(f"Unknown output(s) {unknown}; this model gives {sorted(known)}.", "outputs")
        tensors = [(n, a) for n, a in tensors if n in request.outputs]
    response: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request.id is not None:
        response["id"] = request.id
    outputs, blobs = [], []
    for name, array in tensors:
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if "*" in request.binary_outputs or name in request.binary_outputs:
            blob = _binary_data(array, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(array, datatype)
        outputs.append(entry)
    response["outputs"] = outputs
    head = orjson.dumps(response, option=_ORJSON_NUMPY)
    if not blobs:
        return head, _JSON_HEADERS
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(head)).encode()),
    ]
    return b"".join([head, *blobs]), headers


def encode_v1(model_name: str, version: str, predictions: Any) -> bytes:
    """``{"predictions": [...], "model_name", "model_version"}``."""
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):
        values: Any = predictions.to_dict("records")
    else:
        array = np.asarray(predictions)
        values = _json_data(array, datatype_of(array)) if array.ndim == 1 else array.tolist()
    return orjson.dumps(
        {"predictions": values, "model_name": model_name, "model_version": version}, option=_ORJSON_NUMPY
    )


def _output_metadata(signature: Signature | None) -> list[dict[str, Any]]:
    output = signature.output if signature is not None else {}
    if output.get("kind") == "columns":
        return [
            {"name": c["name"], "datatype": KIND_DATATYPES.get(c["type"], "BYTES"), "shape": [-1]}
            for c in output["columns"]
        ]
    if output.get("kind") == "tensor":
        dtype = np.dtype(output["dtype"]) if output["dtype"] != "object" else np.dtype(object)
        return [{"name": OUTPUT_NAME, "datatype": datatype_of(np.empty(0, dtype)), "shape": output["shape"]}]
    return [{"name": OUTPUT_NAME, "datatype": "BYTES", "shape": [-1]}]


def model_metadata(
    name: str, versions: list[str], platform: str, signature: Signature | None
) -> dict[str, Any]:
    """V2 model metadata: inputs (one per signature column) and outputs with datatype and shape."""
    inputs = [
        {"name": c.name, "datatype": KIND_DATATYPES.get(c.kind, "BYTES"), "shape": [-1]}
        for c in (signature.inputs if signature is not None else ())
    ]
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": inputs,
        "outputs": _output_metadata(signature),
    }
