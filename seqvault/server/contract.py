"""The OpenAPI contract: what the server states about itself, made exact; and offline docs.

`http/openapi.json` is the store-independent document (python -m seqvault.server.openapi).
A running server answers `/openapi.json` *specialised to its open store*: the column names
become enums and patterns, the user id gets the pattern of the store's key type, write bodies
list each column with its element type and range. Only then can a generated request that the
document calls valid really be valid, and the contract test (tests/server/test_contract.py,
schemathesis with every check on) holds the server to it.

Two rules JSON Schema cannot state are documented in the operations' descriptions instead:
a per-user `before` list has one value per id, and the columns of one write have equal
lengths.

`/docs` (Swagger UI) and `/redoc` load their JavaScript and CSS from this server (the assets
of the `fastapi-offline` package), never from a CDN, so they work on an offline machine.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from ..schema import TIME_UNITS, Schema, retention_cutoff
from ..validate import PLAUSIBLE_EPOCH_S

# Generic: names of the schema's grammar (letters, digits, _), comma-separated, no blanks.
NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
COLUMNS_PATTERN = rf"^{NAME}(,{NAME})*$"
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
ASSETS = "/docs/assets"
_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1), "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1), "int64": (INT64_MIN, INT64_MAX),
    "uint8": (0, (1 << 8) - 1), "uint16": (0, (1 << 16) - 1), "uint32": (0, (1 << 32) - 1),
    "uint64": (0, (1 << 64) - 1),
}


def _below(limit: str) -> str:
    """A regex for the decimal numbers of `limit`'s digit count that are <= limit."""
    alts = [limit]
    for i, ch in enumerate(limit):
        lo = 1 if i == 0 else 0
        d = int(ch)
        if d - 1 >= lo:
            rest = len(limit) - i - 1
            alts.append(f"{limit[:i]}[{lo}-{d - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    return "|".join(alts)


# Exactly the decimal int64s the server accepts as a path id: canonical (no sign on positives,
# no leading zeros), -2^63 .. 2^63-1.
INT64_ID_PATTERN = (r"^(0|[1-9][0-9]{0,17}|" + _below(str(INT64_MAX)) + r"|-[1-9][0-9]{0,17}|-("
                    + _below(str(-INT64_MIN)) + r"))$")
INT64_ID_RE = re.compile(INT64_ID_PATTERN)


def extra_components() -> dict[str, Any]:
    """Schemas the hand-written responses refer to."""
    problem = {"$ref": "#/components/schemas/ProblemDetails"}
    return {"BatchResults": {
        "type": "object", "required": ["results"],
        "properties": {"results": {"type": "array", "items": {
            "type": "object", "required": ["user_id", "status"],
            "properties": {
                "user_id": {"description": "the id as asked (any JSON value for a bad id)"},
                "status": {"type": "integer"},
                "count": {"type": "integer", "minimum": 0},
                "columns": {"type": "object", "additionalProperties": {"type": "array"}},
                "problem": problem}}}}}}


def tighten(doc: dict[str, Any], limits: dict[str, int]) -> None:
    """Limits into the document: `info.x-seqvault-limits`, read by clients and by the docs."""
    doc.setdefault("info", {})["x-seqvault-limits"] = dict(limits)


def oldest_accepted_ts(schema: Schema) -> int:
    """The smallest timestamp a write is sure to be accepted with (validate.check_time_plausible):
    not before 1990 in the column's unit (older values may be another unit's), and inside the
    retention window, rounded up to the next whole day (UTC) with at least an hour to spare: the
    window moves while a client holds this document, and the document stays the same all day."""
    per_s = TIME_UNITS[schema.time_unit]
    lo = PLAUSIBLE_EPOCH_S[0] * per_s
    cutoff = retention_cutoff(schema)
    if cutoff is None:
        return lo
    day = 86_400 * per_s
    return max(lo, ((cutoff + 3600 * per_s) // day + 1) * day)


def _column_item(schema: Schema, name: str) -> dict[str, Any]:
    if name == schema.time_column:
        return {"type": "integer", "minimum": oldest_accepted_ts(schema), "maximum": schema.max_ts}
    if name == schema.user_column:
        if schema.user_type == "string":
            return {"type": "string", "maxLength": 1024}
        return {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
    col = schema.column(name)
    if col.is_string:
        return {"type": "string"}
    if col.type == "bool":
        return {"type": "boolean"}
    if col.type in _RANGES:
        lo, hi = _RANGES[col.type]
        return {"type": "integer", "minimum": lo, "maximum": hi}
    return {"type": "number"}


def _write_body(schema: Schema, names: list[str]) -> dict[str, Any]:
    return {"type": "object", "required": ["columns"], "additionalProperties": False,
            "properties": {"columns": {
                "type": "object", "required": names, "additionalProperties": False,
                "description": "one array per column, all of the same length",
                "properties": {n: {"type": "array", "items": _column_item(schema, n)}
                               for n in names}}}}


def user_id_schema(schema: Schema) -> dict[str, Any]:
    if schema.user_type == "int64":
        return {"type": "string", "pattern": INT64_ID_PATTERN}
    return {"type": "string", "minLength": 0, "maxLength": 1024}


def specialise(generic: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """The generic document with this store's column names, key type and column types."""
    doc = copy.deepcopy(generic)
    names = schema.column_names
    alt = "|".join(names)
    paths = doc.get("paths", {})
    for path, ops in paths.items():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["name"] == "user_id" and param["in"] == "path":
                    param["schema"] = user_id_schema(schema)
                elif param["name"] == "columns" and param["in"] == "query":
                    param["schema"] = {"type": "string", "pattern": f"^({alt})(,({alt}))*$"}
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            if path == "/users/{user_id}/events":
                body["schema"] = _write_body(schema, names)
            elif path == "/events:batchAppend":
                body["schema"] = _write_body(schema, [schema.user_column, *names])
    comps = doc.get("components", {}).get("schemas", {})
    req = comps.get("BatchGetRequest")
    if req is not None:
        cols = req["properties"]["columns"]
        for variant in cols.get("anyOf", [cols]):
            if variant.get("type") == "array":
                variant["items"] = {"type": "string", "enum": names}
    return doc


def install_docs(app: FastAPI) -> None:
    """/docs and /redoc with assets from the fastapi-offline package (no CDN)."""
    import fastapi_offline

    static = Path(fastapi_offline.__file__).parent / "static"
    app.mount(ASSETS, StaticFiles(directory=static), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSETS}/favicon.png",
                              with_google_fonts=False)
