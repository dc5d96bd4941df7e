"""The store explorer's routes: the page at /ui, its assets, and the small JSON API it calls.

Read-only, under the same (absent) auth model as the read endpoints. The routes reach the store
through the app's `ServerState` (`request.app.state.seqvault`, its public `get()`), so a store
that is not open yet answers 503 problem+json here too. They are left out of the OpenAPI
document: /ui/api is the page's private interface, whose public equivalent the page shows
beside every view ("copy as curl"). Design: docs/design/ui.md.
"""

from __future__ import annotations

import gzip
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...errors import ValidationError
from ...validate import coerce_user
from ..problems import Problem
from . import assets, views
from .render import not_ready_html, overview_html, page_html

router = APIRouter(include_in_schema=False)
_INT_RE = re.compile(r"[+-]?[0-9]{1,19}")
GZIP_MIN_BYTES = 1_024  # below this gzip saves less than its header and CPU cost
_sampler = views.CompressionSampler()


# ============================================================ helpers
def _bad(field: str, value: Any, expected: str) -> Problem:
    return Problem(422, "invalid-parameter", f"{field}: {value!r} {expected}", field=field,
                   value=value)


def _int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not _INT_RE.fullmatch(raw):
        raise _bad(name, raw, "is not an integer")
    value = int(raw)
    if not -(1 << 63) <= value < (1 << 63):
        raise _bad(name, raw, "does not fit int64")
    return value


def _user(vault: Any, raw: str) -> Any:
    schema = vault.schema
    if schema.user_type == "int64":
        if not _INT_RE.fullmatch(raw.strip()):
            raise _bad("user", raw, f"is not an integer; this store's user column "
                       f"{schema.user_column!r} is int64")
        raw = raw.strip()
        value: Any = int(raw)
    else:
        value = raw
    try:
        return coerce_user(schema, value)
    except ValidationError as exc:
        raise _bad("user", raw, str(exc)) from None


def _columns(vault: Any, request: Request) -> list[str] | None:
    raw = request.query_params.get("columns")
    if not raw:
        return None
    names = [c.strip() for c in raw.split(",") if c.strip()]
    unknown = [n for n in names if n not in vault.schema.column_names]
    if unknown:
        raise _bad("columns", raw, f"names unknown column(s) {unknown}; the schema has "
                   f"{vault.schema.column_names}")
    return list(dict.fromkeys(names))


def _range(request: Request) -> views.Range:
    return views.Range(since=_int(request, "since"), before=_int(request, "before"))


def _respond(request: Request, body: bytes, media_type: str,
             headers: dict[str, str] | None = None) -> Response:
    """Gzip for clients that accept it: the page's bodies take 2-3.5× fewer bytes on the wire
    (measured by bench/ui_bench.py, docs/design/ui.md)."""
    out = dict(headers or {})
    out["Vary"] = "Accept-Encoding"
    if len(body) >= GZIP_MIN_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, compresslevel=5)
        out["Content-Encoding"] = "gzip"
    return Response(body, media_type=media_type, headers=out)


def _json(request: Request, doc: Any) -> Response:
    return _respond(request, assets.dump_json(doc), "application/json",
                    {"Cache-Control": "no-store"})


async def _call(fn: Any, *args: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args)
    except views.BadParam as exc:
        raise _bad(exc.field, exc.value, exc.expected) from None


# ============================================================ the page and its assets
# The page loads only its own files and talks only to this server; a stored string that
# slipped past escaping still could not run a script or send data elsewhere.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' "
                               "'unsafe-inline'; img-src 'self'; connect-src 'self'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/ui")
async def ui_page(request: Request) -> Response:
    state = request.app.state.seqvault
    try:
        vault = await state.get()
    except Problem as exc:
        if exc.status != 503:
            raise
        # A person is looking: say why in a page that retries, not in problem+json.
        return Response(not_ready_html(exc.detail).encode(), status_code=503,
                        media_type="text/html; charset=utf-8",
                        headers={**PAGE_HEADERS, **(exc.headers or {})})
    doc = await _call(views.overview, vault, _sampler)
    body = page_html(doc, vault.schema).encode()
    return _respond(request, body, "text/html; charset=utf-8", PAGE_HEADERS)


@router.get("/ui/static/{name}")
async def ui_asset(request: Request, name: str) -> Response:
    asset = assets.STATIC.get(name)
    if asset is None:
        raise Problem(404, "not-found", f"/ui/static/{name}: no such asset")
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers={"ETag": asset.etag})
    headers = {"ETag": asset.etag, "Vary": "Accept-Encoding",
               # the page links assets as ?v=<hash>, so a cached copy is never stale
               "Cache-Control": "public, max-age=86400"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


# ============================================================ the page's data
@router.get("/ui/api/overview")
async def ui_overview(request: Request) -> Response:
    vault = await request.app.state.seqvault.get()
    doc = await _call(views.overview, vault, _sampler)
    if request.query_params.get("format") == "html":
        return _respond(request, overview_html(doc).encode(), "text/html; charset=utf-8",
                        {"Cache-Control": "no-store"})
    return _json(request, doc)


@router.get("/ui/api/users/{user:path}/timeline")
async def ui_timeline(request: Request, user: str) -> Response:
    vault = await request.app.state.seqvault.get()
    key = _user(vault, user)
    color = request.query_params.get("color") or None
    bins = _int(request, "bins", views.DEFAULT_BINS)
    assert bins is not None
    return _json(request, await _call(views.timeline, vault, key, _range(request), color, bins))


@router.get("/ui/api/users/{user:path}/events")
async def ui_events(request: Request, user: str) -> Response:
    vault = await request.app.state.seqvault.get()
    key = _user(vault, user)
    limit = _int(request, "limit", 50)
    assert limit is not None
    try:
        cursor = views.parse_cursor(request.query_params.get("cursor"))
    except views.BadParam as exc:
        raise _bad(exc.field, exc.value, exc.expected) from None
    doc = await _call(views.events_page, vault, key, _range(request),
                      _columns(vault, request), limit, cursor)
    return _json(request, doc)


@router.get("/ui/api/users/{user:path}/pit")
async def ui_point_in_time(request: Request, user: str) -> Response:
    vault = await request.app.state.seqvault.get()
    key = _user(vault, user)
    before = _int(request, "before")
    if before is None:
        raise _bad("before", None, "is required: the timestamp to look back from")
    max_len = _int(request, "max_len", 1000)
    assert max_len is not None
    doc = await _call(views.point_in_time, vault, key, before, max_len,
                      _columns(vault, request))
    return _json(request, doc)
