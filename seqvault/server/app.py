"""The FastAPI application: routes, the store's lifecycle, readiness and write protection.

`create_app(store_path, read_only=True, token=None, ...)` builds an app; the store is opened
in the lifespan (read-only by default: any number of workers may serve one store). When the
store cannot be opened yet (missing, or the writer lock is held elsewhere) the app still
starts, answers 503 on /readyz and on data endpoints, and retries the open at most every
`REOPEN_INTERVAL` seconds. Every blocking engine call, and the encoding of large bodies, runs
in the thread pool so the event loop only parses requests and moves bytes.

The process model and the wire contract are in docs/design/http.md.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..errors import SeqVaultError, ValidationError
from ..schema import Schema
from ..validate import coerce_user
from ..vault import SeqVault
from . import formats
from .formats import BatchItem, choose_encoding, compress, negotiate
from .metrics import Metrics, MetricsMiddleware
from .problems import PROBLEM_JSON, Problem, from_engine, install_handlers

log = logging.getLogger("seqvault.server")

DEFAULT_MAX_LAST = 100_000
DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_MAX_BATCH_USERS = 1_000
COMPRESS_MIN_BYTES = 8_192  # below this, compression costs more time than it saves bytes
REOPEN_INTERVAL = 0.5
_INT_RE = re.compile(r"[+-]?[0-9]{1,20}")

IdsAs = Literal["number", "string"]
Int64 = Annotated[StrictInt, Field(ge=-(1 << 63), le=(1 << 63) - 1)]


# ============================================================ state
class ServerState:
    """The open store (or why it is not open), shared by every request of one worker."""

    def __init__(self, store_path: Path, read_only: bool, metrics: Metrics) -> None:
        self.store_path = store_path
        self.read_only = read_only
        self.metrics = metrics
        self.vault: SeqVault | None = None
        self.error: str | None = "not opened yet"
        self.identity: tuple[int, int] | None = None  # of the metadata file we opened
        self._lock = threading.Lock()
        self._next_try = 0.0

    def try_open(self, *, force: bool = False) -> SeqVault | None:
        """Open the store if it is not open (blocking; call from a worker thread)."""
        with self._lock:
            if self.vault is not None:
                return self.vault
            now = time.monotonic()
            if not force and now < self._next_try:
                return None
            self._next_try = now + REOPEN_INTERVAL
            try:
                # A long-running writing server keeps its store merged in the background,
                # so reads do not slow down as real-time segments pile up.
                self.vault = SeqVault.open(self.store_path, read_only=self.read_only,
                                           create=False, auto_merge=not self.read_only)
            except (SeqVaultError, OSError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("store %s not ready: %s", self.store_path, self.error)
                self.metrics.ready.set(0)
                return None
            self.error = None
            self.identity = store_identity(self.store_path)
            warm_up(self.vault)
            self.metrics.ready.set(1)
            return self.vault

    async def get(self) -> SeqVault:
        vault = self.vault
        if vault is None:
            vault = await run_in_threadpool(self.try_open)
        if vault is None:
            raise Problem(503, "not-ready", f"store {str(self.store_path)!r} is not open: "
                          f"{self.error}", headers={"Retry-After": "1"})
        return vault

    def close(self) -> None:
        with self._lock:
            if self.vault is not None:
                try:
                    self.vault.close()
                finally:
                    self.vault = None
                    self.error = "closed"
                    self.metrics.ready.set(0)


def store_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the store's metadata file; None when it is gone."""
    try:
        st = os.stat(path / "meta" / "data.mdb")
    except OSError:
        return None
    return st.st_dev, st.st_ino


# ============================================================ request models (OpenAPI)
class BatchGetRequest(BaseModel):
    """`POST /sequences:batchGet` body. Ids may be numbers or strings (an int64 store accepts
    decimal strings too, so JavaScript clients can send ids they received with
    `?ids_as=string`)."""

    model_config = ConfigDict(extra="forbid")
    user_ids: list[StrictInt | StrictStr] = Field(min_length=1)
    last: StrictInt | None = Field(None, gt=0, description="newest N events per user")
    columns: list[StrictStr] | None = Field(None, description="default: every column")
    before: Int64 | list[Int64] | None = Field(
        None, description="keep ts < before: one value, or one per user")
    since: Int64 | None = Field(None, description="keep ts >= since")


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (`application/problem+json`)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=["urn:seqvault:problem:invalid-parameter"])
    title: str
    status: int
    detail: str
    instance: str | None = None


