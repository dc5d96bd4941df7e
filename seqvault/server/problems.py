"""RFC 9457 problem details: every error the service answers is `application/problem+json`.

A `Problem` carries the status, a stable `type` URI (`urn:seqvault:problem:<slug>`, listed in
docs/design/http.md), a title, a detail that names the field, the value and what was expected,
and extension members (`errors`, `column`, `row`, `value`, ...). The handlers installed by
`install_handlers` turn engine errors, request-validation errors and Starlette's own 404/405
into problems, so a client never has to parse two error shapes.

Two rules keep problems safe to send to anyone: they are **bounded** (a detail of at most
`MAX_DETAIL` characters, echoed values of at most `MAX_ECHO`, lists of at most `MAX_ITEMS`: a
60 MB body with one bad value gets a small answer), and they **never carry server internals**
(no file paths, no exception text of unexpected errors, no stack traces): those go to the
server log under the request id that every problem carries as `request_id` (and every
response as `X-Request-Id`).
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
MAX_DETAIL = 1_000  # characters of `detail`
MAX_ECHO = 200  # characters of an echoed string value
MAX_ITEMS = 20  # items of an echoed list (or entries of `errors`)
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

    def to_dict(self, instance: str | None = None, request_id: str | None = None
                ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": TYPE_PREFIX + self.slug, "title": self.title,
                                "status": self.status, "detail": clip(self.detail, MAX_DETAIL)}
        if instance is not None:
            body["instance"] = clip(instance, MAX_ECHO)
        for k, v in self.extra.items():
            if v is not None:
                body[k] = _jsonable(v)
        if request_id is not None:
            body["request_id"] = request_id
        return body

    def response(self, instance: str | None = None, request_id: str | None = None) -> Response:
        headers = dict(self.headers or {})
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        return Response(json.dumps(self.to_dict(instance, request_id)).encode(),
                        status_code=self.status, media_type=PROBLEM_JSON, headers=headers)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def request_id_of(request: Request) -> str | None:
    """The id RequestGuard gave this request (None outside the middleware, e.g. unit tests)."""
    return request.scope.get("state", {}).get("request_id")


def bounded(v: Any) -> Any:
    """A value made JSON-able and cut to the echo limits (for echoing client input)."""
    return _jsonable(v)


def _jsonable(v: Any) -> Any:
    """Extension values must serialise: numpy scalars → Python, anything odd → repr."""
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (ValueError, TypeError):
            return repr(v)
    if isinstance(v, str):
        return clip(v, MAX_ECHO)
    if v is None or isinstance(v, bool | int | float):
        return v
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v[:MAX_ITEMS]]
    if isinstance(v, dict):
        return {clip(str(k), MAX_ECHO): _jsonable(x) for k, x in list(v.items())[:MAX_ITEMS]}
    return clip(repr(v), MAX_ECHO)


def from_engine(exc: SeqVaultError, request_id: str | None = None) -> Problem:
    """Map an engine error to the problem a client should see.

    Validation and schema errors are about the client's own input and are passed on; every
    other engine message can name store files, so it is logged (with `request_id`) and the
    client gets a generic detail that points at the log.
    """
    if isinstance(exc, ValidationError):
        return Problem(422, "validation", str(exc), column=exc.column, row=exc.row,
                       value=exc.value)
    if isinstance(exc, SchemaError):
        return Problem(422, "schema", str(exc))
    see_log = f"(request id {request_id}: the server log has the details)"
    log.error("request %s: %s: %s", request_id, type(exc).__name__, exc)
    if isinstance(exc, ReadOnlyError):
        return Problem(405, "read-only", f"the store is read-only {see_log}",
                       headers={"Allow": ""})
    if isinstance(exc, StoreLocked | StoreClosed | NotFound):
        return Problem(503, "not-ready", f"the store is not open {see_log}",
                       headers={"Retry-After": "1"})
    if isinstance(exc, CorruptionError):
        return Problem(500, "corruption", "stored data failed its checksum and was not "
                       f"served {see_log}")
    return Problem(500, "engine-error", f"the engine failed: {type(exc).__name__} {see_log}")


def install_handlers(app: FastAPI) -> None:
    """Every error → problem+json (our own, the engine's, FastAPI's and Starlette's)."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return exc.response(request.url.path, request_id_of(request))

    async def on_engine(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SeqVaultError)
        rid = request_id_of(request)
        return from_engine(exc, rid).response(request.url.path, rid)

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
        value = clip(repr(first["value"]), MAX_ECHO)
        detail = f"{first['field']}: value {value} is invalid: {first['message']}"
        return Problem(422, "invalid-parameter", detail, errors=errors).response(
            request.url.path, request_id_of(request))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            detail = f"no resource at {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return Problem(exc.status_code, slug, detail, headers=dict(exc.headers or {})).response(
            request.url.path, request_id_of(request))

    async def on_crash(request: Request, exc: Exception) -> Response:
        rid = request_id_of(request)
        log.exception("request %s: unhandled error on %s", rid, request.url.path)
        return Problem(500, "internal", f"an unexpected error (request id {rid}: the server "
                       "log has the details)").response(request.url.path, rid)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(SeqVaultError, on_engine)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)
