"""docs/api.md: generated from the server's OpenAPI document, current, and complete."""

from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.security import HTTPBearer

from shipway.server.reference import build_app, operations, render

ROOT = Path(__file__).resolve().parents[2]


def test_api_reference_is_current_and_complete() -> None:
    app = build_app()
    text = (ROOT / "docs" / "api.md").read_text()
    assert text == render(app), "docs/api.md is stale: run python -m shipway.server.reference > docs/api.md"
    ops = operations(app.openapi())
    assert len(ops) > 30
    for method, path, _ in ops:
        assert f"### `{method.upper()} {path}`" in text
    # The roles are the ones the routes enforce (tests/server/test_auth.py checks the enforcing).
    assert "| PUT | `/api/v1/policy` | Apply a policy (YAML text) | admin |" in text
    approve = "`/api/v1/models/{name}/versions/{version}/approve` | Approve | approver on the model |"
    assert f"| POST | {approve}" in text
    assert "| GET | `/health` | Liveness and store health | public (no token) |" in text


def test_a_route_that_needs_a_token_but_names_no_role_stops_the_reference() -> None:
    app = FastAPI()

    @app.get("/secret")
    def secret(_: object = Depends(HTTPBearer())) -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="which role GET /secret needs"):
        render(app)