class SequenceJSON(BaseModel):
    """JSON form of one user's sequence: columnar, ascending time."""

    user_id: int | str
    count: int
    columns: dict[str, list[Any]]


def _problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ProblemDetails, "content": {PROBLEM_JSON: {}}} for c in codes}


_SEQ_CONTENT = {
    formats.JSON: {"schema": {"$ref": "#/components/schemas/SequenceJSON"}},
    formats.MSGPACK: {"schema": {"type": "string", "format": "binary",
                                 "description": "the JSON map, MessagePack-encoded"}},
    formats.ARROW: {"schema": {"type": "string", "format": "binary",
                               "description": "Arrow IPC stream, one record batch"}},
}
_WRITE_BODY = {
    "required": True,
    "content": {
        formats.JSON: {"schema": {"type": "object", "required": ["columns"], "properties": {
            "columns": {"type": "object", "additionalProperties": {"type": "array"}}}}},
        formats.MSGPACK: {"schema": {"type": "string", "format": "binary"}},
        formats.ARROW: {"schema": {"type": "string", "format": "binary"}},
    },
}


# ============================================================ helpers
def parse_user(schema: Schema, raw: Any) -> int | str:
    """A user id from a path segment or a batch list, checked against the schema's type."""
    if schema.user_type == "int64" and isinstance(raw, str):
        if not _INT_RE.fullmatch(raw):
            raise ValidationError(f"user_id: {raw!r} is not an integer; this store's user "
                                  f"column {schema.user_column!r} is int64",
                                  column="user_id", value=raw)
        raw = int(raw)
    try:
        return coerce_user(schema, raw)
    except ValidationError as exc:
        raise ValidationError(f"user_id: {exc}", column="user_id", value=exc.value) from None


def _bad_param(name: str, value: Any, expected: str) -> Problem:
    return Problem(422, "invalid-parameter", f"{name}: {value!r} {expected}", field=name,
                   value=value, errors=[{"field": name, "in": "query", "message": expected,
                                         "value": value}])


