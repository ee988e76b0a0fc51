"""Ask {{project}}'s service for predictions, through both of the endpoints `shipway serve` offers.

    python client.py [--url http://127.0.0.1:8080]

`predict` uses the plain JSON endpoint (rows as records); `infer` uses the Open Inference
Protocol v2, the REST protocol of KServe, Triton and Seldon (one tensor per column).
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx

MODEL = "{{project}}"


def predict(url: str, rows: list[dict[str, Any]], model: str = MODEL) -> list[Any]:
    """One prediction per row (a dict of column: value) from POST /v1/models/{model}/predict."""
    return _post(f"{url}/v1/models/{model}/predict", {"records": rows})["predictions"]


def infer(url: str, rows: list[dict[str, Any]], model: str = MODEL) -> list[Any]:
    """The same predictions from POST /v2/models/{model}/infer, sending one tensor per column."""
    inputs = []
    for column in rows[0]:
        values = [row[column] for row in rows]
        inputs.append({"name": column, "shape": [len(values)], "datatype": _datatype(values), "data": values})
    answer = _post(f"{url}/v2/models/{model}/infer", {"inputs": inputs})
    return answer["outputs"][0]["data"]


def _datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(url, json=body, timeout=30)
    if response.is_error:
        # Refusals say what was wrong, field by field: {"error": ..., "code": ..., "details": [...]}.
        try:
            reason = response.json().get("error", response.text)
        except ValueError:
            reason = response.text
        raise RuntimeError(f"{url} answered {response.status_code}: {reason}")
    return response.json()


def example_rows(count: int = 3) -> list[dict[str, Any]]:
    """Rows a model trained on scikit-learn's breast cancer data takes (the train template's does)."""
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).data.head(count).to_dict("records")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="Where ./serve.sh listens.")
    parser.add_argument("--model", default=MODEL, help="The model's name on the server.")
    args = parser.parse_args()
    rows = example_rows()
    print("predict:", predict(args.url, rows, args.model))
    print("infer:  ", infer(args.url, rows, args.model))
