"""What every route shares: the error envelope, the request guard, and the errors the API documents.

:class:`Guard` is plain ASGI middleware (no per-request task or stream, unlike ``@app.middleware``):
it refuses bodies over the limit with 413 before they are read, and NUL characters in the URL, which
no store can keep, with 400. :func:`document_errors` declares in the OpenAPI document the error
responses this machinery and the authentication can give on each route, all as the one envelope.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipway.server.schemas import ErrorEnvelope

__all__ = ["MAX_BODY_BYTES", "Guard", "document_errors", "envelope"]

# Requests larger than this are refused with 413 before they are read.
MAX_BODY_BYTES = 1 << 20


def envelope(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error response: ``{"error": {"code", "message", "details"}}``."""
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": message, "details": details}},
        headers=headers,
    )


class Guard:
    """Refuse oversized bodies (413) and NUL characters in the path or query (400) before routing.

    PUTs under ``unlimited_puts`` (streamed file uploads) are left to their route's own limit.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, unlimited_puts: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.unlimited_puts = unlimited_puts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            refusal = envelope(400, "invalid_input", "The URL contains a NUL (%00) character; remove it.")
            await refusal(scope, receive, send)
            return
        method = scope["method"]
        if method == "PUT" and self.unlimited_puts and scope["path"].startswith(self.unlimited_puts):
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        elif method in ("POST", "PUT", "PATCH"):
            # A chunked body: read at most what we allow, then hand the route the same bytes.
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_body_bytes:
                    await self._too_large(scope, receive, send)
                    return
                more = message.get("more_body", False)
            await self.app(scope, _replay(b"".join(chunks), receive), send)
            return
        await self.app(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = envelope(
            413, "too_large", f"The request body exceeds {self.max_body_bytes} bytes; send less per call."
        )
        await refusal(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


_WRITES = ("post", "put", "patch", "delete")
_PAGING = ("limit", "page_token", "after_seq")
_DESCRIPTIONS = {
    "400": "Invalid parameters or body; details name each problem",
    "401": "No token, or one that is unknown, expired or revoked",
    "403": "The token's role or model scope does not allow this",
    "404": "An object the request names does not exist",
    "409": "The request clashes with the current state",
    "413": "The request body is too large",
}


def document_errors(app: FastAPI) -> None:
    """Declare the envelope for the errors every route can give, in place of FastAPI's 422 schema.

    Each operation gets 400 (validation); 401 and 403 when it needs a token (has a security
    requirement); 404 when it may name objects (any parameter but paging ones, or a body); 409 when
    it writes; 413 when it takes a body. Routes declare other errors themselves (promote's 422 for a
    failed gate).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        ref = {"$ref": "#/components/schemas/ErrorEnvelope"}
        for operations in doc.get("paths", {}).values():
            for method, op in operations.items():
                responses = op.setdefault("responses", {})
                if "HTTPValidationError" in str(responses.get("422", "")):
                    del responses["422"]  # validation errors are 400 here
                statuses = ["400"]
                if op.get("security"):
                    statuses += ["401", "403"]
                names = [p.get("name") for p in op.get("parameters", []) if p.get("name") not in _PAGING]
                if names or "requestBody" in op:
                    statuses.append("404")
                if method in _WRITES:
                    statuses.append("409")
                if "requestBody" in op:
                    statuses.append("413")
                for status in statuses:
                    responses.setdefault(
                        status,
                        {
                            "description": _DESCRIPTIONS[status],
                            "content": {"application/json": {"schema": ref}},
                        },
                    )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        envelope_schema = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(envelope_schema.pop("$defs", {}))
        schemas["ErrorEnvelope"] = envelope_schema
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