def query_int(params: Any, name: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int | None:
    """An optional integer query parameter, or 422 naming it, its value and the range."""
    raw = params.get(name)
    if raw is None:
        return None
    if not _INT_RE.fullmatch(raw):
        raise _bad_param(name, raw, "is not an integer")
    value = int(raw)
    lo = -(1 << 63) if minimum is None else minimum
    hi = (1 << 63) - 1 if maximum is None else maximum
    if not lo <= value <= hi:
        why = (f"is over this server's maximum of {hi}" if value > hi and maximum is not None
               else f"must be at least {lo}" if value < lo and minimum is not None
               else "does not fit int64")
        raise _bad_param(name, value, why)
    return value


def parse_columns(schema: Schema, columns: str | Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    names = [c.strip() for c in columns.split(",")] if isinstance(columns, str) else list(columns)
    if not names or any(not n for n in names):
        raise Problem(422, "invalid-parameter",
                      f"columns: {columns!r} must be a comma-separated list of column names "
                      f"from {schema.column_names}", field="columns", value=columns)
    unknown = [n for n in names if n not in schema.column_names]
    if unknown:
        raise Problem(422, "invalid-parameter",
                      f"columns: unknown column(s) {unknown}; the schema has "
                      f"{schema.column_names}", field="columns", value=unknown[0])
    return list(dict.fromkeys(names))


async def read_body(request: Request) -> bytes:
    return await request.body()  # the size limit is enforced by BodyLimitMiddleware


class BodyLimitMiddleware:
    """413 for bodies over `limit` bytes: by Content-Length before reading, else while reading."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    resp = self._problem(declared, scope.get("path", "")).response(
                        scope.get("path"))
                    await resp(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise self._problem(seen, scope.get("path", ""))
            return message

        await self.app(scope, limited_receive, send)

    def _problem(self, size: int, path: str) -> Problem:
        return Problem(413, "content-too-large",
                       f"request body: {size} bytes is over this server's limit of "
                       f"{self.limit} bytes (--max-body-bytes)", limit=self.limit,
                       headers={"Connection": "close"})


def warm_up(vault: SeqVault | None) -> None:
    """Encode an empty sequence in every format once, so the first request does not pay for
    lazy imports and kernel registration (pyarrow's first dictionary_encode: 0.2 s)."""
    if vault is None:
        return
    schema = vault.schema
    try:
        seq = vault.read(0 if schema.user_type == "int64" else "", last=1)
        for fmt in formats.MEDIA_TYPES:
            formats.encode_sequence(fmt, schema, seq.user_id, seq.columns, seq.count)
    except Exception as exc:  # noqa: BLE001 - a warm-up must never keep the server from starting
        log.warning("warm-up failed: %s: %s", type(exc).__name__, exc)


# ============================================================ the app
def create_app(store_path: str | os.PathLike[str], *, read_only: bool = True,
               token: str | None = None, max_last: int = DEFAULT_MAX_LAST,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_batch_users: int = DEFAULT_MAX_BATCH_USERS,
               compress_min_bytes: int = COMPRESS_MIN_BYTES) -> FastAPI:
    """The HTTP service over the store at `store_path`.

    `read_only=False` opens the store as its writer and enables the write endpoints, which then
    need `Authorization: Bearer <token>`; a writable app without a token is refused.
    """
    if not read_only and not token:
        raise ValueError("create_app: read_only=False needs a token (writes are only accepted "
                         "with Authorization: Bearer <token>)")
    if max_last <= 0 or max_body_bytes <= 0 or max_batch_users <= 0:
        raise ValueError("create_app: max_last, max_body_bytes and max_batch_users must be > 0")
    metrics = Metrics()
    state = ServerState(Path(store_path), read_only, metrics)
    token_bytes = token.encode() if token else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.try_open, force=True)
        try:
            yield
        finally:
            await run_in_threadpool(state.close)

    app = FastAPI(
        title="SeqVault",
        version=__version__,
        summary="Last-N reads of user behaviour sequences over HTTP",
        description=(
            "Columnar JSON, MessagePack or Arrow by `Accept`; zstd or gzip by "
            "`Accept-Encoding` for large bodies; errors are RFC 9457 problem+json. "
            "Int64 user ids above 2^53 lose precision in JavaScript: add `?ids_as=string`."),
        lifespan=lifespan,
    )
    app.state.seqvault = state
    install_handlers(app)
    from .ui import router as ui_router  # the /ui store explorer page (docs/design/ui.md)

    app.include_router(ui_router)

    # ---------------------------------------------------------------- probes
    @app.get("/livez", tags=["health"], summary="The process is up")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"], summary="The store is open and recovered",
             responses=_problem_responses(503))
    async def readyz() -> dict[str, Any]:
        vault = await state.get()
        if store_identity(state.store_path) != state.identity:
            # Deleted (or deleted and re-created) under us: we would answer from files that
            # are gone from the directory; a load balancer must stop sending us traffic.
            raise Problem(503, "not-ready", f"store {str(state.store_path)!r} was removed or "
                          "replaced since this server opened it; restart the server",
                          headers={"Retry-After": "1"})
        if vault.read_only:
            try:
                await run_in_threadpool(vault.refresh)
            except SeqVaultError as exc:
                raise Problem(503, "not-ready", f"refresh failed: {exc}",
                              headers={"Retry-After": "1"}) from exc
        return {"status": "ready", "read_only": vault.read_only, "commit_seq": vault.seq}

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics",
             response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics_endpoint() -> Response:
        body = await run_in_threadpool(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    # ---------------------------------------------------------------- store info
    @app.get("/schema", tags=["store"], summary="The store's schema",
             responses=_problem_responses(503))
    async def get_schema() -> dict[str, Any]:
        vault = await state.get()
        if vault.read_only:
            await run_in_threadpool(vault.refresh)
        return vault.schema.to_dict()

    @app.get("/stats", tags=["store"], summary="Store counts and sizes",
             responses=_problem_responses(503))
    async def get_stats() -> dict[str, Any]:
        vault = await state.get()

        def work() -> dict[str, Any]:
            if vault.read_only:
                vault.refresh()
            return vault.stats()

        stats = await run_in_threadpool(work)
        stats["server"] = {"pid": os.getpid(), "version": __version__, "max_last": max_last,
                           "max_body_bytes": max_body_bytes, "max_batch_users": max_batch_users,
                           "writes": not read_only}
        return stats

    # ---------------------------------------------------------------- reads
    # The hot route parses its own query (FastAPI's per-request parameter machinery costs about
    # as much as a 100-event read; measured), so its parameters are documented by hand here.
    seq_params = [
        {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "int64 or string, as the schema says"},
        {"name": "last", "in": "query", "required": False,
         "schema": {"type": "integer", "exclusiveMinimum": 0, "maximum": max_last},
         "description": f"newest N events (default and maximum {max_last})"},
        {"name": "columns", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "comma-separated column names; default: all, time column first"},
        {"name": "before", "in": "query", "required": False, "schema": {"type": "integer"},
         "description": "keep ts < before (schema time unit)"},
        {"name": "since", "in": "query", "required": False, "schema": {"type": "integer"},
         "description": "keep ts >= since (schema time unit)"},
        {"name": "ids_as", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["number", "string"], "default": "number"},
         "description": "`string`: user ids as JSON strings (int64 above 2^53 in JavaScript)"},
    ]

    @app.get(
        "/users/{user_id}/sequence", tags=["sequences"], response_class=Response,
        summary="One user's newest events, ascending by time",
        responses={200: {"description": "the sequence (format by Accept)",
                         "content": _SEQ_CONTENT},
                   **_problem_responses(406, 422, 503)},
        openapi_extra={"parameters": seq_params},
    )
    async def get_sequence(request: Request) -> Response:
        fmt = negotiate(request.headers.get("accept"))
        encoding = choose_encoding(request.headers.get("accept-encoding"))
        qp = request.query_params
        last = query_int(qp, "last", minimum=1, maximum=max_last)
        before = query_int(qp, "before")
        since = query_int(qp, "since")
        ids_as = qp.get("ids_as", "number")
        if ids_as not in ("number", "string"):
            raise _bad_param("ids_as", ids_as, "must be 'number' or 'string'")
        vault = await state.get()
        schema = vault.schema
        key = parse_user(schema, request.path_params["user_id"])
        names = parse_columns(schema, qp.get("columns"))

        def work() -> tuple[bytes, int, str | None]:
            # Arrow carries the store's dictionary codes as they are (strings="codes").
            seq = vault.read(key, last=last or max_last, columns=names, before=before,
                             since=since, strings="codes" if fmt == "arrow" else "decode")
            body = formats.encode_sequence(fmt, vault.schema, key, seq.columns, seq.count,
                                           ids_as_string=ids_as == "string",
                                           dictionaries=seq.dictionaries)
            enc = encoding if len(body) >= compress_min_bytes else None
            return compress(body, enc), seq.count, enc

        body, count, enc = await run_in_threadpool(work)
        metrics.served("/users/{user_id}/sequence", fmt, [count])
        headers = {"Vary": "Accept, Accept-Encoding", "X-SeqVault-Count": str(count)}
        if enc:
            headers["Content-Encoding"] = enc
        return Response(body, media_type=formats.MEDIA_TYPES[fmt], headers=headers)

    @app.post(
        "/sequences:batchGet", tags=["sequences"], response_class=Response,
        summary="Many users' sequences in one call, with a status per user",
        responses={200: {"description": "per-user results (format by Accept)", "content": {
            formats.JSON: {}, formats.MSGPACK: {}, formats.ARROW: {}}},
            **_problem_responses(406, 413, 422, 503)},
    )
    async def batch_get(
        request: Request, body: BatchGetRequest,
        ids_as: IdsAs = Query("number", description="`string`: user ids as JSON strings"),
    ) -> Response:
        fmt = negotiate(request.headers.get("accept"))
        encoding = choose_encoding(request.headers.get("accept-encoding"))
        if len(body.user_ids) > max_batch_users:
            raise Problem(422, "invalid-parameter",
                          f"user_ids: {len(body.user_ids)} ids is over this server's limit of "
                          f"{max_batch_users} per call", field="user_ids")
        if body.last is not None and body.last > max_last:
            raise Problem(422, "invalid-parameter",
                          f"last: {body.last} is over this server's maximum of {max_last}",
                          field="last", value=body.last)
        befores: list[int | None]
        if isinstance(body.before, list):
            if len(body.before) != len(body.user_ids):
                raise Problem(422, "invalid-parameter",
                              f"before: {len(body.before)} values for {len(body.user_ids)} "
                              "user_ids; give one value or one per user", field="before")
            befores = list(body.before)
        else:
            befores = [body.before] * len(body.user_ids)
        vault = await state.get()
        names = parse_columns(vault.schema, body.columns)
        last = body.last or max_last

        def work() -> tuple[bytes, list[int], str | None]:
            schema = vault.schema
            items: list[BatchItem] = []
            for raw, before in zip(body.user_ids, befores):
                try:
                    key = parse_user(schema, raw)
                    seq = vault.read(key, last=last, columns=names, before=before,
                                     since=body.since)
                except ValidationError as exc:
                    prob = from_engine(exc).to_dict()
                    items.append(BatchItem(raw, prob["status"], problem=prob))
                    continue
                items.append(BatchItem(key, 200, seq.count, seq.columns))
            out_names = names if names is not None else schema.column_names
            data = formats.encode_batch(fmt, schema, out_names, items,
                                        ids_as_string=ids_as == "string")
            enc = encoding if len(data) >= compress_min_bytes else None
            return compress(data, enc), [it.count for it in items if it.status == 200], enc

        data, lengths, enc = await run_in_threadpool(work)
        metrics.served("/sequences:batchGet", fmt, lengths)
        headers = {"Vary": "Accept, Accept-Encoding"}
        if enc:
            headers["Content-Encoding"] = enc
        return Response(data, media_type=formats.MEDIA_TYPES[fmt], headers=headers)

    # ---------------------------------------------------------------- writes
    def check_write(request: Request) -> None:
        if read_only:
            raise Problem(405, "read-only",
                          "this server is read-only; start it with `seqvault serve "
                          "--allow-writes --token-file F` to accept writes",
                          headers={"Allow": ""})
        auth = request.headers.get("authorization")
        if not auth:
            raise Problem(401, "unauthorized", "writes need Authorization: Bearer <token>",
                          headers={"WWW-Authenticate": 'Bearer realm="seqvault"'})
        scheme, _, given = auth.partition(" ")
        assert token_bytes is not None
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 token_bytes):
            raise Problem(403, "forbidden", "the bearer token is not valid for this server")

    @app.post(
        "/users/{user_id}/events", tags=["writes"], summary="Append one user's events (atomic)",
        openapi_extra={"requestBody": _WRITE_BODY},
        responses=_problem_responses(400, 401, 403, 405, 413, 415, 422, 503),
    )
    async def append_events(request: Request, user_id: str = PathParam()) -> dict[str, Any]:
        check_write(request)
        fmt = formats.body_format(request.headers.get("content-type"))
        raw = await read_body(request)
        vault = await state.get()
        key = parse_user(vault.schema, user_id)

        def work() -> int:
            return vault.append(key, formats.decode_columns(fmt, raw))

        n = await run_in_threadpool(work)
        return {"user_id": key, "appended": n}

    @app.post(
        "/events:batchAppend", tags=["writes"],
        summary="Append many users' events in one atomic call",
        description="The body's columns include the user column.",
        openapi_extra={"requestBody": _WRITE_BODY},
        responses=_problem_responses(400, 401, 403, 405, 413, 415, 422, 503),
    )
    async def append_batch(request: Request) -> dict[str, Any]:
        check_write(request)
        fmt = formats.body_format(request.headers.get("content-type"))
        raw = await read_body(request)
        vault = await state.get()

        def work() -> int:
            return vault.append_batch(formats.decode_columns(fmt, raw))

        n = await run_in_threadpool(work)
        return {"appended": n}

    # the OpenAPI document references SequenceJSON; make sure it is in the components
    openapi_default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = openapi_default()
            comps = doc.setdefault("components", {}).setdefault("schemas", {})
            comps["SequenceJSON"] = SequenceJSON.model_json_schema(
                ref_template="#/components/schemas/{model}")
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` workers: `seqvault serve` passes its options in
    SEQVAULT_SERVE_* variables (a token *file*, never the token itself)."""
    env = os.environ
    token = None
    token_file = env.get("SEQVAULT_SERVE_TOKEN_FILE")
    if token_file:
        token = Path(token_file).read_text().strip()
    return create_app(
        env["SEQVAULT_SERVE_STORE"],
        read_only=env.get("SEQVAULT_SERVE_ALLOW_WRITES", "0") != "1",
        token=token,
        max_last=int(env.get("SEQVAULT_SERVE_MAX_LAST", DEFAULT_MAX_LAST)),
        max_body_bytes=int(env.get("SEQVAULT_SERVE_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
    )


__all__ = ["app_from_env", "create_app"]
