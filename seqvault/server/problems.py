"""RFC 9457 problem details: every error the service answers is `application/problem+json`.

A `Problem` carries the status, a stable `type` URI (`urn:seqvault:problem:<slug>`, listed in
docs/design/http.md), a title, a detail that names the field, the value and what was expected,
and extension members (`errors`, `column`, `row`, `value`, ...). The handlers installed by
`install_handlers` turn engine errors, request-validation errors and Starlette's own 404/405
into problems, so a client never has to parse two error shapes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..errors import (
    CorruptionError,
    NotFound,
    ReadOnlyError,
    SchemaError,
    SeqVaultError,
    StoreClosed,
    StoreLocked,
    ValidationError,
)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:seqvault:problem:"
log = logging.getLogger("seqvault.server")

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(StarletteHTTPException):
    """An error answer. `slug` becomes the `type` URI; `extra` are extension members.

    A Starlette HTTPException subclass so FastAPI passes it through untouched when it is raised
    while a body is being read (the body-size limit does that)."""

    def __init__(self, status: int, slug: str, detail: str, *, title: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title or TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": TYPE_PREFIX + self.slug, "title": self.title,
                                "status": self.status, "detail": self.detail}
        if instance is not None:
            body["instance"] = instance
        for k, v in self.extra.items():
            if v is not None:
                body[k] = _jsonable(v)
        return body

    def response(self, instance: str | None = None) -> Response:
        return Response(json.dumps(self.to_dict(instance)).encode(), status_code=self.status,
                        media_type=PROBLEM_JSON, headers=self.headers)


def _jsonable(v: Any) -> Any:
    """Extension values must serialise: numpy scalars → Python, anything odd → repr."""
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (ValueError, TypeError):
            return repr(v)
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return repr(v)


def from_engine(exc: SeqVaultError) -> Problem:
    """Map an engine error to the problem a client should see."""
    if isinstance(exc, ValidationError):
        return Problem(422, "validation", str(exc), column=exc.column, row=exc.row,
                       value=exc.value)
    if isinstance(exc, SchemaError):
        return Problem(422, "schema", str(exc))
    if isinstance(exc, ReadOnlyError):
        return Problem(405, "read-only", str(exc), headers={"Allow": ""})
    if isinstance(exc, StoreLocked | StoreClosed | NotFound):
        return Problem(503, "not-ready", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, CorruptionError):
        log.error("corruption: %s", exc)
        return Problem(500, "corruption", str(exc), path=exc.path)
    return Problem(500, "engine-error", str(exc))


def install_handlers(app: FastAPI) -> None:
    """Every error → problem+json (our own, the engine's, FastAPI's and Starlette's)."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return exc.response(request.url.path)

    async def on_engine(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SeqVaultError)
        return from_engine(exc).response(request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = []
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ())]
            errors.append({"field": ".".join(loc[1:]) or ".".join(loc),
                           "in": loc[0] if loc else None,
                           "message": err.get("msg", ""),
                           "value": _jsonable(err.get("input"))})
        first = errors[0] if errors else {"field": "?", "message": "invalid", "value": None}
        detail = (f"{first['field']}: value {first['value']!r} is invalid: {first['message']}")
        return Problem(422, "invalid-parameter", detail, errors=errors).response(
            request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            detail = f"no resource at {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return Problem(exc.status_code, slug, detail, headers=dict(exc.headers or {})).response(
            request.url.path)

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return Problem(500, "internal", f"{type(exc).__name__}: {exc}").response(
            request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(SeqVaultError, on_engine)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)
