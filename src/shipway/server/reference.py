"""Render the REST API reference (docs/api.md) from the server's own OpenAPI document.

Regenerate with ``python -m shipway.server.reference > docs/api.md``; a test fails when the file
is out of date or an operation is missing from it. The role each operation needs is read from the
route's authorization dependency (``need(role)`` in :mod:`shipway.server.app`), which the OpenAPI
document does not carry.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_METHODS = ("get", "head", "post", "put", "patch", "delete")

INTRO = """\
# REST API reference

Generated from the server's OpenAPI document by `python -m shipway.server.reference`; do not
edit by hand. A running server (`shipway up`) serves the same document at `/openapi.json` and
browsable at `/docs`.

Every endpoint but the public ones needs a token: `Authorization: Bearer <token>` (make one with
`shipway token create`). Roles grant everything the roles before them grant: viewer < contributor
< approver < admin. A role "on the model" counts for the model named in the path, so a per-model
grant (`shipway users grant NAME ROLE --model MODEL`) is enough there, and a token limited to other
models is refused. Every error has one body, [ErrorEnvelope](#errorenvelope):
`{"error": {"code", "message", "details"}}`. Lists page by keyset: pass a page's
`next_page_token` back as `page_token`. JSON bodies are limited to 1 MiB and refuse fields they do
not declare; files go up by `PUT /api/v1/blobs/{digest}`, streamed.
"""


def build_app() -> Any:
    """The control-plane app with authentication on, on a throwaway store (its routes are the same)."""
    from shipway.core.config import Settings
    from shipway.server import create_app
    from shipway.store import Store

    with tempfile.TemporaryDirectory(prefix="shipway-reference-") as tmp:
        home = Path(tmp)
        settings = Settings(home, f"sqlite:///{home / 'shipway.db'}", str(home / "artifacts"))
        store = Store(settings)
        try:
            app = create_app(store)
            app.openapi()  # built now, while the store exists
            return app
        finally:
            store.close()


def roles(app: Any) -> dict[tuple[str, str], tuple[str, bool] | None]:
    """``(method, path) -> (role, on the model)`` for every operation; None for public ones."""
    from fastapi.routing import APIRoute

    def find(dependant: Any) -> tuple[str, bool] | None:
        for dep in dependant.dependencies:
            check = getattr(dep.call, "check", dep.call)
            found = getattr(check, "required_role", None) or find(dep)
            if found:
                return found  # type: ignore[no-any-return]
        return None

    def walk(routes: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for route in routes:
            if isinstance(route, APIRoute):
                yield prefix + route.path_format, route
            # FastAPI keeps an included router whole (older releases copied its routes in).
            inner = getattr(route, "original_router", None)
            if inner is not None:
                context = getattr(route, "include_context", None)
                yield from walk(inner.routes, prefix + getattr(context, "prefix", ""))

    found: dict[tuple[str, str], tuple[str, bool] | None] = {}
    for path, route in walk(app.routes, ""):
        for method in route.methods:
            found[(method.lower(), path)] = find(route.dependant)
    return found


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every ``(method, path, operation)`` of the document, by tag in order of appearance, then path."""
    found = [
        (method, path, op)
        for path, ops in doc.get("paths", {}).items()
        for method, op in ops.items()
        if method in _METHODS
    ]
    tags = list(dict.fromkeys(_tag(op) for _, _, op in found))
    return sorted(found, key=lambda f: (tags.index(_tag(f[2])), f[1], _METHODS.index(f[0])))


def _tag(op: dict[str, Any]) -> str:
    return str((op.get("tags") or ["other"])[0])


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def type_of(schema: dict[str, Any]) -> str:
    """A JSON Schema as a short phrase: ``integer``, ``array of string``, a linked schema name."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(dict.fromkeys(type_of(s) for s in schema[key]))
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type")
    if kind == "array":
        if "prefixItems" in schema:
            return "[" + ", ".join(type_of(s) for s in schema["prefixItems"]) + "]"
        return f"array of {type_of(schema.get('items', {}))}"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"object of {type_of(extra)}" if isinstance(extra, dict) and extra else "object"
    if isinstance(kind, list):
        return " or ".join(kind)
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind or "any")


def _limits(schema: dict[str, Any]) -> str:
    words = {
        "minimum": "≥ {}",
        "exclusiveMinimum": "> {}",
        "maximum": "≤ {}",
        "exclusiveMaximum": "< {}",
        "minLength": "at least {} characters",
        "maxLength": "at most {} characters",
        "minItems": "at least {} items",
        "maxItems": "at most {} items",
        "pattern": "matches `{}`",
    }
    found = [text.format(schema[key]) for key, text in words.items() if key in schema]
    for option in schema.get("anyOf", []):
        found += [text.format(option[key]) for key, text in words.items() if key in option]
    return "; ".join(found)


def _role_text(role: tuple[str, bool] | None) -> str:
    if role is None:
        return "public (no token)"
    return f"{role[0]} on the model" if role[1] else role[0]


def _body(content: dict[str, Any]) -> str:
    parts = []
    for media, spec in content.items():
        schema = spec.get("schema", {})
        parts.append(f"{type_of(schema) if schema else 'any'} (`{media}`)")
    return "; ".join(parts) or "none"


def _operation(method: str, path: str, op: dict[str, Any], role: tuple[str, bool] | None) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [op["summary"].rstrip(".") + ".", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    lines += [f"Role: {_role_text(role)}.", ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | description |", "| --- | --- | --- | --- | --- |"]
        for p in params:
            schema = p.get("schema", {})
            about = "; ".join(x for x in (p.get("description", ""), _limits(schema)) if x)
            if "default" in schema:
                about = "; ".join(x for x in (about, f"default `{schema['default']}`") if x)
            lines.append(
                f"| `{p['name']}` | {p['in']} | {type_of(schema)} | {'yes' if p.get('required') else 'no'} "
                f"| {_cell(about)} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        required = " (required)" if body.get("required") else ""
        lines += [f"Request body{required}: {_body(body.get('content', {}))}.", ""]
    lines += ["| status | meaning | body |", "| --- | --- | --- |"]
    for status, response in sorted(op.get("responses", {}).items()):
        lines.append(
            f"| {status} | {_cell(response.get('description', ''))} | {_body(response.get('content', {}))} |"
        )
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [" ".join(schema["description"].split()), ""]
    props = schema.get("properties", {})
    if not props:
        return [*lines, f"{type_of(schema)}.", ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | required | notes |", "| --- | --- | --- | --- |"]
    for field, spec in props.items():
        notes = "; ".join(x for x in (spec.get("description", ""), _limits(spec)) if x)
        lines.append(
            f"| `{field}` | {type_of(spec)} | {'yes' if field in required else 'no'} | {_cell(notes)} |"
        )
    if schema.get("additionalProperties") is False:
        lines += ["", "Other fields are refused."]
    return [*lines, ""]


def render(app: Any = None) -> str:
    """The Markdown reference for ``app`` (the control-plane app by default)."""
    app = app if app is not None else build_app()
    doc = app.openapi()
    needs = roles(app)
    ops = operations(doc)
    for method, path, op in ops:
        # A route that asks for a token but names no role (or the reverse) would be documented wrong.
        if bool(op.get("security")) != (needs.get((method, path)) is not None):
            raise RuntimeError(
                f"Cannot tell which role {method.upper()} {path} needs; declare it with need()."
            )
    lines = [INTRO, "## Endpoints", "", "| method | path | summary | role |", "| --- | --- | --- | --- |"]
    for method, path, op in ops:
        lines.append(
            f"| {method.upper()} | `{path}` | {_cell(op.get('summary', ''))} | "
            f"{_role_text(needs.get((method, path)))} |"
        )
    lines.append("")
    tag = None
    for method, path, op in ops:
        if _tag(op) != tag:
            tag = _tag(op)
            lines += [f"## {tag.capitalize()}", ""]
        lines += _operation(method, path, op, needs.get((method, path)))
    lines += ["## Schemas", ""]
    for name, schema in sorted(doc.get("components", {}).get("schemas", {}).items()):
        lines += _schema(name, schema)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render(), end="")
