"""The FastAPI application: routes, the store's lifecycle, readiness and write protection.

`create_app(store_path, read_only=True, token=None, ...)` builds an app; the store is opened
in the lifespan (read-only by default: any number of workers may serve one store). When the
store cannot be opened yet (missing, or the writer lock is held elsewhere) the app still
starts, answers 503 on /readyz and on data endpoints, and retries the open at most every
`REOPEN_INTERVAL` seconds. Every blocking engine call, and the encoding of large bodies, runs
in the thread pool so the event loop only parses requests and moves bytes.

Every request's work and memory are bounded by settings (the response budget:
`max_last`, `max_batch_users`, `max_response_events`, `max_response_bytes`, `max_body_bytes`,
`max_inflight`); batchGet streams one user at a time (batch.py). The limits are in the OpenAPI
document, which is specialised to the open store (column names, user id type) so that it says
exactly what the server accepts (contract.py).

The process model and the wire contract are in docs/design/http.md.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from .. import __version__
from ..errors import NotFound, SeqVaultError, StoreLocked
from ..vault import SeqVault
from . import batch, contract, formats
from .formats import choose_encoding, compress, negotiate
from .guard import BodyLimitMiddleware, RequestGuard
from .memory import tune_malloc
from .metrics import Metrics, MetricsMiddleware
from .params import (
    IdsAs,
    bad_param,
    batch_request_model,
    parse_columns,
    parse_user,
    query_int,
)
from .problems import PROBLEM_JSON, Problem, install_handlers, request_id_of

log = logging.getLogger("seqvault.server")

DEFAULT_MAX_LAST = 100_000  # events in one user's response
DEFAULT_MAX_BODY_BYTES = 64 << 20  # request body
DEFAULT_MAX_BATCH_USERS = 1_000  # ids in one batchGet
# distinct users x last of one batchGet: ~55 MB of JSON, ~30 MB of Arrow at the test schema
DEFAULT_MAX_RESPONSE_EVENTS = 1_000_000
DEFAULT_MAX_RESPONSE_BYTES = 128 << 20  # bytes of one response body (long strings)
DEFAULT_MAX_INFLIGHT = 256  # requests one worker works on at once; more get 503
STREAM_CHUNK = 256 << 10  # batchGet bodies go out in chunks of about this size
COMPRESS_MIN_BYTES = 8_192  # below this, compression costs more time than it saves bytes
REOPEN_INTERVAL = 0.5

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
        self.reason = "not opened yet"  # what a client may see: no paths
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
                self.reason = ("it is open for writing by another process"
                               if isinstance(exc, StoreLocked) else
                               "there is no store at the configured path yet"
                               if isinstance(exc, NotFound) else type(exc).__name__)
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
            # the full reason (with the path) is in the server log, not in the answer
            raise Problem(503, "not-ready", f"the store is not open: {self.reason}; retry "
                          "shortly", headers={"Retry-After": "1"})
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


# ============================================================ response models (OpenAPI)
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
               max_response_events: int = DEFAULT_MAX_RESPONSE_EVENTS,
               max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
               max_inflight: int = DEFAULT_MAX_INFLIGHT,
               compress_min_bytes: int = COMPRESS_MIN_BYTES) -> FastAPI:
    """The HTTP service over the store at `store_path`.

    `read_only=False` opens the store as its writer and enables the write endpoints, which then
    need `Authorization: Bearer <token>`; a writable app without a token is refused.
    """
    if not read_only and not token:
        raise ValueError("create_app: read_only=False needs a token (writes are only accepted "
                         "with Authorization: Bearer <token>)")
    limits = {"max_last": max_last, "max_body_bytes": max_body_bytes,
              "max_batch_users": max_batch_users, "max_response_events": max_response_events,
              "max_response_bytes": max_response_bytes, "max_inflight": max_inflight}
    bad = [k for k, v in limits.items() if v <= 0]
    if bad:
        raise ValueError(f"create_app: {bad} must be > 0")
    if max_last > max_response_events:
        raise ValueError(f"create_app: max_last={max_last} is over max_response_events="
                         f"{max_response_events} (one user's read must fit the budget)")
    metrics = Metrics()
    state = ServerState(Path(store_path), read_only, metrics)
    token_bytes = token.encode() if token else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_malloc()
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
        docs_url=None, redoc_url=None,  # served offline by contract.install_docs
    )
    app.state.seqvault = state
    install_handlers(app)
    contract.install_docs(app)
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
            raise Problem(503, "not-ready", "the store was removed or "
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
        stats["server"] = {"pid": os.getpid(), "version": __version__, **limits,
                           "writes": not read_only}
        return stats

    # ---------------------------------------------------------------- reads
    # The hot route parses its own query (FastAPI's per-request parameter machinery costs about
    # as much as a 100-event read; measured), so its parameters are documented by hand here.
    seq_params = [
        {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "int64 or string, as the schema says; percent-encode anything but "
                        "letters, digits and `-._~` (a `/` in an id is `%2F`)"},
        {"name": "last", "in": "query", "required": False,
         "schema": {"type": "integer", "exclusiveMinimum": 0, "maximum": max_last},
         "description": f"newest N events (default and maximum {max_last})"},
        {"name": "columns", "in": "query", "required": False,
         "schema": {"type": "string", "pattern": contract.COLUMNS_PATTERN},
         "description": "comma-separated column names; default: all, time column first"},
        {"name": "before", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": -(1 << 63), "maximum": (1 << 63) - 1},
         "description": "keep ts < before (schema time unit)"},
        {"name": "since", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": -(1 << 63), "maximum": (1 << 63) - 1},
         "description": "keep ts >= since (schema time unit)"},
        {"name": "ids_as", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["number", "string"], "default": "number"},
         "description": "`string`: user ids as JSON strings (int64 above 2^53 in JavaScript)"},
    ]

    # `:path` so that an id holding `/` (sent as %2F, which the server decodes before routing)
    # still reaches this route.
    @app.get(
        "/users/{user_id:path}/sequence", tags=["sequences"], response_class=Response,
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
            raise bad_param("ids_as", ids_as, "must be 'number' or 'string'")
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
            if len(body) > max_response_bytes:
                raise Problem(422, "over-limit",
                              f"the response of {len(body)} bytes is over this server's "
                              f"budget of {max_response_bytes} bytes (max_response_bytes); "
                              "ask for fewer columns or a smaller last",
                              setting="max_response_bytes", limit=max_response_bytes)
            enc = encoding if len(body) >= compress_min_bytes else None
            return compress(body, enc), seq.count, enc

        body, count, enc = await run_in_threadpool(work)
        metrics.served("/users/{user_id}/sequence", fmt, [count])
        headers = {"Vary": "Accept, Accept-Encoding", "X-SeqVault-Count": str(count)}
        if enc:
            headers["Content-Encoding"] = enc
        return Response(body, media_type=formats.MEDIA_TYPES[fmt], headers=headers)

    BatchGetRequest = batch_request_model(max_batch_users, max_last)

    async def batch_get(
        request: Request, body: Any,
        ids_as: IdsAs = Query("number", description="`string`: user ids as JSON strings"),
    ) -> Response:
        req: Any = body
        fmt = negotiate(request.headers.get("accept"))
        encoding = choose_encoding(request.headers.get("accept-encoding"))
        befores: list[int | None]
        if isinstance(req.before, list):
            if len(req.before) != len(req.user_ids):
                raise Problem(422, "invalid-parameter",
                              f"before: {len(req.before)} values for {len(req.user_ids)} "
                              "user_ids; give one value or one per user", field="before")
            befores = list(req.before)
        else:
            befores = [req.before] * len(req.user_ids)
        vault = await state.get()
        names = parse_columns(vault.schema, req.columns)
        last = req.last or max_last
        entries = batch.plan(vault.schema, req.user_ids, befores)
        n_reads = sum(1 for e in entries if e.problem is None)
        refused = batch.over_budget(n_reads, last, max_response_events)
        if refused is not None:
            raise refused
        rid = request_id_of(request)
        lengths: list[int] = []
        pieces = batch.coalesce(batch.stream(
            vault, entries, fmt, names, last, req.since, ids_as_string=ids_as == "string",
            max_bytes=max_response_bytes, request_id=rid, lengths=lengths), STREAM_CHUNK)
        headers = {"Vary": "Accept, Accept-Encoding"}
        media = formats.MEDIA_TYPES[fmt]

        # Encode until the body is known to fit one chunk (then send it whole, with a length,
        # uncompressed below compress_min_bytes as before) or not (then stream the rest,
        # compressing on the fly).
        def prefix() -> tuple[list[bytes], bool]:
            got: list[bytes] = []
            size = 0
            for piece in pieces:
                got.append(piece)
                size += len(piece)
                if size >= STREAM_CHUNK:
                    return got, False
            return got, True

        first, done = await run_in_threadpool(prefix)
        if done:
            data = b"".join(first)
            enc = encoding if len(data) >= compress_min_bytes else None
            metrics.served("/sequences:batchGet", fmt, lengths)
            if enc:
                headers["Content-Encoding"] = enc
            return Response(compress(data, enc), media_type=media, headers=headers)
        if encoding:
            headers["Content-Encoding"] = encoding

        async def rest() -> AsyncIterator[bytes]:
            squeeze = formats.stream_compressor(encoding)
            for piece in first:
                out = squeeze(piece)
                if out:
                    yield out
            async for piece in iterate_in_threadpool(pieces):
                out = squeeze(piece)
                if out:
                    yield out
            tail = squeeze(None)
            if tail:
                yield tail
            metrics.served("/sequences:batchGet", fmt, lengths)

        return StreamingResponse(rest(), media_type=media, headers=headers)

    # The body model is built at run time (it carries this app's limits), so the annotation is
    # set here: under `from __future__ import annotations` FastAPI could not resolve the name.
    batch_get.__annotations__["body"] = BatchGetRequest
    app.post(
        "/sequences:batchGet", tags=["sequences"], response_class=Response,
        summary="Many users' sequences in one call, with a status per user",
        description=batch.__doc__,
        responses={200: {"description": "per-user results (format by Accept)", "content": {
            formats.JSON: {"schema": {"$ref": "#/components/schemas/BatchResults"}},
            formats.MSGPACK: {"schema": {"type": "string", "format": "binary"}},
            formats.ARROW: {"schema": {"type": "string", "format": "binary"}}}},
            **_problem_responses(406, 413, 422, 503)},
    )(batch_get)

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
        "/users/{user_id:path}/events", tags=["writes"],
        summary="Append one user's events (atomic)",
        description="Every column of the schema, each an array, all of the same length (a "
                    "rule JSON Schema cannot state: other lengths are refused with 422).",
        openapi_extra={"requestBody": _WRITE_BODY},
        responses=_problem_responses(400, 401, 403, 405, 413, 415, 422, 503),
    )
    async def append_events(request: Request, user_id: str = PathParam()) -> dict[str, Any]:
        check_write(request)
        fmt = formats.body_format(request.headers.get("content-type"))
        raw = await request.body()  # size-limited by BodyLimitMiddleware
        vault = await state.get()
        key = parse_user(vault.schema, user_id)

        def work() -> int:
            cols = formats.decode_columns(fmt, raw)
            if fmt != "arrow":
                formats.reject_bools(vault.schema, cols)
            return vault.append(key, cols)

        n = await run_in_threadpool(work)
        return {"user_id": key, "appended": n}

    @app.post(
        "/events:batchAppend", tags=["writes"],
        summary="Append many users' events in one atomic call",
        description="The body's columns include the user column; every column an array, all "
                    "of the same length (refused with 422 otherwise).",
        openapi_extra={"requestBody": _WRITE_BODY},
        responses=_problem_responses(400, 401, 403, 405, 413, 415, 422, 503),
    )
    async def append_batch(request: Request) -> dict[str, Any]:
        check_write(request)
        fmt = formats.body_format(request.headers.get("content-type"))
        raw = await request.body()  # size-limited by BodyLimitMiddleware
        vault = await state.get()

        def work() -> int:
            cols = formats.decode_columns(fmt, raw)
            if fmt != "arrow":
                formats.reject_bools(vault.schema, cols)
            return vault.append_batch(cols)

        n = await run_in_threadpool(work)
        return {"appended": n}

    @app.delete(
        "/users/{user_id:path}", tags=["writes"],
        summary="Delete a user's events (all, or those with ts < before)",
        description="Reads return nothing (or only the newer events) at once; the bytes leave "
                    "the store's files at the next merge. An unknown user is not an error: "
                    "`deleted_events` is 0.",
        openapi_extra={"parameters": [
            {"name": "before", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": -(1 << 63), "maximum": (1 << 63) - 1},
             "description": "delete only the events with ts < before (schema time unit); "
                            "default: all of them"}]},
        responses=_problem_responses(401, 403, 405, 422, 503),
    )
    async def delete_user(request: Request, user_id: str = PathParam()) -> dict[str, Any]:
        # `:path` lets an id holding "/" (sent as %2F) through, so a literal "/" in the raw path
        # is another resource (/users/1/events, /users/1/sequence): not deletable.
        raw = request.scope.get("raw_path") or request.url.path.encode()
        rest = raw.split(b"?", 1)[0].partition(b"/users/")[2]
        if b"/" in rest:
            allow = {b"events": "POST", b"sequence": "GET"}.get(rest.rsplit(b"/", 1)[1], "")
            raise Problem(405, "method-not-allowed",
                          f"DELETE is not allowed on {request.url.path}; delete a user with "
                          "DELETE /users/{user_id}", headers={"Allow": allow})
        check_write(request)
        before = query_int(request.query_params, "before")
        vault = await state.get()
        key = parse_user(vault.schema, user_id)
        n = await run_in_threadpool(vault.delete, key, before)
        return {"user_id": key, "deleted_events": n, "before": before}

    # The generic document (http/openapi.json) plus the components it references; served
    # specialised to the open store (contract.specialise), so it is exact for that store.
    openapi_default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = openapi_default()
            comps = doc.setdefault("components", {}).setdefault("schemas", {})
            comps["SequenceJSON"] = SequenceJSON.model_json_schema(
                ref_template="#/components/schemas/{model}")
            comps.update(contract.extra_components())
            contract.tighten(doc, limits)
            app.openapi_schema = doc
        vault = state.vault
        if vault is None:
            return app.openapi_schema
        return contract.specialise(app.openapi_schema, vault.schema)

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    app.add_middleware(RequestGuard, max_inflight=max_inflight)
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
        max_batch_users=int(env.get("SEQVAULT_SERVE_MAX_BATCH_USERS", DEFAULT_MAX_BATCH_USERS)),
        max_response_events=int(env.get("SEQVAULT_SERVE_MAX_RESPONSE_EVENTS",
                                        DEFAULT_MAX_RESPONSE_EVENTS)),
        max_response_bytes=int(env.get("SEQVAULT_SERVE_MAX_RESPONSE_BYTES",
                                       DEFAULT_MAX_RESPONSE_BYTES)),
        max_inflight=int(env.get("SEQVAULT_SERVE_MAX_INFLIGHT", DEFAULT_MAX_INFLIGHT)),
    )


__all__ = ["app_from_env", "create_app"]
